"""The node's HTTP/1.1 client to an http exec function's server: the wire side of
``HttpInstance``.

Every call of an http function takes this path, so per call it does only what the call needs:
the request is one f-string around the instance's constant host line, the answer is parsed by
httptools (chunked, close-delimited and 204/304 answers included) into raw header pairs that
are filtered as they arrive, and the call's future is resolved from the parser's
``on_message_complete`` callback, the connection going back to the idle list in the same
callback once it carries nothing more. A connection carries one call at a time, or, for a
function with ``pipeline`` > 1, several in a row (HTTP/1.1 pipelining): their requests leave in
one write, their answers come back in order and are parsed from the same reads. No task and
no timer per call: the instance's deadline timer bounds every call (a call past its timeout
kills the instance, which closes its connections), and only opening a connection awaits
(``HttpInstance`` owns the pool and decides what a failure means).
"""

from __future__ import annotations

import asyncio
import socket
from collections import deque
from typing import Any, Final, Protocol

import httptools

from tierfaas.runtime.instance import Result

DEFAULT_CONTENT_TYPE: Final = "application/octet-stream"
MAX_HEADER_COUNT: Final = 100
PROBE: Final = -1
"""The number a connection carries while it sends a readiness probe (calls are numbered from 1)."""

# Request headers an http function never gets from the caller: hop-by-hop ones, ones the node
# sets itself, and every X-Tierfaas-* header (the nodes' own).
REQUEST_DROP: Final = frozenset(
    {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "host",
     "content-length", "expect", "proxy-connection", "x-request-id"}
)  # fmt: skip
# Response headers of an http function the caller never gets: hop-by-hop ones, ones the node
# sets itself (the content type is kept apart), and every X-Tierfaas-* header, which a
# function must not be able to forge (a node trusts its peers' X-Tierfaas-Reject).
RESPONSE_DROP: Final = frozenset(
    {b"connection", b"keep-alive", b"transfer-encoding", b"te", b"trailer", b"upgrade",
     b"content-length", b"content-type", b"date", b"server", b"proxy-connection",
     b"x-request-id"}
)  # fmt: skip
_FRAMING: Final = frozenset({b"content-length", b"transfer-encoding"})


def encode_request(host_line: str, body: bytes, context: dict[str, Any] | None) -> bytes:
    """One call as an HTTP/1.1 request: ``METHOD /SUBPATH?QUERY``, the caller's headers but
    the dropped ones, the node's host, length and request id, and the body. ``host_line``:
    ``"host: ADDRESS\\r\\n"``."""
    if not context:
        return b"POST / HTTP/1.1\r\n%scontent-length: %d\r\n\r\n%s" % (
            host_line.encode(), len(body), body,
        )  # fmt: skip
    query = context.get("query")
    head = (
        f"{context.get('method') or 'POST'} {context.get('path') or '/'}"
        f"{'?' if query else ''}{query or ''} HTTP/1.1\r\n{host_line}"
        f"content-length: {len(body)}\r\n"
    )
    headers = context.get("headers")
    if headers:
        for name, value in headers.items():
            if name not in REQUEST_DROP and not name.startswith("x-tierfaas-"):
                head += f"{name}: {value}\r\n"
    request_id = context.get("request_id")
    if request_id:
        head += f"x-request-id: {request_id}\r\n"
    return (head + "\r\n").encode("latin-1") + body


class ConnectionOwner(Protocol):
    """What a connection tells its instance (``HttpInstance``)."""

    def answered(self, connection: HttpConnection, number: int, result: Result) -> None:
        """A whole answer to call ``number`` came (the connection may be reused unless
        closed)."""

    def refused(
        self, connection: HttpConnection, number: int, too_large: bool, detail: str
    ) -> None:
        """The answer to call ``number`` is over the size limit (``too_large``) or not HTTP;
        the connection is closed."""

    def lost(
        self, connection: HttpConnection, number: int, request: bytes, exc: Exception | None
    ) -> None:
        """The connection closed; ``number``: a call it carried without a whole answer (0:
        none; called once for each), ``request`` its request."""

    def unsent(self, connection: HttpConnection, calls: list[tuple[int, bytes]]) -> None:
        """Calls pipelined behind an answer that closed the connection (``Connection:
        close``): the server reads no request after it, so they are to be sent again."""


