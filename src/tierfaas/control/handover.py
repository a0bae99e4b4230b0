"""Handing the routing table to the next master (SPEC 6.2), both ends.

The sender streams its table as ``Snapshot`` parts (``wire.update_to_pb``, ~1 MB each, so
any table size fits the 4 MiB message limit); the last part carries a checksum of the
whole table and the generation the target takes. The target reassembles the parts, refuses
a table whose checksum differs (a lost or altered part), loads it as its copy and only then
publishes its new generation: from that moment it outranks the old master everywhere and
owns writes (see ``tierfaas.topology.rank_key``).

The checksum is SHA-256 over the sorted ``function, node, epoch`` triples: independent of
dict order and of the parts' boundaries, and cheap (about 1 s per million routes). Both ends
compute it, and encode or load the parts, in a thread: a large table never holds the event
loop that answers requests and gossip (issue 17.5). Even the sender's copy of its table is
made in a thread (``snapshot_off_loop``; about 2 s per million routes on a busy 2-core
machine): writes go on meanwhile, so the copy is then patched, on the loop, with the current
routes of every function the deltas logged since it began touched.

Fencing (issue 17.3): the last part carries the sender's term (``tierfaas.deploy.term``: its
generation and number, and the lineage of the sender's table), and the target refuses a
handover whose term is older than the newest term it has seen (``term_refusal``): from an
earlier handover, its own rollout controller's claims and checks, or the registry when the
node follows one. It also refuses a generation that it or a live member already holds
(``handover_refusal``): the table already went to another node. Either way the handover comes
from a master that was cut off, or whose term is over. A sender of an older release sends no
term (``term_number`` 0): its handover is checked on the generation only, as before.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from typing import NamedTuple

from tierfaas.cluster.state import NodeEndpoint
from tierfaas.control import tierfaas_pb2 as pb
from tierfaas.control import wire
from tierfaas.control.constants import MAX_SNAPSHOT_ROUTES
from tierfaas.control.table import RoutingTable, Snapshot
from tierfaas.deploy.term import Term
from tierfaas.topology import RankedMember


class Received(NamedTuple):
    """A whole handover as the target got it."""

    snapshot: Snapshot
    generation: int  # the generation the target takes
    sender: str
    term: Term | None  # the sender's term; None from a sender of an older release


# The target's side: given the whole handover, load the table and take over; returns the
# number of routes loaded. Raises ``HandoverError`` to refuse.
HandoverSink = Callable[[Received], Awaitable[int]]


class HandoverError(Exception):
    """The handover failed: a bad stream, a checksum mismatch, or a refusing target."""


def table_checksum(routes: Mapping[str, Iterable[NodeEndpoint]]) -> str:
    triples = sorted(
        (function, route.name, route.epoch) for function, rs in routes.items() for route in rs
    )
    h = hashlib.sha256()
    for function, node, epoch in triples:
        h.update(f"{function}\0{node}\0{epoch}\n".encode())
    return h.hexdigest()


async def snapshot_off_loop(
    table: RoutingTable,
    attempts: int = 3,
    copy: Callable[[], Snapshot] | None = None,
) -> Snapshot:
    """``table`` as it is when this returns, copied in a thread.

    The table changes only on the event loop, one whole batch at a time, and each effective
    change is logged in a delta under a new version. So the thread's copy is right for every
    function no delta after the starting version touched, and those the deltas touched are
    read again here, on the loop, where no write is half done. A write that resizes a dict
    under the copy (``RuntimeError``), a new lineage, or a delta log that no longer reaches
    back (``since`` is None) means another attempt; after ``attempts``, the copy is made on
    the loop. ``copy`` replaces ``table.snapshot`` (tests)."""
    make = copy or table.snapshot
    for _ in range(attempts):
        lineage, began = table.lineage, table.version
        try:
            taken = await asyncio.to_thread(make)
        except RuntimeError:  # "dictionary changed size during iteration"
            continue
        deltas = table.since(began, lineage) if table.lineage == lineage else None
        if deltas is None:
            continue
        routes = dict(taken.routes)  # a C-level copy of references: ~10 ms per 300k functions
        for function in {change.function for delta in deltas for change in delta.changes}:
            now = table.query(function)
            if now:
                routes[function] = tuple(now)
            else:
                routes.pop(function, None)
        return Snapshot(lineage, table.version, routes)
    return table.snapshot()


def chunks(
    snapshot: Snapshot, generation: int, from_node: str, term: Term | None = None
) -> list[pb.HandoverChunk]:
    """The messages of one handover, the checksum, generation and sender's term on the last."""
    parts = wire.update_to_pb(snapshot)
    messages = [pb.HandoverChunk(part=p) for p in parts]
    last = messages[-1]
    last.checksum = table_checksum(snapshot.routes)
    last.generation = generation
    last.from_node = from_node
    if term is not None:
        last.term_generation = term.generation
        last.term_number = term.number
        last.term_lineage = term.lineage
    return messages


def term_of(message: pb.HandoverChunk) -> Term | None:
    """The sender's term in a handover's last part; None if it sent none (an older release,
    or a sender that holds no term)."""
    if message.term_number == 0:
        return None
    return Term(
        message.term_generation, message.term_number, message.from_node, message.term_lineage
    )


async def receive(
    messages: AsyncIterator[pb.HandoverChunk], max_routes: int = MAX_SNAPSHOT_ROUTES
) -> Received:
    """Reassembles a handover stream. Raises ``HandoverError``."""
    parts = wire.SnapshotAssembler(max_changes=max_routes)
    async for message in messages:
        if not message.part.snapshot:
            raise HandoverError("a handover carries snapshot parts only")
        try:
            update = parts.add(message.part)
        except wire.BadMessage as exc:
            raise HandoverError(f"bad handover part: {exc}") from None
        if update is None:
            continue
        assert isinstance(update, Snapshot)
        if not message.checksum:
            raise HandoverError("the last handover part has no checksum")
        if await asyncio.to_thread(table_checksum, update.routes) != message.checksum:
            raise HandoverError("the handed-over table does not match its checksum")
        if message.generation < 1:
            raise HandoverError("a handover must name a generation of 1 or more")
        return Received(update, message.generation, message.from_node, term_of(message))
    raise HandoverError("the handover stream ended before its last part")


def handover_refusal(generation: int, members: Iterable[RankedMember]) -> str | None:
    """Why a node whose view holds ``members`` (itself included) refuses a handover to
    ``generation``, or None to accept it: that generation, or a newer one, is taken."""
    seen = max((m.generation for m in members if m.state.live), default=0)
    if generation <= seen:
        return (
            f"generation {generation} is not newer than generation {seen}, already taken: "
            "the sender's term is over"
        )
    return None


def term_refusal(sender: Term | None, seen: Iterable[Term | None]) -> str | None:
    """Why a node that has seen the terms ``seen`` refuses a handover sent under ``sender``,
    or None to accept it: a newer term exists, so the sender is no longer the deploying
    master. A sender without a term (an older release) is not refused here: the generation
    check (``handover_refusal``) is all it gets, as before terms travelled."""
    newest = max((t for t in seen if t is not None), key=lambda t: t.key, default=None)
    if sender is None or newest is None or not sender.older_than(newest):
        return None
    return f"the sender's {sender} is older than {newest}: a newer master deploys"
