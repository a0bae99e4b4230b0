"""The node's side of an exec function's instance: a program in any language.

Both kinds start as every instance does (forked by the zygote, in the function's sandbox and
cgroup; ``process/execute.py`` then becomes the program) and keep ``Instance``'s lifecycle:
one deadline timer per instance (a call past its timeout kills it: 504), death seen as the
close of its socket, calls in flight failing with how it ended.

- ``StdioInstance`` speaks the frames of docs/exec-protocol.md on the socket that is the
  program's stdin and stdout: ``READY``, then ``CALL``/``RESULT`` pairs, pipelined with ids.
- ``HttpInstance`` sends each call as an HTTP/1.1 request to the program's server on
  127.0.0.1:$PORT, one call per kept-alive connection; the socket only tells when it ends.

What a program sends is checked before it is believed: a frame or an answer that breaks the
protocol stops the instance (its calls answer ``502 protocol_error``), an answer over
``max_response_bytes`` is refused (``502 response_too_large``).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import re
from typing import Any, Final

from tierfaas import errors
from tierfaas.clock import Scheduler
from tierfaas.manifest import FunctionSpec
from tierfaas.runtime.exec_http import DEFAULT_CONTENT_TYPE as DEFAULT_CONTENT_TYPE  # noqa: PLC0414
from tierfaas.runtime.exec_http import (
    PROBE,
    HttpConnection,
    connect,
    encode_request,
)
from tierfaas.runtime.instance import Instance, Result, instance_pid
from tierfaas.runtime.zygote_client import ZygoteClient

MAX_LINE_BYTES: Final = 256
"""The longest header line of the stdio protocol, its newline included."""
MAX_CONTENT_TYPE_CHARS: Final = 200
_READY: Final = b"READY"
_RESULT: Final = b"RESULT"
_REQUEST_ID_RE = re.compile(r"[A-Za-z0-9._-]{1,64}")
_CONTENT_TYPE_RE = re.compile(r"[\x21-\x7e][\x20-\x7e]*")
# The content types of RESULT lines that passed the check, as sent: a function answers with
# one or a few, so each is decoded and matched once, not once per answer.
_CHECKED_CONTENT_TYPES: dict[bytes, str] = {}
_CHECKED_CONTENT_TYPES_MAX: Final = 64

IDLE_CONNECTION_S: Final = 2.0
"""How long an idle connection to a function's server is reused. Servers close idle
keep-alive connections on their own (Node.js after 5 s); a request on one closed meanwhile is
sent again, once, on a new connection (``HttpInstance.lost``)."""
CONNECT_TIMEOUT_S: Final = 1.0
PROBE_FIRST_S: Final = 0.002
PROBE_MAX_S: Final = 0.05
"""The pauses between tries of a starting http function's port: from 2 ms, growing to 50 ms."""
CRASH_GRACE_S: Final = 0.1
"""How long a call whose connection closed waits to see whether the program died (then it
is a crash) or lives on (then it broke the protocol)."""


class _Broken(Exception):
    """What the program sent is not the protocol."""


def _decimal(field: bytes, low: int, high: int) -> int:
    if not field.isdigit() or len(field) > 19:
        raise _Broken(f"{field[:40]!r} is not a decimal number")
    value = int(field)
    if not low <= value <= high:
        raise _Broken(f"{value} is outside {low}..{high}")
    return value


def call_line(number: int, length: int, request_id: str | None, timeout_s: float) -> bytes:
    """The header line of one CALL frame."""
    rid = request_id if request_id and _REQUEST_ID_RE.fullmatch(request_id) else "-"
    timeout_ms = max(1, math.ceil(timeout_s * 1000))
    return b"CALL %d %d %s %d\n" % (number, length, rid.encode(), timeout_ms)


