"""The simulator's models at the size of a real cluster, for benchmarks/netns_cluster.py.

The real cluster measures what the simulator (benchmarks/scale.py, its membership model in
``_swim.py``) predicts at 10,000 nodes: a master's death until every survivor names the new
master and every replica holds its table, and a new registration until every replica holds
it. This module runs the same models at the cluster's N, preset and loss, and pairs each
simulated figure with the measured one it predicts (``compare``). Nothing here is tuned to
the measurement: a figure that differs is fixed in the model's parameters, with the reason.

What is paired with what:
- *declared dead*: the first survivor that no longer lists the victim (measured) against the
  first Lifeguard timer that fires (``Detection.dead_s``);
- *all survivors*: the last survivor to drop the victim against ``Detection.all_heard_s``;
- *agreement*: every survivor names the new master; simulated as the last survivor to hear
  plus its topology recompute (``compute_topology``, timed);
- *tables after failover*: the master and every replica at the truth, at one version;
  simulated by ``scale.failover`` (snapshots, the announce wave, the batch window) on a table of
  the benchmark's few functions;
- *new registration*: one Register call, the wait the real ``Batcher`` gives it, the delta
  streamed to the replicas (``registration_s``): the path a warm event takes. Measured from
  the call's send (the cold start included: the warm event comes before the answer), polled
  every 20 ms: at this scale the figure is bounded by the polling, not the mechanism.
"""

from __future__ import annotations

import random
import statistics
from typing import Any

import _swim
import scale
from tierfaas.control.batcher import Batcher
from tierfaas.control.constants import BATCH_WINDOW_S
from tierfaas.topology import replica_count

DEATHS = 50
"""Simulated deaths per (N, preset): the medians move by a few % between seeds at 50."""
FAILOVERS = 9
FUNCTIONS = 5
"""The functions the benchmark warms (netns_cluster.FUNCTIONS)."""
AGREEMENT_MARGIN_S = 2.0
"""The issue's target: every node agrees on a new master within the preset's detection time
plus this."""
FIRST_SUSPICION_ROUNDS = 2
"""Probe periods from a death to its first suspicion: some prober reaches the dead node
within about one period, and that probe round fails one period later (kinship's
docs/results/detection.md: "someone probes the killed node within about a second. That
round fails a second later")."""


def detection_s(preset: str, n: int) -> float:
    """The preset's detection time at ``n`` nodes: the first suspicion, then the shortest
    suspicion timeout (Lifeguard's ``suspicion_mult x max(1, log10 n) x probe_interval``,
    reached once the other probers' confirmations are in). tierfaas's ``lan``/``local``
    presets are kinship's ``Config.lan()``/``Config.local()`` (membership/kinship_adapter.py),
    whose values this reads. At 10 nodes it gives what ``GossipSettings`` documents: ``lan``
    "about 6 s" (2 + 4 x 1 s), ``local`` 1.0 s (measured: 1.3 s)."""
    params = _swim.SwimParams.from_kinship(preset)
    return FIRST_SUSPICION_ROUNDS * params.probe_interval + params.suspicion_min_s(n)


def agreement_target_s(preset: str, n: int) -> float:
    return detection_s(preset, n) + AGREEMENT_MARGIN_S


def simulate(n: int, preset: str, loss: float, seed: int) -> dict[str, Any]:
    """The models' medians at ``n`` nodes (seconds), and the parameters they ran with."""
    params = _swim.SwimParams.from_kinship(preset)
    net = _swim.Network(loss=loss)
    rng = random.Random(seed)
    deaths = [_swim.detect_death(n, params, net, rng) for _ in range(DEATHS)]
    topology_s = scale.topology_seconds(n, 3)
    sets = scale.warm_sets(n, FUNCTIONS, rng)
    table = scale.table_of(sets)
    snapshot = scale.snapshot_cost(table)
    announce = scale.announce_cpu(table, sets)
    failovers = [
        scale.failover(n, FUNCTIONS, d, topology_s, snapshot, announce, net, random.Random(i))
        for i, d in enumerate(deaths[:FAILOVERS])
    ]
    return {
        "params": {
            "probe_interval": params.probe_interval,
            "suspicion_mult": params.suspicion_mult,
            "suspicion_min_s": params.suspicion_min_s(n),
            "log_scaled": params.log_scaled,
            "gossip_interval": params.gossip_interval,
            "gossip_nodes": params.gossip_nodes,
        },
        "deaths": DEATHS,
        "first_suspect_s": statistics.median(d.first_suspect_s for d in deaths),
        "dead_s": statistics.median(d.dead_s for d in deaths),
        "all_heard_s": statistics.median(d.all_heard_s for d in deaths),
        "agreement_s": statistics.median(d.all_heard_s + topology_s for d in deaths),
        "topology_s": topology_s,
        "table_s": statistics.median(f.consistent_s for f in failovers),
        "registration_s": registration_s(n, net, random.Random(seed)),
    }


def registration_s(n: int, net: _swim.Network, rng: random.Random) -> float:
    """A warm event until every replica holds it: the node's Register call (the write queue
    sends at once), the wait the real ``Batcher`` gives that write on a quiet master (the
    first registration of a function anywhere is urgent, and any write after a quiet window is
    due at once: no window to wait), the delta sent on each replica's stream in turn."""
    k = replica_count(n)
    samples = []
    clock = [60.0]
    for _ in range(DEATHS):
        clock[0] += 60.0  # a quiet master: no flush in the last window
        batcher = Batcher(lambda: clock[0], window_s=BATCH_WINDOW_S)
        arrived = 2 * net.delay(rng) + scale.GRPC_CALL_S
        clock[0] += arrived
        batcher.register("fn", scale.endpoint(1), urgent=True)
        due = batcher.deadline()
        assert due is not None
        waited = max(0.0, due - clock[0])
        samples.append(arrived + waited + k * scale.STREAM_SEND_S + net.delay(rng))
    return statistics.median(samples)


def compare(simulated: dict[str, Any], measured: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    """(what, simulated s, measured s) for each figure both sides have."""
    return [
        ("first suspect", simulated["first_suspect_s"], measured["first_suspect_s"]),
        ("declared dead", simulated["dead_s"], measured["first_gone_s"]),
        ("all survivors", simulated["all_heard_s"], measured["all_gone_s"]),
        ("agreement (failover)", simulated["agreement_s"], measured["agreement_s"]),
        ("tables after failover", simulated["table_s"], measured["table_s"]),
        ("new registration", simulated["registration_s"], measured["registration_s"]),
    ]
