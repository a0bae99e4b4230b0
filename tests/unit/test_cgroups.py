"""tierfaas.sandbox.cgroups against a fake cgroup filesystem (tierfaas.testing.cgroups): which
layout a host offers, the files and values a cgroup gets, kills on v1 and v2, removal, the
node parent's life and the sweep of stale ones. No process, privilege or wall clock."""

from __future__ import annotations

import errno
import signal
from pathlib import Path

import pytest

from tierfaas.sandbox.cgroups import (
    KILL_BUDGET_S,
    KILL_ROUNDS,
    CgroupError,
    CgroupTree,
    Host,
    Layout,
    Limits,
    LimitWrite,
    detect,
    limit_writes,
    open_tree,
)
from tierfaas.testing import FakeClock
from tierfaas.testing.cgroups import FakeCgroupFs

NODE = "node-a-100"
LIMITS = Limits(memory_bytes=64 << 20, pids=16, cpu_cores=0.25)
V1_HIERARCHIES = ("memory", "pids", "cpu", "cpuacct", "freezer")


def host_for(fake: FakeCgroupFs, clock: FakeClock, live: frozenset[int] = frozenset({100})) -> Host:
    return Host(
        fs=fake,
        send_signal=fake.send_signal,
        pid_alive=lambda pid: pid in live,
        clock=clock,
        sleep=clock.advance,
    )


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def v1(tmp_path: Path) -> FakeCgroupFs:
    return FakeCgroupFs.hybrid(tmp_path)


@pytest.fixture
def v2(tmp_path: Path) -> FakeCgroupFs:
    return FakeCgroupFs.unified(tmp_path)


def open_fake(fake: FakeCgroupFs, clock: FakeClock) -> CgroupTree:
    layout = detect(fake.root, fs=fake)
    assert isinstance(layout, Layout), layout
    return open_tree(NODE, layout, host=host_for(fake, clock))


def read(path: Path) -> str:
    return path.read_text().strip()


# -- detect ----------------------------------------------------------------------------------


def test_detect_hybrid_host_without_v2_controllers_is_v1(v1: FakeCgroupFs) -> None:
    root = v1.root
    assert detect(root, fs=v1) == Layout(
        version=1, mounts={name: root / name for name in V1_HIERARCHIES}
    )


def test_layouts_compare_and_hash(v1: FakeCgroupFs) -> None:
    layout = detect(v1.root, fs=v1)
    assert layout == detect(v1.root, fs=v1)
    assert len({layout, detect(v1.root, fs=v1)}) == 1
    assert str(layout).startswith(f"cgroup v1 (memory at {v1.root}/memory, pids at ")


def test_detect_comounted_cpu_and_cpuacct_share_one_hierarchy(tmp_path: Path) -> None:
    fake = FakeCgroupFs.hybrid(tmp_path, comount=True)
    layout = detect(tmp_path, fs=fake)
    assert isinstance(layout, Layout)
    assert layout.mounts["cpu"] == layout.mounts["cpuacct"] == tmp_path / "cpu,cpuacct"


def test_detect_unified_host_with_controllers_is_v2(v2: FakeCgroupFs) -> None:
    assert detect(v2.root, fs=v2) == Layout(version=2, mount=v2.root)


def test_detect_prefers_v2_when_hybrid_v2_has_the_controllers(v1: FakeCgroupFs) -> None:
    (v1.root / "unified" / "cgroup.controllers").write_text("memory pids cpu io\n")
    assert detect(v1.root, fs=v1) == Layout(version=2, mount=v1.root / "unified")


def test_detect_names_everything_missing(tmp_path: Path) -> None:
    fake = FakeCgroupFs.hybrid(tmp_path, controllers=("cpuset", "devices"))
    assert detect(tmp_path, fs=fake) == (
        f"cgroup v2 at {tmp_path}/unified has no memory, pids or cpu controller "
        "and no writable v1 hierarchy for memory, pids, cpu"
    )


def test_detect_names_the_one_missing_controller(tmp_path: Path) -> None:
    fake = FakeCgroupFs.unified(tmp_path, controllers="cpu memory io")
    assert detect(tmp_path, fs=fake) == (
        f"cgroup v2 at {tmp_path} has no pids controller "
        "and no writable v1 hierarchy for memory, pids, cpu"
    )


