"""Each instance's stdout and stderr, turned into log lines of bounded size and rate.

A function runs code its operators did not write, and that code may print without end. The node
reads each instance's two pipes and turns their bytes into ``OutputLine`` records, tagged with
function, instance and request, within three bounds:

- Size: a line is cut at ``line_bytes`` (marked ``…[truncated N bytes]``), and a stream never
  accounts more than ``buffer_bytes`` to one unfinished line: there it puts in a record boundary,
  as journald does at its ``LineMax``. Only the kept head of a line is held in memory, so a
  10 MB line without a newline costs ``line_bytes``, not 10 MB.
- Rate: the instances of one function share a token bucket (``OutputBudget``). A line that
  finds the bucket empty is dropped, and its stream then drops everything for ``DROP_HOLD_S``
  and until the bucket has room again; it then writes one summary of what it dropped. A flood
  so reads as runs of whole lines (about a second's worth of the rate each) between summaries,
  never as one summary per dropped line. The hold runs from the stream's own first drop, not
  from a shared threshold, so a flooding stream does not win every race for the refilled
  bucket: a quiet neighbour (another instance, or the same instance's stderr with its
  traceback) finds room between the flood's runs.
- The writer: the pipes are read whether or not the budget allows more (over it, the bytes are
  counted and dropped), so an instance never stalls on a full pipe, and each read is bounded so
  one noisy instance cannot hold the loop.

``OutputStream`` is the pure core (bytes in, lines out, time from the budget's clock);
``InstanceOutput`` only moves bytes from the pipes into it on the running asyncio loop.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import logging
import os
import select
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

from tierfaas.clock import Clock, LoopScheduler, Scheduler, Timer

Stream = Literal["stdout", "stderr"]

READ_BYTES = 64 * 1024
"""One read from a pipe: what a Linux pipe holds by default."""

DROP_HOLD_S = 1.0
"""How long a stream that found the bucket empty keeps dropping, at least."""

RECORD_BYTES = 64
"""What each line costs the budget beyond its text: about the prefix the log gives it (time,
level, function, instance, request, stream). It also keeps a flood of empty lines from costing
the node a log record per byte of budget."""

READS_PER_CALLBACK = 4
"""Reads per readiness callback (256 KiB): the loop serves others between a flood's reads."""
STDERR_TAIL_LINES = 10
"""How many of an instance's last stderr lines are kept for the error of a failed start."""
STDERR_TAIL_CHARS = 500

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class OutputLimits:
    """What one function's instances may write to the node's log."""

    bytes_per_s: int = 64 * 1024
    """Sustained rate of the function (all its instances together), in bytes of log lines
    (each line's text and ``RECORD_BYTES``)."""
    burst_bytes: int = 256 * 1024
    """The bucket: how much may be written at once after a quiet time."""
    line_bytes: int = 4096
    """A longer line keeps its first ``line_bytes`` and says how many bytes were cut."""
    buffer_bytes: int = 64 * 1024
    """An unfinished line ends as a record at this many bytes even without a newline (journald's
    ``LineMax``); what follows starts the next record. Bounds how long output can stay unseen."""

    def __post_init__(self) -> None:
        for name in ("bytes_per_s", "burst_bytes", "line_bytes", "buffer_bytes"):
            if getattr(self, name) <= 0:
                raise ValueError(f"output limit {name} must be positive")
        if self.line_bytes > self.buffer_bytes:
            raise ValueError("output limit line_bytes must not exceed buffer_bytes")


