"""The process helpers with real processes: groups end whole, a parent's death reaches its
child, ports are free or taken."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time

from tierfaas.procs import (
    alive,
    free_port,
    kill_group,
    port_is_free,
    spawn_in_session,
    start_time,
    stop_group,
)

# Prints the pid of a grandchild it forks (in its session), then waits.
FORKER = """
import os, sys, time
pid = os.fork()
if pid == 0:
    time.sleep(60)
    os._exit(0)
print(pid, flush=True)
time.sleep(60)
"""

# Starts a child told to get SIGKILL when this process exits, prints its pid, and exits.
ORPHANER = """
import signal, subprocess, sys
from tierfaas.procs import spawn_in_session
child = spawn_in_session(
    [sys.executable, "-c", "import time; time.sleep(60)"],
    parent_death_signal=signal.SIGKILL,
)
print(child.pid, flush=True)
"""


def gone(pid: int, started: int | None, within_s: float = 5.0) -> bool:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        if not alive(pid, started):
            return True
        time.sleep(0.02)
    return False


def start_forker() -> tuple[subprocess.Popen[bytes], int, int | None]:
    process = spawn_in_session([sys.executable, "-c", FORKER], stdout=subprocess.PIPE)
    assert process.stdout is not None
    grandchild = int(process.stdout.readline())
    return process, grandchild, start_time(grandchild)


def test_kill_group_ends_the_process_and_what_it_forked() -> None:
    process, grandchild, started = start_forker()
    assert alive(grandchild, started)
    assert kill_group(process) == -signal.SIGKILL
    assert gone(grandchild, started)


def test_stop_group_asks_first_then_kills_what_is_left() -> None:
    process, grandchild, started = start_forker()
    assert stop_group(process, grace_s=5.0) == -signal.SIGTERM  # the leader obeyed SIGTERM
    assert gone(grandchild, started)


def test_a_child_dies_with_its_parent() -> None:
    parent = subprocess.run(
        [sys.executable, "-c", ORPHANER], capture_output=True, timeout=30, check=True
    )
    child = int(parent.stdout)
    assert gone(child, None)


def test_free_port_is_bindable_and_a_bound_one_is_not() -> None:
    port = free_port("127.0.0.1")
    assert port_is_free("127.0.0.1", port)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", port))
        assert not port_is_free("127.0.0.1", port)
        assert port_is_free("127.0.0.1", port, socket.SOCK_DGRAM)  # UDP is another space