def test_detect_refuses_read_only_mounts(tmp_path: Path) -> None:
    fake = FakeCgroupFs.hybrid(tmp_path)
    fake.readonly.add(tmp_path / "pids")
    reason = detect(tmp_path, fs=fake)
    assert reason == (
        f"cgroup v2 at {tmp_path}/unified has no memory, pids or cpu controller "
        "and no writable v1 hierarchy for pids"
    )
    v2 = FakeCgroupFs.unified(tmp_path / "v2")
    v2.readonly.add(v2.root)
    assert detect(v2.root, fs=v2) == (
        f"cgroup v2 at {v2.root} is not writable and no writable v1 hierarchy for memory, pids, cpu"
    )


def test_detect_without_any_cgroup_mount(tmp_path: Path) -> None:
    assert detect(tmp_path) == (
        f"no cgroup v2 mount at {tmp_path} and no writable v1 hierarchy for memory, pids, cpu"
    )


# -- limits ----------------------------------------------------------------------------------


def test_limit_writes_v2() -> None:
    assert limit_writes(2, LIMITS) == [
        LimitWrite("memory", "memory.max", str(64 << 20)),
        LimitWrite("memory", "memory.swap.max", "0", optional=True),
        LimitWrite("pids", "pids.max", "16"),
        LimitWrite("cpu", "cpu.max", "25000 100000"),
    ]
    unbounded = limit_writes(2, Limits(memory_bytes=1 << 20, pids=1, cpu_cores=None))
    assert unbounded[-1] == LimitWrite("cpu", "cpu.max", "max 100000")


def test_limit_writes_v1_memory_limit_before_memsw() -> None:
    assert limit_writes(1, Limits(memory_bytes=1 << 30, pids=64, cpu_cores=1.5)) == [
        LimitWrite("memory", "memory.limit_in_bytes", str(1 << 30)),
        LimitWrite("memory", "memory.memsw.limit_in_bytes", str(1 << 30), optional=True),
        LimitWrite("pids", "pids.max", "64"),
        LimitWrite("cpu", "cpu.cfs_period_us", "100000"),
        LimitWrite("cpu", "cpu.cfs_quota_us", "150000"),
    ]
    unbounded = limit_writes(1, Limits(memory_bytes=1 << 20, pids=1, cpu_cores=None))
    assert unbounded[-1] == LimitWrite("cpu", "cpu.cfs_quota_us", "-1")


@pytest.mark.parametrize(
    ("memory", "pids", "cores"), [(0, 1, None), (1, 0, None), (1, 1, 0.0), (1, 1, 0.005)]
)
def test_limits_refuse_values_no_cgroup_takes(memory: int, pids: int, cores: float | None) -> None:
    with pytest.raises(ValueError, match="must be"):
        Limits(memory_bytes=memory, pids=pids, cpu_cores=cores)


# -- v2 --------------------------------------------------------------------------------------


def test_v2_tree_enables_controllers_down_to_the_node_parent(
    v2: FakeCgroupFs, clock: FakeClock
) -> None:
    tree = open_fake(v2, clock)
    parent = v2.root / "tierfaas" / NODE
    assert (tree.version, tree.parent) == (2, str(parent))
    for cgroup in (v2.root, v2.root / "tierfaas", parent):
        assert set(read(cgroup / "cgroup.subtree_control").split()) >= {"memory", "pids", "cpu"}
    # The parent hands controllers down, so it may hold no process (no-internal-processes).
    with pytest.raises(OSError, match="busy"):
        v2.spawn(7, parent)


def test_v2_tree_writes_only_controllers_not_yet_enabled(tmp_path: Path, clock: FakeClock) -> None:
    fake = FakeCgroupFs.unified(tmp_path, enabled="cpu memory pids")
    open_fake(fake, clock)
    root_writes = [e for e in fake.events if e[:2] == ("write", "cgroup.subtree_control")]
    assert root_writes == []


def test_v2_create_writes_limits_and_gives_one_join_file(
    v2: FakeCgroupFs, clock: FakeClock
) -> None:
    cgroup = open_fake(v2, clock).create("fn-1", LIMITS)
    path = v2.root / "tierfaas" / NODE / "fn-1"
    assert cgroup.name == "fn-1"
    assert read(path / "memory.max") == str(64 << 20)
    assert read(path / "memory.swap.max") == "0"
    assert read(path / "pids.max") == "16"
    assert read(path / "cpu.max") == "25000 100000"
    assert cgroup.join_files() == [path / "cgroup.procs"]
    v2.spawn(7, path)  # an instance is a leaf: processes may join it
    assert cgroup.procs() == [7]


