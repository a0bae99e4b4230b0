"""The state folder of ``tierfaas up``: where it is, the state file, and the welcome text.

``STATE_DIR/cluster.json`` says what runs (the supervisor's, nginx's and each node's pid with
its start time, addresses, the key path); ``tierfaas down``, ``tierfaas lb-config`` and a
second ``tierfaas up`` read it. It is written whole and renamed into place, so a reader never
sees half a file.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from tierfaas.procs import alive

STATE_FILE = "cluster.json"
KEY_FILE = "cluster.key"


class UpError(Exception):
    """A failure to report as one line (no traceback) with exit ``code``."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


def default_state_dir() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "tierfaas"


def write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)


def read_state(state_dir: Path) -> dict[str, Any] | None:
    try:
        data: dict[str, Any] = json.loads((state_dir / STATE_FILE).read_text())
    except (OSError, ValueError):
        return None
    return data


def running_supervisor(state_dir: Path) -> int | None:
    """The pid of a supervisor still running from ``state_dir``, if any."""
    state = read_state(state_dir)
    if state is None:
        return None
    pid = int(state.get("supervisor", {}).get("pid", 0))
    started = state.get("supervisor", {}).get("start_time")
    return pid if pid and alive(pid, started) else None


def refuse_if_running(state_dir: Path) -> None:
    """``UpError`` (exit 2) when another supervisor runs from ``state_dir``."""
    pid = running_supervisor(state_dir)
    if pid is not None and pid != os.getpid():
        raise UpError(
            f"a cluster is already running from {state_dir} (supervisor pid {pid}); "
            f"stop it with: tierfaas down --state-dir {state_dir}",
            2,
        )


def welcome(state: dict[str, Any]) -> str:
    url = state["url"]
    lb = "nginx" if state["lb"] == "nginx" else "built-in round-robin"
    stop = f"tierfaas down --state-dir {state['state_dir']}" if state.get("detached") else "Ctrl-C"
    fn = state.get("try_function", "hello")
    lines = [
        f"[bold green]tierfaas is up[/]: {len(state['nodes'])} nodes serving "
        f"{state['release']}, front door ({lb}) on [bold]{url}[/]",
        "",
        f"  try it     curl -d 'world' {url}/function/{fn}",
        f"  dashboard  {url}/",
        f"  status     tierfaas status --url {url}",
        f"  load       tierfaas load --url {url} --rps 200 --duration 30",
        f"  logs       {state['state_dir']}/logs/",
        f"  stop       {stop}",
    ]
    return "\n".join(lines)
