"""``tierfaas up --detach`` and ``tierfaas down``: the supervisor in the background.

``detach`` starts the same supervisor (``tierfaas up ... --detached-child``) in a new session
with its output in ``STATE_DIR/up.log``, waits until the state file says the cluster is
ready, and returns. ``down`` asks that supervisor to stop (SIGTERM: the nodes drain, then the
front door stops), and then checks by pid and start time that every process it tracked is
gone, stopping any left over (a supervisor killed with -9 leaves its nodes behind).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from tierfaas.deploy.local import LocalProvider
from tierfaas.procs import alive, killpg, spawn_in_session
from tierfaas.up.options import UpOptions, check_host_isolation, check_port_free
from tierfaas.up.state import STATE_FILE, UpError, read_state, refuse_if_running, welcome


def detach(options: UpOptions, say: Callable[[str], None]) -> int:
    """Starts the supervisor in a new session and returns once the cluster is ready."""
    options.validate()
    check_host_isolation(options.isolation)
    state_dir = options.state_dir.resolve()
    state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    refuse_if_running(state_dir)
    if options.lb == "nginx" and not os.access(options.nginx, os.X_OK):
        raise UpError(f"--lb nginx: {options.nginx} is not installed (apt-get install nginx)", 2)
    check_port_free(options.host, options.port)
    with contextlib.suppress(FileNotFoundError):
        (state_dir / STATE_FILE).unlink()
    argv = [
        sys.executable, "-m", "tierfaas.cli", "up",
        "--nodes", str(options.nodes),
        "--release", str(options.release.resolve()),
        "--port", str(options.port),
        "--host", options.host,
        "--lb", options.lb,
        "--state-dir", str(state_dir),
        "--first-host", options.first_host,
        "--ready-timeout-s", f"{options.ready_timeout_s:g}",
        "--drain-timeout-s", f"{options.drain_timeout_s:g}",
        "--log-level", options.log_level,
        "--registry-poll-s", f"{options.registry_poll_s:g}",
        "--canaries", str(options.canaries),
        "--isolation", options.isolation,
        *(["--registry", str(options.registry.resolve())] if options.registry else []),
        "--detached-child",
    ]  # fmt: skip
    log_path = state_dir / "up.log"
    with open(log_path, "ab") as log_file:
        child = spawn_in_session(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env={**os.environ, "TERM": "dumb", "NO_COLOR": "1"},
        )
    deadline = time.monotonic() + options.ready_timeout_s + 15
    while time.monotonic() < deadline:
        code = child.poll()
        if code is not None:
            tail = log_path.read_text(errors="replace")[-2000:]
            raise UpError(f"the supervisor exited with {code}; {log_path} ends with:\n{tail}")
        state = read_state(state_dir)
        if (
            state is not None
            and state.get("status") == "ready"
            and state["supervisor"]["pid"] == child.pid
        ):
            say(welcome(state))
            return 0
        time.sleep(0.1)
    child.terminate()
    raise UpError(f"the cluster was not ready in time; see {log_path}")


def down(state_dir: Path, say: Callable[[str], None], timeout_s: float = 60.0) -> int:
    """Stops the cluster started from ``state_dir`` and checks every process is gone."""
    state_dir = state_dir.resolve()
    state = read_state(state_dir)
    if state is None:
        raise UpError(f"no cluster is running from {state_dir} (no {STATE_FILE})", 1)
    tracked: list[tuple[str, int, int | None]] = [
        (n["name"], int(n["pid"]), n.get("start_time")) for n in state["nodes"]
    ]
    if state.get("provider_state"):
        # Nodes a rollout started after the state file was last written.
        provider = LocalProvider(Path(state["provider_state"]))
        with contextlib.suppress(OSError):
            provider.stop_launching()
            tracked += [(r.name, r.pid, r.start_time) for r in provider.records()]
    if state.get("nginx"):
        tracked.append(("nginx", int(state["nginx"]["pid"]), state["nginx"].get("start_time")))
    sup_pid = int(state["supervisor"]["pid"])
    sup_started = state["supervisor"].get("start_time")
    if alive(sup_pid, sup_started):
        say(f"stopping the cluster (supervisor pid {sup_pid}): nodes drain, then the front door")
        os.kill(sup_pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        while alive(sup_pid, sup_started) and time.monotonic() < deadline:
            time.sleep(0.1)
        if alive(sup_pid, sup_started):
            say(f"[yellow]the supervisor did not stop in {timeout_s:g} s: killing it[/]")
            os.kill(sup_pid, signal.SIGKILL)
    else:
        say("the supervisor is gone; stopping what it left")
    left = [(name, pid) for name, pid, started in tracked if alive(pid, started)]
    for _, pid in left:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 10
    while left and time.monotonic() < deadline:
        time.sleep(0.1)
        left = [(name, pid) for name, pid, started in tracked if alive(pid, started)]
    for _, pid in left:
        killpg(pid, signal.SIGKILL)
    time.sleep(0.2 if left else 0)
    still = [name for name, pid, started in tracked if alive(pid, started)]
    with contextlib.suppress(FileNotFoundError):
        (state_dir / STATE_FILE).unlink()
    if still or alive(sup_pid, sup_started):
        raise UpError(f"still running after down: {', '.join(still) or 'the supervisor'}", 1)
    nodes = len({name for name, _, _ in tracked if name != "nginx"})
    say(f"stopped: {nodes} nodes" + (" and nginx" if state.get("nginx") else ""))
    return 0
