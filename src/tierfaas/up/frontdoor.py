"""The front door: a small per-connection (L4) round-robin TCP proxy in front of the nodes.

It stands for the external load balancer of a real deployment. Since every node routes
requests by itself (warm routing table, forwarding), the load balancer can stay dumb: each
accepted client connection goes to the next healthy node in turn, and from then on the bytes
are spliced both ways without being parsed (keep-alive, streaming bodies, server-sent events
and WebSockets all pass through untouched). HTTP parsing in a Python proxy costs more than the
node behind it (see docs/benchmarks.md), splicing does not.

- Health: every ``interval_s`` each backend's ``/readyz`` is asked (a fresh connection,
  ``Connection: close``); a backend that does not answer 200 (down, joining, draining) is
  skipped until it does again. Before the first answer a backend counts as healthy.
- Connect errors: a refused (or timed-out) connection to a backend marks it unhealthy and the
  next backend is tried; nothing of the client's has been sent yet, so this is always safe.
  When no backend takes the connection, the client gets a ``503`` and the connection closes.
- Flow control: a side whose peer's write buffer is full stops reading until it drains.
- Hop headers: a client's ``X-Tierfaas-*`` hop headers pass through like any bytes; the node
  refuses the request (403 ``hop_refused``), so none needs stripping here.

Run one on its own with ``tierfaas frontdoor --listen HOST:PORT --backends A,B,...``;
``tierfaas up`` runs one in its supervisor process.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import cast

log = logging.getLogger(__name__)

NO_BACKEND_RESPONSE = (
    b"HTTP/1.1 503 Service Unavailable\r\n"
    b"Content-Type: application/json\r\n"
    b"Retry-After: 1\r\n"
    b"Connection: close\r\n"
    b"Content-Length: 80\r\n\r\n"
    + b'{"error": "no_backend", "message": "no node takes connections: try again soon"}'.ljust(80)
)
_HIGH_WATER = 256 * 1024


def parse_hostport(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[v6]:PORT`` too) to a pair; ValueError when it is not one."""
    text = text.strip()
    if text.startswith("http://"):
        text = text[len("http://") :].rstrip("/")
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{text!r} is not HOST:PORT")
    return host.strip("[]"), int(port)


