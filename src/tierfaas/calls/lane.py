"""The calls lane: the second copies of asynchronous calls, and their outcomes, from an origin
to a holder over the node's raw TCP lane (``control/lane.py``: the port and the AUTH frame
with the cluster credential that route queries use), not over gRPC.

Why: the copy's round trip is on every accept's path. Over a grpc.aio stream it cost ~13 ms
under load (batches waited for the one in flight, and each message crossed two grpc.aio
event loops and their poller threads); a frame on an ``asyncio.Protocol`` costs tens of
microseconds (shared/reference/loopback-limits.md), and msgpack rows (``wire.to_row``) a few
microseconds a call where protobuf records cost several times that.

Protocol. The origin sends ``CALL_COPIES`` and ``CALL_OUTCOMES`` frames, each
``[seq, origin, [row, ...]]`` in msgpack; the holder answers each with ``CALLS_ACK``
``[seq, kept, error]`` once its store has committed the batch (``error`` empty), or with the
reason it did not (no call service yet, a row that is not a valid call, its store failed).
A frame that is not such a list closes the connection. Frames are pipelined, up to
``COPIES_IN_FLIGHT`` copy frames unacked: at low load an accept waits for one round trip;
under load the copies submitted while that many frames wait leave together at the next ack
(fewer, fuller frames: each costs both loops a write, a read and a store write, ~5 % of the
two nodes' CPU per call measured; an accept waits at most one round trip more).

Batching without a timer on the accept's path: every copy submitted during one turn of the
event loop leaves in one frame at the end of that turn (the accepts a busy loop serves in one
turn share it); outcomes, on nobody's path, wait ``OUTCOME_LINGER_S`` to share frames.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, cast

import msgpack

from tierfaas.calls import wire
from tierfaas.calls.model import Call, Role
from tierfaas.config import Address
from tierfaas.control.auth import credential
from tierfaas.control.constants import LANE_CONNECT_TIMEOUT_S
from tierfaas.control.lane import (
    AUTH,
    CALL_COPIES,
    CALL_OUTCOMES,
    CALLS_ACK,
    FrameHandler,
    Frames,
    Reply,
    frame,
)
from tierfaas.control.wire import BadMessage
from tierfaas.names import is_valid_name

if TYPE_CHECKING:
    from tierfaas.calls.service import CallService

log = logging.getLogger("tierfaas.calls")

MAX_BATCH_ITEMS = 512
MAX_BATCH_BYTES = 7 * 1024 * 1024
"""A frame stays under the lane's frame limit (the gRPC cap, 2 x 4 MiB) with room for its
framing; an async body is at most 7 MiB, so one call always fits."""
OUTCOME_LINGER_S = 0.05
"""Outcomes are off every caller's path: they wait this long to travel together."""
COPIES_IN_FLIGHT = 2
"""Copy frames sent and not yet acked, at most; copies submitted meanwhile wait for the
first ack and leave together (at low load none is in flight, so none waits)."""
RECONNECT_S = 0.1
"""How soon a failed connect is tried again while calls wait for it."""
MAX_ACK_FRAME = 64 * 1024
"""Bytes: the largest frame an origin reads (acks are a few dozen bytes)."""


class LaneError(ConnectionError):
    """The calls lane to a peer failed: not reachable, connection lost, or the peer did not
    keep the batch (its reason)."""


# -- the holder's side -------------------------------------------------------------------------