def test_v2_without_swap_accounting_skips_swap_max(tmp_path: Path, clock: FakeClock) -> None:
    fake = FakeCgroupFs.unified(tmp_path)
    fake.swap = False
    open_fake(fake, clock).create("fn-1", LIMITS)
    assert not (tmp_path / "tierfaas" / NODE / "fn-1" / "memory.swap.max").exists()


def test_v2_readings(v2: FakeCgroupFs, clock: FakeClock) -> None:
    cgroup = open_fake(v2, clock).create("fn-1", LIMITS)
    path = v2.root / "tierfaas" / NODE / "fn-1"
    (path / "memory.events").write_text("low 0\nhigh 0\nmax 12\noom 3\noom_kill 2\n")
    (path / "memory.current").write_text("1048576\n")
    (path / "cpu.stat").write_text("usage_usec 1500000\nuser_usec 1000000\nsystem_usec 500000\n")
    assert cgroup.oom_kills() == 2
    assert cgroup.memory_bytes() == 1 << 20
    assert cgroup.cpu_seconds() == 1.5
    (path / "memory.events").unlink()
    assert cgroup.oom_kills() == 0


def test_v2_kill_writes_cgroup_kill_and_sends_no_signal(v2: FakeCgroupFs, clock: FakeClock) -> None:
    cgroup = open_fake(v2, clock).create("fn-1", LIMITS)
    path = v2.root / "tierfaas" / NODE / "fn-1"
    v2.spawn(7, path)
    v2.spawn(8, path)
    cgroup.kill()
    assert cgroup.procs() == []
    assert ("write", f"tierfaas/{NODE}/fn-1/cgroup.kill", "1") in v2.events
    assert not [e for e in v2.events if e[0] == "signal"]
    assert cgroup.remove() is True
    assert not path.exists()


def test_v2_before_cgroup_kill_freezes_signals_and_thaws(tmp_path: Path, clock: FakeClock) -> None:
    fake = FakeCgroupFs.unified(tmp_path)
    fake.cgroup_kill = False
    cgroup = open_fake(fake, clock).create("fn-1", LIMITS)
    fake.spawn(7, tmp_path / "tierfaas" / NODE / "fn-1")
    start = len(fake.events)
    cgroup.kill()
    freeze = f"tierfaas/{NODE}/fn-1/cgroup.freeze"
    assert fake.events[start:] == [
        ("write", freeze, "1"),
        ("signal", "7", str(int(signal.SIGKILL))),
        ("write", freeze, "0"),
    ]
    assert cgroup.procs() == []


def test_v2_parent_holding_processes_is_refused_with_the_rule_named(
    tmp_path: Path, clock: FakeClock
) -> None:
    fake = FakeCgroupFs.unified(tmp_path)
    (tmp_path / "tierfaas").mkdir()
    (tmp_path / "tierfaas" / "cgroup.controllers").write_text("cpu memory pids\n")
    (tmp_path / "tierfaas" / "cgroup.subtree_control").write_text("\n")
    (tmp_path / "tierfaas" / "cgroup.procs").write_text("5\n")
    (tmp_path / "cgroup.subtree_control").write_text("cpu memory pids\n")
    with pytest.raises(CgroupError) as raised:
        open_fake(fake, clock)
    message = str(raised.value)
    assert f"{tmp_path}/tierfaas/cgroup.subtree_control" in message
    assert "Device or resource busy" in message
    assert "no-internal-processes" in message


# -- v1 --------------------------------------------------------------------------------------


def test_v1_tree_has_a_parent_in_each_hierarchy(v1: FakeCgroupFs, clock: FakeClock) -> None:
    tree = open_fake(v1, clock)
    parents = [v1.root / name / "tierfaas" / NODE for name in V1_HIERARCHIES]
    assert tree.version == 1
    assert tree.parent == ", ".join(str(p) for p in parents)
    assert all(p.is_dir() for p in parents)


