"""The node's HTTP/1.1 connections: uvicorn's httptools protocol, with the bounds it lacks.

uvicorn bounds neither how long a client may take to send a request nor how large its head
may grow: a client sending one byte a second holds a connection (and its memory) forever, and
one that never ends a header line grows the node without limit. Keep-alive only times the
idle gap *between* requests, and any byte restarts it. This subclass adds, per connection:

- **head timeout**: the request line and headers must be in within ``header_timeout_s`` of
  the connection's opening, or of the first byte of the request (or of anything) after the
  previous answer; past it: 408 ``request_timeout``, and the connection is closed;
- **head size**: at most ``max_header_bytes`` may arrive while a head is incomplete; past it:
  431 ``headers_too_large``, closed;
- **body timeout**: once the head is in, the body must be in within ``body_timeout_s``;
  past it: 408 if no answer was started, and the connection is closed;
- **send timeout**: a client that reads nothing of a response for ``send_timeout_s`` (the
  socket's buffer stays full) is cut off, so an unread answer is not held forever;
- **typed errors**: a request httptools cannot parse gets the typed JSON 400 every other error
  has (uvicorn's is plain text), and the protocol's warnings (one per bad request, which a
  client could use to flood the log) are counted in ``tierfaas_http_rejected_total`` instead;
- **lingering close**: an answer that ends the connection while the client may still be
  sending (400, 408, 413, 431) is followed by a half-close, then what the client still sends
  is read and dropped until it closes its side, within bounds (see ``LINGER_TIME_S``). Closing
  a socket with unread input makes the kernel answer with a reset, and a reset makes the
  client's kernel drop the answer it has not read yet: a client that writes its whole body
  before it reads (urllib, requests, curl without ``Expect``) would see "connection reset"
  instead of the 413. nginx's ``lingering_close`` does the same, for the same reason.

Cost on the hot path: a few attribute stores per request. Deadlines are checked by one sweep
per second over the open connections (a timer per request would cost more than routing it),
so a timeout, or a bound of the lingering, fires within a second after it is due; uvicorn's
keep-alive timeout is one of them (uvicorn arms and cancels a timer per answer).

An invocation (``/function/NAME``) skips uvicorn's ASGI cycle: its head makes a
``FunctionCall`` (``function_call`` says which requests qualify), which stands in as the
connection's ``cycle`` while its body comes in and which ``serve`` (the node's
``NodeApp.serve_call``) answers once the body is in, through ``FunctionCall.answer``. uvicorn's
cycle, its scope, its event and its ASGI messages cost ~2-4 µs of the node's CPU per call
(benchmarks/http_front.py; benchmarks/node_cpu.py under wrk: ~7 %).

An answer through ASGI may go out through ``write_answer``: the status line, headers and
body in one write, with the checks and state changes the cycle's ``send`` makes for its two
messages (under cProfile, uvicorn's ``send`` took ~18 % of the node's time per call, most
of it checking each header with two regular expressions). Relies on
uvicorn's httptools protocol internals (``cycle``, ``pipeline``, the parser callbacks, the
cycle's use of ``transport``: ``write``, ``close``, ``is_closing``), stable since uvicorn
0.15; the e2e tests in tests/e2e/test_bad_input.py fail if an upgrade breaks them.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import os
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import (
    HEADER_RE,
    HEADER_VALUE_RE,
    STATUS_LINE,
    HttpToolsProtocol,
    RequestResponseCycle,
)
from uvicorn.server import ServerState

from tierfaas import errors
from tierfaas.config import MiB, NodeConfig

SWEEP_INTERVAL_S = 1.0

# Bounds of the lingering close; a client past any of them is cut (it may then see a reset).
# Longest the node drains after such an answer (nginx: lingering_time, 30 s). It covers sending
# the rest of a refused body of ten times the default limit at 50 Mbit/s; past it a client is
# taken to send on forever. A node's ``body_timeout_s`` lowers it: the rest of a refused body
# gets no more time than a whole body.
LINGER_TIME_S = 10.0
# Longest the client may send nothing while the node drains (nginx: lingering_timeout, 5 s). A
# client that wrote its body reads the answer and closes; one that neither sends nor closes
# has it in its buffer already and only holds the connection open.
LINGER_IDLE_S = 5.0
# Most the node reads and drops in one lingering close. On loopback the node drains about
# 1 GiB/s, so a client that sends as fast as it can would cost up to LINGER_TIME_S of a core;
# this stops it after a few tens of ms, and still lets ten times the default body limit through.
LINGER_MAX_BYTES = 64 * MiB
# uvicorn's own warnings about bad requests go here, below the log level a node runs at: a
# client must not be able to write the node's log. Rejections are counted instead.
_QUIET_LOG = logging.getLogger("tierfaas.http.wire")
_QUIET_LOG.setLevel(logging.ERROR)


@dataclass(frozen=True, slots=True)
class WireLimits:
    max_header_bytes: int = 64 * 1024
    header_timeout_s: float = 10.0
    body_timeout_s: float = 60.0
    send_timeout_s: float = 60.0
    linger_time_s: float = LINGER_TIME_S

    @classmethod
    def of(cls, config: NodeConfig) -> WireLimits:
        return cls(
            config.max_header_bytes,
            config.header_timeout_s,
            config.body_timeout_s,
            config.send_timeout_s,
            min(LINGER_TIME_S, config.body_timeout_s),
        )


Reject = Callable[[str], None]
Headers = list[tuple[bytes, bytes]]

# Headers ``write_answer`` leaves to the cycle's ``send``: it frames the answer and sets the
# connection's fate itself.
_FUNCTION_PATH = b"/function/"
# Request headers that leave a request to the ASGI path (see BoundedHttpProtocol.function_call).
_NOT_FOR_FUNCTION_CALLS = frozenset({b"transfer-encoding", b"expect"})
_FRAMING_HEADERS = frozenset({b"content-length", b"transfer-encoding", b"connection"})
_NO_BODY = frozenset({204, 304})


def write_answer(
    send: Callable[..., Any],
    status: int,
    headers: Headers,
    body: bytes,
    request_id: bytes,
    close: bool,
) -> bool:
    """Sends a whole answer in one write: ``status``, the server's default headers, ``headers``
    (neither length nor connection ones), ``x-request-id: request_id`` (a valid id), the
    length (none for 204 and 304, which have no body) and ``body``; ``close``: the
    connection closes after it. The same bytes, and the same cycle state after, as the
    cycle's ``send`` with a start and a body message, but one syscall and no per-header
    bookkeeping. ``send``: the ASGI send the app was given. False, with nothing sent, where
    that ``send`` must do it: not a cycle's own (another server, or a wrapper that watches
    the answer, as tracing's), an answer already started, a client gone or not reading, a
    status uvicorn has no line for, a header it would refuse (it answers 500 then) or one
    that frames the answer."""
    # The cycle itself, not a scope key pointing to it: that would make a reference cycle
    # per request, left to the garbage collector.
    cycle = getattr(send, "__self__", None)
    if (
        not isinstance(cycle, RequestResponseCycle)
        or cycle.response_started
        or cycle.disconnected
        or cycle.flow.write_paused
        or status not in STATUS_LINE
    ):
        return False
    keep_alive = cycle.keep_alive and not close
    head = _answer_head(cycle.default_headers, status, headers, body, request_id, keep_alive)
    if head is None:
        return False
    cycle.response_started = cycle.response_complete = True
    cycle.waiting_for_100_continue = False
    cycle.keep_alive = keep_alive
    _write(cycle.transport, head, body, status)
    cycle.message_event.set()
    if not keep_alive:
        cycle.transport.close()
    cycle.on_response()
    return True


def _answer_head(
    default_headers: Headers,
    status: int,
    headers: Headers,
    body: bytes,
    request_id: bytes,
    keep_alive: bool,
) -> list[bytes] | None:
    """The status line and header lines of an answer (see ``write_answer``), or None for a
    header uvicorn's ``send`` would refuse or one that frames the answer."""
    parts = [STATUS_LINE[status]]
    for name, value in default_headers:
        parts += (name, b": ", value, b"\r\n")
    for header in headers:
        line = _CHECKED_LINES.get(header) or _header_line(header)
        if line is None:
            return None
        parts.append(line)
    if status in _NO_BODY:
        parts += (b"x-request-id: ", request_id, b"\r\n")
    else:
        parts += (b"x-request-id: ", request_id, b"\r\ncontent-length: %d\r\n" % len(body))
    parts.append(b"\r\n" if keep_alive else b"connection: close\r\n\r\n")
    return parts


