"""Handover (SPEC 6.2): the whole table in checked parts (the gRPC call is tested in
tests/integration/test_handover_grpc.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tierfaas.cluster.state import NodeEndpoint
from tierfaas.control import handover
from tierfaas.control import tierfaas_pb2 as pb
from tierfaas.control.constants import SNAPSHOT_PART_CHANGES
from tierfaas.control.table import Snapshot
from tierfaas.deploy.term import Term


def big_table(functions: int) -> Snapshot:
    nodes = [NodeEndpoint(f"n{i}", 100 + i, None, None) for i in range(3)]
    routes = {f"f{i:06d}": tuple(nodes[: 1 + i % 3]) for i in range(functions)}
    return Snapshot("lineage", 7, routes)


async def _stream(messages: list[pb.HandoverChunk]) -> AsyncIterator[pb.HandoverChunk]:
    for message in messages:
        yield message


async def test_a_table_larger_than_one_message_arrives_whole() -> None:
    table = big_table(SNAPSHOT_PART_CHANGES)  # about 2 parts of routes
    messages = handover.chunks(table, 3, "old")
    assert len(messages) > 1 and all(not m.checksum for m in messages[:-1])
    got, generation, sender, term = await handover.receive(_stream(messages))
    assert term is None  # sent without one (a sender of an older release)
    assert (generation, sender) == (3, "old")
    assert {f: set(r) for f, r in got.routes.items()} == {
        f: set(r) for f, r in table.routes.items()
    }


async def test_a_changed_or_missing_part_is_refused() -> None:
    messages = handover.chunks(big_table(SNAPSHOT_PART_CHANGES), 1, "old")
    altered = [pb.HandoverChunk.FromString(m.SerializeToString()) for m in messages]
    altered[0].part.changes[0].route.epoch += 1
    with pytest.raises(handover.HandoverError, match="checksum"):
        await handover.receive(_stream(altered))
    with pytest.raises(handover.HandoverError, match="ended before"):
        await handover.receive(_stream(messages[:-1]))


async def test_the_checksum_ignores_order() -> None:
    a = NodeEndpoint("a", 1, None, None)
    b = NodeEndpoint("b", 2, None, None)
    assert handover.table_checksum({"f": (a, b), "g": (a,)}) == handover.table_checksum(
        {"g": (a,), "f": (b, a)}
    )


async def test_the_last_part_carries_the_senders_term() -> None:
    term = Term(2, 9, "old", "lineage-of-old")
    messages = handover.chunks(big_table(SNAPSHOT_PART_CHANGES), 3, "old", term)
    assert all(m.term_number == 0 for m in messages[:-1])
    handed = await handover.receive(_stream(messages))
    assert handed.term == term and handed.generation == 3


def test_a_handover_under_an_older_term_is_refused() -> None:
    newest = Term(1, 5, "majority", "lineage-m")
    assert handover.term_refusal(Term(1, 5, "majority", "lineage-m"), [newest]) is None
    assert handover.term_refusal(Term(1, 6, "x"), [None, newest]) is None  # newer
    assert handover.term_refusal(Term(2, 1, "x"), [newest]) is None  # a newer generation
    refused = handover.term_refusal(Term(1, 4, "cut-off"), [newest, Term(0, 9, "older")])
    assert refused is not None and "term 1.4 (cut-off) is older than term 1.5 (majority)" in refused
    assert handover.term_refusal(Term(0, 9, "x"), [newest]) is not None  # an older generation
    assert handover.term_refusal(Term(1, 4, "x"), [None]) is None  # nothing seen yet


def test_a_sender_without_a_term_is_left_to_the_generation_check() -> None:
    # An older release sends no term fields: as before terms travelled.
    assert handover.term_refusal(None, [Term(9, 9, "newest")]) is None
