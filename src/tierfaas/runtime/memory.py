"""The kernel's numbers on memory, and what the node makes of them.

**Capacity**: what the node may give its instances unless ``--memory-budget-mb`` says. It is
the host's ``MemTotal`` (``/proc/meminfo``), or the node's own cgroup limit when that is lower
(v2 ``memory.max``, v1 ``memory.limit_in_bytes``, of the node's cgroup and each ancestor up
to the mount: a container's or a Kubernetes pod's limit), minus a reserve for the node
itself, its zygote, page cache and the kernel (``--memory-reserve-mb``, default
``max(256 MiB, 10 %)`` of the capacity). ``MemTotal`` rather than ``MemAvailable``: the budget
is a limit for the node's whole life, not a snapshot of what other processes leave free now;
what they take shows as pressure instead.

**Use**: an instance's measured use is its cgroup's memory usage when sandboxed (private
pages and the page cache it caused; the pages it shares with the zygote since the fork are
charged to the zygote), else its process's PSS (``/proc/PID/smaps_rollup``: shared pages
split between the processes sharing them, so a sum over instances counts them once).

**Pressure**: PSI (``/proc/pressure/memory``, or the node's cgroup's ``memory.pressure`` on
v2, which covers its instances below it) gives ``some avg10``, the share of the last 10 s in
which some task stalled waiting for memory (reclaim, refaults). It rises while the kernel
struggles, before its OOM killer picks a victim, so the node evicts idle instances when it
passes ``--memory-pressure-pct``, or when the measured total passes the budget
(``relief``).

The parsing and the decisions are pure functions of the files' text; the ``read_*`` functions
only read the files (blocking: the node calls them off its event loop).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path

MiB = 1024 * 1024
MIN_RESERVE_MB = 256
RESERVE_SHARE = 0.10
UNLIMITED_BYTES = 1 << 60  # v1 writes "no limit" as PAGE_COUNTER_MAX pages (~2**63 bytes)
PRESSURE_RELIEF_SHARE = 0.10  # under pressure, evict this share of the instances' use per check


# -- capacity --------------------------------------------------------------------------------


def meminfo_total_bytes(meminfo: str) -> int | None:
    """``MemTotal`` of ``/proc/meminfo`` text, in bytes."""
    for line in meminfo.splitlines():
        name, _, rest = line.partition(":")
        if name == "MemTotal":
            fields = rest.split()
            if fields and fields[0].isdigit():
                return int(fields[0]) * 1024  # the kernel writes kB
    return None


@dataclass(frozen=True, slots=True)
class OwnCgroups:
    """The node's cgroups from ``/proc/self/cgroup``: v2's (``0::PATH``) and v1's memory
    hierarchy's (``N:...memory...:PATH``), each a path from its mount, or None."""

    v2: str | None
    v1_memory: str | None


def own_cgroups(proc_self_cgroup: str) -> OwnCgroups:
    v2 = v1 = None
    for line in proc_self_cgroup.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        number, controllers, path = parts
        if number == "0" and controllers == "":
            v2 = path
        elif "memory" in controllers.split(","):
            v1 = path
    return OwnCgroups(v2, v1)


def limit_bytes(text: str) -> int | None:
    """A memory limit file's value (v2 ``memory.max``, v1 ``memory.limit_in_bytes``); None
    when it sets no limit (``max``, or v1's huge number) or is not a number."""
    value = text.strip()
    if not value.isdigit():
        return None
    number = int(value)
    return None if number >= UNLIMITED_BYTES else number


def default_reserve_mb(capacity_mb: int) -> int:
    """The node's own reserve out of ``capacity_mb``: ``max(256 MiB, 10 %)``."""
    return max(MIN_RESERVE_MB, int(capacity_mb * RESERVE_SHARE))


@dataclass(frozen=True, slots=True)
class Capacity:
    """What the node found: the host's memory and its own cgroup's limit (None: none)."""

    total_bytes: int
    cgroup_limit_bytes: int | None = None

    @property
    def capacity_mb(self) -> int:
        total = self.total_bytes
        if self.cgroup_limit_bytes is not None:
            total = min(total, self.cgroup_limit_bytes)
        return total // MiB

    @property
    def source(self) -> str:
        limit = self.cgroup_limit_bytes
        return "cgroup" if limit is not None and limit < self.total_bytes else "host"


@dataclass(frozen=True, slots=True)
class AutoBudget:
    budget_mb: int
    capacity_mb: int
    reserve_mb: int
    source: str  # "host" (MemTotal) or "cgroup" (the node's cgroup limit)

    def __str__(self) -> str:
        return (
            f"{self.budget_mb} MiB: {self.capacity_mb} MiB ({self.source}) "
            f"- {self.reserve_mb} MiB reserve"
        )


