"""A fake cgroup filesystem: plain files and directories in a temporary directory, answering
like the kernel's cgroupfs, for unit tests of ``tierfaas.sandbox.cgroups`` and its callers.

``FakeCgroupFs.hybrid(root)`` lays out the development machines' host (v1 hierarchies plus a
v2 mount at ``root/unified`` with no controllers); ``FakeCgroupFs.unified(root)`` a cgroup v2
host. What the kernel does and the fake copies:

- ``mkdir`` of a cgroup fills it with the interface files of its controllers (v1: of its
  hierarchy; v2: those its parent lists in ``cgroup.subtree_control``);
- ``rmdir`` refuses (``EBUSY``) a cgroup holding processes or child cgroups;
- v2: ``+controller`` in ``cgroup.subtree_control`` needs the controller in
  ``cgroup.controllers`` (else ``ENOENT``), and outside the root neither that nor a join
  goes with processes in the same cgroup (``EBUSY``, the no-internal-processes rule);
  ``cgroup.kill`` kills the subtree; ``cgroup.freeze`` freezes it;
- v1: ``freezer.state`` freezes; ``memory.memsw.limit_in_bytes`` below
  ``memory.limit_in_bytes`` and a CPU quota below 1 ms are ``EINVAL``.

Processes are pids: ``spawn(pid, *cgroups)`` puts one in, ``send_signal`` (a ``Host``'s) kills
it, only at the thaw when its cgroup is frozen. ``events`` records each write, signal, mkdir
and rmdir in order, paths relative to the root.
"""

from __future__ import annotations

import errno
import itertools
import os
import signal
from collections.abc import Iterable
from pathlib import Path

from tierfaas.sandbox.cgroups import CgroupFs

V1_ROOT_FILES = {
    "memory": {"memory.usage_in_bytes": "0\n", "memory.limit_in_bytes": "9223372036854771712\n"},
    "cpu": {"cpu.cfs_period_us": "100000\n", "cpu.cfs_quota_us": "-1\n"},
    "cpuacct": {"cpuacct.usage": "0\n"},
}
V1_FILES = {
    "memory": {
        "memory.limit_in_bytes": "9223372036854771712\n",
        "memory.memsw.limit_in_bytes": "9223372036854771712\n",
        "memory.usage_in_bytes": "0\n",
        "memory.oom_control": "oom_kill_disable 0\nunder_oom 0\noom_kill 0\n",
    },
    "pids": {"pids.max": "max\n", "pids.current": "0\n"},
    "cpu": {"cpu.cfs_period_us": "100000\n", "cpu.cfs_quota_us": "-1\n", "cpu.stat": ""},
    "cpuacct": {"cpuacct.usage": "0\n"},
    "freezer": {"freezer.state": "THAWED\n"},
}
V2_FILES = {
    "memory": {
        "memory.max": "max\n",
        "memory.swap.max": "max\n",
        "memory.current": "0\n",
        "memory.events": "low 0\nhigh 0\nmax 0\noom 0\noom_kill 0\n",
    },
    "pids": {"pids.max": "max\n", "pids.current": "0\n"},
    "cpu": {"cpu.max": "max 100000\n"},
}


def _os_error(code: int, path: Path) -> OSError:
    return OSError(code, os.strerror(code), str(path))