def test_v1_create_writes_limits_in_each_hierarchy(v1: FakeCgroupFs, clock: FakeClock) -> None:
    cgroup = open_fake(v1, clock).create("fn-1", LIMITS)
    at = {name: v1.root / name / "tierfaas" / NODE / "fn-1" for name in V1_HIERARCHIES}
    assert read(at["memory"] / "memory.limit_in_bytes") == str(64 << 20)
    assert read(at["memory"] / "memory.memsw.limit_in_bytes") == str(64 << 20)
    assert read(at["pids"] / "pids.max") == "16"
    assert read(at["cpu"] / "cpu.cfs_period_us") == "100000"
    assert read(at["cpu"] / "cpu.cfs_quota_us") == "25000"
    assert cgroup.join_files() == [at[name] / "cgroup.procs" for name in V1_HIERARCHIES]


def test_v1_comounted_hierarchy_is_joined_once(tmp_path: Path, clock: FakeClock) -> None:
    fake = FakeCgroupFs.hybrid(tmp_path, comount=True)
    cgroup = open_fake(fake, clock).create("fn-1", LIMITS)
    joined = [p.parent.parent.parent.parent.name for p in cgroup.join_files()]
    assert sorted(joined) == ["cpu,cpuacct", "freezer", "memory", "pids"]


def test_v1_without_swap_accounting_skips_memsw(tmp_path: Path, clock: FakeClock) -> None:
    fake = FakeCgroupFs.hybrid(tmp_path)
    fake.swap = False
    open_fake(fake, clock).create("fn-1", LIMITS)
    memory = tmp_path / "memory" / "tierfaas" / NODE / "fn-1"
    assert read(memory / "memory.limit_in_bytes") == str(64 << 20)
    assert not (memory / "memory.memsw.limit_in_bytes").exists()


def test_v1_readings(v1: FakeCgroupFs, clock: FakeClock) -> None:
    cgroup = open_fake(v1, clock).create("fn-1", LIMITS)
    memory = v1.root / "memory" / "tierfaas" / NODE / "fn-1"
    (memory / "memory.oom_control").write_text("oom_kill_disable 0\nunder_oom 0\noom_kill 4\n")
    (memory / "memory.usage_in_bytes").write_text("4096\n")
    (v1.root / "cpuacct" / "tierfaas" / NODE / "fn-1" / "cpuacct.usage").write_text("250000000\n")
    assert cgroup.oom_kills() == 4
    assert cgroup.memory_bytes() == 4096
    assert cgroup.cpu_seconds() == 0.25
    (memory / "memory.oom_control").write_text("oom_kill_disable 0\nunder_oom 0\n")  # old kernel
    assert cgroup.oom_kills() == 0


def test_v1_without_cpuacct_says_cpu_time_is_not_measured(tmp_path: Path, clock: FakeClock) -> None:
    fake = FakeCgroupFs.hybrid(tmp_path, controllers=("memory", "pids", "cpu"))
    cgroup = open_fake(fake, clock).create("fn-1", LIMITS)
    with pytest.raises(CgroupError, match="no cpuacct"):
        cgroup.cpu_seconds()
    assert len(cgroup.join_files()) == 3


def test_v1_kill_freezes_signals_every_member_then_thaws(
    v1: FakeCgroupFs, clock: FakeClock
) -> None:
    cgroup = open_fake(v1, clock).create("fn-1", LIMITS)
    dirs = [v1.root / name / "tierfaas" / NODE / "fn-1" for name in V1_HIERARCHIES]
    v1.spawn(7, *dirs)
    v1.spawn(8, *dirs)
    start = len(v1.events)
    cgroup.kill()
    state = f"freezer/tierfaas/{NODE}/fn-1/freezer.state"
    kill = str(int(signal.SIGKILL))
    assert v1.events[start:] == [
        ("write", state, "FROZEN"),
        ("signal", "7", kill),
        ("signal", "8", kill),
        ("write", state, "THAWED"),
    ]
    assert cgroup.procs() == []
    assert cgroup.remove() is True
    assert not any(d.exists() for d in dirs)


def test_v1_kill_waits_for_the_freezer_to_settle(v1: FakeCgroupFs, clock: FakeClock) -> None:
    cgroup = open_fake(v1, clock).create("fn-1", LIMITS)
    v1.spawn(7, v1.root / "freezer" / "tierfaas" / NODE / "fn-1")
    v1.freeze_delay = 3
    started = clock()
    cgroup.kill()
    assert cgroup.procs() == []
    assert 0 < clock() - started < KILL_BUDGET_S


