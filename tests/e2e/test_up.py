"""``tierfaas up`` / ``down`` with real processes on loopback (127.0.1.10-19, .30-39 and
.60-69)."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tierfaas.procs import killpg
from tierfaas.testing.nodes import free_port, run_cli

pytestmark = pytest.mark.e2e

DEMO = Path(__file__).parent.parent.parent / "examples" / "demo"
POLYGLOT = Path(__file__).parent.parent.parent / "examples" / "polyglot"


def tierfaas(*args: str, timeout: float = 90) -> subprocess.CompletedProcess[str]:
    return run_cli(*args, timeout=timeout)


def is_running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except OSError:
        return False


def processes_mentioning(text: str) -> list[int]:
    """Live processes whose command line contains ``text``."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != os.getpid():
            with contextlib.suppress(OSError):
                cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ")
                if text.encode() in cmdline and is_running(int(entry)):
                    found.append(int(entry))
    return found


def state_pids(state: dict[str, Any]) -> list[int]:
    pids = [int(state["supervisor"]["pid"])] + [int(n["pid"]) for n in state["nodes"]]
    if state.get("nginx"):
        pids.append(int(state["nginx"]["pid"]))
    return pids


@contextlib.contextmanager
def reaper(state_dir: Path) -> Iterator[list[int]]:
    """Remembers the cluster's pids and, whatever happens in the test, kills what is left."""
    pids: list[int] = []
    try:
        yield pids
    finally:
        with contextlib.suppress(OSError, ValueError):
            pids += state_pids(json.loads((state_dir / "cluster.json").read_text()))
        for pid in [*pids, *processes_mentioning(str(state_dir))]:
            killpg(pid, signal.SIGKILL)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)


def post(url: str, body: bytes = b"world") -> tuple[int, bytes, str]:
    request = urllib.request.Request(url, data=body, method="POST")
    with urllib.request.urlopen(request, timeout=10) as response:
        # Which node *received* the call: the node that served it and whether it came there
        # directly (a local route) or was forwarded by the node that received it.
        route = response.headers["X-Tierfaas-Route"].split("-")[0]
        return (
            response.status,
            response.read(),
            f"{response.headers['X-Tierfaas-Served-By']}/{route}",
        )


def wait_gone(pids: list[int], timeout: float = 5.0) -> list[int]:
    deadline = time.monotonic() + timeout
    while (left := [p for p in pids if is_running(p)]) and time.monotonic() < deadline:
        time.sleep(0.05)
    return left


def test_up_detach_invoke_down_leaves_nothing(tmp_path: Path) -> None:
    state_dir = tmp_path / "state"
    port = free_port()
    with reaper(state_dir) as pids:
        began = time.monotonic()
        result = tierfaas(
            "up", "--nodes", "3", "--detach", "--release", str(DEMO),
            "--state-dir", str(state_dir), "--port", str(port), "--first-host", "127.0.1.10",
        )  # fmt: skip
        assert result.returncode == 0, result.stdout + result.stderr
        assert time.monotonic() - began < 30
        assert f"http://127.0.0.1:{port}" in result.stdout and "tierfaas down" in result.stdout
        state = json.loads((state_dir / "cluster.json").read_text())
        pids.extend(state_pids(state))
        assert state["status"] == "ready" and len(state["nodes"]) == 3
        assert all(is_running(pid) for pid in pids)
        key = state_dir / "cluster.key"
        assert key.stat().st_mode & 0o777 == 0o600
        secret = key.read_text().strip()
        for pid in pids:  # the key is in the environment, never on a command line
            assert secret.encode() not in Path(f"/proc/{pid}/cmdline").read_bytes()

        served = set()
        for _ in range(9):
            status, body, by = post(f"http://127.0.0.1:{port}/function/hello")
            assert (status, body) == (200, b"Hello, world!\n")
            served.add(by)
        assert len(served) >= 2  # the connections went round the nodes

        # A second `up` from the same state dir is refused: one clear line, no traceback.
        again = tierfaas("up", "--detach", "--state-dir", str(state_dir), "--port", str(port))
        assert again.returncode == 2 and "already running" in again.stderr
        assert "Traceback" not in again.stderr

        result = tierfaas("down", "--state-dir", str(state_dir))
        assert result.returncode == 0, result.stdout + result.stderr
        assert wait_gone(pids, 2.0) == []
        assert processes_mentioning(str(state_dir)) == []
        assert not (state_dir / "cluster.json").exists()
        assert "stopping" in (state_dir / "up.log").read_text()