def parse_result_line(line: bytes) -> tuple[int, int, int, str]:
    """(id, status, length, content type) of a RESULT header line (without its newline).
    Raises ``_Broken``."""
    parts = line.split(b" ", 4)
    if len(parts) < 4 or parts[0] != _RESULT:
        raise _Broken(f"expected READY or RESULT, got {line[:60]!r}")
    number = _decimal(parts[1], 1, 2**63 - 1)
    status = _decimal(parts[2], 200, 599)  # a final answer: no 1xx
    length = _decimal(parts[3], 0, 2**62)
    content_type = DEFAULT_CONTENT_TYPE
    if len(parts) == 5:
        content_type = _CHECKED_CONTENT_TYPES.get(parts[4]) or _content_type(parts[4])
    return number, status, length, content_type


def _content_type(field: bytes) -> str:
    text = field.decode("latin-1")
    if len(text) > MAX_CONTENT_TYPE_CHARS or not _CONTENT_TYPE_RE.fullmatch(text):
        raise _Broken(f"content type {text[:60]!r} is not printable ASCII")
    if len(_CHECKED_CONTENT_TYPES) < _CHECKED_CONTENT_TYPES_MAX:
        _CHECKED_CONTENT_TYPES[field] = text
    return text


class StdioInstance(Instance):
    """An exec instance speaking the stdio frames of docs/exec-protocol.md."""

    def __init__(
        self, instance_id: int, spec: FunctionSpec, zygote: ZygoteClient, scheduler: Scheduler
    ) -> None:
        super().__init__(instance_id, spec, zygote, scheduler)
        # A CALL frame carries the body, the request id and the time left, no context: the
        # router and the runtime need not build one (headers, query, deadline) per call.
        self.takes_context = False
        self.buffer = bytearray()
        self.body_of: tuple[int, int, int, str] | None = None  # the RESULT whose body is due
        # The process began with a msgpack frame (START_FAILED): before READY, the rest of
        # what it sends belongs to that frame, however the reads split it.
        self.reporting = False

    def _send_call(
        self,
        number: int,
        body: bytes,
        context: dict[str, Any] | None,
        timeout_s: float,
        request_id: str | None,
    ) -> None:
        if not self.outbox:
            self.loop.call_soon(self._flush)
        self.outbox.append(call_line(number, len(body), request_id, timeout_s))
        self.outbox.append(body)

    def data_received(self, data: bytes) -> None:
        if not self.ready.done() and (
            self.reporting or (not self.buffer and 0x90 <= data[0] <= 0x9F)
        ):
            # A msgpack START_FAILED from the process before it became the program (its
            # sandbox could not be set up, or the exec failed): Instance reads those.
            self.reporting = True
            super().data_received(data)
            return
        self.buffer += data
        try:
            self._parse()
        except _Broken as exc:
            self._protocol_error(str(exc))

    def _parse(self) -> None:
        buffer = self.buffer
        at = 0
        try:
            while not self.dead:
                pending = self.body_of
                if pending is not None:
                    number, status, length, content_type = pending
                    if len(buffer) - at < length:
                        return
                    body = bytes(buffer[at : at + length])
                    at += length
                    self.body_of = None
                    self._answer(number, Result(body, content_type, status))
                    continue
                end = buffer.find(b"\n", at, at + MAX_LINE_BYTES)
                if end < 0:
                    if len(buffer) - at >= MAX_LINE_BYTES:
                        raise _Broken(f"a header line longer than {MAX_LINE_BYTES} bytes")
                    return
                line = bytes(buffer[at:end])
                at = end + 1
                self._header(line)
        finally:
            del buffer[:at]

    def _header(self, line: bytes) -> None:
        if line == _READY:
            if self.ready.done():
                raise _Broken("a second READY")
            self.ready.set_result(None)
            return
        if not self.ready.done():
            raise _Broken(f"expected READY first, got {line[:60]!r}")
        number, status, length, content_type = parse_result_line(line)
        if number not in self.calls:
            raise _Broken(f"a RESULT for call {number}, which is not in flight")
        if length > self.max_body:
            self._refuse_large(number, length)
            return
        self.body_of = (number, status, length, content_type)

    def _answer(self, number: int, result: Result) -> None:
        future = self._take_call(number)
        deadlines = self.deadlines
        if deadlines and deadlines[0][1] == number:
            self._prune()
        if future is not None and not future.done():
            future.set_result(result)

    def _refuse_large(self, number: int, length: int) -> None:
        """An answer over the limit: refused, and the instance replaced (its body is not read:
        it may be any size, and nothing after it can be found without reading it)."""
        future = self._take_call(number)
        if future is not None and not future.done():
            future.set_exception(
                errors.ResponseTooLarge(
                    f"{self.spec.name!r} answered {length} bytes, over the limit of "
                    f"{self.max_body}; its instance was replaced"
                )
            )
        self.kill("response_too_large")

    def _protocol_error(self, reason: str) -> None:
        reason = self.redact(reason)
        self.protocol_detail = reason
        if not self.ready.done():
            self.ready.set_exception(
                errors.ProtocolError(
                    f"the instance of {self.spec.name!r} broke the stdio protocol during its "
                    f"start ({reason}) and was stopped"
                )
            )
        self.kill("protocol_error")