def _write(transport: Any, head: list[bytes], body: bytes, status: int) -> None:
    """Writes ``head`` then ``body`` (none for 204 and 304): a small body in the head's write."""
    if status in _NO_BODY:
        transport.write(b"".join(head))
    elif len(body) <= _JOIN_BODY_BYTES:
        head.append(body)
        transport.write(b"".join(head))
    else:  # not copied into the head's buffer: written after it
        transport.write(b"".join(head))
        transport.write(body)


def _header_line(header: tuple[bytes, bytes]) -> bytes | None:
    """``name: value\r\n`` for a header the cycle's ``send`` would write as is (its name
    lowered), None for one it would refuse or that frames the answer."""
    name, value = header
    if HEADER_RE.search(name) or HEADER_VALUE_RE.search(value):
        return None
    lowered = name.lower()
    if lowered in _FRAMING_HEADERS:
        return None
    line = b"%s: %s\r\n" % (lowered, value)
    if len(line) <= _CHECKED_LINE_BYTES and len(_CHECKED_LINES) < _CHECKED_LINES_MAX:
        _CHECKED_LINES[header] = line
    return line


# The header lines of answers so far, by header: most headers of an answer are the same on
# every call (the content type, X-Tierfaas-Served-By, -Route, -Start), and a dict lookup
# costs less than checking one with uvicorn's two patterns. Bounded: headers whose values
# change (an ETag) are checked each time once it is full, and long ones always.
_CHECKED_LINES: dict[tuple[bytes, bytes], bytes] = {}
_CHECKED_LINES_MAX = 1024
_CHECKED_LINE_BYTES = 256
# A body up to this size goes out in the head's write (one copy of a small body costs less
# than a second syscall); a larger one in a write of its own.
_JOIN_BODY_BYTES = 64 * 1024