def holder_frames(service: Callable[[], CallService | None]) -> dict[int, FrameHandler]:
    """The lane's handlers for copies and outcomes, over the node's call service (looked up
    at each frame: the node sets it once it exists, and a node still starting answers every
    batch with an error, which the origin treats as an unreachable holder)."""

    working: set[asyncio.Future[Any]] = set()  # held: the loop keeps only weak references

    def serve(kind: int, payload: bytes, reply: Reply) -> None:
        seq, origin, rows = _envelope(payload)
        calls = service()

        def ack(kept: int, error: str) -> None:
            reply(CALLS_ACK, msgpack.packb([seq, kept, error[:500]]))

        if calls is None:
            ack(0, "this node takes no calls yet")
            return
        copies = kind == CALL_COPIES
        role: Role = "copy" if copies else "own"
        from_row = wire.from_row
        try:
            batch = [from_row(row, role) for row in rows]
        except BadMessage as exc:
            ack(0, f"bad call: {exc}")
            return
        try:
            work: Awaitable[Any] = (
                calls.take_copies(origin, batch) if copies else calls.take_outcomes(origin, batch)
            )
        except Exception as exc:  # the store closed: as a failed commit
            ack(0, f"not kept: {exc}")
            return

        def done(task: asyncio.Future[Any]) -> None:
            if task.cancelled():
                ack(0, "cancelled")
            elif task.exception() is not None:
                ack(0, f"not kept: {task.exception()}")
            else:
                ack(task.result() if copies else len(batch), "")

        task = asyncio.ensure_future(work)  # the store's future as it is: no task per frame
        working.add(task)
        task.add_done_callback(working.discard)
        task.add_done_callback(done)

    return {
        CALL_COPIES: lambda payload, reply: serve(CALL_COPIES, payload, reply),
        CALL_OUTCOMES: lambda payload, reply: serve(CALL_OUTCOMES, payload, reply),
    }


def _envelope(payload: bytes) -> tuple[int, str, list[Any]]:
    try:
        message = msgpack.unpackb(payload, raw=False)
    except Exception as exc:  # msgpack raises several types for bad bytes
        raise ValueError(f"not msgpack: {exc}") from None
    if not (isinstance(message, list) and len(message) >= 3):
        raise ValueError("a batch is [seq, origin, rows]")
    seq, origin, rows = message[:3]
    if not isinstance(seq, int) or not isinstance(origin, str) or not isinstance(rows, list):
        raise ValueError("a batch is [seq, origin, rows]")
    if not is_valid_name(origin) or len(rows) > MAX_BATCH_ITEMS:
        raise ValueError("bad origin or too many calls")
    return seq, origin, rows


# -- the origin's side -------------------------------------------------------------------------


class _Protocol(asyncio.Protocol):
    def __init__(self, link: LaneLink) -> None:
        self._link = link
        self._frames = Frames(MAX_ACK_FRAME)
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is no subclass

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self._link._lost(self, exc)

    def data_received(self, data: bytes) -> None:
        try:
            for kind, payload in self._frames.feed(data):
                if kind != CALLS_ACK:
                    raise ValueError(f"unexpected frame kind {kind}")
                ack = msgpack.unpackb(payload, raw=False)
                if not (isinstance(ack, list) and len(ack) >= 3 and isinstance(ack[0], int)):
                    raise ValueError("an ack is [seq, kept, error]")
                self._link._ack(ack[0], str(ack[2]))
        except Exception as exc:
            log.warning("calls lane: bad frame from the holder: %s", exc)
            if self.transport is not None:
                self.transport.abort()


Pending = list[tuple[list[Call], int, asyncio.Future[None]]]
"""Submissions waiting for a frame: their calls, about how many bytes they take, their
future."""