class FakeCgroupFs(CgroupFs):
    """cgroupfs semantics over plain files under ``root`` (see the module docstring)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.v1: dict[Path, tuple[str, ...]] = {}
        """v1 hierarchy mount -> its controllers."""
        self.v2: Path | None = None
        """The unified mount, if any."""
        self.swap = True
        """Whether new cgroups have swap accounting files."""
        self.cgroup_kill = True
        """Whether new v2 cgroups have ``cgroup.kill`` (Linux 5.14+)."""
        self.freeze_delay = 0
        """How many reads of the freezer state answer FREEZING before FROZEN."""
        self.fail: dict[Path, int] = {}
        """path -> errno that a write, mkdir or rmdir of it raises."""
        self.readonly: set[Path] = set()
        self.unkillable: set[int] = set()
        self.forks_when_signalled: set[int] = set()
        """Pids that fork a new such pid into their cgroups when signalled while running."""
        self.alive: set[int] = set()
        self.events: list[tuple[str, ...]] = []
        self._frozen: set[Path] = set()
        self._doomed: set[int] = set()
        self._freezing_reads = 0
        self._next_pid = itertools.count(50_000)

    # -- layouts -----------------------------------------------------------------------------

    @classmethod
    def hybrid(
        cls,
        root: Path,
        controllers: Iterable[str] = ("memory", "pids", "cpu", "cpuacct", "freezer"),
        *,
        comount: bool = False,
    ) -> FakeCgroupFs:
        """v1 hierarchies, one per controller (``comount``: ``cpu,cpuacct`` with ``cpu`` and
        ``cpuacct`` symlinks to it), and a v2 mount at ``root/unified`` without controllers."""
        fake = cls(root)
        names = list(controllers)
        if comount and "cpu" in names and "cpuacct" in names:
            names = [n for n in names if n not in ("cpu", "cpuacct")] + ["cpu,cpuacct"]
        for name in names:
            mount = root / name
            mount.mkdir(parents=True)
            fake.v1[mount] = tuple(name.split(","))
            files = {"cgroup.procs": "", "tasks": "", "notify_on_release": "0\n"}
            for controller in name.split(","):
                files.update(V1_ROOT_FILES.get(controller, {}))
            _fill(mount, files)
            if "," in name:
                for controller in name.split(","):
                    (root / controller).symlink_to(name)
        fake._v2_mount(root / "unified", "")
        return fake

    @classmethod
    def unified(
        cls, root: Path, controllers: str = "cpuset cpu io memory pids", enabled: str = ""
    ) -> FakeCgroupFs:
        """A cgroup v2 host: ``root`` is the unified mount offering ``controllers``, of which
        ``enabled`` are in its ``cgroup.subtree_control`` already."""
        fake = cls(root)
        fake._v2_mount(root, controllers, enabled)
        return fake

    def _v2_mount(self, mount: Path, controllers: str, enabled: str = "") -> None:
        mount.mkdir(parents=True, exist_ok=True)
        self.v2 = mount
        _fill(
            mount,
            {
                "cgroup.controllers": f"{controllers}\n",
                "cgroup.subtree_control": f"{enabled}\n",
                "cgroup.procs": "",
                "cpu.stat": "usage_usec 0\n",
            },
        )

    # -- processes ---------------------------------------------------------------------------

    def spawn(self, pid: int, *cgroups: Path) -> int:
        """Puts process ``pid`` in each of ``cgroups``, as a join would (the v2 rule holds)."""
        self.alive.add(pid)
        for cgroup in cgroups:
            self._join(cgroup / "cgroup.procs", pid)
        return pid

    def procs_of(self, cgroup: Path) -> list[int]:
        return [int(p) for p in (cgroup / "cgroup.procs").read_text().split()]

    def send_signal(self, pid: int, sig: int) -> None:
        self.events.append(("signal", str(pid), str(sig)))
        if pid not in self.alive:
            raise ProcessLookupError(errno.ESRCH, os.strerror(errno.ESRCH))
        if sig != signal.SIGKILL or pid in self.unkillable:
            return
        if self._is_frozen(pid):
            self._doomed.add(pid)
            return
        if pid in self.forks_when_signalled:
            child = next(self._next_pid)
            self.forks_when_signalled.add(child)
            self.spawn(child, *self._cgroups_of(pid))
        self._die(pid)

    def _die(self, pid: int) -> None:
        self.alive.discard(pid)
        self._doomed.discard(pid)
        for procs in self.root.rglob("cgroup.procs"):
            pids = procs.read_text().split()
            if str(pid) in pids:
                procs.write_text("".join(f"{p}\n" for p in pids if p != str(pid)))

    def _cgroups_of(self, pid: int) -> list[Path]:
        return [p.parent for p in self.root.rglob("cgroup.procs") if pid in self.procs_of(p.parent)]

    def _subtree_pids(self, cgroup: Path) -> set[int]:
        return {pid for p in cgroup.rglob("cgroup.procs") for pid in self.procs_of(p.parent)}

    def _is_frozen(self, pid: int) -> bool:
        return any(pid in self._subtree_pids(frozen) for frozen in self._frozen)

    def _thaw(self, cgroup: Path) -> None:
        self._frozen.discard(cgroup)
        for pid in sorted(self._doomed & self._subtree_pids(cgroup)):
            self._die(pid)

    # -- CgroupFs ----------------------------------------------------------------------------

    def read(self, path: Path) -> str:
        frozen = path.name == "freezer.state" and path.parent in self._frozen
        if frozen and self._freezing_reads < self.freeze_delay:
            self._freezing_reads += 1
            return "FREEZING\n"
        return super().read(path)

    def write(self, path: Path, text: str) -> None:
        self.events.append(("write", self._rel(path), text))
        self._maybe_fail(path)
        if not path.is_file():
            raise _os_error(errno.ENOENT, path)
        cgroup, name = path.parent, path.name
        value = text.strip()
        if self._invalid(path, value):
            raise _os_error(errno.EINVAL, path)
        if name == "cgroup.procs":
            self._join(path, int(value) if value != "0" else next(self._next_pid))
        elif name == "cgroup.subtree_control":
            self._subtree_control(cgroup, value.split())
        elif name == "cgroup.kill" and value == "1":
            for pid in sorted(self._subtree_pids(cgroup) - self.unkillable):
                self._die(pid)
        elif name == "cgroup.freeze":
            if value == "1":
                self._frozen.add(cgroup)
            else:
                self._thaw(cgroup)
            path.write_text(f"{value}\n")
            (cgroup / "cgroup.events").write_text(f"populated 1\nfrozen {value}\n")
        elif name == "freezer.state":
            if value == "FROZEN":
                self._frozen.add(cgroup)
                self._freezing_reads = 0
            else:
                self._thaw(cgroup)
            path.write_text(f"{value}\n")
        else:
            path.write_text(f"{value}\n")

    def mkdir(self, path: Path) -> None:
        self.events.append(("mkdir", self._rel(path)))
        self._maybe_fail(path)
        os.mkdir(path)
        if self.v2 is not None and path.is_relative_to(self.v2):
            self._fill_v2(path)
            return
        mount = next(m for m in self.v1 if path.is_relative_to(m))
        files = {"cgroup.procs": "", "tasks": "", "notify_on_release": "0\n"}
        for controller in self.v1[mount]:
            files.update(V1_FILES.get(controller, {}))
        if not self.swap:
            files.pop("memory.memsw.limit_in_bytes", None)
        _fill(path, files)

    def rmdir(self, path: Path) -> None:
        self.events.append(("rmdir", self._rel(path)))
        self._maybe_fail(path)
        if not path.is_dir():
            raise _os_error(errno.ENOENT, path)
        if any(p.is_dir() for p in path.iterdir()) or self.procs_of(path):
            raise _os_error(errno.EBUSY, path)
        for file in path.iterdir():
            file.unlink()
        os.rmdir(path)
        self._frozen.discard(path)

    def writable(self, path: Path) -> bool:
        return path not in self.readonly

    # -- the kernel's rules ------------------------------------------------------------------

    def _fill_v2(self, cgroup: Path) -> None:
        controllers = (cgroup.parent / "cgroup.subtree_control").read_text().split()
        files = {
            "cgroup.procs": "",
            "cgroup.controllers": " ".join(controllers) + "\n",
            "cgroup.subtree_control": "\n",
            "cgroup.events": "populated 0\nfrozen 0\n",
            "cgroup.freeze": "0\n",
            "cpu.stat": "usage_usec 0\nuser_usec 0\nsystem_usec 0\n",
        }
        if self.cgroup_kill:
            files["cgroup.kill"] = ""
        for controller in controllers:
            files.update(V2_FILES.get(controller, {}))
        if not self.swap:
            files.pop("memory.swap.max", None)
        _fill(cgroup, files)

    def _join(self, procs: Path, pid: int) -> None:
        cgroup = procs.parent
        if self._is_v2_inner(cgroup) and (cgroup / "cgroup.subtree_control").read_text().split():
            raise _os_error(errno.EBUSY, procs)
        self.alive.add(pid)
        pids = procs.read_text().split()
        if str(pid) not in pids:
            procs.write_text("".join(f"{p}\n" for p in [*pids, str(pid)]))

    def _subtree_control(self, cgroup: Path, changes: list[str]) -> None:
        available = (cgroup / "cgroup.controllers").read_text().split()
        enabled = (cgroup / "cgroup.subtree_control").read_text().split()
        for change in changes:
            controller = change[1:]
            if controller not in available:
                raise _os_error(errno.ENOENT, cgroup / "cgroup.subtree_control")
            if self._is_v2_inner(cgroup) and self.procs_of(cgroup):
                raise _os_error(errno.EBUSY, cgroup / "cgroup.subtree_control")
            if change.startswith("+") and controller not in enabled:
                enabled.append(controller)
            elif change.startswith("-") and controller in enabled:
                enabled.remove(controller)
        (cgroup / "cgroup.subtree_control").write_text(" ".join(enabled) + "\n")

    def _invalid(self, path: Path, value: str) -> bool:
        """v1 refuses memsw below the memory limit, and a CPU quota under 1 ms."""
        if path.name == "memory.memsw.limit_in_bytes":
            return int(value) < int((path.parent / "memory.limit_in_bytes").read_text())
        return path.name == "cpu.cfs_quota_us" and value != "-1" and int(value) < 1000

    def _is_v2_inner(self, cgroup: Path) -> bool:
        """A v2 cgroup other than the mount's root (which the no-internal-process rule spares)."""
        return self.v2 is not None and cgroup.is_relative_to(self.v2) and cgroup != self.v2

    def _maybe_fail(self, path: Path) -> None:
        if path in self.fail:
            raise _os_error(self.fail[path], path)

    def _rel(self, path: Path) -> str:
        return str(path.relative_to(self.root))


def _fill(directory: Path, files: dict[str, str]) -> None:
    for name, content in files.items():
        (directory / name).write_text(content)
