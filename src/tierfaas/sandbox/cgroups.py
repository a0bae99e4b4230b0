"""One cgroup per function instance, over cgroup v1 or v2 behind one small interface.

Theory of operation
-------------------
A cgroup bounds what a group of processes may use (memory, number of processes, CPU time)
and, unlike a process group or session, cannot be left by its members: ``setsid()`` and a
double fork change a process's session and parent, never its cgroup. So an instance that is
killed as a cgroup leaves nothing behind.

Linux offers two layouts. **cgroup v2** (unified, most production hosts today) is one tree
where each directory is a cgroup with all its controllers; a parent hands a controller down
by writing ``+memory`` into its ``cgroup.subtree_control``, and a cgroup that does so may hold
no processes itself (the *no-internal-processes* rule): our node parent only holds child
cgroups, instances are leaves. v2 kills a whole cgroup atomically with ``cgroup.kill``.
**cgroup v1** (legacy, and the *hybrid* layout of the development machines) has one tree
(*hierarchy*) per controller, mounted at ``<root>/<controller>``: an instance is one directory
of the same name in each hierarchy (memory, pids, cpu, cpuacct, freezer), and a process joins
it by writing to the ``cgroup.procs`` of each. ``detect()`` finds which layout a host offers;
``open_tree()`` then gives the same ``CgroupTree``/``InstanceCgroup`` interface for either.

Every cgroup of a node lives under a **node-owned parent**, ``<mount>/tierfaas/<node_tag>``
(``node_tag`` = ``<nodename>-<pid>``). The node then owns exactly one subtree: ``close()``
removes it whole, nothing else on the host is touched, and an operator sees which node a
cgroup belongs to. A node that died without ``close()`` leaves its parent behind; the next
node to open a tree on the host sweeps every parent whose tag ends in the pid of a process
that no longer exists (this assumes nodes sharing a cgroup mount share a pid namespace, as
they do one per host or one per container with a cgroup namespace).

Limits are written right after ``mkdir``, before any process can join, so no instance runs
unbounded for a moment. Swap is disabled where the host accounts for it (v1
``memory.memsw.limit_in_bytes`` = the memory limit, v2 ``memory.swap.max`` = 0): a memory
limit that spills into swap would only make the hog slow instead of stopping it.

Killing: signalling every pid listed in ``cgroup.procs`` races a fork bomb, which forks new
members between the read and the signals. v2's ``cgroup.kill`` has no such race. On v1 the
freezer hierarchy closes it: freeze the cgroup (no member runs, so none forks), SIGKILL
every member, thaw (the signals take effect as they wake). Either way the kill is repeated
until the cgroup is empty, for at most ``KILL_ROUNDS`` rounds or ``KILL_BUDGET_S`` seconds,
since the caller (the node's event loop) must not block on a process the kernel is slow to
reap; ``remove()`` then says whether the directories are gone, and the caller retries later.

Everything that touches the machine (the cgroup filesystem, signals, the process table, time)
goes through a ``Host``, so unit tests run all of it against a fake cgroup filesystem in a
temporary directory, with no process, privilege or wall clock.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import re
import signal
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from tierfaas.clock import Clock
from tierfaas.procs import start_time

__all__ = [
    "CPU_PERIOD_US",
    "CgroupError",
    "CgroupFs",
    "CgroupTree",
    "Host",
    "InstanceCgroup",
    "Layout",
    "LimitWrite",
    "Limits",
    "detect",
    "limit_writes",
    "open_tree",
]

log = logging.getLogger(__name__)

NEEDED = ("memory", "pids", "cpu")
"""The controllers an instance is limited by; a layout without all three is refused."""
OPTIONAL_V1 = ("cpuacct", "freezer")
"""v1 hierarchies used when mounted: cpuacct measures CPU time, freezer makes kills race-free."""
CPU_PERIOD_US = 100_000
"""The CFS period the CPU quota is a share of (the kernel's default, 100 ms)."""
MIN_CPU_QUOTA_US = 1_000
"""The smallest quota the kernel accepts (1 ms per period, i.e. 0.01 core)."""
KILL_ROUNDS = 200
KILL_BUDGET_S = 0.1
KILL_STEP_S = 0.0005
"""A kill gives up after ``KILL_ROUNDS`` rounds or ``KILL_BUDGET_S`` seconds, pausing
``KILL_STEP_S`` between rounds so the killed processes get a CPU to exit on."""
CLOSE_BUDGET_S = 1.0
"""How long ``close()`` keeps killing and removing before it reports what is still busy."""
BASE = "tierfaas"
"""The directory under each mount that holds the parents of every node on the host."""

_NAME = re.compile(r"[A-Za-z0-9_.-]{1,200}")
_GONE = (errno.ENOENT, errno.ENODEV)
"""What cgroupfs answers about a cgroup removed meanwhile."""
_TAG_PID = re.compile(r"-(\d+)\Z")


class CgroupError(RuntimeError):
    """A cgroup operation failed. The message names the path and the reason (the errno's
    text), and how to fix it where that is known."""


def _failure(doing: str, path: Path, error: OSError, hint: str = "") -> CgroupError:
    reason = error.strerror or str(error)
    if not hint and error.errno in (errno.EACCES, errno.EPERM):
        hint = "run the node as root, or delegate this cgroup to the node's user"
    elif not hint and error.errno == errno.EROFS:
        hint = "the cgroup filesystem is mounted read-only"
    return CgroupError(f"cannot {doing} {path}: {reason}" + (f" ({hint})" if hint else ""))


def _check_name(name: str, what: str) -> None:
    if not _NAME.fullmatch(name) or name in (".", ".."):
        raise CgroupError(
            f"invalid cgroup {what} {name!r}: use 1 to 200 of A-Z a-z 0-9 _ . - "
            "(and not '.' or '..')"
        )


# -- what a cgroup is limited to -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Limits:
    """An instance's limits. ``ValueError`` when one cannot be written to a cgroup."""

    memory_bytes: int
    """Hard memory limit; the kernel OOM-kills a process of the cgroup past it. No swap."""
    pids: int
    """Most processes (and threads) the cgroup may hold at once: forks past it fail."""
    cpu_cores: float | None
    """CPU time as a quota of ``cpu_cores * CPU_PERIOD_US`` per period; None: no quota."""

    def __post_init__(self) -> None:
        if self.memory_bytes <= 0:
            raise ValueError(f"memory_bytes must be positive, not {self.memory_bytes}")
        if self.pids <= 0:
            raise ValueError(f"pids must be positive, not {self.pids}")
        if self.cpu_cores is not None and self.cpu_cores * CPU_PERIOD_US < MIN_CPU_QUOTA_US:
            raise ValueError(f"cpu_cores must be at least 0.01 (or None), not {self.cpu_cores}")

    @property
    def cpu_quota_us(self) -> int | None:
        """Microseconds of CPU per ``CPU_PERIOD_US``, None for no quota."""
        return None if self.cpu_cores is None else round(self.cpu_cores * CPU_PERIOD_US)


@dataclass(frozen=True, slots=True)
class LimitWrite:
    """One value to write into a new cgroup: ``<controller's directory>/<file>``."""

    controller: str
    file: str
    value: str
    optional: bool = False
    """Written only where the file exists (swap accounting is a kernel option)."""


def limit_writes(version: int, limits: Limits) -> list[LimitWrite]:
    """The files a cgroup of ``version`` gets for ``limits``, in the order to write them
    (v1: the memory limit before memsw, which the kernel keeps >= it)."""
    quota = limits.cpu_quota_us
    memory = str(limits.memory_bytes)
    if version == 2:
        return [
            LimitWrite("memory", "memory.max", memory),
            LimitWrite("memory", "memory.swap.max", "0", optional=True),
            LimitWrite("pids", "pids.max", str(limits.pids)),
            LimitWrite("cpu", "cpu.max", f"{'max' if quota is None else quota} {CPU_PERIOD_US}"),
        ]
    return [
        LimitWrite("memory", "memory.limit_in_bytes", memory),
        LimitWrite("memory", "memory.memsw.limit_in_bytes", memory, optional=True),
        LimitWrite("pids", "pids.max", str(limits.pids)),
        LimitWrite("cpu", "cpu.cfs_period_us", str(CPU_PERIOD_US)),
        LimitWrite("cpu", "cpu.cfs_quota_us", str(-1 if quota is None else quota)),
    ]


# -- the host --------------------------------------------------------------------------------


class CgroupFs:
    """The file operations made on the cgroup filesystem. Each raises ``OSError`` as the
    kernel answers; tests substitute a fake that answers like it."""

    def read(self, path: Path) -> str:
        return path.read_text()

    def write(self, path: Path, text: str) -> None:
        # One write(2) of the whole value, to a file that must exist: cgroupfs parses each
        # write on its own and has no files to create.
        fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
        try:
            os.write(fd, text.encode())
        finally:
            os.close(fd)

    def mkdir(self, path: Path) -> None:
        os.mkdir(path)

    def rmdir(self, path: Path) -> None:
        os.rmdir(path)

    def exists(self, path: Path) -> bool:
        return os.path.exists(path)

    def writable(self, path: Path) -> bool:
        return os.access(path, os.W_OK)

    def resolve(self, path: Path) -> Path:
        return Path(os.path.realpath(path))

    def subdirs(self, path: Path) -> list[str]:
        """Names of the directories in ``path`` (child cgroups); [] when it is gone."""
        try:
            with os.scandir(path) as entries:
                return sorted(entry.name for entry in entries if entry.is_dir())
        except (FileNotFoundError, NotADirectoryError):
            return []


def _pid_alive(pid: int) -> bool:
    return start_time(pid) is not None  # a zombie counts as dead: it runs nothing


@dataclass(frozen=True, slots=True)
class Host:
    """How this module touches the machine; each part is replaceable for tests."""

    fs: CgroupFs = field(default_factory=CgroupFs)
    send_signal: Callable[[int, int], None] = os.kill
    pid_alive: Callable[[int], bool] = _pid_alive
    clock: Clock = time.monotonic
    sleep: Callable[[float], None] = time.sleep


# -- the interface ---------------------------------------------------------------------------


class InstanceCgroup(Protocol):
    """One instance's cgroup: its limits are written, processes join it themselves."""

    name: str

    def set_limits(self, limits: Limits) -> None:
        """Writes ``limits`` over the current ones (a prepared instance gets its function's
        limits when it is assigned one; on v1 lowering the memory limit first keeps memsw
        above it). Raises CgroupError."""
        ...

    def join_files(self) -> list[Path]:
        """The ``cgroup.procs`` file(s) a process writes ``0`` into to move itself in: one
        per v1 hierarchy, one on v2. Open them ``O_WRONLY`` as the node and hand the fds to
        the child, which writes ``b"0"`` to each before it runs user code."""
        ...

    def signal_all(self, sig: int) -> None:
        """One pass of ``sig`` to every process in it, without waiting (see _Group)."""
        ...

    def kill(self) -> None:
        """SIGKILLs every process in the cgroup until it is empty, for at most
        ``KILL_ROUNDS`` rounds / ``KILL_BUDGET_S``; never raises for processes already gone."""
        ...

    def oom_kills(self) -> int:
        """How many processes the kernel OOM-killed in it; 0 when that is unreadable."""
        ...

    def memory_bytes(self) -> int:
        """Memory charged to it now."""
        ...

    def cpu_seconds(self) -> float:
        """CPU time its processes used so far, the exited ones included."""
        ...

    def remove(self) -> bool:
        """Removes its directories: True when all are gone (also when they already were),
        False while a process is still in it (kill first; retry later)."""
        ...

    def procs(self) -> list[int]:
        """The pids in it, in this process's pid namespace, sorted."""
        ...


class CgroupTree(Protocol):
    """A node's parent cgroup and the instance cgroups it creates under it."""

    version: int
    parent: str
    """The node parent's path(s), for logs."""

    def create(self, name: str, limits: Limits) -> InstanceCgroup:
        """A new child cgroup ``name`` ([A-Za-z0-9_.-]+) with ``limits`` written; an
        invalid or existing name is a ``CgroupError``."""
        ...

    def close(self) -> None:
        """Kills and removes every cgroup under the parent, then the parent itself;
        ``CgroupError`` when something is still busy after ``CLOSE_BUDGET_S``."""
        ...


# -- detection -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Layout:
    """Where a host's cgroups are: v2's one mount, or v1's hierarchy per controller."""

    version: int
    mount: Path | None = None
    """v2: the unified mount (``/sys/fs/cgroup``, or ``/sys/fs/cgroup/unified`` on hybrid)."""
    mounts: Mapping[str, Path] = field(default_factory=dict, hash=False)
    """v1: controller -> its hierarchy's mount, symlinks resolved (co-mounted controllers
    such as ``cpu,cpuacct`` share one path)."""

    def __str__(self) -> str:
        if self.version == 2:
            return f"cgroup v2 at {self.mount}"
        return "cgroup v1 (" + ", ".join(f"{c} at {p}" for c, p in self.mounts.items()) + ")"


def detect(root: Path = Path("/sys/fs/cgroup"), *, fs: CgroupFs | None = None) -> Layout | str:
    """The cgroup layout ``root`` offers, reading files only: v2 when ``root`` (or
    ``root/unified``) is a unified mount whose ``cgroup.controllers`` lists memory, pids and
    cpu (that file lists what the mount may enable for its subtree, which ``open_tree``
    does) and is writable; else v1 when writable hierarchies for memory, pids and cpu are
    mounted under ``root``; else one line naming what is missing."""
    fs = fs or CgroupFs()
    mounts = (root, root / "unified")  # v2 only, or hybrid
    unified = next((p for p in mounts if fs.exists(p / "cgroup.controllers")), None)
    if unified is None:
        v2_reason = f"no cgroup v2 mount at {root}"
    else:
        try:
            controllers = set(fs.read(unified / "cgroup.controllers").split())
        except OSError:
            controllers = set()
        missing = [c for c in NEEDED if c not in controllers]
        if not missing and fs.writable(unified):
            return Layout(version=2, mount=unified)
        if missing:
            v2_reason = f"cgroup v2 at {unified} has no {_either(missing)} controller"
        else:
            v2_reason = f"cgroup v2 at {unified} is not writable"
    hierarchies = _v1_hierarchies(root, fs)
    missing = [c for c in NEEDED if c not in hierarchies]
    if not missing:
        used = (c for c in (*NEEDED, *OPTIONAL_V1) if c in hierarchies)
        return Layout(version=1, mounts={c: hierarchies[c] for c in used})
    return f"{v2_reason} and no writable v1 hierarchy for {', '.join(missing)}"


def _either(names: list[str]) -> str:
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} or {names[-1]}"


