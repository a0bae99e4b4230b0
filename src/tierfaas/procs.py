"""Process helpers, one of each, for the node, ``tierfaas up``, tests and benchmarks.

- pids: a pid is trusted only together with its start time (``start_time``, ``alive``), since
  the kernel reuses pids;
- process groups: ``spawn_in_session`` starts a command in a session (and process group) of
  its own, so ``killpg``/``kill_group`` end it and everything it forked in one call;
- parent death (Linux ``prctl``): ``set_parent_death_signal`` asks the kernel to signal this
  process when its parent exits, even when the parent is killed with SIGKILL and runs no
  cleanup; ``become_subreaper`` makes orphaned descendants this process's children, to reap;
- ports: ``free_port`` (the kernel's pick) and ``port_is_free`` (a given one).

Elsewhere these are no-ops where the system lacks them (``prctl`` on macOS).
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os
import random
import signal
import socket
import subprocess
from collections.abc import Callable, Sequence
from typing import Any, cast

# -- pids ------------------------------------------------------------------------------------


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


# -- process groups --------------------------------------------------------------------------


def spawn_in_session(
    argv: Sequence[str], *, parent_death_signal: int | None = None, **popen: Any
) -> subprocess.Popen[bytes]:
    """``subprocess.Popen(argv, **popen)`` in a new session, whose id is the child's pid:
    ``killpg(process.pid, sig)`` then reaches everything it starts. With
    ``parent_death_signal``, the child gets that signal when this process exits."""
    preexec = on_parent_death(parent_death_signal) if parent_death_signal else None
    return subprocess.Popen(
        list(argv),
        start_new_session=True,
        preexec_fn=preexec,  # noqa: PLW1509 - a prctl call only, no locks taken
        **popen,
    )


def killpg(pid: int, sig: int) -> bool:
    """Signals the session/process group led by ``pid``; False (not an error) when no such
    group is there to signal."""
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def kill_group(process: subprocess.Popen[bytes], timeout_s: float = 5.0) -> int | None:
    """SIGKILL to ``process``'s whole group (its children too), then reaps it for up to
    ``timeout_s``; returns its exit code (None if it is somehow still there)."""
    killpg(process.pid, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError):
        process.kill()  # should it have left its group
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout_s)
    return process.returncode


def stop_group(process: subprocess.Popen[bytes], grace_s: float = 5.0) -> int | None:
    """SIGTERM to ``process``'s group, up to ``grace_s`` for it to exit, then ``kill_group``
    for whatever is left (children the leader forked); returns the leader's exit code."""
    if process.poll() is None:
        killpg(process.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(grace_s)
    return kill_group(process, grace_s)


# -- parent death ----------------------------------------------------------------------------

_PR_SET_PDEATHSIG = 1
_PR_SET_CHILD_SUBREAPER = 36


def _load_prctl() -> Callable[..., int] | None:
    try:
        return cast("Callable[..., int]", ctypes.CDLL(None, use_errno=True).prctl)
    except (OSError, AttributeError):  # pragma: no cover - not Linux
        return None


# Resolved once, at import: ``on_parent_death`` calls it in a child between fork and exec,
# where a dlopen() could wait forever on the loader lock that another thread of the parent
# held at the fork (a launch from a worker thread while the main thread imports a module).
_PRCTL = _load_prctl()


def _prctl(option: int, value: int) -> None:
    if _PRCTL is not None:
        _PRCTL(option, value, 0, 0, 0)


def set_parent_death_signal(sig: int) -> None:
    """Linux: this process gets ``sig`` when its parent exits, however it exits."""
    _prctl(_PR_SET_PDEATHSIG, sig)


def on_parent_death(sig: int) -> Callable[[], None]:
    """A ``preexec_fn`` for ``subprocess.Popen``: the child gets ``sig`` when its parent
    exits. It runs between fork and exec and calls only the prctl resolved at import, taking
    no lock there."""
    return functools.partial(set_parent_death_signal, sig)


def become_subreaper() -> None:
    """Linux: descendants orphaned by their parent's exit become this process's children
    (to reap) instead of init's."""
    _prctl(_PR_SET_CHILD_SUBREAPER, 1)


# -- ports -----------------------------------------------------------------------------------


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago on ``host`` (the kernel's pick)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def free_port_run(hosts: Sequence[str], count: int) -> int:
    """The first of ``count`` consecutive ports that were free a moment ago for TCP and UDP on
    every one of ``hosts``, picked below Linux's default ephemeral range (32768-60999): a port
    the kernel picked there can be taken by any outgoing connection's source port before the
    node binds it, and a node binds its gossip port and the two after it (control plane, lane)."""
    rng = random.Random()
    for _ in range(500):
        first = rng.randrange(20000, 32000 - count)
        ports = range(first, first + count)
        if all(
            port_is_free(host, port) and port_is_free(host, port, socket.SOCK_DGRAM)
            for host in hosts
            for port in ports
        ):
            return first
    raise RuntimeError(f"no {count} consecutive free ports on {', '.join(hosts)}")


def port_is_free(host: str, port: int, kind: int = socket.SOCK_STREAM) -> bool:
    """True when ``port`` of ``kind`` (``SOCK_STREAM``, ``SOCK_DGRAM``) can be bound on
    ``host`` right now."""
    with socket.socket(socket.AF_INET, kind) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True