class OutputBudget:
    """The token bucket one function's instances share, and the totals of what it dropped.

    A line passes while the bucket is not empty, and its whole cost is taken even if that puts
    the bucket in debt: a line is never cut for the rate, and the debt is paid by the next ones.
    So over any span of ``t`` seconds at most ``burst_bytes + bytes_per_s * t`` plus one line
    passes."""

    def __init__(self, limits: OutputLimits, clock: Clock) -> None:
        self.limits = limits
        self.clock = clock
        self.dropped_lines = 0
        self.dropped_bytes = 0
        self.truncated_lines = 0
        """Lines cut at ``line_bytes`` (passed, or dropped after)."""
        self._tokens = float(limits.burst_bytes)
        self._at = clock()

    def _refill(self) -> float:
        now = self.clock()
        limits = self.limits
        earned = (now - self._at) * limits.bytes_per_s
        self._tokens = min(float(limits.burst_bytes), self._tokens + earned)
        self._at = now
        return self._tokens

    def spend(self, cost: int) -> bool:
        """Takes ``cost`` bytes if the bucket is not empty; false, taking nothing, if it is."""
        if self._refill() <= 0:
            return False
        self._tokens -= cost
        return True

    def charge(self, cost: int) -> None:
        """Takes ``cost`` bytes whatever the bucket holds (the node's own summary lines)."""
        self._refill()
        self._tokens -= cost

    def has_room(self) -> bool:
        """True while the bucket is not empty (a line would pass)."""
        return self._refill() > 0

    def room_at(self) -> float:
        """The clock's time by which the bucket holds a byte again if nothing spends meanwhile
        (now, if it does)."""
        missing = 1.0 - self._refill()
        return self._at + max(0.0, missing) / self.limits.bytes_per_s

    def note_dropped(self, lines: int, nbytes: int) -> None:
        self.dropped_lines += lines
        self.dropped_bytes += nbytes


@dataclass(frozen=True, slots=True)
class OutputLine:
    """One line an instance wrote: utf-8 decoded (invalid bytes replaced), without its newline."""

    function: str
    instance: int
    request: str | None
    """The call being served when the line ended; None when idle or with several in flight."""
    stream: Stream
    text: str