def _v1_hierarchies(root: Path, fs: CgroupFs) -> dict[str, Path]:
    """controller -> writable v1 hierarchy mounted at ``root/<name>``, where ``name`` lists
    the controllers mounted together (``cpu,cpuacct``) or is a symlink to such a mount."""
    found: dict[str, Path] = {}
    for name in fs.subdirs(root):
        mount = root / name
        # `tasks` exists in v1 cgroups only; a v2 mount (or a v2 child cgroup) lacks it.
        if not (fs.exists(mount / "tasks") and fs.exists(mount / "cgroup.procs")):
            continue
        if fs.writable(mount):
            for controller in name.split(","):
                found.setdefault(controller, fs.resolve(mount))
    return found


# -- a cgroup across hierarchies -------------------------------------------------------------


def _unique(paths: Iterable[Path]) -> list[Path]:
    return list(dict.fromkeys(paths))


class _Group:
    """One cgroup: a directory per hierarchy (v1) or one directory (v2), and its subtree.
    ``dirs`` maps each controller to its directory; on v2 they all map to the same one."""

    def __init__(self, version: int, dirs: Mapping[str, Path], host: Host) -> None:
        self._version = version
        self._dirs = dict(dirs)
        self._host = host
        self._fs = host.fs

    def directories(self) -> list[Path]:
        return _unique(self._dirs.values())

    def procs(self) -> list[int]:
        pids: set[int] = set()
        for top in self.directories():
            for cgroup in self._walk(top):
                try:
                    pids.update(int(pid) for pid in self._fs.read(cgroup / "cgroup.procs").split())
                except OSError as error:
                    if error.errno not in _GONE:
                        raise _failure("read", cgroup / "cgroup.procs", error) from error
        return sorted(pids)

    def signal_all(self, sig: int) -> None:
        """One pass: ``sig`` to every process in it now, without waiting (v2: cgroup.kill
        for SIGKILL). Enough when the processes share a pid namespace whose first process is
        among them: the kernel kills the rest of the namespace, late forks included."""
        if sig == signal.SIGKILL and self._kill_with_file():
            return
        for pid in self.procs():
            with contextlib.suppress(ProcessLookupError):
                self._host.send_signal(pid, sig)

    def kill(self) -> None:
        host = self._host
        deadline = host.clock() + KILL_BUDGET_S
        for _ in range(KILL_ROUNDS):
            if not self.procs():
                return
            if not self._kill_with_file():
                self._freeze_signal_thaw(deadline)
            if host.clock() >= deadline:
                break
            host.sleep(KILL_STEP_S)
        left = self.procs()
        if left:
            log.warning("cgroup %s: processes %s still there after the kill", self, left)

    def remove(self) -> bool:
        gone = True
        for top in self.directories():
            for cgroup in reversed(self._walk(top)):  # children before their parent
                try:
                    self._fs.rmdir(cgroup)
                except OSError as error:
                    if error.errno in _GONE:
                        continue
                    if error.errno not in (errno.EBUSY, errno.ENOTEMPTY):
                        raise _failure("remove", cgroup, error) from error
                    gone = False
        return gone

    def __str__(self) -> str:
        return ", ".join(str(d) for d in self.directories())

    def _walk(self, top: Path) -> list[Path]:
        """``top`` and every cgroup under it, parents before children ([] when gone)."""
        if not self._fs.exists(top):
            return []
        found = [top]
        for cgroup in found:  # grows as it goes: a breadth-first walk
            found.extend(cgroup / name for name in self._fs.subdirs(cgroup))
        return found

    def _kill_with_file(self) -> bool:
        """v2's ``cgroup.kill``: SIGKILL to the whole subtree, forks in flight included.
        False where the kernel has none (v1, or v2 before Linux 5.14)."""
        if self._version != 2:
            return False
        path = self.directories()[0] / "cgroup.kill"
        if not self._fs.exists(path):
            return False
        try:
            self._fs.write(path, "1")
        except OSError as error:
            if error.errno not in _GONE:  # else removed meanwhile: nothing left to kill
                raise _failure("kill", path, error) from error
        return True

    def _freeze_signal_thaw(self, deadline: float) -> None:
        frozen = self._freeze(deadline)
        try:
            for pid in self.procs():
                try:
                    self._host.send_signal(pid, signal.SIGKILL)
                except ProcessLookupError:
                    continue
        finally:
            if frozen:
                self._thaw()

    def _freezer(self) -> tuple[Path, str, str] | None:
        """(state file, frozen value, thawed value), or None without a freezer."""
        if self._version == 2:
            path = self.directories()[0] / "cgroup.freeze"
            return (path, "1", "0") if self._fs.exists(path) else None
        freezer = self._dirs.get("freezer")
        if freezer is None or not self._fs.exists(freezer / "freezer.state"):
            return None
        return freezer / "freezer.state", "FROZEN", "THAWED"

    def _freeze(self, deadline: float) -> bool:
        """Freezes the cgroup, waiting (within ``deadline``) until no member runs; False
        when there is no freezer to use."""
        freezer = self._freezer()
        if freezer is None:
            return False
        path, frozen, _ = freezer
        try:
            self._fs.write(path, frozen)
        except OSError as error:
            if error.errno in _GONE:
                return False
            raise _failure("freeze", path, error) from error
        while not self._is_frozen() and self._host.clock() < deadline:
            self._host.sleep(KILL_STEP_S)
        return True

    def _is_frozen(self) -> bool:
        top = self.directories()[0] if self._version == 2 else self._dirs["freezer"]
        try:
            if self._version == 2:
                return "frozen 1" in self._fs.read(top / "cgroup.events").splitlines()
            return self._fs.read(top / "freezer.state").strip() == "FROZEN"
        except OSError:
            return False

    def _thaw(self) -> None:
        freezer = self._freezer()
        if freezer is None:
            return
        path, _, thawed = freezer
        try:
            self._fs.write(path, thawed)
        except OSError as error:
            if error.errno not in _GONE:
                raise _failure("thaw", path, error) from error