class LaneLink:
    """Copies and outcomes to one peer, on one connection made on first use (and again after
    a loss). ``resolve()`` finds the peer's lane address (its ``Info``). ``submit`` returns a
    future resolved once the peer committed the batch holding the call, or failed with
    ``LaneError`` (or ``TimeoutError`` after ``timeout_s``)."""

    def __init__(
        self,
        origin: str,
        resolve: Callable[[], Awaitable[Address]],
        *,
        key: bytes | None,
        timeout_s: float,
        outcome_linger_s: float = OUTCOME_LINGER_S,
    ) -> None:
        self.origin = origin
        self._resolve = resolve
        self._auth = frame(AUTH, credential(key).encode())
        self.timeout_s = timeout_s
        self.outcome_linger_s = outcome_linger_s
        self._queues: dict[int, Pending] = {CALL_COPIES: [], CALL_OUTCOMES: []}
        self._flushing: dict[int, bool] = {CALL_COPIES: False, CALL_OUTCOMES: False}
        self._protocol: _Protocol | None = None
        self._connecting: asyncio.Task[None] | None = None
        self._waiting: dict[int, tuple[list[asyncio.Future[None]], asyncio.TimerHandle]] = {}
        self._copies_sent: set[int] = set()  # the seqs of the copy frames not acked yet
        self._seq = 0
        self._outage: float | None = None  # since when connects fail (loop time)
        self.frames = 0  # frames sent (tests, metrics)
        self.closed = False

    def submit(self, kind: int, calls: list[Call]) -> asyncio.Future[None]:
        """``calls`` travel with whatever else is submitted during this turn of the loop, in
        frames of at most ``MAX_BATCH_ITEMS`` calls and about ``MAX_BATCH_BYTES`` (more
        than that takes several frames: the future resolves once every one is acked)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        if self.closed:
            future.set_exception(LaneError("the calls lane is closed"))
            return future
        queue = self._queues[kind]
        parts = _parts(calls, with_request=kind == CALL_COPIES)
        if len(parts) == 1:
            queue.append((calls, parts[0][1], future))
        else:
            futures = [loop.create_future() for _ in parts]
            queue.extend((part, size, f) for (part, size), f in zip(parts, futures, strict=True))
            _all(futures, future)
        if not self._flushing[kind]:
            self._flushing[kind] = True
            if kind == CALL_OUTCOMES and self.outcome_linger_s > 0:
                loop.call_later(self.outcome_linger_s, self._flush, kind)
            else:
                loop.call_soon(self._flush, kind)  # the end of this turn of the loop
        return future

    def _flush(self, kind: int) -> None:
        self._flushing[kind] = False
        protocol = self._protocol
        if protocol is None or protocol.transport is None or protocol.transport.is_closing():
            if self._connecting is None and not self.closed:
                self._connecting = asyncio.ensure_future(self._connect())
                self._connecting.add_done_callback(self._connected)
            return  # sent once connected
        queue = self._queues[kind]
        if not queue:
            return
        copies = self._copies_sent
        if kind == CALL_COPIES and len(copies) >= COPIES_IN_FLIGHT:
            return  # sent by the next ack (``_settled``)
        self._queues[kind] = []
        loop = asyncio.get_running_loop()
        with_request = kind == CALL_COPIES
        for batch in _batches(queue):
            self._seq += 1
            seq = self._seq
            to_row = wire.to_row
            rows = [to_row(c, with_request=with_request) for calls, _, _ in batch for c in calls]
            payload = msgpack.packb([seq, self.origin, rows])
            timer = loop.call_later(self.timeout_s, self._expire, seq)
            self._waiting[seq] = ([future for _, _, future in batch], timer)
            if with_request:
                copies.add(seq)
            assert protocol.transport is not None
            protocol.transport.write(frame(kind, payload))
            self.frames += 1

    async def _connect(self) -> None:
        address = await self._resolve()
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(LANE_CONNECT_TIMEOUT_S):
                _, protocol = await loop.create_connection(
                    lambda: _Protocol(self), address.host, address.port
                )
        except TimeoutError:
            raise LaneError(f"no answer from the calls lane at {address}") from None
        except OSError as exc:
            raise LaneError(f"cannot reach the calls lane at {address}: {exc}") from None
        assert protocol.transport is not None
        protocol.transport.write(self._auth)
        self._protocol = protocol

    def _connected(self, task: asyncio.Task[None]) -> None:
        self._connecting = None
        loop = asyncio.get_running_loop()
        error = None if task.cancelled() else task.exception()
        if task.cancelled() or error is not None:
            # Like gRPC's wait-for-ready: a peer that is not listening yet (it has just
            # joined, or its Info is slow under load) is tried again until the first queued
            # call has waited ``timeout_s``; then what is queued fails.
            if self._outage is None:
                self._outage = loop.time()
            if not self.closed and loop.time() - self._outage + RECONNECT_S < self.timeout_s:
                loop.call_later(RECONNECT_S, self._flush, CALL_COPIES)
                return
            self._outage = None
            failure = error if isinstance(error, Exception) else LaneError("connect cancelled")
            if not isinstance(failure, (LaneError, TimeoutError)):
                failure = LaneError(str(failure) or type(failure).__name__)
            for kind in self._queues:
                queue, self._queues[kind] = self._queues[kind], []
                _fail([future for _, _, future in queue], failure)
            return
        self._outage = None
        for kind in self._queues:
            self._flush(kind)

    def _settled(self, seq: int) -> None:
        """A frame was acked or expired: copies held back for it leave now."""
        if seq in self._copies_sent:
            self._copies_sent.discard(seq)
            if self._queues[CALL_COPIES]:
                self._flush(CALL_COPIES)

    def _ack(self, seq: int, error: str) -> None:
        waiting = self._waiting.pop(seq, None)
        self._settled(seq)
        if waiting is None:
            return  # expired meanwhile
        futures, timer = waiting
        timer.cancel()
        if error:
            _fail(futures, LaneError(f"the holder did not keep the batch: {error}"))
            return
        for future in futures:
            if not future.done():
                future.set_result(None)

    def _expire(self, seq: int) -> None:
        waiting = self._waiting.pop(seq, None)
        self._settled(seq)
        if waiting is not None:
            _fail(waiting[0], TimeoutError(f"no ack within {self.timeout_s:g} s"))

    def _lost(self, protocol: _Protocol, exc: Exception | None) -> None:
        if self._protocol is protocol:
            self._protocol = None
        # Where the peer stands with the batches in flight is unknown: each fails (a copy
        # sent again under a new id is withdrawn there; an outcome is sent again).
        error = LaneError(f"calls lane connection lost: {exc or 'closed'}")
        waiting, self._waiting = self._waiting, {}
        self._copies_sent.clear()
        for futures, timer in waiting.values():
            timer.cancel()
            _fail(futures, error)
        if self._queues[CALL_COPIES] and not self.closed:
            asyncio.get_running_loop().call_soon(self._flush, CALL_COPIES)  # reconnects

    async def close(self) -> None:
        self.closed = True
        if self._connecting is not None:
            self._connecting.cancel()
            with contextlib.suppress(BaseException):
                await self._connecting
        protocol, self._protocol = self._protocol, None
        if protocol is not None and protocol.transport is not None:
            protocol.transport.close()
        error = LaneError("the calls lane is closed")
        for kind in self._queues:
            queue, self._queues[kind] = self._queues[kind], []
            _fail([future for _, _, future in queue], error)
        waiting, self._waiting = self._waiting, {}
        for futures, timer in waiting.values():
            timer.cancel()
            _fail(futures, error)


def _parts(calls: list[Call], *, with_request: bool) -> list[tuple[list[Call], int]]:
    """``calls`` in parts that each fit a frame (a call larger than that alone: it still
    goes), with about how many bytes each takes."""
    size = wire.size
    parts: list[tuple[list[Call], int]] = []
    part: list[Call] = []
    total = 0
    for call in calls:
        request, result = call.request, call.result
        if not with_request:
            bytes_ = 256 if result is None else 256 + len(result.body)
        elif result is None:  # ``wire.size`` written out for a fresh call's copy
            bytes_ = 256 + len(request.body) + len(request.path) + len(request.query)
            for name, value in request.headers:
                bytes_ += len(name) + len(value) + 4
        else:
            bytes_ = size(call, with_request=with_request)
        if part and (len(part) == MAX_BATCH_ITEMS or total + bytes_ > MAX_BATCH_BYTES):
            parts.append((part, total))
            part, total = [], 0
        part.append(call)
        total += bytes_
    parts.append((part, total))
    return parts


def _batches(queue: Pending) -> list[Pending]:
    """``queue``'s submissions in frames of at most ``MAX_BATCH_ITEMS`` calls and about
    ``MAX_BATCH_BYTES`` (each submission fits one: ``_parts``)."""
    batches: list[Pending] = []
    batch: Pending = []
    total = 0
    items = 0
    for item in queue:
        count, size = len(item[0]), item[1]
        if batch and (items + count > MAX_BATCH_ITEMS or total + size > MAX_BATCH_BYTES):
            batches.append(batch)
            batch, total, items = [], 0, 0
        batch.append(item)
        total += size
        items += count
    if batch:
        batches.append(batch)
    return batches


def _all(parts: list[asyncio.Future[None]], whole: asyncio.Future[None]) -> None:
    """Resolves ``whole`` once every one of ``parts`` is done: with the first failure, if
    any."""
    left = len(parts)

    def done(part: asyncio.Future[None]) -> None:
        nonlocal left
        left -= 1
        if whole.done():
            return
        error: BaseException | None = LaneError("cancelled")
        if not part.cancelled():
            error = part.exception()
        if error is not None:
            whole.set_exception(error)
        elif not left:
            whole.set_result(None)

    for part in parts:
        part.add_done_callback(done)


def _fail(futures: list[asyncio.Future[None]], error: BaseException) -> None:
    for future in futures:
        if not future.done():
            future.set_exception(error)
