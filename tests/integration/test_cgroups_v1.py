"""tierfaas.sandbox.cgroups on the host's real cgroup v1 hierarchies, with real processes that
move themselves in as an instance does (writing "0" to inherited join fds): the memory, pids
and CPU limits hold, a kill reaches a setsid + double-fork escapee, close() and the sweep of
a dead node's parent leave no directory. Needs root and writable v1 hierarchies."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator

import pytest

from tierfaas.procs import start_time
from tierfaas.sandbox.cgroups import CgroupTree, InstanceCgroup, Layout, Limits, detect, open_tree

DETECTED = detect()
if os.geteuid() != 0:
    pytest.skip("needs root: creates cgroups under /sys/fs/cgroup", allow_module_level=True)
if not isinstance(DETECTED, Layout) or DETECTED.version != 1:
    reason = f"needs writable cgroup v1 hierarchies; this host: {DETECTED}"
    pytest.skip(reason, allow_module_level=True)
LAYOUT: Layout = DETECTED

LIMITS = Limits(memory_bytes=64 << 20, pids=16, cpu_cores=0.25)
MOUNTS = list(dict.fromkeys(LAYOUT.mounts.values()))
TAG = f"test-{os.getpid()}"

# Joins the cgroup the way an instance does: the node opened the join files, the child
# writes "0" (itself) into each before it runs anything else.
JOIN = """
import os, sys, time
for fd in map(int, sys.argv[1].split(",")):
    os.write(fd, b"0")
    os.close(fd)
"""

HOG = """
data = b"x" * (200 << 20)
print("survived", flush=True)
"""

# Forks up to 50 sleeping children; prints how many forks worked and how many were refused.
FORKER = """
forked = refused = 0
for _ in range(50):
    try:
        pid = os.fork()
    except OSError:  # BlockingIOError (EAGAIN) once pids.max is reached
        refused += 1
        continue
    if pid == 0:
        time.sleep(60)
        os._exit(0)
    forked += 1
print(forked, refused, flush=True)
time.sleep(60)
"""

# A child leaves the session and forks a grandchild, then exits: the grandchild has neither
# the instance's parent nor its session, as a handler escaping a group kill would.
ESCAPER = """
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        print(os.getpid(), flush=True)
        time.sleep(60)
    os._exit(0)
time.sleep(60)
"""

BUSY = """
end = time.monotonic() + 2.0
while time.monotonic() < end:
    pass
