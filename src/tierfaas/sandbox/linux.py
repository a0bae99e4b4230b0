"""The Linux system calls the sandbox needs and Python 3.11's ``os`` lacks, through ``ctypes``.

``unshare``, ``mount``, ``umount2``, ``pivot_root``, ``sethostname`` and the ``prctl`` options
that drop privileges. Each raises ``OSError`` with the call's errno, like ``os`` functions do,
so a failure names what was refused. The flag values are the kernel's ABI (``<sched.h>``,
``<sys/mount.h>``, ``<linux/prctl.h>``); they are the same on every architecture Linux runs on.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000

MS_RDONLY = 0x1
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_NOEXEC = 0x8
MS_REMOUNT = 0x20
MS_NOATIME = 0x400
MS_NODIRATIME = 0x800
MS_BIND = 0x1000
MS_REC = 0x4000
MS_PRIVATE = 0x40000
MS_RELATIME = 0x200000
MS_STRICTATIME = 0x1000000

MNT_DETACH = 0x2

PR_SET_PDEATHSIG = 1
PR_SET_DUMPABLE = 4
PR_CAPBSET_DROP = 24
PR_SET_SECUREBITS = 28
PR_SET_NO_NEW_PRIVS = 38
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_CLEAR_ALL = 4

# SECBIT_NOROOT and its lock, and the locks of NO_SETUID_FIXUP and KEEP_CAPS left off: a uid 0
# inside the namespace gains no capability by exec, and a change of uid always clears them.
SECUREBITS_NOROOT_LOCKED = 0x2B
_LINUX_CAPABILITY_VERSION_3 = 0x20080522
_SYS_CAPSET = {"x86_64": 126, "aarch64": 91, "armv7l": 185, "ppc64le": 184, "s390x": 185}

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_libc.mount.argtypes = [
    ctypes.c_char_p,
    ctypes.c_char_p,
    ctypes.c_char_p,
    ctypes.c_ulong,
    ctypes.c_char_p,
]
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
_libc.unshare.argtypes = [ctypes.c_int]
_libc.setns.argtypes = [ctypes.c_int, ctypes.c_int]
_libc.sethostname.argtypes = [ctypes.c_char_p, ctypes.c_size_t]
_libc.prctl.argtypes = [
    ctypes.c_int,
    ctypes.c_ulong,
    ctypes.c_ulong,
    ctypes.c_ulong,
    ctypes.c_ulong,
]
_libc.syscall.restype = ctypes.c_long

_SYS_PIVOT_ROOT = {"x86_64": 155, "aarch64": 41, "armv7l": 218, "ppc64le": 203, "s390x": 217}


def _check(result: int, what: str) -> None:
    if result != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"{what}: {os.strerror(errno)}")


def _path(value: str | os.PathLike[str] | None) -> bytes | None:
    return None if value is None else os.fsencode(value)


def unshare(flags: int) -> None:
    _check(_libc.unshare(flags), f"unshare({flags:#x})")


def setns(fd: int, nstype: int) -> None:
    _check(_libc.setns(fd, nstype), f"setns({nstype:#x})")


def mount(
    source: str | None,
    target: str | os.PathLike[str],
    fstype: str | None,
    flags: int,
    data: str | None = None,
) -> None:
    _check(
        _libc.mount(
            _path(source),
            _path(target),
            _path(fstype),
            flags,
            None if data is None else data.encode(),
        ),
        f"mount {source} on {target} ({fstype or 'bind'}, flags {flags:#x})",
    )


def umount2(target: str | os.PathLike[str], flags: int) -> None:
    _check(_libc.umount2(_path(target), flags), f"umount {target}")


def pivot_root(new_root: str | os.PathLike[str], put_old: str | os.PathLike[str]) -> None:
    number = _SYS_PIVOT_ROOT.get(os.uname().machine)
    if number is None:  # pragma: no cover - architectures we do not build for
        raise OSError(38, f"pivot_root: unknown syscall number on {os.uname().machine}")
    _check(
        int(_libc.syscall(number, _path(new_root), _path(put_old))),
        f"pivot_root({new_root}, {put_old})",
    )


def sethostname(name: str) -> None:
    raw = name.encode()
    _check(_libc.sethostname(raw, len(raw)), f"sethostname({name})")


def prctl(option: int, arg2: int = 0, arg3: int = 0) -> None:
    _check(_libc.prctl(option, arg2, arg3, 0, 0), f"prctl({option})")


def last_capability() -> int:
    try:
        with open("/proc/sys/kernel/cap_last_cap") as file:
            return int(file.read())
    except OSError:
        return 40  # CAP_CHECKPOINT_RESTORE, the last one in Linux 6.x


def drop_bounding_set() -> None:
    """Empties the capability bounding set, so that no exec can ever grant a capability again.
    Needs CAP_SETPCAP; the capabilities held now stay (the bounding set limits only what an
    exec grants), so the release's zygote does this once and its instances inherit it."""
    for capability in range(last_capability() + 1):
        try:
            prctl(PR_CAPBSET_DROP, capability)
        except OSError as exc:
            if exc.errno != 22:  # EINVAL: a capability this kernel does not know
                raise


def drop_privileges(uid: int, gid: int) -> None:
    """Becomes ``uid``/``gid`` with no capability, and no way back: the ambient set is emptied
    (the bounding set already is: ``drop_bounding_set``), securebits are locked and
    no_new_privs is set (setuid binaries and file capabilities confer nothing). Needs
    CAP_SETUID, CAP_SETGID and CAP_SETPCAP in the current user namespace, which the caller has
    until this returns."""
    prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL)
    try:
        os.setgroups([])
    except PermissionError:
        pass  # a namespace an unprivileged node made denies setgroups; it maps no group
    os.setresgid(gid, gid, gid)
    # Securebits first: setting them needs CAP_SETPCAP, which the change of uid takes away.
    prctl(PR_SET_SECUREBITS, SECUREBITS_NOROOT_LOCKED)
    os.setresuid(uid, uid, uid)
    clear_capabilities()  # uid 0 inside a namespace keeps them through setresuid
    prctl(PR_SET_NO_NEW_PRIVS, 1)


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [
        ("effective", ctypes.c_uint32),
        ("permitted", ctypes.c_uint32),
        ("inheritable", ctypes.c_uint32),
    ]


def clear_capabilities() -> None:
    """Empties the effective, permitted and inheritable sets of this thread."""
    number = _SYS_CAPSET.get(os.uname().machine)
    if number is None:  # pragma: no cover - architectures we do not build for
        raise OSError(38, f"capset: unknown syscall number on {os.uname().machine}")
    header = _CapHeader(_LINUX_CAPABILITY_VERSION_3, 0)
    data = (_CapData * 2)()
    _check(int(_libc.syscall(number, ctypes.byref(header), ctypes.byref(data))), "capset")


def is_linux() -> bool:
    return sys.platform.startswith("linux")