class HttpInstance(Instance):
    """An exec instance whose program is an HTTP/1.1 server on 127.0.0.1:``port`` or, with
    ``listen = "unix"``, on the Unix socket ``socket_path`` (as the program sees it; when it
    is sandboxed, the node reaches it through the instance's root, ``/proc/PID/root``).

    It owns a pool of kept-alive connections to that server (``exec_http.HttpConnection``, up
    to ``concurrency`` of them, one call at a time each): a call goes out on the most recently
    used idle one, or on a new one; its answer resolves the call's future from the parser's
    callback and puts the connection back in the idle list. With ``pipeline`` N > 1 it keeps
    at most ``ceil(concurrency / N)`` connections once they are open, and a call that finds
    none idle goes behind the calls of the least loaded one (HTTP/1.1 pipelining)."""

    def __init__(
        self,
        instance_id: int,
        spec: FunctionSpec,
        zygote: ZygoteClient,
        scheduler: Scheduler,
        port: int | None,
        socket_path: str | None = None,
    ) -> None:
        super().__init__(instance_id, spec, zygote, scheduler)
        assert spec.command is not None
        assert (port is None) != (socket_path is None)
        self.port = port
        self.socket_path = socket_path
        self.host_line = "host: localhost\r\n" if port is None else f"host: 127.0.0.1:{port}\r\n"
        self.ready_path = spec.command.ready_path
        self.idle: list[HttpConnection] = []  # the most recently used last
        self.connections: set[HttpConnection] = set()
        self.tasks: set[asyncio.Task[None]] = set()
        self.probing: asyncio.Future[int] | None = None  # the status a ready_path probe got
        self.sending: list[tuple[HttpConnection, int, bytes]] = []
        self.idle_connection_s = IDLE_CONNECTION_S
        self.pipeline = spec.command.pipeline
        self.max_connections = -(-spec.concurrency // self.pipeline)
        self.connecting = 0  # connections being opened for a call

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._spawn_task(self._probe())

    def _spawn_task(self, coroutine: Any) -> None:
        task = self.loop.create_task(coroutine)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    # -- the calls -------------------------------------------------------------------------

    def _send_call(
        self,
        number: int,
        body: bytes,
        context: dict[str, Any] | None,
        timeout_s: float,
        request_id: str | None,
    ) -> None:
        if self.dead:  # stopped between the pool's choice and this call
            future = self._take_call(number)
            if future is not None and not future.done():
                future.set_exception(
                    errors.InstanceCrashed(f"the instance of {self.spec.name!r} was stopped")
                )
            return
        request = encode_request(self.host_line, body, context)
        connection = self._take()
        if connection is None and self.pipeline > 1:
            connection = self._pipelined()
        if connection is None:
            self._open_for(number, request)
            return
        connection.reserved += 1
        # The requests of one pass of the event loop leave together, at its end, as a stdio
        # instance's frames do: each write wakes the program, which then competes with the
        # node for the CPU while it still has calls to dispatch (in a side run under wrk,
        # 15-25 % less CPU per call in the node and 10-30 % in Node.js than a write per call).
        if not self.sending:
            self.loop.call_soon(self._send_all)
        self.sending.append((connection, number, request))

    def _send_all(self) -> None:
        sending, self.sending = self.sending, []
        calls = self.calls
        batches: dict[HttpConnection, list[tuple[int, bytes]]] = {}
        for connection, number, request in sending:
            connection.reserved -= 1
            if number not in calls or self.dead:
                if not connection.load():
                    self._give_back(connection)  # timed out meanwhile, or stopped
            elif connection.closed:  # the server closed it meanwhile: this was not sent
                self._open_for(number, request)
            elif self.pipeline == 1:
                connection.send(number, request, True)
            else:
                batches.setdefault(connection, []).append((number, request))
        for connection, batch in batches.items():
            connection.send_batch(batch, True)

    def _pipelined(self) -> HttpConnection | None:
        """Once the instance has its ``max_connections`` (open or opening), the least loaded
        open one with room for one more call; None: open another."""
        if len(self.connections) + self.connecting < self.max_connections:
            return None
        best: HttpConnection | None = None
        best_load = self.pipeline
        for connection in self.connections:
            if not connection.closed:
                load = connection.load()
                if load < best_load:
                    best, best_load = connection, load
        return best

    def _open_for(self, number: int, request: bytes) -> None:
        """Sends call ``number`` on a new connection, once it is open."""
        self.connecting += 1
        self._spawn_task(self._send_on_new(number, request))

    async def _send_on_new(self, number: int, request: bytes) -> None:
        try:
            connection = await self._connect()
        except OSError as exc:
            self.connecting -= 1
            if not self.dead and number in self.calls:
                self._closed_early(f"its server refused a connection ({exc})")
            return
        self.connecting -= 1
        if number in self.calls:
            connection.send(number, request, False)
        else:  # it timed out meanwhile
            self._give_back(connection)

    def answered(self, connection: HttpConnection, number: int, result: Result) -> None:
        if not connection.load():
            self._give_back(connection)
        if number == PROBE:
            self._probed(result.status)
            return
        future = self._take_call(number)
        if self.deadlines and self.deadlines[0][1] == number:
            self._prune()
        if future is not None and not future.done():
            future.set_result(result)

    def refused(
        self, connection: HttpConnection, number: int, too_large: bool, detail: str
    ) -> None:
        if number == PROBE:
            self._probed(0)
        elif too_large:  # refused; the server is sound, the instance lives on
            self._fail(
                number,
                errors.ResponseTooLarge(
                    f"{self.spec.name!r} answered over the limit of {self.max_body} bytes"
                ),
            )
        elif not self.dead:
            self.protocol_detail = detail
            self.kill("protocol_error")

    def _fail(self, number: int, error: Exception) -> None:
        future = self._take_call(number)
        if self.deadlines and self.deadlines[0][1] == number:
            self._prune()
        if future is not None and not future.done():
            future.set_exception(error)

    def unsent(self, connection: HttpConnection, calls: list[tuple[int, bytes]]) -> None:
        for number, request in calls:
            if not self.dead and number in self.calls:
                self._open_for(number, request)

    def lost(
        self, connection: HttpConnection, number: int, request: bytes, exc: Exception | None
    ) -> None:
        self.connections.discard(connection)
        if not number:
            if connection in self.idle:
                self.idle.remove(connection)
            return
        if number == PROBE:
            self._probed(0)
            return
        if self.dead or number not in self.calls:
            return  # the calls fail as the instance closes
        if connection.reused and not connection.received:
            # The server closed it as idle while the request was on its way: it did not read
            # the request (nor any pipelined after it), so it goes again, once, on a new
            # connection (which is not reused).
            self._open_for(number, request)
            return
        if connection.closed_here:
            # Pipelined behind an answer the node refused (over the limit), which closed the
            # connection in the middle of this call's answer; it may have run.
            self._fail(
                number,
                errors.ResponseTooLarge(
                    f"an answer of {self.spec.name!r} before this call's on its connection was "
                    f"over the limit of {self.max_body} bytes; the connection closed"
                ),
            )
            return
        reason = f": {exc}" if exc else ""
        self._closed_early(f"its server closed the connection before a whole answer{reason}")

    def _closed_early(self, detail: str) -> None:
        """A call got no whole answer: a server that crashed closes its connections a moment
        before its process is seen gone, so a crash is told as one (its calls fail as it
        closes), and only a server still alive after ``CRASH_GRACE_S`` broke the protocol."""

        def judge() -> None:
            if not self.dead:
                self.protocol_detail = detail
                self.kill("protocol_error")

        self.scheduler.call_later(CRASH_GRACE_S, judge)

    # -- the pool --------------------------------------------------------------------------

    def _take(self) -> HttpConnection | None:
        idle = self.idle
        while idle:
            connection = idle.pop()
            if connection.closed:
                continue
            if self.clock() - connection.idle_since >= self.idle_connection_s:
                connection.close()  # the server may be closing it now
                continue
            return connection
        return None

    def _give_back(self, connection: HttpConnection) -> None:
        if connection.closed:
            return
        if (
            self.dead
            or len(self.idle) >= self.spec.concurrency
            or (self.pipeline > 1 and len(self.connections) > self.max_connections)
        ):
            connection.close()
            self.connections.discard(connection)
            return
        connection.idle_since = self.clock()
        self.idle.append(connection)

    async def _connect(self) -> HttpConnection:
        """A new connection to the server. Raises OSError (TimeoutError after
        ``CONNECT_TIMEOUT_S``; ConnectionAbortedError when the instance stopped meanwhile)."""
        async with asyncio.timeout(CONNECT_TIMEOUT_S):
            connection = await connect(self, self._address(), self.max_body)
        if self.dead:
            connection.close()
            raise ConnectionAbortedError("the instance was stopped")
        self.connections.add(connection)
        return connection

    def _address(self) -> int | str:
        """The port, or the path of the socket as the node reaches it. Sandboxed, the program's
        /tmp is its own (a tmpfs in its mount namespace): the node goes through the
        instance's root, which it may (it owns the instance's user namespace, or is root)."""
        if self.socket_path is None:
            assert self.port is not None
            return self.port
        if self.cgroup is None:
            return self.socket_path
        if not self.host_pid:
            self.host_pid = instance_pid(self.cgroup.procs())
            if not self.host_pid:
                raise ConnectionRefusedError("the instance's process is not known yet")
        return f"/proc/{self.host_pid}/root{self.socket_path}"

    def kill(self, reason: str) -> None:
        super().kill(reason)
        self._close_connections()

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        self._close_connections()

    def _close_connections(self) -> None:
        self.idle.clear()
        for connection in list(self.connections):
            connection.close()

    # -- readiness -------------------------------------------------------------------------

    async def _pause(self, seconds: float) -> None:
        done: asyncio.Future[None] = self.loop.create_future()

        def wake() -> None:
            if not done.done():
                done.set_result(None)

        timer = self.scheduler.call_later(seconds, wake)
        try:
            await done
        finally:
            timer.cancel()

    async def _probe(self) -> None:
        """Tries the port until the server accepts (and, with a ready_path, answers it 200);
        the start's own timeout bounds it. The probe's connection stays for the calls."""
        pause = PROBE_FIRST_S
        while not self.ready.done() and not self.dead:
            ok = False
            connection = self._take()
            if connection is None:
                with contextlib.suppress(OSError):
                    connection = await self._connect()
            if connection is not None:
                if self.ready_path is None:
                    self._give_back(connection)
                    ok = True
                else:
                    ok = await self._probe_path(connection) == 200
            if ok and not self.ready.done() and not self.dead:
                self.ready.set_result(None)
                return
            await self._pause(pause)
            pause = min(pause * 1.5, PROBE_MAX_S)

    async def _probe_path(self, connection: HttpConnection) -> int:
        """The status of ``GET ready_path`` on ``connection`` (0: no answer)."""
        context = {"method": "GET", "path": self.ready_path, "headers": {"user-agent": "tierfaas"}}
        probing: asyncio.Future[int] = self.loop.create_future()
        self.probing = probing
        connection.send(PROBE, encode_request(self.host_line, b"", context), False)
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT_S):
                return await probing
        except TimeoutError:
            connection.close()
            return 0
        finally:
            self.probing = None

    def _probed(self, status: int) -> None:
        if self.probing is not None and not self.probing.done():
            self.probing.set_result(status)