"""

Spawn = Callable[[InstanceCgroup, str], subprocess.Popen[bytes]]


@pytest.fixture
def tree() -> Iterator[CgroupTree]:
    tree = open_tree(TAG, LAYOUT)
    try:
        yield tree
    finally:
        tree.close()


@pytest.fixture
def spawn() -> Iterator[Spawn]:
    started: list[subprocess.Popen[bytes]] = []

    def start(cgroup: InstanceCgroup, code: str) -> subprocess.Popen[bytes]:
        fds = [os.open(path, os.O_WRONLY | os.O_CLOEXEC) for path in cgroup.join_files()]
        try:
            process = subprocess.Popen(
                [sys.executable, "-c", JOIN + code, ",".join(map(str, fds))],
                pass_fds=fds,
                stdout=subprocess.PIPE,
            )
        finally:
            for fd in fds:
                os.close(fd)
        started.append(process)
        return process

    try:
        yield start
    finally:
        for process in started:  # what they forked is in their cgroup: close() kills it
            process.kill()
            process.wait(timeout=10)
            assert process.stdout is not None
            process.stdout.close()


def read_line(process: subprocess.Popen[bytes], timeout_s: float = 10.0) -> str:
    assert process.stdout is not None
    ready, _, _ = select.select([process.stdout], [], [], timeout_s)
    assert ready, f"no output from {process.pid} within {timeout_s} s"
    return process.stdout.readline().decode().strip()


def gone(pid: int, started: int | None, within_s: float = 2.0) -> bool:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        if start_time(pid) != started:  # exited (None: gone or a zombie) or pid reused
            return True
        time.sleep(0.01)
    return False


def test_a_memory_hog_is_oom_killed(tree: CgroupTree, spawn: Spawn) -> None:
    cgroup = tree.create("hog", LIMITS)
    hog = spawn(cgroup, HOG)
    assert hog.wait(timeout=20) == -signal.SIGKILL
    assert hog.stdout is not None and hog.stdout.read() == b""
    assert cgroup.oom_kills() >= 1


def test_forks_stop_at_the_pids_limit(tree: CgroupTree, spawn: Spawn) -> None:
    cgroup = tree.create("forker", LIMITS)
    forker = spawn(cgroup, FORKER)
    forked, refused = map(int, read_line(forker).split())
    assert (forked, refused) == (LIMITS.pids - 1, 50 - LIMITS.pids + 1)
    assert len(cgroup.procs()) == LIMITS.pids
    cgroup.kill()
    assert cgroup.procs() == []
    assert forker.wait(timeout=5) == -signal.SIGKILL


def test_kill_reaches_a_setsid_double_fork_grandchild(tree: CgroupTree, spawn: Spawn) -> None:
    cgroup = tree.create("escaper", LIMITS)
    escaper = spawn(cgroup, ESCAPER)
    grandchild = int(read_line(escaper))
    started = start_time(grandchild)
    assert started is not None
    assert os.getsid(grandchild) != os.getsid(escaper.pid)
    assert grandchild in cgroup.procs()
    cgroup.kill()
    assert cgroup.procs() == []
    assert gone(grandchild, started)
    assert escaper.wait(timeout=5) == -signal.SIGKILL
    assert cgroup.remove() is True
    assert not any((m / "tierfaas" / TAG / "escaper").exists() for m in MOUNTS)


def test_a_busy_loop_gets_its_cpu_quota_only(tree: CgroupTree, spawn: Spawn) -> None:
    cgroup = tree.create("busy", LIMITS)
    begun = time.monotonic()
    busy = spawn(cgroup, BUSY)
    assert busy.wait(timeout=20) == 0
    wall = time.monotonic() - begun
    used = cgroup.cpu_seconds()
    assert 0.05 * wall < used <= 0.35 * wall, f"{used:.3f} s of CPU in {wall:.3f} s"


def test_close_leaves_no_process_and_no_directory(spawn: Spawn) -> None:
    tree = open_tree(TAG, LAYOUT)
    try:
        sleeper = spawn(tree.create("sleeper", LIMITS), "print(1, flush=True)\ntime.sleep(60)")
        assert read_line(sleeper) == "1"
        tree.create("idle", LIMITS)
        assert all((m / "tierfaas" / TAG).is_dir() for m in MOUNTS)
    finally:
        tree.close()
    assert sleeper.wait(timeout=5) == -signal.SIGKILL
    assert not any((m / "tierfaas" / TAG).exists() for m in MOUNTS)


def test_open_tree_sweeps_the_parent_a_dead_node_left(spawn: Spawn) -> None:
    neighbour = open_tree(f"neighbour-{os.getpid()}", LAYOUT)  # a live node's
    dead = subprocess.Popen(["true"])
    dead.wait()
    ghost = open_tree(f"ghost-{dead.pid}", LAYOUT)  # a node that died without close()
    tree = None
    try:
        leftover = spawn(ghost.create("fn-1", LIMITS), "print(1, flush=True)\ntime.sleep(60)")
        assert read_line(leftover) == "1"
        tree = open_tree(TAG, LAYOUT)
        assert leftover.wait(timeout=5) == -signal.SIGKILL
        assert not any((m / "tierfaas" / f"ghost-{dead.pid}").exists() for m in MOUNTS)
        assert all((m / "tierfaas" / f"neighbour-{os.getpid()}").is_dir() for m in MOUNTS)
    finally:
        for opened in (tree, neighbour, ghost):
            if opened is not None:
                opened.close()
