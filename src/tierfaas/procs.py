"""Processes by pid, safely: a pid is trusted only together with its start time."""

from __future__ import annotations

import contextlib
import os


def start_time(pid: int) -> int | None:
    """The process's start time in clock ticks (/proc), None when it is gone or a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    if fields[0] in ("Z", "X"):
        return None
    return int(fields[19])


def alive(pid: int, started: int | None) -> bool:
    """True while ``pid`` runs and is the process that started at ``started`` (not a reuse)."""
    now = start_time(pid)
    return now is not None and (started is None or now == started)


def killpg(pid: int, sig: int) -> None:
    """Signals the session/process group led by ``pid``; a gone group is not an error."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)