@dataclass
class Backend:
    host: str
    port: int
    healthy: bool = True
    checked: bool = False  # has a health check answered yet
    reason: str = ""
    connections: int = 0  # connections handed to this backend so far
    since: float = field(default_factory=time.monotonic)

    @property
    def address(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    def mark(self, healthy: bool, reason: str = "") -> None:
        if healthy != self.healthy:
            log.info(
                "backend %s is %s%s",
                self.address,
                "healthy" if healthy else "unhealthy",
                f" ({reason})" if reason else "",
            )
            self.since = time.monotonic()
        self.healthy = healthy
        self.reason = reason


async def http_get(host: str, port: int, path: str, timeout: float = 1.0) -> tuple[int, bytes]:
    """One ``GET`` on a new connection (``Connection: close``); returns (status, body).
    Raises OSError (or TimeoutError) when the server cannot be reached or answers nonsense."""

    async def fetch() -> tuple[int, bytes]:
        reader, writer = await asyncio.open_connection(host, port)
        try:
            writer.write(
                f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n\r\n".encode()
            )
            data = await reader.read()
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
        head, _, body = data.partition(b"\r\n\r\n")
        parts = head.split(b" ", 2)
        if len(parts) < 2 or not parts[1].isdigit():
            raise ConnectionError(f"not an HTTP answer from {host}:{port}: {data[:80]!r}")
        if b"transfer-encoding: chunked" in head.lower():
            body = _unchunk(body)
        return int(parts[1]), body

    return await asyncio.wait_for(fetch(), timeout)


def _unchunk(body: bytes) -> bytes:
    out = []
    while body:
        size_line, _, rest = body.partition(b"\r\n")
        size = int(size_line.split(b";")[0] or b"0", 16)
        if size == 0:
            break
        out.append(rest[:size])
        body = rest[size + 2 :]
    return b"".join(out)


class _Side(asyncio.Protocol):
    """One half of a spliced connection; ``peer`` is the other half."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.peer: _Side | None = None
        self.pending: list[bytes] = []  # client bytes that arrived before the backend connected
        self.closed = False
        self.eof = False  # the far end sent EOF
        self.eof_sent = False  # we shut down our write side
        self.discard = False  # refused: read and drop what the client sends, then close

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but have its methods.
        self.transport = cast(asyncio.Transport, transport)
        self.transport.set_write_buffer_limits(high=_HIGH_WATER)

    def data_received(self, data: bytes) -> None:
        peer = self.peer
        if peer is not None and peer.transport is not None:
            peer.transport.write(data)
        elif not self.discard:
            self.pending.append(data)

    def eof_received(self) -> bool:
        self.eof = True
        peer = self.peer
        if self.discard:
            return False
        if peer is None:
            return True  # still connecting: the connector passes the EOF on
        if self.eof_sent or peer.closed or peer.transport is None:
            return False  # both directions are done: close
        if peer.transport.can_write_eof():
            peer.transport.write_eof()
            peer.eof_sent = True
            return True  # keep the other direction open (half-close)
        peer.transport.close()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        peer = self.peer
        if peer is not None and peer.transport is not None and not peer.closed:
            peer.transport.close()  # flushes what it buffered first

    def pause_writing(self) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.peer is not None and self.peer.transport is not None and not self.peer.closed:
            self.peer.transport.resume_reading()


class _ClientSide(_Side):
    def __init__(self, door: FrontDoor) -> None:
        super().__init__()
        self.door = door

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        assert self.transport is not None
        self.transport.pause_reading()
        task = asyncio.get_running_loop().create_task(self.door._connect(self))
        self.door._tasks.add(task)
        task.add_done_callback(self.door._tasks.discard)


class FrontDoor:
    """Round-robin over ``backends`` (``(host, port)`` pairs), one client connection at a time."""

    def __init__(
        self,
        backends: Sequence[tuple[str, int]],
        *,
        interval_s: float = 1.0,
        health_path: str = "/readyz",
        connect_timeout_s: float = 1.0,
    ) -> None:
        if not backends:
            raise ValueError("the front door needs at least one backend")
        self.backends = [Backend(host, port) for host, port in backends]
        self.interval_s = interval_s
        self.health_path = health_path
        self.connect_timeout_s = connect_timeout_s
        self.server: asyncio.Server | None = None
        self.accepted = 0
        self.rejected = 0
        self._next = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._health: asyncio.Task[None] | None = None

    # -- lifecycle ------------------------------------------------------------------------------

    async def start(
        self, host: str = "127.0.0.1", port: int = 8080, sock: socket.socket | None = None
    ) -> FrontDoor:
        """Listens (on ``sock`` if given, already bound) and starts the health checks."""
        loop = asyncio.get_running_loop()
        if sock is not None:
            self.server = await loop.create_server(lambda: _ClientSide(self), sock=sock)
        else:
            self.server = await loop.create_server(
                lambda: _ClientSide(self), host, port, reuse_address=True, backlog=2048
            )
        self._health = loop.create_task(self._health_loop())
        return self

    @property
    def port(self) -> int:
        assert self.server is not None and self.server.sockets
        return int(self.server.sockets[0].getsockname()[1])

    async def close(self) -> None:
        """Stops listening, then closes every spliced connection."""
        if self._health is not None:
            self._health.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._health
        if self.server is not None:
            self.server.close()
            if hasattr(self.server, "close_clients"):
                self.server.close_clients()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    def set_backends(self, backends: Sequence[tuple[str, int]]) -> None:
        """Replaces the rotation (a rollout adds and drains nodes). Backends kept keep their
        health; spliced connections to removed ones stay until either side closes them."""
        if not backends:
            raise ValueError("the front door needs at least one backend")
        current = {(b.host, b.port): b for b in self.backends}
        self.backends = [current.get(a) or Backend(*a) for a in backends]
        self._next %= len(self.backends)

    # -- choosing a backend -------------------------------------------------------------------

    def order(self) -> list[Backend]:
        """The backends to try for the next connection: the healthy ones from the rotation's
        current position; if none is healthy, all of them (a check may just be stale)."""
        count = len(self.backends)
        start = self._next
        self._next = (start + 1) % count
        rotated = [self.backends[(start + i) % count] for i in range(count)]
        healthy = [b for b in rotated if b.healthy]
        if healthy:
            # Advance past the chosen one so that skipping does not bias the rotation.
            self._next = (self.backends.index(healthy[0]) + 1) % count
            return healthy
        return rotated

    async def _connect(self, client: _ClientSide) -> None:
        loop = asyncio.get_running_loop()
        client_transport = client.transport
        assert client_transport is not None
        for backend in self.order():
            if client.closed:
                return
            try:
                _, upstream = await asyncio.wait_for(
                    loop.create_connection(_Side, backend.host, backend.port),
                    self.connect_timeout_s,
                )
            except (OSError, TimeoutError) as exc:
                backend.mark(False, f"connect: {exc.__class__.__name__}")
                continue
            if client.closed:
                if upstream.transport is not None:
                    upstream.transport.close()
                return
            backend.connections += 1
            self.accepted += 1
            upstream.peer, client.peer = client, upstream
            assert upstream.transport is not None
            for chunk in client.pending:
                upstream.transport.write(chunk)
            client.pending.clear()
            if client.eof and upstream.transport.can_write_eof():
                upstream.transport.write_eof()
                upstream.eof_sent = True
            client_transport.resume_reading()
            return
        self.rejected += 1
        # Answer, then read and drop what the client sent until it closes (or 2 s pass):
        # closing a socket with unread bytes would reset it and lose the answer.
        client.discard = True
        client.pending.clear()
        client_transport.write(NO_BACKEND_RESPONSE)
        if client_transport.can_write_eof():
            client_transport.write_eof()
        client_transport.resume_reading()
        loop.call_later(2.0, client_transport.close)

    # -- health -------------------------------------------------------------------------------

    async def check(self, backend: Backend) -> None:
        try:
            status, _ = await http_get(
                backend.host, backend.port, self.health_path, timeout=self.interval_s
            )
        except (OSError, TimeoutError, ValueError) as exc:
            backend.mark(False, f"{self.health_path}: {exc.__class__.__name__}")
        else:
            backend.mark(status == 200, "" if status == 200 else f"{self.health_path}: {status}")
        backend.checked = True

    async def check_all(self) -> None:
        await asyncio.gather(*(self.check(b) for b in self.backends))

    async def _health_loop(self) -> None:
        while True:
            began = time.monotonic()
            try:
                await self.check_all()
            except Exception:
                # A bug in a check must not end the checks: backends would keep the health
                # they had, a dead one in the rotation for as long as the front door runs.
                log.exception("front door health check failed; checking again next round")
            await asyncio.sleep(max(0.05, self.interval_s - (time.monotonic() - began)))


def bind_listener(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port``; OSError (EADDRINUSE...) when it is busy."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(2048)
    except OSError:
        sock.close()
        raise
    sock.setblocking(False)
    return sock


async def serve(listen: tuple[str, int], backends: Sequence[tuple[str, int]]) -> None:
    """Runs a front door until SIGTERM or SIGINT."""
    import signal

    door = FrontDoor(backends)
    await door.start(sock=bind_listener(*listen))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    log.info(
        "front door on %s:%d, round-robin over %s",
        *listen,
        ", ".join(b.address for b in door.backends),
    )
    try:
        await stop.wait()
    finally:
        await door.close()


def run(listen: tuple[str, int], backends: Sequence[tuple[str, int]]) -> None:
    import uvloop

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(serve(listen, backends))
