"""Entering the sandbox: run inside the zygote's launcher, the zygote and each new instance.

A release's sandbox is built once, when its zygote starts (``enter_release``):

    node ── launcher L (fresh interpreter, the node's user)
             │ unshare(user, mount, pid, ipc, uts, cgroup); a short-lived helper that stayed
             │ outside writes the uid/gid maps (identity.py)
             └─ zygote Z: pid 1 of the release's pid namespace; builds the root (filesystem.py)
                with the node's uid, pivots into it, becomes uid 0 inside, empties the
                capability bounding set, imports the runtime and the release's preload modules

and each instance costs two forks of the warm zygote, side by side (``InstanceForker``):

    Z ── enters fresh pid, mount, ipc, uts and cgroup namespaces, mounts the instance's /tmp
    │    and /dev/shm, forks both, then returns to its own namespaces (setns)
    ├─ R: pid 1 of the instance's pid namespace: joins the cgroup, drops every privilege and
    │     reaps orphans; the zygote kills it when the instance ends, which ends the namespace
    └─ I: pid 2, the instance: joins the cgroup and mounts its /proc (``settle``), then takes
          its function's hostname, network and uid with no capability (``become_function``)
          and runs process/child.py

A prepared instance (protocol.PREPARE) is the same pair forked ahead: it settles and then
waits for its function. Whatever a handler starts lives in R's pid namespace and in the
instance's cgroup: it cannot see or signal the node, the zygote or another instance, and it
dies with the instance. The kernel kills a pid namespace with its first process, so the
zygote's death (the node's, by PR_SET_PDEATHSIG) takes every instance with it.
"""

from __future__ import annotations

import contextlib
import os
import signal
from dataclasses import dataclass, field
from typing import Any, NoReturn

from tierfaas.procs import set_parent_death_signal
from tierfaas.sandbox import linux as k
from tierfaas.sandbox.filesystem import Bind, Mask, MountOp, Symlink

_ST_TO_MS = {  # statvfs f_flag bits -> mount flags a bind must keep (the kernel locks them)
    os.ST_RDONLY: k.MS_RDONLY,
    os.ST_NOSUID: k.MS_NOSUID,
    os.ST_NODEV: k.MS_NODEV,
    os.ST_NOEXEC: k.MS_NOEXEC,
    os.ST_NOATIME: k.MS_NOATIME,
    os.ST_NODIRATIME: k.MS_NODIRATIME,
    os.ST_RELATIME: k.MS_RELATIME,
}
_DEVICES = ("null", "zero", "full", "random", "urandom", "tty")
_STAGE = "/tmp"  # where the new root is built, in the zygote's private mount table
SECRETS_STAGE = "/run/tierfaas/secrets"
"""Where the zygote binds the node's secrets folder; each instance binds its function's part
at ``SECRETS_MOUNT`` and unmounts this, so no instance sees another function's folder."""
SECRETS_MOUNT = "/var/secrets"


class SandboxError(RuntimeError):
    pass


@dataclass(frozen=True, slots=True)
class ReleaseSandbox:
    """Everything the launcher needs to build a release's sandbox (sent as msgpack)."""

    uid_map: str
    privileged: bool  # the node is root: it may map a range and the zygote may setgroups
    ops: list[MountOp] = field(default_factory=list)
    hostname: str = "tierfaas"
    secrets_dir: str = ""
    """The node's private folder of its functions' secrets (tierfaas.secrets.delivery), bound
    at ``SECRETS_STAGE`` for the instances to take their function's part; "" for none."""

    def to_wire(self) -> dict[str, Any]:
        return {
            "uid_map": self.uid_map,
            "privileged": self.privileged,
            "hostname": self.hostname,
            "ops": [_op_to_wire(op) for op in self.ops],
            "secrets_dir": self.secrets_dir,
        }

    @staticmethod
    def from_wire(data: dict[str, Any]) -> ReleaseSandbox:
        return ReleaseSandbox(
            uid_map=data["uid_map"],
            privileged=data["privileged"],
            hostname=data["hostname"],
            ops=[_op_from_wire(op) for op in data["ops"]],
            secrets_dir=str(data.get("secrets_dir") or ""),
        )