class _Instance(_Group):
    def __init__(self, name: str, version: int, dirs: Mapping[str, Path], host: Host) -> None:
        super().__init__(version, dirs, host)
        self.name = name

    def set_limits(self, limits: Limits) -> None:
        _write_limits(self._fs, self._version, self._dirs, limits)

    def join_files(self) -> list[Path]:
        return [d / "cgroup.procs" for d in self.directories()]

    def oom_kills(self) -> int:
        name = "memory.events" if self._version == 2 else "memory.oom_control"
        try:
            text = self._fs.read(self._dirs["memory"] / name)
        except OSError:
            return 0
        return _field(text, "oom_kill") or 0

    def memory_bytes(self) -> int:
        name = "memory.current" if self._version == 2 else "memory.usage_in_bytes"
        return int(self._read("memory", name).strip())

    def cpu_seconds(self) -> float:
        if self._version == 2:
            usage_us = _field(self._read("cpu", "cpu.stat"), "usage_usec")
            if usage_us is None:
                raise CgroupError(f"no usage_usec in {self._dirs['cpu'] / 'cpu.stat'}")
            return usage_us / 1e6
        if "cpuacct" not in self._dirs:
            raise CgroupError("no cpuacct hierarchy is mounted: CPU time is not measured")
        return int(self._read("cpuacct", "cpuacct.usage").strip()) / 1e9

    def _read(self, controller: str, name: str) -> str:
        path = self._dirs[controller] / name
        try:
            return self._fs.read(path)
        except OSError as error:
            raise _failure("read", path, error) from error