class OutputStream:
    """One stream of one instance: bytes in, log lines out. Pure: no fds, no loop; its only
    time is the budget's clock. Counts bytes as read, before decoding."""

    def __init__(self, function: str, instance: int, stream: Stream, budget: OutputBudget) -> None:
        self.function = function
        self.instance = instance
        self.stream: Stream = stream
        self.request: str | None = None
        """The tag of the lines that end from now on."""
        self.lines = 0
        self.dropped_lines = 0
        self.dropped_bytes = 0
        self._budget = budget
        self._limits = budget.limits
        self._head = bytearray()  # the kept start of the unfinished line, at most line_bytes
        self._length = 0  # bytes of the unfinished line so far, kept or not (< buffer_bytes)
        self._ends_with_cr = False
        self._after_break = False  # the last record ended at buffer_bytes, not at a newline
        self._dropping_since: float | None = None  # the clock's time of this run's first drop
        self._unreported_lines = 0
        self._unreported_bytes = 0

    @property
    def held_bytes(self) -> int:
        """The bytes of the unfinished line held in memory (at most ``line_bytes``)."""
        return len(self._head)

    @property
    def pending_bytes(self) -> int:
        """The length of the unfinished line so far (below ``buffer_bytes``)."""
        return self._length

    @property
    def dropping(self) -> bool:
        """True from a line that found the budget empty until the summary of the drops."""
        return self._dropping_since is not None

    def feed(self, data: bytes) -> list[OutputLine]:
        """The lines that ``data`` ends (a line may span any number of feeds)."""
        out: list[OutputLine] = []
        view = memoryview(data)
        position, end = 0, len(data)
        while position < end:
            if self._dropping_since is not None and not self._may_resume():
                position = self._drop_lines(data, view, position, out)
                continue
            newline = data.find(b"\n", position)
            if newline < 0:
                self._extend(view[position:], out)
                break
            self._extend(view[position:newline], out)
            self._end_record(out, newline=True)
            position = newline + 1
        return out

    def poll(self) -> list[OutputLine]:
        """The summary of what this stream dropped once it may write again; else none."""
        if self._dropping_since is not None and self._may_resume():
            return [self._resume()]
        return []

    def summary_due_at(self) -> float | None:
        """When ``poll()`` may next have a summary to give (the clock's time), or None."""
        if self._dropping_since is None:
            return None
        return max(self._dropping_since + DROP_HOLD_S, self._budget.room_at())

    def finish(self) -> list[OutputLine]:
        """At the stream's end: its unfinished line, then the summary of what it dropped and has
        not reported yet, budget or not (one line at most). Idempotent."""
        out: list[OutputLine] = []
        if self._length:
            self._end_record(out, newline=False)
        if self._dropping_since is not None:
            out.append(self._resume())
        return out

    def _drop_lines(
        self, data: bytes, view: memoryview, position: int, out: list[OutputLine]
    ) -> int:
        """Over budget: drops every line that ends in ``data[position:]`` at C speed (one count
        of newlines, not a split), and keeps the rest as the unfinished line."""
        last = data.rfind(b"\n", position)
        if last < 0:
            self._extend(view[position:], out)
            return len(data)
        first = data.find(b"\n", position)
        self._extend(view[position:first], out)
        self._end_record(out, newline=True)
        if self._dropping_since is None:  # the hold ended meanwhile: back to lines one by one
            return first + 1
        if last > first:
            # Counted by newline: exact while a read is no longer than buffer_bytes.
            self._drop(data.count(b"\n", first + 1, last + 1), last - first)
        self._extend(view[last + 1 :], out)
        return len(data)

    def _extend(self, segment: memoryview, out: list[OutputLine]) -> None:
        limits = self._limits
        while len(segment):
            take = min(len(segment), limits.buffer_bytes - self._length)
            room = limits.line_bytes - len(self._head)
            if room > 0:
                self._head += segment[: min(room, take)]
            self._length += take
            self._ends_with_cr = segment[take - 1] == 0x0D
            self._after_break = False
            segment = segment[take:]
            if self._length >= limits.buffer_bytes:
                self._end_record(out, newline=False)
                self._after_break = True

    def _end_record(self, out: list[OutputLine], *, newline: bool) -> None:
        length, head = self._length, self._head
        if newline and length == 0 and self._after_break:
            self._after_break = False  # this newline ends the record the boundary already did
            return
        raw = length + newline
        if newline and self._ends_with_cr:
            length -= 1
            if len(head) > length:
                del head[length:]
        self._head, self._length, self._ends_with_cr = bytearray(), 0, False
        if self._dropping_since is not None:
            if not self._may_resume():
                self._drop(1, raw)
                return
            out.append(self._resume())
        if length > len(head):
            self._budget.truncated_lines += 1
        record = _record(head, length)
        if not self._budget.spend(len(record) + RECORD_BYTES):
            self._dropping_since = self._budget.clock()
            self._drop(1, raw)
            return
        self.lines += 1
        out.append(self._line(record.decode("utf-8", "replace")))

    def _drop(self, lines: int, nbytes: int) -> None:
        self.dropped_lines += lines
        self.dropped_bytes += nbytes
        self._unreported_lines += lines
        self._unreported_bytes += nbytes
        self._budget.note_dropped(lines, nbytes)

    def _may_resume(self) -> bool:
        since = self._dropping_since
        budget = self._budget
        return since is not None and budget.clock() >= since + DROP_HOLD_S and budget.has_room()

    def _resume(self) -> OutputLine:
        """Ends the run of drops with its summary, which the budget is charged for."""
        self._dropping_since = None
        lines, nbytes = self._unreported_lines, self._unreported_bytes
        self._unreported_lines = self._unreported_bytes = 0
        rate = _per_second(self._limits.bytes_per_s)
        noun = "line" if lines == 1 else "lines"
        text = f"…[dropped {lines} {noun}, {nbytes} bytes: over the output rate of {rate}]"
        self._budget.charge(len(text.encode()) + RECORD_BYTES)
        return self._line(text)

    def _line(self, text: str) -> OutputLine:
        return OutputLine(self.function, self.instance, self.request, self.stream, text)


def _record(head: bytearray, length: int) -> bytes:
    """The bytes to log for a line of ``length`` bytes of which ``head`` was kept."""
    if len(head) >= length:
        return bytes(head)
    kept = _whole_characters(head)
    return kept + f"…[truncated {length - len(kept)} bytes]".encode()


def _whole_characters(data: bytearray) -> bytes:
    """``data`` without a utf-8 character its cut left incomplete at the end."""
    end = len(data)
    start = end - 1
    while start > max(0, end - 4) and data[start] & 0xC0 == 0x80:
        start -= 1
    if start < 0:
        return b""
    lead = data[start]
    if lead >> 5 == 0b110:
        size = 2
    elif lead >> 4 == 0b1110:
        size = 3
    elif lead >> 3 == 0b11110:
        size = 4
    else:
        size = 1  # ASCII, or not utf-8 at all: nothing to complete
    return bytes(data[:start]) if end - start < size else bytes(data)