@pytest.mark.skipif(
    not (shutil.which("node") and shutil.which("gcc") and shutil.which("make")),
    reason="examples/polyglot needs node, gcc and make",
)
def test_up_serves_the_polyglot_example_in_three_languages(tmp_path: Path) -> None:
    """The README's line: `tierfaas up --release examples/polyglot` builds the C function
    (the release's build step) and serves Node.js (http), C and shell (stdio) functions,
    through the front door, whichever node a call lands on."""
    state_dir = tmp_path / "state"
    port = free_port()
    with reaper(state_dir) as pids:
        result = tierfaas(
            "up", "--nodes", "2", "--detach", "--release", str(POLYGLOT),
            "--state-dir", str(state_dir), "--port", str(port), "--first-host", "127.0.1.60",
        )  # fmt: skip
        assert result.returncode == 0, result.stdout + result.stderr
        state = json.loads((state_dir / "cluster.json").read_text())
        pids.extend(state_pids(state))
        greetings = {
            "hello-node": b"Hello from Node.js, you",
            "hello-c": b"Hello from C, you",
            "hello-sh": b"Hello from sh, you",
        }
        for name, greeting in greetings.items():
            for _ in range(4):  # round-robin: both nodes receive some, one forwards
                status, body, _ = post(f"http://127.0.0.1:{port}/function/{name}", b"you")
                assert (status, body.strip()) == (200, greeting), (name, body)
        assert tierfaas("down", "--state-dir", str(state_dir)).returncode == 0
        assert wait_gone(pids, 5.0) == []
    assert not (POLYGLOT / "hello-c").exists()  # built in the registry's copy, not here


def test_ctrl_c_stops_the_foreground_cluster(tmp_path: Path) -> None:
    state_dir = tmp_path / "state"
    port = free_port()
    argv = [
        sys.executable, "-m", "tierfaas.cli", "up", "--nodes", "2", "--release", str(DEMO),
        "--state-dir", str(state_dir), "--port", str(port), "--first-host", "127.0.1.30",
    ]  # fmt: skip
    with reaper(state_dir) as pids:
        up = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
        pids.append(up.pid)
        assert up.stdout is not None
        output = b""
        deadline = time.monotonic() + 30
        while b"tierfaas is up" not in output and time.monotonic() < deadline:
            line = up.stdout.readline()
            if not line:
                break
            output += line
        assert b"tierfaas is up" in output, output.decode()
        state = json.loads((state_dir / "cluster.json").read_text())
        pids.extend(state_pids(state))
        assert post(f"http://127.0.0.1:{port}/function/hello")[0] == 200

        up.send_signal(signal.SIGINT)
        rest, _ = up.communicate(timeout=45)
        assert up.returncode == 0, (output + rest).decode()
        assert b"Traceback" not in rest
        assert wait_gone(pids, 2.0) == []
        # Every node left and drained (exit 0 after a clean shutdown), none was killed.
        for node in state["nodes"]:
            assert "stopped" in Path(node["log"]).read_text()
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", port), timeout=1).close()


def test_busy_port_is_one_clear_line(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        for extra in ([], ["--detach"]):
            result = tierfaas(
                "up", "--nodes", "2", "--release", str(DEMO), "--port", str(port),
                "--state-dir", str(tmp_path / "state"), "--first-host", "127.0.1.30", *extra,
            )  # fmt: skip
            assert result.returncode == 2, result.stdout + result.stderr
            assert f"cannot listen on 127.0.0.1:{port}" in result.stderr
            assert "Traceback" not in result.stderr
            assert len(result.stderr.strip().splitlines()) == 1
    assert processes_mentioning(str(tmp_path)) == []