def _field(text: str, key: str) -> int | None:
    """The value of ``key N`` lines (memory.events, memory.oom_control, cpu.stat)."""
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0] == key and parts[1].isdigit():
            return int(parts[1])
    return None


# -- the node's tree -------------------------------------------------------------------------


def _write_limits(fs: CgroupFs, version: int, dirs: Mapping[str, Path], limits: Limits) -> None:
    for write in limit_writes(version, limits):
        path = dirs[write.controller] / write.file
        if write.optional and not fs.exists(path):
            continue
        try:
            fs.write(path, write.value)
        except OSError as error:
            raise _failure(f"write {write.value!r} to", path, error) from error


class _Tree:
    def __init__(self, version: int, parents: Mapping[str, Path], host: Host) -> None:
        self.version = version
        self._parents = dict(parents)
        self._host = host
        self._group = _Group(version, parents, host)
        self.parent = str(self._group)
        self._closed = False

    def create(self, name: str, limits: Limits) -> InstanceCgroup:
        _check_name(name, "name")
        if self._closed:
            raise CgroupError(f"cannot create cgroup {name!r}: the tree {self.parent} is closed")
        fs = self._host.fs
        dirs = {controller: parent / name for controller, parent in self._parents.items()}
        made: list[Path] = []
        try:
            for path in _unique(dirs.values()):
                try:
                    fs.mkdir(path)
                except FileExistsError:
                    raise CgroupError(f"cgroup {name!r} already exists: {path}") from None
                except OSError as error:
                    raise _failure("create", path, error) from error
                made.append(path)
            _write_limits(fs, self.version, dirs, limits)
        except BaseException:
            for path in reversed(made):
                try:
                    fs.rmdir(path)
                except OSError:
                    log.warning("could not remove %s after a failed create", path)
            raise
        return _Instance(name, self.version, dirs, self._host)

    def close(self) -> None:
        self._closed = True
        host = self._host
        deadline = host.clock() + CLOSE_BUDGET_S
        while True:
            self._group.kill()
            if self._group.remove():
                return
            if host.clock() >= deadline:
                raise CgroupError(
                    f"cannot remove {self.parent}: still busy after {CLOSE_BUDGET_S:g} s of "
                    f"kills (processes {self._group.procs()}); the next node started on "
                    "this host removes it once this process has exited"
                )
            host.sleep(0.01)