def _per_second(rate: int) -> str:
    for unit, size in (("MiB", 1024 * 1024), ("KiB", 1024)):
        if rate >= size and rate % size == 0:
            return f"{rate // size} {unit}/s"
    return f"{rate} B/s"


class InstanceOutput:
    """Reads one instance's stdout and stderr pipes on the running asyncio loop and hands the
    lines to ``sink``. Owns the two read ends (made non-blocking here) and closes them.

    Each readiness callback reads at most ``READS_PER_CALLBACK`` times ``READ_BYTES``. A pipe's
    end of file finishes its stream (its last line and summary) and closes its fd. A stream that
    dropped lines and then went quiet still gets its summary: a timer on ``scheduler`` (by
    default the loop's, on the budget's clock) polls it when it may write again."""

    def __init__(
        self,
        function: str,
        instance_id: int,
        stdout_fd: int,
        stderr_fd: int,
        budget: OutputBudget,
        sink: Callable[[OutputLine], None],
        *,
        scheduler: Scheduler | None = None,
        redact: Callable[[str], str] | None = None,
    ) -> None:
        """``redact``: applied to each line's text before anyone sees it (the secrets the
        node gave its functions become ``***``: tierfaas.secrets.redact)."""
        if stdout_fd == stderr_fd:
            raise ValueError("stdout and stderr need a pipe each")
        self._loop = asyncio.get_running_loop()
        self._scheduler = scheduler if scheduler is not None else LoopScheduler(budget.clock)
        self._sink = sink
        self._redact = redact
        self._streams = {
            stdout_fd: OutputStream(function, instance_id, "stdout", budget),
            stderr_fd: OutputStream(function, instance_id, "stderr", budget),
        }
        self._request: str | None = None
        # The last lines of stderr, whatever the budget let through to the sink: what an
        # instance that died during its start said last goes into the error of its start.
        self._stderr_tail: collections.deque[str] = collections.deque(maxlen=STDERR_TAIL_LINES)
        self._open = set(self._streams)  # the fds not yet closed, whether read or not
        self._reading: set[int] = set()
        self._timers: dict[int, Timer] = {}
        self._closed = False
        self._poll = select.poll()  # set_request's look at both pipes (any fd number)
        try:
            for fd in self._streams:
                os.set_blocking(fd, False)
                self._loop.add_reader(fd, self._on_readable, fd)
                self._reading.add(fd)
                self._poll.register(fd, select.POLLIN)
        except BaseException:
            self._closed = True
            for fd in self._streams:
                self._release(fd)
            raise

    @property
    def request(self) -> str | None:
        return self._request

    @property
    def dropped_lines(self) -> int:
        return sum(stream.dropped_lines for stream in self._streams.values())

    @property
    def dropped_bytes(self) -> int:
        return sum(stream.dropped_bytes for stream in self._streams.values())

    @property
    def eof(self) -> bool:
        """True once both pipes have ended (every writer closed them) or ``close()`` ran."""
        return not self._reading

    def set_request(self, request_id: str | None) -> None:
        """Tags the lines that end from now on. What the pipes hold already was written under
        the previous tag, so it is read first (bounded, as by a readiness callback)."""
        if request_id == self._request:
            return
        if self._reading:  # one poll for both pipes, then a read only where there is data
            for fd, _ in self._poll.poll(0):
                if fd in self._reading:
                    self._read(fd)
        self._request = request_id
        for stream in self._streams.values():
            stream.request = request_id

    def stderr_tail(self) -> list[str]:
        """The last lines the instance wrote to stderr (at most ``STDERR_TAIL_LINES``), after
        reading what the pipe holds now (bounded) and, if it has ended, its unfinished line."""
        for fd, stream in self._streams.items():
            if stream.stream == "stderr" and fd in self._reading:
                self._read(fd)
        return list(self._stderr_tail)

    def close(self) -> None:
        """Reads what the pipes hold now (bounded), delivers the streams' last lines and
        summaries, stops reading and closes the fds. Idempotent."""
        if self._closed:
            return
        self._closed = True
        for fd in list(self._reading):
            self._read(fd)
        for stream in self._streams.values():
            self._deliver(stream.finish())
        for fd in self._streams:
            self._release(fd)

    def _on_readable(self, fd: int) -> None:
        self._read(fd)
        self._schedule_summary(fd)

    def _read(self, fd: int) -> None:
        stream = self._streams[fd]
        for _ in range(READS_PER_CALLBACK):
            try:
                data = os.read(fd, READ_BYTES)
            except BlockingIOError:
                return
            except OSError as error:
                log.warning(
                    "fn=%s instance=%d: reading %s failed: %s",
                    stream.function,
                    stream.instance,
                    stream.stream,
                    error,
                )
                data = b""
            if not data:
                self._deliver(stream.finish())
                self._release(fd)
                return
            self._deliver(stream.feed(data))
            if len(data) < READ_BYTES:
                return  # the pipe is empty now: skip the read that would say so

    def _schedule_summary(self, fd: int) -> None:
        if self._closed or fd in self._timers or fd not in self._reading:
            return
        due = self._streams[fd].summary_due_at()
        if due is not None:
            # At least a millisecond on: a due time that rounding made a hair early must not
            # become a timer that fires, finds nothing, and sets itself for the same instant.
            when = max(due, self._scheduler.clock() + 0.001)
            self._timers[fd] = self._scheduler.call_at(when, lambda: self._summary_due(fd))

    def _summary_due(self, fd: int) -> None:
        self._timers.pop(fd, None)
        if self._closed or fd not in self._reading:
            return
        self._deliver(self._streams[fd].poll())
        self._schedule_summary(fd)

    def _deliver(self, lines: list[OutputLine]) -> None:
        sink = self._sink
        redact = self._redact
        for each in lines:
            line = each
            if redact is not None:
                masked = redact(line.text)
                if masked is not line.text:
                    line = dataclasses.replace(line, text=masked)
            if line.stream == "stderr":
                self._stderr_tail.append(line.text.translate(_UNPRINTABLE)[:STDERR_TAIL_CHARS])
            try:
                sink(line)
            except Exception:
                log.exception("the output sink failed on a line of fn=%s", line.function)

    def _release(self, fd: int) -> None:
        """Stops reading ``fd`` and closes it, once: a closed number may be reused at once."""
        timer = self._timers.pop(fd, None)
        if timer is not None:
            timer.cancel()
        if fd in self._reading:
            self._reading.discard(fd)
            self._poll.unregister(fd)
            if not self._loop.is_closed():
                self._loop.remove_reader(fd)
        if fd in self._open:
            self._open.discard(fd)
            with contextlib.suppress(OSError):  # already closed behind our back: nothing to free
                os.close(fd)