def _op_to_wire(op: MountOp) -> list[Any]:
    if isinstance(op, Bind):
        return ["bind", op.path, op.is_dir]
    if isinstance(op, Symlink):
        return ["symlink", op.path, op.target]
    return ["mask", op.path, op.is_dir]


def _op_from_wire(raw: list[Any]) -> MountOp:
    kind, path, extra = raw
    if kind == "bind":
        return Bind(path, bool(extra))
    if kind == "symlink":
        return Symlink(path, str(extra))
    return Mask(path, bool(extra))


# -- the release: launcher and zygote ---------------------------------------------------------


def enter_release(plan: ReleaseSandbox, launcher_fds: list[int]) -> None:
    """Run by the launcher. Returns in the zygote (pid 1 inside the new namespaces, in the new
    root); the launcher itself never returns: it closes ``launcher_fds`` (the zygote's, not its
    own), waits for the zygote and exits as it did."""
    ready_r, ready_w = os.pipe()
    helper = os.fork()
    if helper == 0:  # stays in the node's user namespace, where it may write the maps
        os.close(ready_w)
        _write_maps(os.getppid(), plan, ready_r)
    os.close(ready_r)
    try:
        k.unshare(
            k.CLONE_NEWUSER
            | k.CLONE_NEWNS
            | k.CLONE_NEWPID
            | k.CLONE_NEWIPC
            | k.CLONE_NEWUTS
            | k.CLONE_NEWCGROUP
        )
    finally:
        os.write(ready_w, b"u")
        os.close(ready_w)
    _, status = os.waitpid(helper, 0)
    if status != 0:
        raise SandboxError("the uid and gid maps of the release's user namespace were refused")
    zygote = os.fork()
    if zygote == 0:
        set_parent_death_signal(signal.SIGKILL)
        _build_root(plan)
        k.drop_bounding_set()  # once here, for every instance it forks
        set_parent_death_signal(signal.SIGKILL)  # a change of uid clears it
        return
    for fd in launcher_fds:
        os.close(fd)
    _mirror(zygote)


def _write_maps(pid: int, plan: ReleaseSandbox, ready: int) -> None:
    try:
        os.read(ready, 1)
        if not plan.privileged:  # an unprivileged gid_map needs setgroups denied first
            _write(f"/proc/{pid}/setgroups", "deny")
        _write(f"/proc/{pid}/uid_map", plan.uid_map)
        _write(f"/proc/{pid}/gid_map", plan.uid_map)
    except BaseException:
        os._exit(1)
    os._exit(0)


def _write(path: str, text: str) -> None:
    with open(path, "w") as file:
        file.write(text)