class HttpConnection(asyncio.Protocol):
    """One kept-alive connection to the function's server, carrying one call at a time
    (``send``), or several pipelined (``send_batch``)."""

    def __init__(self, owner: ConnectionOwner, max_body: int) -> None:
        self.owner = owner
        self.max_body = max_body
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.closed = False  # closed, or closing (either side)
        self.closed_here = False  # the node closed it (not the server)
        self.idle_since = 0.0
        self.number = 0  # the call whose answer comes next (PROBE: a readiness probe; 0: none)
        self.request = b""  # its request, kept to send again on a new connection
        self.behind: deque[tuple[int, bytes]] = deque()  # calls pipelined after it, in order
        self.reserved = 0  # calls the instance chose this connection for, not yet sent
        self.reused = False  # the request went on a connection that had been idle
        self.received = False  # a byte of the current answer arrived
        self.head_done = False  # the current answer's status line and headers are parsed
        self.framed = False  # the current answer has a content-length or a transfer-encoding
        self.content_type = DEFAULT_CONTENT_TYPE
        self.headers: list[tuple[bytes, bytes]] = []
        self.chunks: list[bytes] = []
        self.size = 0
        self.header_count = 0
        self.refusal = ""  # why a callback stopped the parser (httptools wraps the error)

    def load(self) -> int:
        """The calls on it: in flight and chosen for it."""
        return (self.number != 0) + len(self.behind) + self.reserved

    def send(self, number: int, request: bytes, reused: bool) -> None:
        """Sends one call on the connection, which carries none."""
        assert self.transport is not None
        self._begin(number, request, reused)
        self.transport.write(request)

    def send_batch(self, calls: list[tuple[int, bytes]], reused: bool) -> None:
        """Pipelines ``calls`` (numbers and requests, at least one) after those it carries,
        in one write."""
        assert self.transport is not None
        first = 0
        if not self.number:
            self._begin(calls[0][0], calls[0][1], reused)
            first = 1
        self.behind.extend(calls[first:])
        self.transport.write(b"".join([request for _, request in calls]))

    def _begin(self, number: int, request: bytes, reused: bool) -> None:
        """The answer to read next is call ``number``'s."""
        self.number, self.request, self.reused = number, request, reused
        self.received = self.head_done = self.framed = False
        self.content_type = DEFAULT_CONTENT_TYPE
        self.headers, self.size, self.header_count = [], 0, 0
        self.chunks.clear()

    def close(self) -> None:
        self.closed = self.closed_here = True
        if self.transport is not None:
            self.transport.close()

    # -- asyncio.Protocol --------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop calls this after create_connection has returned; connect() sets it first.
        self.transport = transport  # type: ignore[assignment]  # a TCP transport

    def data_received(self, data: bytes) -> None:
        if not self.number:
            self.close()  # bytes nobody asked for: not a keep-alive server one can trust
            return
        self.received = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            number, self.number = self.number, 0
            self.close()
            if number:
                too_large = self.refusal.startswith("answer over")
                self.owner.refused(
                    self, number, too_large, f"unreadable answer: {self.refusal or exc}"
                )

    def eof_received(self) -> bool:
        self.closed = True  # not to be taken for a request meanwhile
        return False  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        number, self.number = self.number, 0
        behind, self.behind = self.behind, deque()
        self.closed = True
        request = self.request
        if number and exc is None and not self.closed_here and self.head_done and not self.framed:
            # A body with neither a length nor chunks runs until the close (RFC 9112 6.3).
            self.owner.answered(self, number, self._result(self.parser.get_status_code()))
            number = 0
        self.owner.lost(self, number, request, exc)
        for following, following_request in behind:
            self.owner.lost(self, following, following_request, exc)

    # -- httptools callbacks -----------------------------------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        self.header_count += 1
        if self.header_count > MAX_HEADER_COUNT:
            self.refusal = f"over {MAX_HEADER_COUNT} headers"
            raise httptools.HttpParserError(self.refusal)
        name = name.lower()
        if name in RESPONSE_DROP or name.startswith(b"x-tierfaas-"):
            if name == b"content-type":
                self.content_type = value.decode("latin-1")
            elif name in _FRAMING:
                self.framed = True
            return
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        self.head_done = True

    def on_body(self, body: bytes) -> None:
        self.size += len(body)
        if self.size > self.max_body:
            self.refusal = f"answer over {self.max_body} bytes"
            raise httptools.HttpParserError(self.refusal)
        self.chunks.append(body)

    def on_message_complete(self) -> None:
        number = self.number
        if not number:
            return
        status = self.parser.get_status_code()
        if status == 101:  # the node never asks to switch protocols
            self.refusal = "101 Switching Protocols, unasked"
            raise httptools.HttpParserError(self.refusal)
        if status < 200:  # interim (100 Continue, 103 Early Hints): the answer follows it
            self.head_done = self.framed = False
            self.content_type = DEFAULT_CONTENT_TYPE
            self.headers, self.size, self.header_count = [], 0, 0
            self.chunks.clear()
            return
        self.number = 0
        result = self._result(status)
        if not self.parser.should_keep_alive():
            self.close()
            if self.behind:  # the server reads nothing after this answer
                unsent, self.behind = list(self.behind), deque()
                self.owner.unsent(self, unsent)
        elif self.behind:
            following, request = self.behind.popleft()
            self._begin(following, request, False)
        self.owner.answered(self, number, result)

    def _result(self, status: int) -> Result:
        chunks = self.chunks
        body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        chunks.clear()
        self.request = b""  # an idle connection holds neither body
        return Result(body, self.content_type, status, self.headers)


async def connect(owner: ConnectionOwner, port: int | str, max_body: int) -> HttpConnection:
    """A new connection to 127.0.0.1:``port``, or to the Unix socket at ``port`` when it is a
    path. Raises OSError."""
    loop = asyncio.get_running_loop()
    if isinstance(port, str):
        transport, connection = await loop.create_unix_connection(
            lambda: HttpConnection(owner, max_body), port
        )
        connection.transport = transport
        return connection
    transport, connection = await loop.create_connection(
        lambda: HttpConnection(owner, max_body), "127.0.0.1", port
    )
    connection.transport = transport
    sock = transport.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # requests are one write
    return connection