def test_a_fork_bomb_cannot_outrun_the_frozen_kill(v1: FakeCgroupFs, clock: FakeClock) -> None:
    cgroup = open_fake(v1, clock).create("fn-1", LIMITS)
    dirs = [v1.root / name / "tierfaas" / NODE / "fn-1" for name in V1_HIERARCHIES]
    v1.forks_when_signalled.add(7)
    v1.spawn(7, *dirs)
    cgroup.kill()
    assert cgroup.procs() == []


def test_without_a_freezer_a_fork_bomb_outruns_the_signals_but_the_kill_is_bounded(
    tmp_path: Path, clock: FakeClock
) -> None:
    fake = FakeCgroupFs.hybrid(tmp_path, controllers=("memory", "pids", "cpu", "cpuacct"))
    cgroup = open_fake(fake, clock).create("fn-1", LIMITS)
    fake.forks_when_signalled.add(7)
    fake.spawn(7, tmp_path / "pids" / "tierfaas" / NODE / "fn-1")
    started = clock()
    cgroup.kill()  # gives up, does not raise
    assert len(cgroup.procs()) == 1
    signals = [e for e in fake.events if e[0] == "signal"]
    assert 1 < len(signals) <= KILL_ROUNDS
    assert clock() - started <= KILL_BUDGET_S + 0.001


def test_kill_is_bounded_for_a_process_that_does_not_die(
    v1: FakeCgroupFs, clock: FakeClock
) -> None:
    cgroup = open_fake(v1, clock).create("fn-1", LIMITS)
    v1.unkillable.add(7)
    v1.spawn(7, v1.root / "memory" / "tierfaas" / NODE / "fn-1")
    started = clock()
    cgroup.kill()
    assert cgroup.procs() == [7]
    assert clock() - started == pytest.approx(KILL_BUDGET_S, abs=0.001)
    assert len([e for e in v1.events if e[0] == "signal"]) <= KILL_ROUNDS
    assert cgroup.remove() is False  # still busy: the caller retries later


def test_kill_ignores_processes_already_gone(v1: FakeCgroupFs, clock: FakeClock) -> None:
    memory = v1.root / "memory" / "tierfaas" / NODE / "fn-1"

    def kernel_catches_up(seconds: float) -> None:
        (memory / "cgroup.procs").write_text("")
        clock.advance(seconds)

    host = Host(fs=v1, send_signal=v1.send_signal, clock=clock, sleep=kernel_catches_up)
    layout = detect(v1.root, fs=v1)
    assert isinstance(layout, Layout)
    cgroup = open_tree(NODE, layout, host=host).create("fn-1", LIMITS)
    (memory / "cgroup.procs").write_text("7\n")  # exited, still listed for a moment
    cgroup.kill()
    assert ("signal", "7", str(int(signal.SIGKILL))) in v1.events  # ProcessLookupError, ignored
    assert cgroup.procs() == []


def test_remove_of_a_removed_cgroup_is_true(v2: FakeCgroupFs, clock: FakeClock) -> None:
    cgroup = open_fake(v2, clock).create("fn-1", LIMITS)
    assert cgroup.remove() is True
    assert cgroup.remove() is True
    assert cgroup.procs() == []
    cgroup.kill()  # nothing there: no error


# -- names and failures ----------------------------------------------------------------------


@pytest.mark.parametrize("name", ["", ".", "..", "a/b", "a b", "fn\n", "ü", "x" * 201])
def test_create_refuses_names_outside_the_alphabet(
    v2: FakeCgroupFs, clock: FakeClock, name: str
) -> None:
    tree = open_fake(v2, clock)
    with pytest.raises(CgroupError, match="invalid cgroup name"):
        tree.create(name, LIMITS)


def test_open_tree_refuses_a_bad_node_tag(v2: FakeCgroupFs, clock: FakeClock) -> None:
    with pytest.raises(CgroupError, match=r"invalid cgroup node tag '\.\./x'"):
        open_tree("../x", Layout(version=2, mount=v2.root), host=host_for(v2, clock))


def test_create_of_an_existing_name_is_an_error(v1: FakeCgroupFs, clock: FakeClock) -> None:
    tree = open_fake(v1, clock)
    tree.create("fn-1", LIMITS)
    with pytest.raises(CgroupError, match="'fn-1' already exists"):
        tree.create("fn-1", LIMITS)