def open_tree(node_tag: str, layout: Layout, *, host: Host | None = None) -> CgroupTree:
    """Creates the node-owned parent ``<mount>/tierfaas/<node_tag>`` (v1: in each hierarchy
    used; v2: under the unified mount, with memory, pids and cpu enabled for its children
    and for those of ``tierfaas`` and of the mount), after sweeping stale sibling parents:
    those whose tag ends in ``-<pid>`` of a process that no longer exists (their processes
    are killed, their directories removed depth-first). ``CgroupError`` when a directory
    cannot be made, the controllers cannot be enabled, or ``node_tag`` is taken."""
    host = host or Host()
    _check_name(node_tag, "node tag")
    bases = _bases(layout)
    for base in _unique(bases.values()):
        if layout.version == 2:
            _enable_controllers(base.parent, host.fs)
        try:
            host.fs.mkdir(base)
        except FileExistsError:
            pass
        except OSError as error:
            raise _failure("create", base, error) from error
        if layout.version == 2:
            _enable_controllers(base, host.fs)
    _sweep_stale(layout.version, bases, node_tag, host)
    parents = {controller: base / node_tag for controller, base in bases.items()}
    tree = _Tree(layout.version, parents, host)
    made: list[Path] = []
    try:
        for parent in _unique(parents.values()):
            try:
                host.fs.mkdir(parent)
            except FileExistsError:
                raise CgroupError(
                    f"cgroup parent {parent} already exists: another tree of this process "
                    "holds it (close that one first), or a dead process with this pid left "
                    "it (remove it)"
                ) from None
            except OSError as error:
                raise _failure("create", parent, error) from error
            made.append(parent)
            if layout.version == 2:
                _enable_controllers(parent, host.fs)
    except BaseException:
        for parent in reversed(made):
            try:
                host.fs.rmdir(parent)
            except OSError:
                log.warning("could not remove %s after a failed open", parent)
        raise
    return tree


