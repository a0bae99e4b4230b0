"""Keep-alive HTTP/1.1 connections from this node to the others, for forwarded calls.

Why not aiohttp's client, which the rest of the code uses: a forward happens on most calls of
a cluster whose functions are warm on one node each, and on a 2-vCPU machine an aiohttp
request costs ~105 µs of client CPU and ~0.12 ms more latency than the same request written
on a kept-alive socket and parsed with httptools (an idle forward: 0.83 ms against 0.50 ms;
docs/benchmarks.md, "Routing"). Both ends are tierfaas nodes, so little is needed: requests
always carry a Content-Length body (no chunked uploads, no ``Expect``), responses are parsed
by httptools (the parser the nodes serve with, so chunked answers work too), and the one
distinction routing depends on is kept sharp:

- ``PeerUnreachable``: the connection could not be opened, so nothing was sent and the peer
  certainly did not run the call (the router tries the next candidate);
- ``PeerFailed``: the request may have reached the peer (reset, closed before a whole answer,
  timed out, garbage or oversized answer): the call may have run and must not be retried.

A pooled connection is reused only while it is idle for less than ``idle_timeout_s``, which is
shorter than the nodes' own keep-alive timeout (30 s), so the peer never closes one under a
request sent on it in the normal course; one the peer closed anyway (it stopped) is seen
closed before reuse and dropped.
"""

from __future__ import annotations

import asyncio
import socket
import time
from dataclasses import dataclass

import httptools

# Answers larger than this are cut off (PeerFailed): the nodes cap a function's answer well
# below it, so only a broken or hostile peer sends more.
MAX_RESPONSE_BYTES = 64 * 1024 * 1024
MAX_HEADER_COUNT = 100


class PeerUnreachable(Exception):
    """The connection could not be opened: nothing was sent."""

    def __init__(self, message: str, *, timed_out: bool = False) -> None:
        super().__init__(message)
        self.timed_out = timed_out


class PeerFailed(Exception):
    """No whole answer came back after the request was (or may have been) sent. ``kind``:
    ``closed`` (the connection ended first), ``unreadable`` (not HTTP), ``too_large`` (over
    the pool's answer limit) or ``timeout``; ``received``: whether any byte of an answer came."""

    def __init__(self, message: str, *, kind: str = "closed", received: bool = True) -> None:
        super().__init__(message)
        self.kind = kind
        self.received = received


@dataclass(slots=True)
class PeerResponse:
    status: int
    headers: dict[str, str]  # lower-case names; a repeated header keeps its last value
    body: bytes
    raw_headers: list[tuple[bytes, bytes]] | None = None  # every header, in order, as sent

    def header_list(self) -> list[tuple[bytes, bytes]]:
        """Every header in order, repeated ones included (lower-case names)."""
        if self.raw_headers is not None:
            return self.raw_headers
        return [
            (key.encode("latin-1"), value.encode("latin-1")) for key, value in self.headers.items()
        ]


class _Connection(asyncio.Protocol):
    """One TCP connection to a peer, carrying one request at a time."""

    def __init__(self, pool: PeerPool, address: str, max_body: int) -> None:
        self.pool = pool
        self.address = address
        self.max_body = max_body
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.closed = False
        self.idle_since = 0.0
        self.answer: asyncio.Future[PeerResponse] | None = None
        self.headers: dict[str, str] = {}
        self.raw: list[tuple[bytes, bytes]] = []
        self.received = False  # a byte of the current answer arrived
        self.head_done = False  # the current answer's status line and headers are parsed
        self.chunks: list[bytes] = []
        self.size = 0
        self.header_count = 0
        self.refusal = ""  # why a callback stopped the parser (httptools wraps the error)

    # -- asyncio.Protocol --------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop calls this after create_connection has returned; _open sets it first.
        self.transport = transport  # type: ignore[assignment]  # a TCP transport

    def data_received(self, data: bytes) -> None:
        if self.answer is None or self.answer.done():
            self._fail("the peer sent bytes nobody asked for", "unreadable")  # not keep-alive
            return
        self.received = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            kind = "too_large" if self.refusal.startswith("answer over") else "unreadable"
            self._fail(f"unreadable answer: {self.refusal or exc}", kind)

    def eof_received(self) -> bool:
        return False  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.pool._lost(self)
        if exc is None and self.answer is not None and self._ends_at_close():
            # A body with neither a length nor chunks runs until the close (RFC 9112 6.3).
            status = self.parser.get_status_code()
            self.answer.set_result(
                PeerResponse(status, self.headers, b"".join(self.chunks), self.raw)
            )
            return
        if self.answer is not None and not self.answer.done():
            reason = f": {exc}" if exc else ""
            self.answer.set_exception(
                PeerFailed(f"the peer closed the connection{reason}", received=self.received)
            )

    def _ends_at_close(self) -> bool:
        """Whether the answer under way is whole once the peer closes: its head is parsed and
        its body has neither a length nor chunks."""
        if self.answer is None or self.answer.done() or not self.head_done:
            return False
        return "content-length" not in self.headers and "transfer-encoding" not in self.headers

    # -- httptools callbacks -----------------------------------------------------------------

    def on_headers_complete(self) -> None:
        self.head_done = True

    def on_header(self, name: bytes, value: bytes) -> None:
        self.header_count += 1
        if self.header_count > MAX_HEADER_COUNT:
            self.refusal = f"over {MAX_HEADER_COUNT} headers"
            raise httptools.HttpParserError(self.refusal)
        self.headers[name.decode("latin-1").lower()] = value.decode("latin-1")
        self.raw.append((name.lower(), value))

    def on_body(self, body: bytes) -> None:
        self.size += len(body)
        if self.size > self.max_body:
            self.refusal = f"answer over {self.max_body} bytes"
            raise httptools.HttpParserError(self.refusal)
        self.chunks.append(body)

    def on_message_complete(self) -> None:
        if self.answer is None or self.answer.done():
            return
        status = self.parser.get_status_code()
        body = b"".join(self.chunks)
        response = PeerResponse(status, self.headers, body, self.raw)
        if not self.parser.should_keep_alive():
            self.close()
        self.answer.set_result(response)

    # -- use -------------------------------------------------------------------------------

    def send(self, request: bytes) -> asyncio.Future[PeerResponse]:
        assert self.transport is not None
        self.answer = asyncio.get_running_loop().create_future()
        self.headers, self.chunks, self.size, self.header_count = {}, [], 0, 0
        self.raw, self.received, self.head_done = [], False, False
        self.transport.write(request)
        return self.answer

    def _fail(self, message: str, kind: str) -> None:
        if self.answer is not None and not self.answer.done():
            self.answer.set_exception(PeerFailed(message, kind=kind))
        self.close()

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