def _mirror(pid: int) -> NoReturn:
    """Waits for ``pid`` and ends this process the way it ended (a pid namespace's first
    process cannot kill itself with a signal: it exits with 128 + the signal instead)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    while True:
        try:
            _, status = os.waitpid(pid, 0)
            break
        except ChildProcessError:
            os._exit(1)
    code = os.WEXITSTATUS(status) if os.WIFEXITED(status) else 1
    sig = os.WTERMSIG(status) if os.WIFSIGNALED(status) else code - 128 if code > 128 else 0
    if sig:
        signal.signal(sig, signal.SIG_DFL)
        os.kill(os.getpid(), sig)
    os._exit(code)


def _build_root(plan: ReleaseSandbox) -> None:
    """Builds the release's root on a tmpfs over ``/tmp`` and pivots into it. The sources are
    opened first, with the node's uid (a Python under a mode-700 home is reachable only so);
    then this process becomes uid 0 of its namespace, which may create files on the tmpfs its
    namespace owns (the node's uid, unmapped in there, may not), and binds each source from
    its open descriptor."""
    k.mount(None, "/", None, k.MS_REC | k.MS_PRIVATE)
    sources = {
        op.path: os.open(op.path, os.O_PATH | os.O_CLOEXEC)
        for op in plan.ops
        if isinstance(op, Bind)
    }
    null = os.open("/dev/null", os.O_PATH | os.O_CLOEXEC)
    secrets = os.open(plan.secrets_dir, os.O_PATH | os.O_CLOEXEC) if plan.secrets_dir else None
    if plan.privileged:
        os.setgroups([])
    os.setresgid(0, 0, 0)
    os.setresuid(0, 0, 0)
    new = _STAGE
    k.mount("tmpfs", new, "tmpfs", k.MS_NOSUID | k.MS_NODEV, "size=1m,mode=0755")
    # /tmp first: a release or a virtualenv that lives under /tmp is bound inside it.
    os.mkdir(f"{new}/tmp")
    k.mount("tmpfs", f"{new}/tmp", "tmpfs", k.MS_NOSUID | k.MS_NODEV, "size=1m,mode=1777")
    for op in plan.ops:
        _apply(op, new, sources.get(op.path, null))
    for fd in (*sources.values(), null):
        os.close(fd)
    if secrets is not None:
        os.makedirs(new + SECRETS_MOUNT)
        os.makedirs(new + SECRETS_STAGE)
        _bind_read_only(secrets, new + SECRETS_STAGE)
        os.close(secrets)
    _mount_dirs(new)
    os.chdir(new)
    k.pivot_root(".", ".")  # the old root stacks under the new one; detach it
    k.umount2(".", k.MNT_DETACH)
    os.chdir("/")
    k.mount(None, "/", None, k.MS_REMOUNT | k.MS_BIND | k.MS_RDONLY | k.MS_NOSUID | k.MS_NODEV)
    k.sethostname(plan.hostname)


def _apply(op: MountOp, new: str, source: int) -> None:
    target = new + op.path
    os.makedirs(os.path.dirname(target), exist_ok=True)
    if isinstance(op, Symlink):
        with contextlib.suppress(FileExistsError):
            os.symlink(op.target, target)
        return
    _mount_point(target, op.is_dir)
    if isinstance(op, Mask) and op.is_dir:
        k.mount("tmpfs", target, "tmpfs", k.MS_RDONLY | k.MS_NOSUID | k.MS_NODEV, "size=4k,mode=0")
        return
    _bind_read_only(source, target)


def _mount_point(target: str, is_dir: bool) -> None:
    if is_dir:
        os.makedirs(target, exist_ok=True)
    elif not os.path.exists(target):
        os.close(os.open(target, os.O_CREAT | os.O_WRONLY, 0o644))


def _bind_read_only(source: int, target: str, recursive: bool = False) -> None:
    k.mount(f"/proc/self/fd/{source}", target, None, k.MS_BIND | (k.MS_REC if recursive else 0))
    kept = os.fstatvfs(source).f_flag
    flags = k.MS_BIND | k.MS_REMOUNT | k.MS_RDONLY | k.MS_NOSUID
    for st_bit, ms_bit in _ST_TO_MS.items():
        if kept & st_bit:
            flags |= ms_bit
    k.mount(None, target, None, flags)


def _mount_dirs(new: str) -> None:
    """/proc and /dev of the zygote (each instance mounts its own /proc and /dev/shm)."""
    os.mkdir(f"{new}/proc")
    k.mount("proc", f"{new}/proc", "proc", k.MS_NOSUID | k.MS_NODEV | k.MS_NOEXEC)
    dev = f"{new}/dev"
    os.makedirs(dev, exist_ok=True)
    k.mount("tmpfs", dev, "tmpfs", k.MS_NOSUID | k.MS_NOEXEC, "size=64k,mode=0755")
    for name in _DEVICES:
        if os.path.exists(f"/dev/{name}"):
            _mount_point(f"{dev}/{name}", False)
            k.mount(f"/dev/{name}", f"{dev}/{name}", None, k.MS_BIND)
    for link, target in (
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ):
        os.symlink(target, f"{dev}/{link}")
    os.mkdir(f"{dev}/shm")
    os.chmod(f"{dev}/shm", 0o1777)
    k.mount(None, dev, None, k.MS_REMOUNT | k.MS_RDONLY | k.MS_NOSUID | k.MS_NOEXEC)


# -- an instance ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class InstanceSandbox:
    uid: int  # inside the release's user namespace
    network: str  # "host" or "none"
    tmp_mb: int
    hostname: str
    tmp_binds: tuple[str, ...] = ()  # the release's binds under /tmp (see _private_tmp)
    secrets: str | None = None
    """The function whose secrets folder to bind at ``SECRETS_MOUNT`` ("" for none); None when
    the release's sandbox has no secrets folder at all."""


_NAMESPACES = {  # /proc/self/ns entry -> its clone flag
    "pid": k.CLONE_NEWPID,
    "mnt": k.CLONE_NEWNS,
    "ipc": k.CLONE_NEWIPC,
    "uts": k.CLONE_NEWUTS,
    "cgroup": k.CLONE_NEWCGROUP,
}


class InstanceForker:
    """Forks instances into namespaces of their own, from the zygote.

    Each costs two forks of the zygote, both made here and not in a chain (a fork of a warm
    interpreter is cheap, but its child spends a millisecond or two copying pages on write
    before it runs): the zygote enters fresh namespaces, forks the reaper (pid 1 of the new pid
    namespace: it reaps orphans, and the namespace ends with it) and the instance (pid 2), then
    returns to its own namespaces. The instance is the zygote's child, so the zygote sees how
    it exits; when it does, the zygote kills its reaper, and the kernel the rest."""

    def __init__(self) -> None:
        self.own = {
            name: os.open(f"/proc/self/ns/{name}", os.O_RDONLY | os.O_CLOEXEC)
            for name in _NAMESPACES
        }
        self.zygote = os.getpid()

    def fork(self, box: InstanceSandbox, cgroup_fds: list[int]) -> tuple[int, int]:
        """(reaper pid, instance pid) in the zygote; (0, 0) in the instance, which must then
        call ``finish_instance``. The reaper never returns."""
        flags = k.CLONE_NEWPID | k.CLONE_NEWNS | k.CLONE_NEWIPC | k.CLONE_NEWUTS | k.CLONE_NEWCGROUP
        k.unshare(flags)
        try:
            _private_tmp(box)
            size = f"size={box.tmp_mb}m,mode=1777"
            k.mount("tmpfs", "/dev/shm", "tmpfs", k.MS_NOSUID | k.MS_NODEV | k.MS_NOEXEC, size)
            reaper = os.fork()
            if reaper == 0:
                _reap_forever(box, cgroup_fds)
            try:
                instance = os.fork()
            except OSError:
                os.kill(reaper, signal.SIGKILL)
                raise
            if instance == 0:
                return 0, 0
            return reaper, instance
        finally:
            if os.getpid() == self.zygote:
                self._restore(flags)

    def _restore(self, flags: int) -> None:
        for name, flag in _NAMESPACES.items():
            if flags & flag:
                k.setns(self.own[name], flag)


def finish_instance(box: InstanceSandbox, cgroup_fds: list[int], keep_fds: list[int]) -> None:
    """In the instance (pid 2 of its namespace), before it runs anything of the function's:
    joins its cgroup, mounts its /proc, and takes its function's identity
    (``become_function``)."""
    settle(cgroup_fds)
    become_function(box, keep_fds)


def settle(cgroup_fds: list[int]) -> None:
    """What an instance does before it knows its function: joins its cgroup (the kernel's
    move of a process between cgroups can wait a few milliseconds for an RCU grace period,
    which is why a prepared instance does it ahead of its first call) and mounts its /proc."""
    _join(cgroup_fds)
    k.mount("proc", "/proc", "proc", k.MS_NOSUID | k.MS_NODEV | k.MS_NOEXEC)


def become_function(box: InstanceSandbox, keep_fds: list[int]) -> None:
    """Takes the function's hostname and network, closes every descriptor but ``keep_fds``
    (and 0, 1, 2) and drops every privilege."""
    k.sethostname(box.hostname)
    if box.secrets is not None:
        _mount_secrets(box.secrets)
    if box.network == "none":
        # Here, not in the zygote, which could not return to the host's network namespace
        # (owned by the host's user namespace). A new one holds a loopback device, down.
        k.unshare(k.CLONE_NEWNET)
    _close_all_but(keep_fds)
    k.drop_privileges(box.uid, box.uid)
    set_parent_death_signal(signal.SIGKILL)


def _mount_secrets(function: str) -> None:
    """Binds ``function``'s secrets folder at ``SECRETS_MOUNT`` (read-only; the folder's later
    changes show through, so a new version is read on the next open) and takes the staged
    folder of every function away: unmounted in this instance's mount namespace, or, should
    the kernel refuse, covered by an empty read-only tmpfs."""
    if function:
        fd = os.open(f"{SECRETS_STAGE}/{function}", os.O_PATH | os.O_CLOEXEC | os.O_DIRECTORY)
        try:
            _bind_read_only(fd, SECRETS_MOUNT)
        finally:
            os.close(fd)
    try:
        k.umount2(SECRETS_STAGE, k.MNT_DETACH)
    except OSError:
        flags = k.MS_RDONLY | k.MS_NOSUID | k.MS_NODEV
        k.mount("tmpfs", SECRETS_STAGE, "tmpfs", flags, "size=4k,mode=0")


def _join(cgroup_fds: list[int]) -> None:
    for fd in cgroup_fds:
        os.write(fd, b"0")  # the kernel reads "0" as "the writer": it moves in, and all it forks
        os.close(fd)


def _reap_forever(box: InstanceSandbox, cgroup_fds: list[int]) -> NoReturn:
    """pid 1 of an instance's namespace: reaps what the instance orphans. The zygote kills it
    when the instance ends, and the kernel then kills whatever is left in the namespace."""
    try:
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGCHLD})
        signal.set_wakeup_fd(-1)
        for number in (signal.SIGINT, signal.SIGTERM, signal.SIGCHLD):
            signal.signal(number, signal.SIG_DFL)
        set_parent_death_signal(signal.SIGKILL)
        _join(cgroup_fds)
        _close_all_but([])
        k.drop_privileges(box.uid, box.uid)
        set_parent_death_signal(signal.SIGKILL)
        k.prctl(k.PR_SET_DUMPABLE, 0)  # the instance, of the same uid, cannot ptrace it
    except BaseException:
        os._exit(1)
    while True:
        signal.sigwait({signal.SIGCHLD})
        with contextlib.suppress(ChildProcessError):
            while os.waitpid(-1, os.WNOHANG)[0] > 0:
                pass


def _private_tmp(box: InstanceSandbox) -> None:
    """A fresh, size-bounded tmpfs on /tmp, with the release's binds that live under /tmp
    (``box.tmp_binds``) carried over into it."""
    kept = [(path, os.open(path, os.O_PATH | os.O_CLOEXEC)) for path in box.tmp_binds]
    k.mount("tmpfs", "/tmp", "tmpfs", k.MS_NOSUID | k.MS_NODEV, f"size={box.tmp_mb}m,mode=1777")
    for path, fd in kept:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        _mount_point(path, os.path.isdir(f"/proc/self/fd/{fd}"))
        _bind_read_only(fd, path, recursive=True)  # with the masks inside it
        os.close(fd)


def _close_all_but(keep: list[int]) -> None:
    low = 3
    for fd in sorted(keep):
        if fd >= low:
            os.closerange(low, fd)
            low = fd + 1
    os.closerange(low, 1 << 20)