def error_response(error: errors.HttpError) -> bytes:
    """A whole HTTP/1.1 answer for ``error`` with its typed JSON body; closes the connection."""
    request_id = os.urandom(8).hex()
    body = json.dumps(
        {"error": error.code, "message": error.message, "request_id": request_id},
        separators=(",", ":"),
    ).encode()
    head = (
        b"content-type: application/json\r\n"
        b"content-length: %d\r\n"
        b"x-request-id: %s\r\n"
        b"connection: close\r\n\r\n"
    ) % (len(body), request_id.encode())
    return STATUS_LINE[error.status] + head + body


class _Sweeper:
    """Once a second, closes the connections of one server whose deadlines passed."""

    def __init__(self, loop: asyncio.AbstractEventLoop, connections: set[Any]) -> None:
        self.loop = loop
        self.connections = connections
        self.handle = loop.call_later(SWEEP_INTERVAL_S, self.sweep)

    def sweep(self) -> None:
        now = self.loop.time()
        for connection in list(self.connections):
            if isinstance(connection, BoundedHttpProtocol):
                connection.check_deadlines(now)
        self.handle = self.loop.call_later(SWEEP_INTERVAL_S, self.sweep)


class _AnswerTransport:
    """What a request's cycle writes its answer to: the connection's own ``write`` (no extra
    call on the hot path), while ``close`` lingers if the client may still be sending and
    ``is_closing`` is true once the node lingers (nothing may be written after the half-close:
    the cycle checks it before it sends ``100 Continue``)."""

    __slots__ = ("close", "protocol", "transport", "write")

    def __init__(self, protocol: BoundedHttpProtocol, transport: asyncio.Transport) -> None:
        self.protocol = protocol
        self.transport = transport
        self.write = transport.write
        self.close = protocol.close_after_answer

    def is_closing(self) -> bool:
        return self.protocol.linger_since is not None or self.transport.is_closing()


