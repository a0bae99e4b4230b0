"""The node's side of one instance process: a pipelined connection with request numbers.

``call()`` writes one CALL frame and returns a future for its RESULT; many calls may be in
flight at once (up to the function's concurrency, which the pool enforces). When the socket
closes with calls in flight, the instance crashed: each call fails with ``InstanceCrashed``
(or ``OutOfMemory``), and the message says how the process ended when the zygote reports it.

The instance runs user code, which can write to this socket itself: every frame is checked
(shape, types, the body's size and content type) before it is believed, and an instance that
sends a malformed one is stopped, its calls failing with ``InstanceCrashed``.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import math
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

import msgpack

from tierfaas import errors
from tierfaas.clock import Scheduler, Timer
from tierfaas.manifest import FunctionSpec
from tierfaas.procs import killpg
from tierfaas.runtime import memory
from tierfaas.runtime import protocol as p
from tierfaas.runtime.zygote_client import ZygoteClient

if TYPE_CHECKING:
    from tierfaas.runtime.output import InstanceOutput
    from tierfaas.sandbox.cgroups import InstanceCgroup

# The content types an instance may answer with (tierfaas.runtime.process.child.encode_result).
CONTENT_TYPES = frozenset(
    {"application/octet-stream", "text/plain; charset=utf-8", "application/json"}
)
DEADLINE_HEAP_SLACK = 64
"""Answered calls the deadline heap may hold beyond twice the calls in flight. Answered calls
leave the heap only from its top, so behind one slow call every fast one after it would stay
until the slow one ends: at 10,000 calls/s and a 300 s timeout, three million entries. Past
this bound the heap is rebuilt from the calls in flight (amortised: at least as many pushes
happen between two rebuilds as entries the rebuild keeps)."""

MAX_ERROR_TYPE_CHARS = 128
MAX_ERROR_MESSAGE_CHARS = 8000


@dataclass(slots=True)  # not frozen: a frozen init costs 3x, one per call
class Result:
    body: bytes
    content_type: str
    status: int = 200
    """The answer's HTTP status: a Python handler's result is 200; an exec function sets it."""
    headers: list[tuple[bytes, bytes]] | None = None
    """The answer's own headers (an http exec function's, filtered), beside its content type."""


def _innermost_pid(status: str) -> int | None:
    """A process's pid in its innermost pid namespace: the last field of the NSpid line of its
    /proc/<pid>/status text (None: no such line, or not a number)."""
    for line in status.splitlines():
        if line.startswith("NSpid:"):
            fields = line.split()
            return int(fields[-1]) if len(fields) > 1 and fields[-1].isdigit() else None
    return None


def instance_pid(pids: list[int]) -> int:
    """Which of a sandboxed instance's processes is the instance: pid 2 of its own namespace
    (pid 1 is its reaper). 0: none of ``pids`` is (any more)."""
    for pid in pids:
        try:
            with open(f"/proc/{pid}/status") as status:
                text = status.read()
        except OSError:
            continue
        if _innermost_pid(text) == 2:
            return pid
    return 0


class Instance(asyncio.Protocol):
    """One live instance process of ``spec``. States: starting -> ready -> dead."""

    def __init__(
        self, instance_id: int, spec: FunctionSpec, zygote: ZygoteClient, scheduler: Scheduler
    ) -> None:
        """``scheduler``: the node's clock and timers (call deadlines, the start timeout)."""
        self.id = instance_id
        self.scheduler = scheduler
        self.clock = scheduler.clock
        now = self.clock()
        self.spec = spec
        self.zygote = zygote
        self.pid = 0  # as the zygote sees it (sandboxed, in the release's pid namespace)
        self.host_pid = 0  # as the node sees it (0: not known)
        self.busy = 0
        self.calls_served = 0
        # When the pool got it ready (pool clock); a call that arrived before waited for it.
        self.ready_at = math.inf
        self.last_used = now
        self.started_at = now
        self.start_s = 0.0  # seconds from the spawn request to READY
        # The phases of its start, for tracing: when the zygote had forked it (clock), and
        # how long its import and init took as it measured them (None: it did not say).
        self.forked_at: float | None = None
        self.init_s: float | None = None
        self.dead = False
        self.holds_memory = True  # its memory_mb still counts against the node's budget
        self.death_reason = ""
        self.protocol_detail = ""  # what broke the protocol, when it did
        self.transport: asyncio.Transport | None = None
        self.unpacker = msgpack.Unpacker(max_buffer_size=p.MAX_FRAME_BYTES)
        self.packer = msgpack.Packer()  # reused: packb builds a new one for every frame
        # Whether the handler takes a context (READY says; until then, assume it does).
        self.takes_context = True
        self.numbers = 0
        self.calls: dict[int, asyncio.Future[Result]] = {}
        loop = asyncio.get_running_loop()
        self.loop = loop
        self.outbox: list[bytes] = []
        self.deadlines: list[tuple[float, int]] = []  # heap of (clock time, call number)
        self.timer: Timer | None = None
        self.timer_at = math.inf
        self.ready: asyncio.Future[None] = loop.create_future()
        self.closed: asyncio.Future[None] = loop.create_future()
        self.max_body = p.MAX_FRAME_BYTES  # the largest result believed (max_response_bytes)
        # Sandboxed: the instance's cgroup, which holds all its processes (None: a plain
        # process group). Its output pipes, when the spawner captures them.
        self.cgroup: InstanceCgroup | None = None
        self.output: InstanceOutput | None = None
        # The request id of each call in flight, while output is captured: a line is tagged
        # with the call's id only while that call runs alone (with several in flight, which
        # one printed it is not known).
        self.call_requests: dict[int, str | None] = {}
        # Applied to every text of the instance's that goes into an error (a handler's message,
        # its start failure, what broke the protocol): the node's secrets become ***.
        self.redact: Callable[[str], str] = _unchanged

    # -- lifecycle -------------------------------------------------------------------------

    async def start(
        self, spec_frame: dict[str, Any], timeout_s: float, fds: list[int] | None = None
    ) -> None:
        """Forks the process (handing it ``fds``: see ZygoteClient.spawn) and waits for READY.
        Raises StartFailed (and leaves no process)."""
        loop = asyncio.get_running_loop()
        began = time.perf_counter()
        ready = self.ready
        # One deadline for the whole start, the zygote's fork included: a zygote that never
        # answers must not hold the call (and its pool's start slot) forever.
        spawning = asyncio.ensure_future(self.zygote.spawn(spec_frame, fds or []))
        expired = False

        def give_up() -> None:
            nonlocal expired
            expired = True
            spawning.cancel()
            if not ready.done():
                ready.set_exception(TimeoutError())

        timer = self.scheduler.call_later(timeout_s, give_up)
        try:
            try:
                self.pid, sock = await spawning
                self.forked_at = self.clock()
            except asyncio.CancelledError:
                if not expired:
                    raise
                ready.exception()  # retrieved: give_up set it, nothing else will read it
                raise errors.StartFailed(
                    f"the zygote did not start an instance of {self.spec.name!r} "
                    f"within {timeout_s:g} s"
                ) from None
            self.host_pid = self.pid if self.cgroup is None else 0
            await loop.create_unix_connection(lambda: self, sock=sock)
            await asyncio.shield(ready)  # a cancelled start leaves READY to arrive (or not)
        except TimeoutError:
            self.kill("start_timeout")
            doing = "import and init" if self.spec.command is None else "getting ready"
            raise errors.StartFailed(
                f"instance of {self.spec.name!r} did not finish {doing} within {timeout_s:g} s"
            ) from None
        except errors.StartFailed:
            self.kill("start_failed")
            raise
        finally:
            timer.cancel()
        self.start_s = time.perf_counter() - began
        if self.cgroup is not None:
            self.host_pid = instance_pid(self.cgroup.procs())

    def kill(self, reason: str) -> None:
        """Stops the process now (SIGKILL); calls in flight fail."""
        if not self.death_reason:
            self.death_reason = reason
        if self.cgroup is not None:
            if not self.dead:
                # Its reaper among them: the kernel then ends the whole pid namespace, so one
                # pass does it, and the node's loop does not wait for the processes to die.
                self.cgroup.signal_all(signal.SIGKILL)
        # The instance leads a process group (see process/zygote.py): this also ends
        # whatever its handler forked. Just after the fork it may not lead one yet.
        elif self.pid and not self.dead and not killpg(self.pid, signal.SIGKILL):
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)
        if self.transport is not None:
            self.transport.close()
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.dead = True

    def memory_bytes(self) -> int | None:
        """What it uses now: its cgroup's memory usage when sandboxed, else its process's PSS;
        None when not known (not started, gone). Blocking, and a cgroup read takes a kernel
        lock: the node calls it off its event loop (``memwatch.py``)."""
        cgroup = self.cgroup
        if cgroup is not None:
            try:
                return cgroup.memory_bytes()
            except (RuntimeError, OSError, ValueError):  # CgroupError: removed meanwhile
                return None
        return memory.read_pss(self.host_pid) if self.host_pid and not self.dead else None

    # -- calls -----------------------------------------------------------------------------

    def call(
        self,
        body: bytes,
        context: dict[str, Any] | None,
        timeout_s: float,
        request_id: str | None = None,
    ) -> asyncio.Future[Result]:
        """Sends one call. ``context`` may be None when ``takes_context`` is false (it would
        not be used). Past ``timeout_s`` the call fails with ``FunctionTimeout`` and the
        process is killed."""
        assert self.transport is not None
        self.numbers += 1
        number = self.numbers
        future: asyncio.Future[Result] = self.loop.create_future()
        self.calls[number] = future
        # One timer per instance, armed for the earliest deadline, rather than one per call
        # (a libuv timer started and stopped per call costs ~2 µs; a heap push ~0.2 µs).
        deadline = self.clock() + timeout_s
        heapq.heappush(self.deadlines, (deadline, number))
        if len(self.deadlines) > 2 * len(self.calls) + DEADLINE_HEAP_SLACK:
            self._compact()
        if deadline < self.timer_at:
            self._arm(deadline)
        if request_id is None and context is not None:
            request_id = context.get("request_id")
        if self.output is not None:  # its output lines name the call, when there is one
            self.call_requests[number] = request_id
            alone = len(self.call_requests) == 1
            self.output.set_request(request_id if alone else None)
        self._send_call(number, body, context, timeout_s, request_id)
        return future

    def _take_call(self, number: int) -> asyncio.Future[Result] | None:
        """Call ``number``'s future, no longer in flight (None if it was not). From now on
        output lines are the remaining call's, if one runs alone, else no call's (what the
        pipes hold already is read under the old tag first)."""
        output = self.output
        if output is not None:
            requests = self.call_requests
            requests.pop(number, None)
            output.set_request(next(iter(requests.values())) if len(requests) == 1 else None)
        return self.calls.pop(number, None)

    def _send_call(
        self,
        number: int,
        body: bytes,
        context: dict[str, Any] | None,
        timeout_s: float,
        request_id: str | None,
    ) -> None:
        """Sends call ``number`` to the instance (its future is in ``calls`` already);
        ``request_id``: the call's (also in ``context``, when there is one)."""
        # Calls made in one pass of the event loop leave in one write (see _flush).
        if not self.outbox:
            self.loop.call_soon(self._flush)
        self.outbox.append(self.packer.pack([p.CALL, number, body, context]))

    def _flush(self) -> None:
        outbox, self.outbox = self.outbox, []
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(b"".join(outbox))

    # -- deadlines -------------------------------------------------------------------------

    def _arm(self, when: float) -> None:
        if self.timer is not None:
            self.timer.cancel()
        self.timer_at = when
        self.timer = self.scheduler.call_at(when, self._expire)

    def _prune(self) -> None:
        """Drops the answered calls from the top of the deadline heap."""
        deadlines, calls = self.deadlines, self.calls
        while deadlines and deadlines[0][1] not in calls:
            heapq.heappop(deadlines)

    def _compact(self) -> None:
        """Rebuilds the deadline heap from the calls still in flight (see
        ``DEADLINE_HEAP_SLACK``)."""
        calls = self.calls
        self.deadlines = [entry for entry in self.deadlines if entry[1] in calls]
        heapq.heapify(self.deadlines)

    def _expire(self) -> None:
        self.timer = None
        self.timer_at = math.inf
        now = self.clock()
        self._prune()
        while self.deadlines:
            deadline, number = self.deadlines[0]
            if deadline > now:
                self._arm(deadline)
                return
            heapq.heappop(self.deadlines)
            future = self._take_call(number)
            if future is not None and not future.done():
                future.set_exception(
                    errors.FunctionTimeout(
                        f"{self.spec.name!r} did not answer within its timeout of "
                        f"{self.spec.timeout_s:g} s; its instance was stopped"
                    )
                )
                self.kill("timeout")  # the calls still in flight fail as it closes
                return
            self._prune()

    # -- asyncio.Protocol ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        try:
            self.unpacker.feed(data)
            for frame in self.unpacker:
                kind = frame[0]
                if kind == p.RESULT:
                    self._on_result(frame)
                elif kind == p.READY:
                    if not self.ready.done():
                        self.takes_context = bool(frame[3]) if len(frame) > 3 else True
                        if len(frame) > 2 and isinstance(frame[2], int | float):
                            self.init_s = float(frame[2])
                        self.ready.set_result(None)
                elif kind == p.START_FAILED and not self.ready.done():
                    self.ready.set_exception(
                        errors.StartFailed(
                            self.redact(
                                f"instance of {self.spec.name!r} failed to start: "
                                f"{str(frame[1])[:MAX_ERROR_TYPE_CHARS]}: "
                                f"{str(frame[2])[:MAX_ERROR_MESSAGE_CHARS]}"
                            )
                        )
                    )
        except Exception:  # bytes that are not our protocol: the handler wrote them
            self._broken()

    def _broken(self) -> None:
        """The instance sent a frame that is not the protocol (its handler wrote to the socket
        itself): nothing more it sends can be believed."""
        self.kill("protocol_error")

    def _on_result(self, frame: list[Any]) -> None:
        _, number, outcome, payload, kind, message = frame
        if type(payload) is not bytes or type(kind) is not str:
            self._broken()
            return
        if outcome == p.OK and (len(payload) > self.max_body or kind not in CONTENT_TYPES):
            self._broken()
            return
        future = self._take_call(number)
        deadlines = self.deadlines
        if deadlines and deadlines[0][1] == number:  # calls mostly end in order: prune now
            self._prune()
        if future is None or future.done():
            return
        if outcome == p.OK:
            future.set_result(Result(payload, kind))
        elif outcome == p.RAISED:
            future.set_exception(self._handler_failed(kind, message))
        elif outcome == p.OUT_OF_MEMORY:
            self.death_reason = "out_of_memory"
            future.set_exception(
                errors.OutOfMemory(
                    f"the instance of {self.spec.name!r} exceeded its memory limit of "
                    f"{self.spec.memory_mb} MiB and was stopped"
                )
            )
            # It is exiting: no later call may be given to it in the meantime.
            self.kill("out_of_memory")
        elif outcome == p.TOO_LARGE:
            future.set_exception(
                errors.ResponseTooLarge(self.redact(str(message)[:MAX_ERROR_MESSAGE_CHARS]))
            )
        else:
            future.set_exception(self._handler_failed(kind, message))

    def _handler_failed(self, kind: str, message: object) -> errors.HandlerFailed:
        """The error of a call whose handler raised, its type and message masked."""
        return errors.HandlerFailed(
            self.redact(kind[:MAX_ERROR_TYPE_CHARS]),
            self.redact(str(message)[:MAX_ERROR_MESSAGE_CHARS]),
        )

    def connection_lost(self, exc: Exception | None) -> None:
        if self.cgroup is not None and self.cgroup.oom_kills() > 0:
            self.death_reason = "out_of_memory"  # the kernel's OOM killer, at the cgroup's limit
        self.dead = True
        if not self.ready.done():
            message = f"instance of {self.spec.name!r} exited during start"
            tail = self.output.stderr_tail() if self.output is not None else []
            if tail:
                message += "; the last lines of its stderr:\n" + "\n".join(tail)
            self.ready.set_exception(errors.StartFailed(message))
        calls, self.calls = self.calls, {}
        if calls:
            asyncio.get_running_loop().create_task(self._fail_calls(calls))
        if not self.closed.done():
            self.closed.set_result(None)

    async def _fail_calls(self, calls: dict[int, asyncio.Future[Result]]) -> None:
        how = await self.zygote.exit_status(self.pid, wait_s=0.25) if self.pid else None
        name = self.spec.name
        for future in calls.values():
            if future.done():
                continue
            if self.death_reason == "out_of_memory":
                error: errors.HttpError = errors.OutOfMemory(
                    f"the instance of {name!r} exceeded its memory limit of "
                    f"{self.spec.memory_mb} MiB and was stopped"
                )
            elif self.death_reason == "protocol_error":
                detail = self.protocol_detail or (
                    "a malformed answer (did its handler write to the instance's socket?)"
                )
                error = errors.ProtocolError(
                    f"the instance of {name!r} broke the protocol ({self.redact(detail[:500])}) "
                    "and was stopped; the next call gets a new one"
                )
            else:
                detail = f" ({how})" if how else ""
                error = errors.InstanceCrashed(
                    f"the instance of {name!r} died while handling the call{detail}"
                )
            future.set_exception(error)


def _unchanged(text: str) -> str:
    return text