def test_a_failed_create_leaves_no_directory(v1: FakeCgroupFs, clock: FakeClock) -> None:
    tree = open_fake(v1, clock)
    pids_max = v1.root / "pids" / "tierfaas" / NODE / "fn-1" / "pids.max"
    v1.fail[pids_max] = errno.EACCES
    with pytest.raises(CgroupError) as raised:
        tree.create("fn-1", LIMITS)
    assert str(raised.value) == (
        f"cannot write '16' to {pids_max}: Permission denied "
        "(run the node as root, or delegate this cgroup to the node's user)"
    )
    assert not any((v1.root / n / "tierfaas" / NODE / "fn-1").exists() for n in V1_HIERARCHIES)
    tree.create("fn-2", LIMITS)  # the tree still works


def test_open_tree_without_permission_says_how_to_fix_it(
    v1: FakeCgroupFs, clock: FakeClock
) -> None:
    v1.fail[v1.root / "memory" / "tierfaas"] = errno.EACCES
    with pytest.raises(CgroupError) as raised:
        open_fake(v1, clock)
    assert str(raised.value) == (
        f"cannot create {v1.root}/memory/tierfaas: Permission denied "
        "(run the node as root, or delegate this cgroup to the node's user)"
    )


def test_a_second_tree_with_the_same_tag_is_refused(v2: FakeCgroupFs, clock: FakeClock) -> None:
    open_fake(v2, clock)
    with pytest.raises(CgroupError, match="already exists: another tree of this process"):
        open_fake(v2, clock)


# -- close and the sweep ---------------------------------------------------------------------


@pytest.mark.parametrize("version", [1, 2])
def test_close_kills_and_removes_everything(tmp_path: Path, clock: FakeClock, version: int) -> None:
    fake = FakeCgroupFs.hybrid(tmp_path) if version == 1 else FakeCgroupFs.unified(tmp_path)
    tree = open_fake(fake, clock)
    for name in ("fn-1", "fn-2"):
        tree.create(name, LIMITS)
    mounts = [tmp_path / n for n in V1_HIERARCHIES] if version == 1 else [tmp_path]
    fake.spawn(7, *(m / "tierfaas" / NODE / "fn-1" for m in mounts))
    fake.spawn(8, *(m / "tierfaas" / NODE / "fn-2" for m in mounts))
    tree.close()
    assert fake.alive == set()
    assert all(not (m / "tierfaas" / NODE).exists() for m in mounts)
    assert all((m / "tierfaas").is_dir() for m in mounts)  # shared by the host's nodes
    tree.close()  # again: nothing left, no error
    with pytest.raises(CgroupError, match="is closed"):
        tree.create("fn-3", LIMITS)


def test_close_reports_what_is_still_busy(v2: FakeCgroupFs, clock: FakeClock) -> None:
    tree = open_fake(v2, clock)
    tree.create("fn-1", LIMITS)
    v2.unkillable.add(7)
    v2.spawn(7, v2.root / "tierfaas" / NODE / "fn-1")
    with pytest.raises(CgroupError, match=r"still busy after 1 s of kills \(processes \[7\]\)"):
        tree.close()


@pytest.mark.parametrize("version", [1, 2])
def test_open_tree_sweeps_parents_of_dead_nodes_only(
    tmp_path: Path, clock: FakeClock, version: int
) -> None:
    fake = FakeCgroupFs.hybrid(tmp_path) if version == 1 else FakeCgroupFs.unified(tmp_path)
    layout = detect(tmp_path, fs=fake)
    assert isinstance(layout, Layout)
    # Three earlier nodes: pid 200 died, pid 300 still runs; "manual" has no pid in its tag.
    for tag, pid in (("node-b-200", 20), ("node-c-300", 30), ("manual", 40)):
        earlier = open_tree(tag, layout, host=host_for(fake, clock, frozenset({200, 300})))
        earlier.create("fn-1", LIMITS)
        mounts = [tmp_path / n for n in V1_HIERARCHIES] if version == 1 else [tmp_path]
        fake.spawn(pid, *(m / "tierfaas" / tag / "fn-1" for m in mounts))
    open_tree(NODE, layout, host=host_for(fake, clock, frozenset({100, 300})))
    base = (tmp_path / "memory" if version == 1 else tmp_path) / "tierfaas"
    assert sorted(p.name for p in base.iterdir() if p.is_dir()) == [
        "manual",
        NODE,
        "node-c-300",
    ]
    assert fake.alive == {30, 40}
