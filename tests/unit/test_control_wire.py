"""Wire conversions and server settings that need no event loop."""

from __future__ import annotations

import time

import pytest

from tierfaas.cluster.state import NodeEndpoint
from tierfaas.config import Address
from tierfaas.control import tierfaas_pb2 as pb
from tierfaas.control import wire
from tierfaas.control.backend import TableBackend
from tierfaas.control.constants import SNAPSHOT_PART_CHANGES
from tierfaas.control.server import ControlServer
from tierfaas.control.table import Change, Op, RoutingTable

MEMBERS = {n: NodeEndpoint(n, 7, Address("127.0.0.1", 9000), None) for n in ["w1", "w2"]}
wire_parts = SNAPSHOT_PART_CHANGES


def test_a_non_loopback_bind_needs_a_key() -> None:
    backend = TableBackend(MEMBERS.get, time.monotonic, master=True)
    with pytest.raises(ValueError, match="no cluster key"):
        ControlServer(backend, bind=Address("10.0.0.1", 0), key=None)


def test_snapshot_parts_must_not_interleave_with_deltas() -> None:
    table = RoutingTable("L")
    table.apply(Change(Op.ADD, f"f{i}", MEMBERS["w1"]) for i in range(wire_parts + 1))
    first, last = wire.update_to_pb(table.snapshot())
    assert first.more and not last.more
    delta = table.apply([Change(Op.ADD, "g", MEMBERS["w2"])])
    assert delta is not None
    parts = wire.SnapshotAssembler()
    assert parts.add(first) is None
    with pytest.raises(wire.BadMessage):
        parts.add(wire.update_to_pb(delta)[0])


def test_decoding_refuses_bad_names_addresses_and_ops() -> None:
    good = pb.NodeRoute(node="w1", epoch=1, http="127.0.0.1:80")
    assert wire.route_from_pb(good) == NodeEndpoint("w1", 1, Address("127.0.0.1", 80), None)
    for bad in (
        pb.NodeRoute(node="../x", epoch=1),
        pb.NodeRoute(node="w1", epoch=1, http="nowhere"),
        pb.NodeRoute(node="w1", epoch=2**64 - 1),
    ):
        with pytest.raises(wire.BadMessage):
            wire.route_from_pb(bad)
    with pytest.raises(wire.BadMessage):
        wire.update_from_pb(pb.TableUpdate(changes=[pb.Change(op=7, function="f", route=good)]))  # type: ignore[arg-type]
    with pytest.raises(wire.BadMessage):
        wire.update_from_pb(pb.TableUpdate(prev_version=3, version=3))
    with pytest.raises(wire.BadMessage):
        wire.decode(pb.QueryRequest, b"\xff\xff\xff")


def test_each_update_is_encoded_once_for_every_stream() -> None:
    table = RoutingTable("L")
    first = table.apply([Change(Op.ADD, "f", MEMBERS["w1"])])
    second = table.apply([Change(Op.ADD, "g", MEMBERS["w2"])])
    assert first is not None and second is not None
    encoder = wire.UpdateEncoder(deltas=1)
    shared = encoder.messages(first)
    assert encoder.messages(first) is shared  # a second stream gets the same messages
    assert [m.SerializeToString() for m in shared] == [
        m.SerializeToString() for m in wire.update_to_pb(first)
    ]
    assert encoder.messages(second) is not shared
    assert encoder.messages(first) is not shared  # bounded: the oldest delta went
    old = table.snapshot()
    snapshot = encoder.messages(old)
    assert encoder.messages(table.snapshot()) is snapshot  # same lineage and version
    third = table.apply([Change(Op.ADD, "h", MEMBERS["w1"])])
    assert third is not None
    encoder.messages(third)  # the table moved on: the old snapshot's messages are let go
    assert encoder.messages(old) is not snapshot
    newer = encoder.messages(table.snapshot())
    assert newer is not snapshot and len(newer[0].changes) == 3
    table.restart_lineage("M")  # same version, another lineage: another snapshot
    assert encoder.messages(table.snapshot())[0].lineage == "M"