def _bases(layout: Layout) -> dict[str, Path]:
    """controller -> ``<its mount>/tierfaas``."""
    if layout.version == 2:
        if layout.mount is None:
            raise CgroupError("a cgroup v2 layout needs its mount")
        return {controller: layout.mount / BASE for controller in NEEDED}
    if layout.version == 1:
        missing = [c for c in NEEDED if c not in layout.mounts]
        if missing:
            raise CgroupError(f"a cgroup v1 layout needs hierarchies for {', '.join(missing)}")
        return {controller: mount / BASE for controller, mount in layout.mounts.items()}
    raise CgroupError(f"unknown cgroup version {layout.version}")


def _enable_controllers(cgroup: Path, fs: CgroupFs) -> None:
    """Hands memory, pids and cpu down to ``cgroup``'s children (v2), writing only the ones
    not enabled yet: a cgroup that holds processes refuses any write here."""
    path = cgroup / "cgroup.subtree_control"
    try:
        enabled = set(fs.read(path).split())
    except OSError as error:
        raise _failure("read", path, error) from error
    missing = [c for c in NEEDED if c not in enabled]
    if not missing:
        return
    value = " ".join(f"+{c}" for c in missing)
    try:
        fs.write(path, value)
    except OSError as error:
        hint = ""
        if error.errno == errno.EBUSY:
            hint = (
                f"{cgroup} holds processes, and a v2 cgroup that hands controllers to its "
                "children may not (no-internal-processes rule): move them to a leaf cgroup"
            )
        elif error.errno == errno.ENOENT:
            hint = f"{cgroup}'s parent does not hand these controllers down to it"
        raise _failure(f"write {value!r} to", path, error, hint) from error


def _sweep_stale(version: int, bases: Mapping[str, Path], node_tag: str, host: Host) -> None:
    """Removes the parents left by nodes that died without closing their tree."""
    tags: set[str] = set()
    for base in _unique(bases.values()):
        tags.update(host.fs.subdirs(base))
    for tag in sorted(tags - {node_tag}):
        pid = _TAG_PID.search(tag)
        if pid is None or host.pid_alive(int(pid.group(1))):
            continue
        stale = _Group(version, {c: base / tag for c, base in bases.items()}, host)
        try:
            stale.kill()
            if stale.remove():
                log.info("removed the stale cgroup parent %s", stale)
            else:
                log.warning("stale cgroup parent %s is still busy; left for later", stale)
        except CgroupError as error:
            log.warning("could not sweep the stale cgroup parent %s: %s", stale, error)
