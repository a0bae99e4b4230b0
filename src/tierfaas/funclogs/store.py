"""Each function's log on one node: a ring of its last lines in memory, and rotated files.

Every line an instance prints (``runtime/output.py`` has already cut it to ``line_bytes`` and
held its function to the output rate) is stamped with the node's wall clock and this node's
name, appended to the function's ring (``logs_lines`` lines) and to its file under
``<state dir>/logs/`` (``FUNCTION.log``, rotated at ``logs_file_bytes`` into ``FUNCTION.log.1``
and on, ``logs_files`` files kept), and handed to whoever follows the function. So what a
function may cost the node is bounded three times over: memory by the ring, disk by the files,
and the work per second by the output rate upstream.

A read is answered from the ring when the ring holds everything asked for, or at least the
newest ``limit`` lines that match; else (an older ``since``, a request id whose lines the ring
let go, lines of an earlier run of the node) it reads the files, in a worker thread, which hold
the same lines: at most ``logs_files`` x ``logs_file_bytes`` per read. A file that cannot be
written (disk full) costs the lines' copy on disk, counted in ``write_failures``; the ring and
followers still get them.

Followers each have a bounded queue: one that does not read fast enough misses lines (counted,
and said to it), it never grows the node's memory; a function has at most ``MAX_FOLLOWERS``.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from tierfaas.funclogs.line import LogLine
from tierfaas.runtime.output import OutputLine

log = logging.getLogger(__name__)

FOLLOW_QUEUE_LINES = 2000
"""Lines a follower may be behind before it misses some (each at most ~4 KiB)."""
MAX_FOLLOWERS = 16
"""Followers of one function at once on a node: with the queue, bounds what following costs."""


class TooManyFollowers(Exception):
    """The function has ``MAX_FOLLOWERS`` followers already."""


@dataclass(frozen=True, slots=True)
class LogSettings:
    """What one function's log may hold on a node (node settings ``logs_*``)."""

    lines: int = 1000
    """Lines kept in memory."""
    file_bytes: int = 4 * 1024 * 1024
    """Bytes of one file before it is rotated."""
    files: int = 3
    """Files kept: the one written and the rotated ones; 0 keeps no file."""


def matches(line: LogLine, since: float | None, request: str | None) -> bool:
    """The filter of a read: at or after ``since`` (Unix time), of call ``request``."""
    return (since is None or line.time >= since) and (request is None or line.request == request)