# The largest declared body a ``FunctionCall`` takes: one that uvicorn's ``on_body`` never
# pauses reading for (its high-water mark), so the whole body is in before the call starts.
FUNCTION_CALL_BODY_BYTES = 64 * 1024


class _Unwatched:
    """The ``message_event`` of a ``FunctionCall``: uvicorn's protocol sets it on every body
    chunk and at the end; nothing waits for it (the call starts once the body is in)."""

    __slots__ = ()

    def set(self) -> None:
        pass


_UNWATCHED = _Unwatched()


class FunctionCall:
    """One ``/function/NAME`` request the node serves without uvicorn's ASGI cycle (see
    ``BoundedHttpProtocol.function_call``), and its answer. While it is the connection's
    ``cycle``, uvicorn's protocol reads and sets what it would on a ``RequestResponseCycle``:
    ``body``, ``more_body``, ``response_complete``, ``disconnected``, ``keep_alive`` and
    ``message_event``. ``path`` is the raw path (no escapes, ASCII), ``query`` the raw query
    string, ``headers`` the request's, lowered as ASGI gives them."""

    __slots__ = (
        "body",
        "disconnected",
        "headers",
        "keep_alive",
        "message_event",
        "method",
        "more_body",
        "path",
        "protocol",
        "query",
        "response_complete",
        "response_started",
    )

    def __init__(
        self,
        protocol: BoundedHttpProtocol,
        method: str,
        path: bytes,
        query: bytes,
        headers: Headers,
        keep_alive: bool,
    ) -> None:
        self.protocol = protocol
        self.method = method
        self.path = path
        self.query = query
        self.headers = headers
        self.keep_alive = keep_alive
        self.body = b""
        self.more_body = True
        self.response_started = self.response_complete = self.disconnected = False
        self.message_event = _UNWATCHED

    def answer(
        self, status: int, headers: Headers, body: bytes, request_id: bytes, close: bool
    ) -> None:
        """Writes the whole answer (as ``write_answer``) and ends the request: the connection
        is kept for the next one, or closed (``close``, a client that asked, or a node that
        shuts down). Nothing is written to a client gone, or after an answer the protocol
        gave itself (a timeout). A status uvicorn has no line for, or a header it would refuse,
        makes the answer a typed 500 (as uvicorn's ``send`` raises, and its cycle answers 500)."""
        if self.response_complete or self.disconnected:
            return
        protocol = self.protocol
        keep_alive = self.keep_alive and not close
        default_headers = protocol.server_state.default_headers
        head = None
        if status in STATUS_LINE:
            head = _answer_head(default_headers, status, headers, body, request_id, keep_alive)
        if head is None:
            status, keep_alive = 500, False
            body = json.dumps(
                {
                    "error": errors.HttpError.code,
                    "message": "the answer has a status or a header HTTP/1.1 cannot carry",
                    "request_id": request_id.decode(),
                },
                separators=(",", ":"),
            ).encode()
            json_type = [(b"content-type", b"application/json")]
            head = _answer_head(default_headers, status, json_type, body, request_id, False)
            assert head is not None
        self.response_started = self.response_complete = True
        self.keep_alive = keep_alive
        _write(protocol.answer_transport, head, body, status)
        if not keep_alive:
            protocol.close_after_answer()
        protocol.on_response_complete()


Serve = Callable[[FunctionCall], Coroutine[Any, Any, None] | None]
"""Serves a ``FunctionCall``: at once (None), or by the coroutine it returns, which the
protocol runs as a task."""


def _count_nothing(reason: str) -> None:
    pass