_UNPRINTABLE = {
    code: f"\\x{code:02x}"
    for code in (*range(0x20), 0x7F, *range(0x80, 0xA0))
    if code != 0x09  # a tab is harmless in a log line
}
"""Control characters, escaped: an instance must not move the cursor or recolour an operator's
terminal (ANSI escapes) or fake a line of its own (a carriage return)."""


def log_sink(logger: logging.Logger) -> Callable[[OutputLine], None]:
    """The default sink: one record per line, ``fn=<f> instance=<i> request=<r> <stream>:
    <text>`` (request ``-`` when untagged), INFO for stdout and WARNING for stderr, control
    characters escaped."""

    def sink(line: OutputLine) -> None:
        level = logging.INFO if line.stream == "stdout" else logging.WARNING
        logger.log(
            level,
            "fn=%s instance=%d request=%s %s: %s",
            line.function,
            line.instance,
            line.request if line.request is not None else "-",
            line.stream,
            line.text.translate(_UNPRINTABLE),
        )

    return sink


def tee(sinks: Sequence[Callable[[OutputLine], None]]) -> Callable[[OutputLine], None]:
    """One sink that hands each line to every one of ``sinks`` in turn (the first alone
    when there is one). A sink that raises does not keep the line from the others."""
    if len(sinks) == 1:
        return sinks[0]

    def sink(line: OutputLine) -> None:
        for each in sinks:
            try:
                each(line)
            except Exception:
                log.exception("an output sink failed on a line of fn=%s", line.function)

    return sink