class RotatingFile:
    """Appends to ``path``; a write that would take it past ``max_bytes`` first moves it to
    ``path.1`` (``path.1`` to ``path.2`` and so on; the one past ``keep - 1`` goes). Every
    write is one ``os.write`` of whole lines, so a reader sees whole lines but maybe the last."""

    def __init__(self, path: Path, max_bytes: int, keep: int) -> None:
        if keep < 1 or max_bytes < 1:
            raise ValueError("a rotating file keeps at least one file of at least one byte")
        self.path = path
        self.max_bytes = max_bytes
        self.keep = keep
        self._fd: int | None = None
        self._size = 0

    def paths(self) -> list[Path]:
        """The files that exist, oldest first (the one written last)."""
        names = [self._name(n) for n in range(self.keep - 1, -1, -1)]
        return [path for path in names if path.exists()]

    def write(self, data: bytes) -> None:
        """Raises ``OSError`` (the file is opened again on the next write)."""
        if self._fd is None:
            self._open()
        if self._size and self._size + len(data) > self.max_bytes:
            self._rotate()
        assert self._fd is not None
        try:
            written = os.write(self._fd, data)
        except OSError:
            self.close()
            raise
        self._size += written

    def close(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None

    def _name(self, number: int) -> Path:
        return self.path if number == 0 else self.path.with_name(f"{self.path.name}.{number}")

    def _open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC
        self._fd = os.open(self.path, flags, 0o600)
        self._size = os.fstat(self._fd).st_size

    def _rotate(self) -> None:
        self.close()
        last = self._name(self.keep - 1)
        if self.keep == 1:
            last.unlink(missing_ok=True)
        for number in range(self.keep - 2, -1, -1):
            source = self._name(number)
            if source.exists():
                source.replace(self._name(number + 1))
        self._open()


def read_files(
    paths: Iterable[Path], since: float | None, request: str | None, limit: int
) -> list[LogLine]:
    """The last ``limit`` lines of ``paths`` (oldest first) that match; unreadable files and
    lines (a torn last line) are skipped. Blocking: run it in a worker thread."""
    kept: collections.deque[LogLine] = collections.deque(maxlen=limit)
    # A line of another call cannot hold its id as a JSON string: skipped unparsed.
    needle = None if request is None else json.dumps(request).encode()
    for path in paths:
        try:
            with path.open("rb") as file:
                for raw in file:
                    if needle is not None and needle not in raw:
                        continue
                    try:
                        line = LogLine.from_json(json.loads(raw))
                    except ValueError:
                        continue
                    if matches(line, since, request):
                        kept.append(line)
        except OSError as exc:
            log.warning("cannot read the function log %s: %s", path, exc)
    return list(kept)


class Follower:
    """The lines of one function that reach one ``follow`` reader, in a bounded queue."""

    def __init__(self, request: str | None, capacity: int = FOLLOW_QUEUE_LINES) -> None:
        self.request = request
        self.lines: collections.deque[LogLine] = collections.deque()
        self.capacity = capacity
        self.missed = 0
        """Lines dropped because the queue was full, since the reader last took them."""
        self.ready = asyncio.Event()

    def offer(self, line: LogLine) -> None:
        if self.request is not None and line.request != self.request:
            return
        if len(self.lines) >= self.capacity:
            self.missed += 1
        else:
            self.lines.append(line)
        self.ready.set()

    def take(self) -> tuple[list[LogLine], int]:
        """The lines queued and how many were missed since the last take."""
        lines, missed = list(self.lines), self.missed
        self.lines.clear()
        self.missed = 0
        self.ready.clear()
        return lines, missed


class FunctionLog:
    def __init__(self, settings: LogSettings, file: RotatingFile | None) -> None:
        self.ring: collections.deque[LogLine] = collections.deque(maxlen=settings.lines)
        self.file = file
        # Whether older lines than the ring's may exist: the ring let one go, or the files
        # hold an earlier run's.
        self.older = file is not None and bool(file.paths())
        self.followers: set[Follower] = set()
        self.lines = 0
        self.write_failures = 0


class LogStore:
    """The logs of a release's functions on node ``node``. ``directory`` holds the files
    (None: memory only); ``wall`` stamps the lines (Unix time)."""

    def __init__(
        self,
        node: str,
        functions: Iterable[str],
        settings: LogSettings,
        directory: Path | None,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.node = node
        self.settings = settings
        self.directory = directory if settings.files > 0 else None
        self.wall = wall
        self._last = 0.0  # the time given to the last line
        self.logs: dict[str, FunctionLog] = {}
        for name in functions:
            file = None
            if self.directory is not None:
                path = self.directory / f"{name}.log"
                file = RotatingFile(path, settings.file_bytes, settings.files)
            self.logs[name] = FunctionLog(settings, file)

    def __contains__(self, function: str) -> bool:
        return function in self.logs

    def sink(self, output: OutputLine) -> None:
        """Keeps a line an instance printed (the sink of ``runtime/output.py``)."""
        # Never before the last line's time: a step back of the wall clock (NTP) must not
        # put lines out of order, which reads and merges rely on.
        at = self.wall()
        at = max(at, self._last)
        self._last = at
        line = LogLine(
            time=at,
            function=output.function,
            node=self.node,
            instance=output.instance,
            stream=output.stream,
            request=output.request,
            text=output.text,
        )
        self.add(line)

    def add(self, line: LogLine) -> None:
        entry = self.logs.get(line.function)
        if entry is None:
            return  # not of this release: nothing to keep it for
        entry.lines += 1
        ring = entry.ring
        if len(ring) == ring.maxlen:
            entry.older = True
        ring.append(line)
        if entry.file is not None:
            try:
                entry.file.write(line.encode())
            except OSError as exc:
                entry.write_failures += 1
                if entry.write_failures == 1 or entry.write_failures % 1000 == 0:
                    log.warning(
                        "cannot write the log of fn=%s (%d lines not on disk): %s",
                        line.function,
                        entry.write_failures,
                        exc,
                    )
        for follower in entry.followers:
            follower.offer(line)

    def in_memory(self, function: str, since: float | None) -> bool:
        """True when the ring holds every line of ``function`` from ``since`` on."""
        entry = self.logs[function]
        if entry.file is None or not entry.older:
            return True
        return bool(entry.ring) and since is not None and entry.ring[0].time <= since

    def recent(
        self, function: str, since: float | None, request: str | None, limit: int
    ) -> list[LogLine]:
        """The last ``limit`` matching lines of the ring, oldest first."""
        found: list[LogLine] = []
        for line in reversed(self.logs[function].ring):
            if since is not None and line.time < since:
                break  # the ring is in time order (but for a step of the wall clock)
            if request is None or line.request == request:
                found.append(line)
                if len(found) >= limit:
                    break
        found.reverse()
        return found

    async def read(
        self, function: str, since: float | None, request: str | None, limit: int
    ) -> list[LogLine]:
        """The last ``limit`` matching lines, oldest first: from the ring when it holds them,
        else from the files (in a worker thread). ``KeyError`` for a function not kept here."""
        entry = self.logs[function]
        found = self.recent(function, since, request, limit)
        # The ring answers when it holds every line asked for, or the newest ``limit`` ones.
        if len(found) >= limit or self.in_memory(function, since) or entry.file is None:
            return found
        return await asyncio.to_thread(read_files, entry.file.paths(), since, request, limit)

    def follow(self, function: str, request: str | None) -> Follower:
        """A follower of ``function``'s new lines (of call ``request`` only, if given) until
        ``unfollow``; ``TooManyFollowers`` past ``MAX_FOLLOWERS``."""
        followers = self.logs[function].followers
        if len(followers) >= MAX_FOLLOWERS:
            raise TooManyFollowers(function)
        follower = Follower(request)
        followers.add(follower)
        return follower

    def unfollow(self, function: str, follower: Follower) -> None:
        self.logs[function].followers.discard(follower)

    def close(self) -> None:
        for entry in self.logs.values():
            if entry.file is not None:
                entry.file.close()