@dataclass(frozen=True)
class Wire:
    """What one node's connections share: their limits, what counts a rejected connection by
    reason, what serves a ``FunctionCall`` (None: every request goes through the ASGI app),
    and the sweepers of its servers (by id of a server's connection set)."""

    limits: WireLimits = WireLimits()
    on_reject: Reject = _count_nothing
    serve: Serve | None = None
    sweepers: dict[int, _Sweeper] = field(default_factory=dict)


_DEFAULT_WIRE = Wire()


class BoundedHttpProtocol(HttpToolsProtocol):
    """One connection of a node's HTTP server: uvicorn's, with the bounds and the invocation
    path of ``wire``. ``bounded_protocol(config, on_reject, serve)`` makes what a node passes
    to ``uvicorn.Config(http=...)``."""

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
        wire: Wire = _DEFAULT_WIRE,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.limits = wire.limits
        self.max_head = wire.limits.max_header_bytes
        self.on_reject: Reject = wire.on_reject
        self.serve: Serve | None = wire.serve
        self.logger = _QUIET_LOG
        now = self.loop.time()
        self.head_since: float | None = now  # waiting for a head since; None: not
        self.head_bytes = 0
        self.big_chunk = False  # a chunk over the head limit came in: measure the head exactly
        self.rejection: tuple[errors.HttpError, str] | None = None  # raised from a callback
        self.body_since: float | None = None  # waiting for a body since; None: not
        self.write_paused_since: float | None = None
        self.linger_since: float | None = None  # lingering since; None: not
        self.linger_last = 0.0  # when the last byte came in while lingering
        self.linger_bytes = 0  # read and dropped while lingering
        self.idle_since: float | None = None  # kept alive with no request since; None: not
        sweepers = wire.sweepers
        key = id(server_state.connections)
        if key not in sweepers:
            sweepers[key] = _Sweeper(self.loop, server_state.connections)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        HttpToolsProtocol.connection_made(self, transport)  # type: ignore[arg-type]
        self.answer_transport = _AnswerTransport(self, self.transport)

    # -- bytes in --------------------------------------------------------------------------

    # The overrides below call the base class directly (not super()): they run for every
    # request, and a zero-argument super() costs as much as the rest of their work.

    def data_received(self, data: bytes) -> None:
        if self.head_since is None:
            if self.body_since is not None:
                HttpToolsProtocol.data_received(self, data)
                return
            if self.linger_since is not None:
                self._drop(data)
                return
            self._head_starts()
        size = len(data)
        self.head_bytes += size
        if size > self.max_head:
            # A whole head may be in this one chunk: on_headers_complete measures it.
            self.big_chunk = True
        HttpToolsProtocol.data_received(self, data)
        if self.head_since is not None and self.head_bytes > self.max_head:
            self._reject(
                errors.HeadersTooLarge(
                    f"the request line and headers are over {self.limits.max_header_bytes} bytes"
                ),
                "head_too_large",
            )

    def _head_starts(self) -> None:
        """The first byte after an answer (a new request, or junk) came: the head clock starts,
        so trickling bytes between requests can't hold the connection either. (Set here, not
        in ``data_received``: there the type checker would take ``head_since`` for a float
        until its end, through the parser's callbacks that set it to None, and the compiled
        code would trust it.)"""
        self.head_since = self.loop.time()
        self.idle_since = None
        self.head_bytes = 0

    def on_message_begin(self) -> None:
        # uvicorn's, but for the ASGI scope (two dicts and a copy of the app state): only a
        # request the ASGI cycle serves needs one, and on_headers_complete builds it then.
        self.url = b""
        self.expect_100_continue = False
        self.headers = []

    def _build_scope(self) -> None:
        """uvicorn's scope for the request whose head just ended (its on_message_begin builds
        it, and resets what the head's callbacks set: kept here)."""
        url, headers, expect = self.url, self.headers, self.expect_100_continue
        HttpToolsProtocol.on_message_begin(self)
        self.url, self.headers, self.expect_100_continue = url, headers, expect
        self.scope["headers"] = headers

    def on_headers_complete(self) -> None:
        self.head_since = None
        if self.big_chunk:
            self.big_chunk = False
            size = len(self.url) + sum(len(k) + len(v) + 4 for k, v in self.headers)
            if size > self.limits.max_header_bytes:
                self.rejection = (
                    errors.HeadersTooLarge(
                        "the request line and headers are over "
                        f"{self.limits.max_header_bytes} bytes"
                    ),
                    "head_too_large",
                )
                # Stops the parser; uvicorn then calls send_400_response, which sends this.
                raise ValueError("head too large")
        if (
            self.serve is not None
            and self.url.startswith(_FUNCTION_PATH)
            and (self.cycle is None or self.cycle.response_complete)
        ):
            call = self.function_call()
            if call is not None:
                self.cycle = call  # type: ignore[assignment]  # duck-typed, see FunctionCall
                self.body_since = self.loop.time()
                return
        self._build_scope()
        HttpToolsProtocol.on_headers_complete(self)
        if self.cycle is not None:  # None only for a websocket upgrade, which we do not serve
            self.cycle.transport = self.answer_transport  # type: ignore[assignment]
        if not self.pipeline:  # started now, not queued behind an earlier request
            self.body_since = self.loop.time()

    def on_message_complete(self) -> None:
        self.body_since = None
        HttpToolsProtocol.on_message_complete(self)
        call: Any = self.cycle  # uvicorn types it as its own cycle; it may be a FunctionCall
        if type(call) is FunctionCall and not call.response_complete:
            assert self.serve is not None
            serving = self.serve(call)
            if serving is not None:
                task = self.loop.create_task(serving)
                task.add_done_callback(self.tasks.discard)
                self.tasks.add(task)

    def function_call(self) -> FunctionCall | None:
        """The request whose head just ended as a ``FunctionCall``, or None where uvicorn's
        cycle and the ASGI app serve it: a body not declared by a Content-Length of at most
        ``FUNCTION_CALL_BODY_BYTES`` (chunked, large: read as it streams, refused early when
        over the limit), ``Expect: 100-continue``, an upgrade, HTTP/1.0, HEAD (refused, with
        no body), a path with percent escapes or bytes outside ASCII, or a fragment. Those are
        rare for invocations; the ASGI path answers them exactly as before."""
        parser = self.parser
        if parser.should_upgrade() or parser.get_http_version() != "1.1":
            return None
        for name, value in self.headers:
            if name == b"content-length":
                if not value.isdigit() or int(value) > FUNCTION_CALL_BODY_BYTES:
                    return None
            elif name in _NOT_FOR_FUNCTION_CALLS:
                return None
        path, _, query = self.url.partition(b"?")
        if b"%" in path or b"#" in self.url or not path.isascii():
            return None
        method = parser.get_method().decode("ascii")
        if method == "HEAD":  # its answer has no body: uvicorn's send leaves it out
            return None
        return FunctionCall(self, method, path, query, self.headers, parser.should_keep_alive())

    def _start_asgi_task(self, cycle: Any, app: Any) -> None:
        HttpToolsProtocol._start_asgi_task(self, cycle, app)
        if cycle.more_body and self.body_since is None:  # a pipelined request, started late
            self.body_since = self.loop.time()

    def on_response_complete(self) -> None:
        # uvicorn's, but for the keep-alive timer: the sweep closes a connection idle past
        # ``timeout_keep_alive`` instead (uvicorn arms a timer per answer, and cancels it
        # when the next request comes).
        self.server_state.total_requests += 1
        if self.linger_since is not None:  # no pipelined request starts, no keep-alive
            return
        if self.transport.is_closing():
            return
        self.flow.resume_reading()
        if self.pipeline:
            cycle, app = self.pipeline.pop()
            self._start_asgi_task(cycle, app)
        elif self.head_since is None:  # no byte of a next request is in yet
            self.idle_since = self.loop.time()

    # -- bytes out -------------------------------------------------------------------------

    def pause_writing(self) -> None:
        self.write_paused_since = self.loop.time()
        super().pause_writing()

    def resume_writing(self) -> None:
        self.write_paused_since = None
        super().resume_writing()

    # -- limits ----------------------------------------------------------------------------

    def check_deadlines(self, now: float) -> None:
        """Called by the sweeper: enforces the head, body and send timeouts."""
        if self.transport is None or self.transport.is_closing():
            return
        limits = self.limits
        if self.linger_since is not None:
            if (
                now - self.linger_since > limits.linger_time_s
                or now - self.linger_last > LINGER_IDLE_S
            ):
                self.transport.close()
            return
        if self.head_since is not None and now - self.head_since > limits.header_timeout_s:
            timeout = errors.RequestTimeout(
                f"the request line and headers did not arrive within {limits.header_timeout_s:g} s"
            )
            self._reject(timeout, "head_timeout")
        elif self.body_since is not None and now - self.body_since > limits.body_timeout_s:
            timeout = errors.RequestTimeout(
                f"the request body did not arrive within {limits.body_timeout_s:g} s"
            )
            self._reject(timeout, "body_timeout")
        elif (
            self.write_paused_since is not None
            and now - self.write_paused_since > limits.send_timeout_s
        ):
            self.on_reject("send_timeout")
            self.transport.close()
        elif self.idle_since is not None and now - self.idle_since > self.timeout_keep_alive:
            self.transport.close()  # kept alive long enough, as uvicorn's timer would

    def send_400_response(self, msg: str) -> None:
        if self.rejection is not None:
            self._reject(*self.rejection)
            return
        self._reject(errors.BadRequest(f"malformed HTTP request: {msg}"), "malformed")

    def _reject(self, error: errors.HttpError, reason: str) -> None:
        """Answers ``error`` (unless an answer was started) and closes the connection, lingering
        (the client is in the middle of a request)."""
        if self.linger_since is not None:
            return
        self.on_reject(reason)
        self.head_since = self.body_since = None
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            # The app must not write after this answer; it sees a disconnect when it reads.
            started = cycle.response_started
            cycle.disconnected = True
            cycle.message_event.set()
            if started:
                self.transport.close()
                return
        if not self.transport.is_closing():
            self.transport.write(error_response(error))
            self._linger()

    # -- lingering close -------------------------------------------------------------------

    def close_after_answer(self) -> None:
        """The cycle's ``transport.close()`` after an answer that ends the connection: lingers
        if the client may still be sending (the request's body is not all in, a pipelined
        request is queued or unread bytes wait in the kernel), else closes."""
        cycle = self.cycle
        if (cycle is not None and cycle.more_body) or self.pipeline or self.flow.read_paused:
            self._linger()
        else:
            self.transport.close()

    def _linger(self) -> None:
        """Half-closes (the answer is sent, then FIN) and drops what comes in until the client
        closes its side (``eof_received`` then closes ours) or a bound is reached."""
        transport = self.transport
        if transport.is_closing() or self.linger_since is not None:
            return
        if not transport.can_write_eof():
            transport.close()
            return
        self.head_since = self.body_since = None
        self.linger_since = self.linger_last = self.loop.time()
        self._unset_keepalive_if_required()
        transport.write_eof()
        self.flow.resume_reading()

    def _drop(self, data: bytes) -> None:
        self.linger_last = self.loop.time()
        self.linger_bytes += len(data)
        if self.linger_bytes > LINGER_MAX_BYTES:
            self.transport.close()


def bounded_protocol(
    config: NodeConfig, on_reject: Reject, serve: Serve | None = None
) -> Callable[..., BoundedHttpProtocol]:
    """What makes the connections of one node's server (uvicorn calls it with the protocol's
    arguments): its limits, a callback that counts each rejected connection by reason
    (``malformed``, ``head_timeout``, ``head_too_large``, ``body_timeout``,
    ``send_timeout``), and what runs a ``FunctionCall`` (None: every request goes through the
    ASGI app)."""
    return functools.partial(
        BoundedHttpProtocol, wire=Wire(WireLimits.of(config), on_reject, serve)
    )