class PeerPool:
    """Keep-alive connections to other nodes, by ``host:port`` address."""

    def __init__(
        self,
        *,
        idle_timeout_s: float,
        max_idle_per_peer: int = 64,
        max_response_bytes: int = MAX_RESPONSE_BYTES,
    ) -> None:
        self.idle_timeout_s = idle_timeout_s
        self.max_idle_per_peer = max_idle_per_peer
        self.max_response_bytes = max_response_bytes
        self._idle: dict[str, list[_Connection]] = {}
        self._all: set[_Connection] = set()
        self.opened = 0  # connections opened so far (for tests and metrics)

    async def request(
        self,
        address: str,
        method: str,
        target: str,
        headers: dict[str, str],
        body: bytes,
        *,
        connect_timeout_s: float,
        timeout_s: float,
    ) -> PeerResponse:
        """Sends one request and waits for the whole answer, at most ``timeout_s`` (the
        connect included)."""
        began = time.monotonic()
        connection = self._take(address)
        if connection is None:
            connection = await self._open(address, min(connect_timeout_s, timeout_s))
        return await self._exchange(
            connection, address, method, target, headers, body,
            timeout_s - (time.monotonic() - began),
        )  # fmt: skip

    async def _exchange(
        self,
        connection: _Connection,
        address: str,
        method: str,
        target: str,
        headers: dict[str, str],
        body: bytes,
        remaining: float,
    ) -> PeerResponse:
        timeout_s = remaining
        lines = [f"{method} {target} HTTP/1.1", f"host: {address}", f"content-length: {len(body)}"]
        lines += [f"{name}: {value}" for name, value in headers.items()]
        request = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body
        answer = connection.send(request)
        try:
            async with asyncio.timeout(remaining):
                response = await answer
        except TimeoutError:
            connection.close()
            raise PeerFailed(
                f"no whole answer within {timeout_s:.1f} s",
                kind="timeout",
                received=connection.received,
            ) from None
        except asyncio.CancelledError:
            connection.close()  # an answer may still come: the connection is no longer clean
            raise
        if not connection.closed:
            self._give_back(connection)
        return response

    async def close(self) -> None:
        for connection in list(self._all):
            connection.close()
        self._idle.clear()
        await asyncio.sleep(0)  # let the transports run their close callbacks

    def idle_count(self, address: str) -> int:
        return len(self._idle.get(address, ()))

    # -- the pool ----------------------------------------------------------------------------

    def _take(self, address: str) -> _Connection | None:
        idle = self._idle.get(address)
        now = time.monotonic()
        while idle:
            connection = idle.pop()  # the most recently used: the warmest
            if connection.closed or connection.transport is None:
                continue
            if connection.transport.is_closing() or now - connection.idle_since >= (
                self.idle_timeout_s
            ):
                connection.close()
                continue
            return connection
        return None

    def _give_back(self, connection: _Connection) -> None:
        idle = self._idle.setdefault(connection.address, [])
        if len(idle) >= self.max_idle_per_peer:
            connection.close()
            return
        connection.idle_since = time.monotonic()
        idle.append(connection)

    def _lost(self, connection: _Connection) -> None:
        self._all.discard(connection)
        idle = self._idle.get(connection.address)
        if idle and connection in idle:
            idle.remove(connection)

    async def _open(self, address: str, timeout_s: float) -> _Connection:
        host, _, port = address.rpartition(":")
        host = host.strip("[]")
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(timeout_s):
                transport, protocol = await loop.create_connection(
                    lambda: _Connection(self, address, self.max_response_bytes), host, int(port)
                )
        except TimeoutError:
            raise PeerUnreachable(
                f"connect to {address} took over {timeout_s:.1f} s", timed_out=True
            ) from None
        except (OSError, ValueError) as exc:
            raise PeerUnreachable(f"cannot connect to {address}: {exc}") from None
        protocol.transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # requests are one write
        self.opened += 1
        self._all.add(protocol)
        return protocol
