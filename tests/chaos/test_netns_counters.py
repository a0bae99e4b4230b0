"""``Fabric.count``: the fabric counts the datagrams between nodes that a rule matches, before
any fault drops them (benchmarks/netns_cluster.py reads the gossip's rate this way).

Two namespaces; node 1 sends datagrams to node 2 on two ports, and only the counted port's
are counted, also while every packet is lost. Skipped unless root with ``ip netns`` and
``nft``."""

from __future__ import annotations

import sys

import pytest

from tierfaas.testing import netns
from tierfaas.testing.wait import eventually

pytestmark = pytest.mark.e2e

_why_not = netns.unavailable()
if _why_not is not None:
    pytestmark = [pytestmark, pytest.mark.skip(reason=f"netns counters skipped: {_why_not}")]

SEND = """
import socket, sys
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for _ in range(int(sys.argv[3])):
    sock.sendto(b"x", (sys.argv[1], int(sys.argv[2])))
"""


def send(fabric: netns.Fabric, port: int, count: int) -> None:
    fabric.exec_in(
        fabric.nodes[0], sys.executable, "-c", SEND, fabric.addresses[1], str(port), str(count)
    )


def test_the_fabric_counts_the_datagrams_a_rule_matches_even_those_a_fault_drops() -> None:
    with netns.Fabric("u", 2) as fabric:
        fabric.count("probes", "udp dport 9999")
        send(fabric, 9999, 5)
        send(fabric, 9998, 7)  # another port: not counted
        # A datagram waits for its neighbour's address (ARP) before it reaches the bridge.
        eventually(lambda: fabric.counted("probes") >= 5, 5.0, what="5 datagrams counted")
        assert fabric.counted("probes") == 5
        fabric.loss(100)
        send(fabric, 9999, 3)
        eventually(lambda: fabric.counted("probes") >= 8, 5.0, what="3 more counted")
        assert fabric.counted("probes") == 8
        assert fabric.dropped() == 3
