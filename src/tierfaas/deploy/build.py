"""The release's build step, ``[release] build = ["make"]``: run once when a node loads it.

A release may hold sources that must be compiled before its functions start (a C function
built by ``make``). The node runs the build's argv (no shell) in the release directory before
it serves the release, then checks that every exec function's program exists
(``manifest.check_commands``), so a missing program fails at load naming the function.

How it runs, and why:

- Environment: the node's ``PATH``, ``HOME``, ``LANG`` and ``LC_*`` only. The node's own
  settings (``TIERFAAS_*``, the cluster key's path among them) and anything else the node was
  started with are not the build's business (``build_environment``). stdin is /dev/null.
- Its own session and process group: a timeout, a cancelled load or a node stopping kills the
  whole group (make and every compiler it started), and so does the leader's exit, so nothing
  a build left running outlives it.
- Output: stdout and stderr, merged, go line by line to the node's log (logger
  ``tierfaas.build``, each line prefixed with the release's name and version), cut at
  ``LINE_CHARS`` and rate-bounded (``LogBudget``: a runaway build cannot flood the log; what
  is dropped is counted in summary lines, at most one a second). The last ``TAIL_LINES``
  lines are always kept (``OutputLines``) and go in the error of a failed build.
- One build at a time per directory: several nodes on one host load the same directory
  (``tierfaas up``; a registry version is one shared folder), so the build holds an ``flock``
  on ``LOCK_NAME`` in the release directory while it runs. Each node still runs the build
  after the one before it: a build is expected to be idempotent (make rebuilds nothing that is
  up to date), which is cheaper to rely on than proving that a directory's content was built.
- Failure (a nonzero exit, a signal, the timeout, a program that does not start) raises
  ``errors.BuildFailed`` with the status and the last lines, and the release does not load.

``run_build`` is blocking (``tierfaas up`` calls it before its event loop runs);
``build_release`` runs it on a thread of its own, so async callers keep their loop free and a
cancelled caller kills the build.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import selectors
import signal
import subprocess
import threading
import time
from collections import deque
from collections.abc import Iterator, Mapping

from tierfaas.clock import Clock, monotonic
from tierfaas.errors import BuildFailed
from tierfaas.manifest import DEFAULT_PATH, Release, check_commands
from tierfaas.procs import killpg, on_parent_death

log = logging.getLogger("tierfaas.build")

LOCK_NAME = ".tierfaas-build.lock"
"""The file in the release directory whose ``flock`` serializes builds (never in git or a
registry copy)."""
DEFAULT_TIMEOUT_S = 300.0
TAIL_LINES = 20
LINE_CHARS = 1000
"""A longer line is cut here (marked), in the log and in the tail."""
LOG_LINES_PER_S = 50.0
LOG_BURST_LINES = 500
_READ_BYTES = 64 * 1024
_POLL_S = 0.1
"""How often the build loop looks at the clock and at a cancel request."""
_LOCK_POLL_S = 0.05
_DRAIN_S = 2.0
"""How long the output is still read once the build's leader exited (a process that left
its group may hold the pipe open; the build is over all the same)."""
_KEPT_VARIABLES = frozenset({"PATH", "HOME", "LANG"})


def build_environment(environ: Mapping[str, str]) -> dict[str, str]:
    """The build's environment: ``PATH`` (the instances' default PATH if the node has none),
    ``HOME``, ``LANG`` and ``LC_*`` of ``environ``, nothing else."""
    env = {
        key: value
        for key, value in environ.items()
        if (key in _KEPT_VARIABLES or key.startswith("LC_")) and not key.startswith("TIERFAAS_")
    }
    env.setdefault("PATH", DEFAULT_PATH)
    return env


def release_label(release: Release) -> str:
    return f"{release.name} {release.version}"


class OutputLines:
    """Bytes of the build's output in, whole lines out (decoded, each cut at ``line_chars``),
    the last ``tail_lines`` of them kept. Only the head of an unfinished line is held, so a
    build printing megabytes without a newline costs ``line_chars``."""

    def __init__(self, tail_lines: int = TAIL_LINES, line_chars: int = LINE_CHARS) -> None:
        self.line_chars = line_chars
        self.tail: deque[str] = deque(maxlen=tail_lines)
        self._head = bytearray()
        self._cut = 0  # bytes of the current line beyond its kept head

    def feed(self, data: bytes) -> list[str]:
        """The lines ``data`` completes, in order (each also kept in the tail)."""
        lines = []
        while data:
            end = data.find(b"\n")
            part, data = (data, b"") if end < 0 else (data[:end], data[end + 1 :])
            room = max(0, self.line_chars - len(self._head))
            self._head += part[:room]
            self._cut += len(part) - min(len(part), room)
            if end >= 0:
                lines.append(self._finish())
        return lines

    def close(self) -> list[str]:
        """The unfinished last line, if the output ended without a newline."""
        return [self._finish()] if self._head or self._cut else []

    def _finish(self) -> str:
        line = self._head.decode("utf-8", errors="replace").rstrip("\r")
        if self._cut:
            line += f" ...[cut {self._cut} bytes]"
        self._head = bytearray()
        self._cut = 0
        self.tail.append(line)
        return line


class LogBudget:
    """A token bucket of log lines: ``rate`` per second, up to ``burst`` at once. ``take()``
    says whether a line may be logged now. Once it refuses one, it refuses everything for
    ``hold_s`` (so the summary of what was dropped comes at most once per hold, not once per
    refilled token); the lines refused are counted until ``resumed()`` hands their number
    over, so the log says how many it did not show."""

    def __init__(
        self,
        clock: Clock,
        rate: float = LOG_LINES_PER_S,
        burst: int = LOG_BURST_LINES,
        hold_s: float = 1.0,
    ) -> None:
        self.clock = clock
        self.rate = rate
        self.burst = float(burst)
        self.hold_s = hold_s
        self.tokens = float(burst)
        self.dropped = 0
        self._at = clock()
        self._dropping_since = 0.0

    def take(self) -> bool:
        now = self.clock()
        self.tokens = min(self.burst, self.tokens + (now - self._at) * self.rate)
        self._at = now
        holding = self.dropped > 0 and now - self._dropping_since < self.hold_s
        if not holding and self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        if self.dropped == 0:
            self._dropping_since = now
        self.dropped += 1
        return False

    def resumed(self) -> int:
        """How many lines were dropped since the last call (and forgets them)."""
        dropped, self.dropped = self.dropped, 0
        return dropped


class _BuildLog:
    """Lines to the ``tierfaas.build`` logger, prefixed with the release, within a budget."""

    def __init__(self, label: str, clock: Clock) -> None:
        self.label = label
        self.budget = LogBudget(clock)

    def line(self, text: str) -> None:
        if not self.budget.take():
            return
        self.flush_dropped()
        log.info("%s: %s", self.label, text)

    def flush_dropped(self) -> None:
        dropped = self.budget.resumed()
        if dropped:
            log.warning(
                "%s: %d lines of build output not logged (over the rate)", self.label, dropped
            )


def status_of(returncode: int) -> str:
    """``exit 2`` or ``killed by SIGKILL``, from a Popen return code."""
    if returncode >= 0:
        return f"exit {returncode}"
    try:
        return f"killed by {signal.Signals(-returncode).name}"
    except ValueError:
        return f"killed by signal {-returncode}"


def run_build(
    release: Release,
    *,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    environ: Mapping[str, str] | None = None,
    cancel: threading.Event | None = None,
    clock: Clock = monotonic,
) -> None:
    """Runs ``release.build`` in the release directory (nothing when it has none), holding
    the directory's build lock; blocks until it is done. Raises ``BuildFailed`` if it fails,
    runs past ``timeout_s`` (the wait for the lock included) or ``cancel`` is set; its process
    group is killed then."""
    if not release.build:
        return
    label = release_label(release)
    deadline = clock() + timeout_s
    with _build_lock(release, deadline, cancel, clock):
        log.info("%s: building: %s", label, list(release.build))
        began = clock()
        status = _run(release, deadline, timeout_s, environ, cancel, clock)
        if status is not None:
            raise BuildFailed(label, release.build, status[0], status[1])
        log.info("%s: build done in %.1f s", label, clock() - began)


def prepare_release(
    release: Release,
    *,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    cancel: threading.Event | None = None,
) -> None:
    """What loading a release takes before its functions can start: the build, then the
    check that every exec function's program exists. Raises ``BuildFailed`` or
    ``ManifestError`` (naming ``functions.NAME.command``)."""
    run_build(release, timeout_s=timeout_s, cancel=cancel)
    check_commands(release)


async def prepare_release_async(release: Release, *, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
    """``prepare_release`` on a thread of its own, keeping the event loop free; cancelling
    the awaiting task kills the build (and waits until its process group is gone)."""
    if not release.build:
        check_commands(release)
        return
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()
    cancel = threading.Event()

    def work() -> None:
        try:
            prepare_release(release, timeout_s=timeout_s, cancel=cancel)
        except BaseException as exc:  # handed to the awaiting task
            outcome: BaseException | None = exc
        else:
            outcome = None
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits any more
            loop.call_soon_threadsafe(_settle, done, outcome)

    # A thread of its own, not the loop's pool: the build's parent-death signal is tied to
    # the thread that started it, which lives exactly as long as the build.
    thread = threading.Thread(target=work, name=f"build {release_label(release)}", daemon=True)
    thread.start()
    try:
        await asyncio.shield(done)
    except asyncio.CancelledError:
        cancel.set()
        with contextlib.suppress(BaseException):
            await done
        raise


def _settle(done: asyncio.Future[None], outcome: BaseException | None) -> None:
    if done.done():
        return
    if outcome is None:
        done.set_result(None)
    else:
        done.set_exception(outcome)


@contextlib.contextmanager
def _build_lock(
    release: Release, deadline: float, cancel: threading.Event | None, clock: Clock
) -> Iterator[None]:
    label = release_label(release)
    path = release.root / LOCK_NAME
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        raise BuildFailed(label, release.build, f"cannot open {path}: {exc.strerror}", ()) from None
    try:
        waited = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if not waited:
                    log.info("%s: waiting for another build in %s", label, release.root)
                    waited = True
                if cancel is not None and cancel.is_set():
                    raise BuildFailed(label, release.build, "cancelled", ()) from None
                if clock() >= deadline:
                    raise BuildFailed(
                        label,
                        release.build,
                        "timed out waiting for another build of this directory to finish",
                        (),
                    ) from None
                time.sleep(_LOCK_POLL_S)
        yield
    finally:
        os.close(fd)  # releases the lock


def _run(
    release: Release,
    deadline: float,
    timeout_s: float,
    environ: Mapping[str, str] | None,
    cancel: threading.Event | None,
    clock: Clock,
) -> tuple[str, tuple[str, ...]] | None:
    """None when the build succeeds, else (its status, the last lines of its output)."""
    label = release_label(release)
    env = build_environment(os.environ if environ is None else environ)
    try:
        process = subprocess.Popen(
            list(release.build),
            cwd=release.root,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=on_parent_death(signal.SIGKILL),  # noqa: PLW1509 - a prctl call only
        )
    except OSError as exc:
        where = f"PATH={env['PATH']}" if "/" not in release.build[0] else str(release.root)
        reason = f"cannot start {release.build[0]!r}: {exc.strerror} ({where})"
        return reason, ()
    output = OutputLines()
    build_log = _BuildLog(label, clock)
    stopped: str | None = None
    assert process.stdout is not None
    fd = process.stdout.fileno()
    os.set_blocking(fd, False)
    try:
        with selectors.DefaultSelector() as selector:
            selector.register(fd, selectors.EVENT_READ)
            open_pipe = True
            exited_at: float | None = None
            while open_pipe or process.poll() is None:
                if cancel is not None and cancel.is_set():
                    stopped = "cancelled"
                    break
                now = clock()
                if now >= deadline:
                    stopped = f"timed out after {timeout_s:g} s"
                    break
                if exited_at is None and process.poll() is not None:
                    # The leader is done: whatever it left running in its group goes too, so
                    # the pipe ends and nothing of the build outlives it.
                    exited_at = now
                    killpg(process.pid, signal.SIGKILL)
                if exited_at is not None and now - exited_at > _DRAIN_S:
                    break
                if not open_pipe:
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        process.wait(min(_POLL_S, deadline - now))
                    continue
                if selector.select(min(_POLL_S, deadline - now)):
                    try:
                        chunk = os.read(fd, _READ_BYTES)
                    except BlockingIOError:
                        continue
                    if not chunk:
                        open_pipe = False
                        selector.unregister(fd)
                    for line in output.feed(chunk):
                        build_log.line(line)
    finally:
        killpg(process.pid, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        process.wait()
        process.stdout.close()
    for line in output.close():
        build_log.line(line)
    build_log.flush_dropped()
    if stopped is None and process.returncode == 0:
        return None
    return stopped or status_of(process.returncode), tuple(output.tail)