def auto_budget(capacity: Capacity, reserve_mb: int | None) -> AutoBudget:
    """The instances' budget from what the node found, less ``reserve_mb`` (None: the
    default reserve). At least 1 MiB: a node in a cgroup smaller than its reserve still
    starts, and refuses every function that needs more (``memory_budget_mb`` error)."""
    capacity_mb = capacity.capacity_mb
    reserve = default_reserve_mb(capacity_mb) if reserve_mb is None else reserve_mb
    return AutoBudget(max(1, capacity_mb - reserve), capacity_mb, reserve, capacity.source)


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:
        return None


def _limits_up(mount: Path, path: str, file: str) -> list[int]:
    """The limits set in ``file`` of the cgroup at ``path`` below ``mount`` and of each
    ancestor up to the mount. When ``path`` is not below this mount (a container that sees
    only its own cgroup, mounted as the root), the mount's own limit alone."""
    start = mount / path.strip("/")
    if not start.is_dir():
        start = mount
    found = []
    for directory in (start, *start.parents):
        text = _read(directory / file)
        value = None if text is None else limit_bytes(text)
        if value is not None:
            found.append(value)
        if directory == mount:
            break
    return found


def read_capacity(
    cgroup_root: Path = Path("/sys/fs/cgroup"), proc: Path = Path("/proc")
) -> Capacity:
    """The host's memory and the lowest limit of the node's cgroups (blocking: file reads).
    Raises OSError when ``/proc/meminfo`` cannot be read."""
    total = meminfo_total_bytes((proc / "meminfo").read_text())
    if total is None:
        raise OSError(f"no MemTotal in {proc / 'meminfo'}")
    own = own_cgroups(_read(proc / "self" / "cgroup") or "")
    limits: list[int] = []
    if own.v2 is not None:
        for mount in (cgroup_root, cgroup_root / "unified"):
            if (mount / "cgroup.controllers").exists():
                limits += _limits_up(mount, own.v2, "memory.max")
                break
    if own.v1_memory is not None:
        limits += _limits_up(cgroup_root / "memory", own.v1_memory, "memory.limit_in_bytes")
    return Capacity(total, min(limits) if limits else None)


# -- use ---------------------------------------------------------------------------------------


def pss_bytes(smaps_rollup: str) -> int | None:
    """``Pss`` of ``/proc/PID/smaps_rollup`` text, in bytes."""
    for line in smaps_rollup.splitlines():
        name, _, rest = line.partition(":")
        if name == "Pss":
            fields = rest.split()
            if fields and fields[0].isdigit():
                return int(fields[0]) * 1024
    return None


def read_pss(pid: int, proc: Path = Path("/proc")) -> int | None:
    """The PSS of process ``pid`` (None: gone, or a kernel before 4.14 without the file)."""
    text = _read(proc / str(pid) / "smaps_rollup")
    return None if text is None else pss_bytes(text)


# -- pressure ----------------------------------------------------------------------------------


def some_avg10(pressure: str) -> float | None:
    """``some avg10`` of a PSI file's text (percent of the last 10 s)."""
    for line in pressure.splitlines():
        fields = line.split()
        if fields and fields[0] == "some":
            for field in fields[1:]:
                key, _, value = field.partition("=")
                if key == "avg10":
                    with contextlib.suppress(ValueError):
                        return float(value)
    return None


def pressure_file(
    cgroup_root: Path = Path("/sys/fs/cgroup"), proc: Path = Path("/proc")
) -> Path | None:
    """Where the node reads memory pressure: its own v2 cgroup's ``memory.pressure`` when it
    has one below the root, else the host's ``/proc/pressure/memory``; None when the kernel
    reports no PSI (before 4.20, or booted with psi=0)."""
    own = own_cgroups(_read(proc / "self" / "cgroup") or "")
    if own.v2 is not None and own.v2 != "/":
        for mount in (cgroup_root, cgroup_root / "unified"):
            candidate = mount / own.v2.strip("/") / "memory.pressure"
            if _read(candidate) is not None:
                return candidate
    host = proc / "pressure" / "memory"
    return host if _read(host) is not None else None


@dataclass(frozen=True, slots=True)
class Relief:
    """Free ``mb`` of idle instances now, because of ``reason``."""

    mb: float
    reason: str  # "pressure" (PSI past the threshold) or "over_budget" (measured use)


def relief(
    used_mb: float, budget_mb: float, pressure_pct: float | None, threshold_pct: float
) -> Relief | None:
    """Whether the node must evict idle instances now, and how much. Past the budget (the
    measured use of the instances grew after they were admitted): what is over it. Under
    pressure (``pressure_pct``, some avg10, past ``threshold_pct``; 0 turns it off): at least
    ``PRESSURE_RELIEF_SHARE`` of the instances' use (one instance at least), on every check
    while it lasts (avg10 decays over ~10 s, so a short spike still frees a few instances,
    and a lasting one frees more)."""
    over = used_mb - budget_mb
    pressed = threshold_pct > 0 and pressure_pct is not None and pressure_pct > threshold_pct
    if pressed:
        return Relief(max(over, used_mb * PRESSURE_RELIEF_SHARE, 1.0), "pressure")
    if over > 0:
        return Relief(over, "over_budget")
    return None
