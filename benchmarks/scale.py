"""The design at 100 to 10,000 nodes, in simulation: where it breaks first, and at what N.

    .venv/bin/python benchmarks/scale.py            # full: N = 100..10,000 x 1k/10k/100k functions
    .venv/bin/python benchmarks/scale.py --quick    # < 60 s, the 10,000-node row included
    # --seed S, --rate R (calls/s per node), --hit H (route-cache hit ratio), --loss P,
    # --no-plot, --replot JSON

Nothing here re-implements a decision tierfaas makes: the simulator runs the product's pure
cores on simulated time and data, and times them with ``time.perf_counter`` (medians of
repeats) where the question is CPU: the topology (``compute_topology``: ranks, replica count,
rendezvous assignment), the master's ``Batcher`` and ``RoutingTable``, a replica's
``ReplicaCopy``, the wire encoding of deltas and snapshots (``control/wire.py``), the rollout
plan (``deploy/plan.next_step``). Membership is the model of kinship's SWIM/Lifeguard in
``_swim.py``, with the ``lan`` preset's own values, checked against the figures measured on
real processes (a calibration table is printed). Costs the simulator cannot run (a gRPC call,
a stream message, a node's start) are constants measured on this machine kind, each with its
source below.

What it reports, per N (and number of functions F):
1. the master: CPU at 1,000 registrations/s (target: below one core at 10,000 nodes) and the
   registrations/s one core absorbs, CPU per batch, stream bytes/s to the replicas, the
   table's memory;
2. replicas: queries/s each (rate x miss ratio of their workers, plus anti-entropy checks),
   the busiest one's share from the real rendezvous assignment, CPU, memory of a full copy;
3. failover: the master killed, until every replica holds a consistent table of the new
   master (detection, topology, snapshots, the re-announce wave; target <= 10 s at 10,000);
4. a rollout: duration against N with the real plan, one node replaced at a time;
5. sqrt(N) replicas against a fixed k and against one more tier: which resource runs out
   first, at what N.

Results: tables on stdout, benchmarks/results/scale.json and, when matplotlib is installed
and the run is full, docs/scale-*.png.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import gc
import heapq
import json
import math
import random
import statistics
import time
import tracemalloc
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import _common as c
import _swim
from tierfaas.cluster.state import NodeEndpoint
from tierfaas.config import Address
from tierfaas.control import tierfaas_pb2 as pb
from tierfaas.control import wire
from tierfaas.control.api import QueryResult
from tierfaas.control.batcher import Batcher
from tierfaas.control.constants import BATCH_WINDOW_S, DIGEST_PERIOD_S, STANDBY_SNAPSHOT_DELAY_S
from tierfaas.control.replica_copy import ReplicaCopy
from tierfaas.control.table import Delta, RoutingTable, Snapshot
from tierfaas.deploy import plan
from tierfaas.membership.base import MemberInfo, MemberState
from tierfaas.topology import ReplicaPolicy, assign_replica, compute_topology, replica_count

# -- calibration: costs measured on this machine kind (2 vCPU), with their sources ------------

GRPC_CALL_S = 1 / 7_007
"""The master's CPU per unary Register/Announce call: 7,007 calls/s of one pair each on one
core (docs/benchmarks.md, control plane, 64 in flight)."""
STREAM_SEND_S = 150e-6
"""The master's CPU per message on one Subscribe stream: grpc.aio moves ~3.2k messages/s each
way on one open stream (shared/reference/loopback-limits.md), ~150 us per message sent."""
LANE_TRANSPORT_S = 1 / 69_000
"""A replica's transport cost per query on the raw TCP lane: asyncio.Protocol over TCP with
uvloop, ~69k requests/s (loopback-limits.md); the table lookup and protobuf are timed."""
NODE_START_S = 1.0
"""From a provider's launch to a new node joined and ready (a Python node starting on a busy
2-core machine); with DRAIN_S it reproduces the rollout benchmark's ~1.6 s per node."""
DRAIN_S = 0.5
"""From a terminate to the node gone: leave, calls in flight finish, exit."""
PLAN_TICK_S = 0.3
"""The rollout controller's tick (deploy/controller.py)."""
CANARIES = 2
NIC_BYTES_S = 125e6
"""A 1 Gbit/s network interface, the master's, for snapshots and streams."""
ROUTES_PER_FUNCTION = 3
"""A warm function's nodes, on average."""
MEMBER_BYTES = 150
"""One member in a push-pull sync: name, address, incarnation, state and ~100 bytes of
tierfaas metadata (at most 237)."""
REGISTRATIONS_PER_S = 1_000.0
"""The target's registration rate."""
FAILOVER_TARGET_S = 10.0
ONE_CORE = 1.0
LOSSY = 0.05
"""The datagram loss of the detection table's lossy column (every gossip and probe datagram)."""
MAX_N = 10_000
TOPOLOGY_REPEATS = 3
BATCH_REPEATS = 9


# -- simulated members and tables ------------------------------------------------------------


def members(n: int) -> list[MemberInfo]:
    """``n`` live runs of one release, one cohort, in epoch order (node-00000 is rank 0)."""
    return [
        MemberInfo(
            f"node-{i:05d}",
            1_700_000_000_000 + i,
            MemberState.ALIVE,
            f"10.{i // 65536}.{i // 256 % 256}.{i % 256}:7946",
            http=Address(f"10.{i // 65536}.{i // 256 % 256}.{i % 256}", 8080),
            rpc=Address(f"10.{i // 65536}.{i // 256 % 256}.{i % 256}", 9090),
            version="1.0.0",
            cohort=0,
        )
        for i in range(n)
    ]


def endpoint(i: int) -> NodeEndpoint:
    host = f"10.{i // 65536}.{i // 256 % 256}.{i % 256}"
    return NodeEndpoint(
        f"node-{i:05d}", 1_700_000_000_000 + i, Address(host, 8080), Address(host, 9090)
    )


def warm_sets(n: int, functions: int, rng: random.Random) -> list[set[str]]:
    """Which functions each node holds: every function on ``ROUTES_PER_FUNCTION`` distinct
    random nodes (fewer with fewer nodes)."""
    sets: list[set[str]] = [set() for _ in range(n)]
    per = min(ROUTES_PER_FUNCTION, n)
    for f in range(functions):
        for node in rng.sample(range(n), per):
            sets[node].add(f"fn-{f:06d}")
    return sets


def table_of(sets: Sequence[set[str]]) -> RoutingTable:
    """The master's table holding ``sets``, built through the real write path (announces)."""
    batcher = Batcher(lambda: 0.0, max_pending=10**9)
    for i, functions in enumerate(sets):
        if functions:
            batcher.announce(endpoint(i), functions)
    table = RoutingTable("sim-1")
    batch = batcher.take()
    if batch is not None:
        table.apply_batch(batch)
    return table


def timed(action: Callable[[], object], repeats: int) -> float:
    """The median wall time of ``action`` in seconds over ``repeats`` runs. The garbage
    collector runs between samples, not in them: a collection that the simulator's own large
    heap owes would otherwise land in whichever sample allocates next."""
    samples = []
    for _ in range(repeats):
        with _no_collection():
            began = time.perf_counter()
            action()
            samples.append(time.perf_counter() - began)
    return statistics.median(samples)


@contextlib.contextmanager
def _no_collection() -> Iterator[None]:
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


# -- 1. the master --------------------------------------------------------------------------


@dataclass(frozen=True)
class BatchCost:
    pairs: int
    cpu_s: float  # batcher writes + take + apply_batch, the real code
    encode_s: float  # the delta's protobuf message, built once for every stream
    delta_bytes: int


def batch_cost(
    table: RoutingTable, n: int, functions: int, pairs: int, rng: random.Random
) -> BatchCost:
    """One batch window's work on the master at ``pairs`` registrations: registers new
    (function, node) pairs, flushes, applies; the next repeat unregisters them (the table
    keeps its size)."""
    chosen = [
        (f"fn-{rng.randrange(functions):06d}", endpoint(rng.randrange(n))) for _ in range(pairs)
    ]
    clock = [0.0]
    batcher = Batcher(lambda: clock[0], max_pending=10**9)
    deltas: list[Delta] = []
    samples = []
    for repeat in range(BATCH_REPEATS):
        with _no_collection():
            began = time.perf_counter()
            for function, route in chosen:
                if repeat % 2 == 0:
                    batcher.register(function, route)
                else:
                    batcher.unregister(function, route)
            batch = batcher.take()
            delta = table.apply_batch(batch) if batch is not None else None
            samples.append(time.perf_counter() - began)
        clock[0] += BATCH_WINDOW_S
        if delta is not None:
            deltas.append(delta)
    delta = deltas[0] if deltas else None
    if delta is None:
        return BatchCost(pairs, statistics.median(samples), 0.0, 0)
    message = wire.update_to_pb(delta)[0]

    def encode() -> None:  # what each stream does with a delta
        wire.update_to_pb(delta)[0].SerializeToString()

    encode_s = timed(encode, 5)
    return BatchCost(pairs, statistics.median(samples), encode_s, len(message.SerializeToString()))


def master_cpu(
    rate: float, k: int, workers: int, cost_at: Callable[[int], BatchCost], topology_s: float
) -> dict[str, float]:
    """Cores the master spends at ``rate`` registrations/s, by item. Writes arrive one pair
    per call (from thousands of nodes, each registers rarely: little to coalesce); a batch
    window flushes once per window when writes keep coming; each delta is encoded once
    (``wire.UpdateEncoder``) and sent on ``k`` streams.
    A worker's anti-entropy check whose replica copy lags (up to a window after a write)
    confirms with the master: about window/period of the writes."""
    batches = min(rate, 1 / BATCH_WINDOW_S) if rate > 0 else 0.0
    pairs = max(1, round(rate / batches)) if batches else 0
    cost = cost_at(pairs) if pairs else BatchCost(0, 0.0, 0.0, 0)
    items = {
        "calls": rate * GRPC_CALL_S,
        "batches": batches * cost.cpu_s,
        "streams": batches * (cost.encode_s + k * STREAM_SEND_S),
        "confirms": rate * (BATCH_WINDOW_S / DIGEST_PERIOD_S) * GRPC_CALL_S,
        "topology_per_change": topology_s,
    }
    items["total"] = sum(v for key, v in items.items() if key != "topology_per_change")
    items["stream_bytes_per_s"] = batches * k * cost.delta_bytes
    items["workers"] = workers
    return items


def absorbed_rate(k: int, cost_at: Callable[[int], BatchCost]) -> float:
    """The registrations/s at which ``master_cpu`` reaches one core. A batch's CPU and its
    encoding are timed at 100 and 1,000 pairs and taken as linear in the pairs between and
    beyond (both are loops over the pairs), so the rate solves a linear equation."""
    small, large = cost_at(100), cost_at(1_000)
    cpu_per_pair = max(0.0, (large.cpu_s - small.cpu_s) / 900)
    encode_per_pair = max(0.0, (large.encode_s - small.encode_s) / 900)
    cpu_base = max(0.0, small.cpu_s - 100 * cpu_per_pair)
    encode_base = max(0.0, small.encode_s - 100 * encode_per_pair)
    batches = 1 / BATCH_WINDOW_S
    per_registration = (
        GRPC_CALL_S * (1 + BATCH_WINDOW_S / DIGEST_PERIOD_S) + cpu_per_pair + encode_per_pair
    )
    fixed = batches * (cpu_base + encode_base + k * STREAM_SEND_S)
    return max(0.0, (ONE_CORE - fixed) / per_registration)


def table_bytes(functions: int, n: int, rng: random.Random) -> tuple[int, int]:
    """(routes, bytes) of a real table with ``functions`` functions over ``n`` nodes, as
    tracemalloc counts its allocations (node endpoints shared with the rest of the process
    are counted too: a replica's copy decodes its own)."""
    sets = warm_sets(n, functions, rng)
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    copy = ReplicaCopy()
    snapshot = table_of(sets).snapshot()
    copy.apply(Snapshot(snapshot.lineage, snapshot.version, dict(snapshot.routes)))
    del snapshot
    used = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    return len(copy.table), used


# -- 2. replicas ----------------------------------------------------------------------------


def query_cost(copy: ReplicaCopy, functions: int, rng: random.Random) -> float:
    """A replica's CPU per query: the real lookup and reply encoding, plus the lane's
    transport cost."""
    names = [f"fn-{rng.randrange(functions):06d}" for _ in range(1_000)]

    def run() -> None:
        for name in names:
            reply = wire.query_reply(QueryResult(copy.query(name), copy.version))
            reply.SerializeToString()

    return timed(run, 7) / len(names) + LANE_TRANSPORT_S


def busiest_share(n: int, policy: ReplicaPolicy, sample: int, rng: random.Random) -> float:
    """The busiest replica's workers over the mean, from the real rendezvous assignment of
    ``sample`` workers (all of them when ``sample`` >= their number)."""
    k = replica_count(n, policy)
    names = [f"node-{i:05d}" for i in range(n)]
    replicas = names[1 : 1 + k]
    workers = names[1 + k :]
    if not workers or not replicas:
        return 1.0
    chosen = workers if sample >= len(workers) else rng.sample(workers, sample)
    counts: dict[str, int] = dict.fromkeys(replicas, 0)
    for w in chosen:
        counts[assign_replica(w, replicas)] += 1
    return max(counts.values()) / (len(chosen) / k)


def replica_load(
    n: int,
    k: int,
    rate: float,
    hit: float,
    per_query_s: float,
    apply_s: float,
    batches: float,
    busiest: float,
) -> dict[str, float]:
    """Queries/s and cores of the busiest replica: its workers' route-cache misses and one
    anti-entropy check per worker per period, and the deltas it applies."""
    workers = max(0, n - 1 - k)
    mean_workers = workers / k if k else 0.0
    top = mean_workers * busiest
    queries = top * (rate * (1 - hit) + 1 / DIGEST_PERIOD_S)
    return {
        "workers_mean": mean_workers,
        "workers_busiest": top,
        "queries_per_s": queries,
        "cpu": queries * per_query_s + batches * apply_s,
    }


# -- 3. failover ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Failover:
    n: int
    functions: int
    detect_all_s: float  # every survivor heard the master dead
    topology_s: float  # each survivor's loop, recomputing its roles
    snapshots_s: float  # the new master serving the replicas that need one their snapshot
    announces_s: float  # the re-announce wave absorbed and streamed
    consistent_s: float  # every replica holds the new master's table, announces included

    @property
    def passed(self) -> bool:
        return self.consistent_s <= FAILOVER_TARGET_S


SnapshotMode = Literal["per stream", "once"]
"""How the new master encodes the snapshots it sends: ``once`` is what the product does
(``wire.UpdateEncoder`` encodes a snapshot once per table version for every stream; in a
failover the announces change nothing when nothing was lost, so the version holds);
``per stream`` is what it did before the last session's change."""

Keeping = Literal["none", "replicas", "standby"]
"""Who resumes across the new master's fork (``control/lineage.py``) instead of loading a
snapshot: ``none``, the product before this branch (a new lineage cleared the delta log);
``replicas``, those that held a copy of the old lineage; ``standby``, the product now: the
replicas and the standby (``Topology.standby``, the first worker, which keeps a copy)."""


@dataclass(frozen=True)
class Resumes:
    """What the real code decides after rank 0's death: for each replica of the survivors'
    topology, whether it resumes across the fork (True) or needs a snapshot; and whether the
    survivors' new standby needs one (it loads off the critical path, but its snapshot is
    encoded on the new master's loop and crosses its NIC)."""

    replicas: tuple[bool, ...]
    standby_snapshot: bool


def resumes_after_death(
    n: int, promoted: RoutingTable, held: tuple[str, int]
) -> dict[str, Resumes]:
    """Runs the product's decisions on a master's death in a cluster of ``n``: the topology
    before and after (``compute_topology``: who is a replica, who is the standby) and, for
    each replica after it, ``RoutingTable.resume_from`` on the promoted table (its lineage
    restarted) from the position it holds: ``held`` (the old lineage's last version, which
    every copy holds when nothing was lost) if it kept a copy, else none (a worker)."""
    view = members(n)
    before, after = compute_topology(view), compute_topology(view[1:])
    out = {}
    for keeping in ("none", "replicas", "standby"):
        copies = set(before.replicas) if keeping != "none" else set()
        if keeping == "standby" and before.standby is not None:
            copies.add(before.standby)

        def resumes(name: str | None, copies: set[str] = copies) -> bool:
            version, lineage = (held[1], held[0]) if name in copies else (0, "")
            return promoted.resume_from(version, lineage) is not None

        out[keeping] = Resumes(
            tuple(resumes(name) for name in after.replicas),
            keeping == "standby" and after.standby is not None and not resumes(after.standby),
        )
    return out


def failover(
    n: int,
    functions: int,
    detection: _swim.Detection,
    topology_s: float,
    snapshot_cost: tuple[float, int, float],
    announce_cpu_s: float,
    net: _swim.Network,
    rng: random.Random,
    snapshots: SnapshotMode = "once",
    resumes: Resumes = Resumes((), False),
) -> Failover:
    """Master (rank 0) killed at t = 0. Survivor i heard it dead at ``detection.heard[i]``
    and then spends ``topology_s`` computing its roles (its loop does nothing else). Rank 1
    (survivor 0) promotes itself with a new lineage; the new replicas (the next ``k``) each
    subscribe at once (a replica resubscribes when the master changes) and either resume
    across the fork (``resumes``: the fork and the deltas, one round trip) or get a snapshot
    (``snapshot_cost``: encode seconds on the master's loop, bytes through its NIC, a
    replica's decode and load seconds); so may the new standby, whose load nobody waits
    for (it subscribes ``STANDBY_SNAPSHOT_DELAY_S`` late, but still takes the master's loop
    and NIC if the announces are not done by then); every survivor re-announces its warm
    set (one call each). The master's loop serves one queue in arrival order, its NIC
    another; the announces land in the table (``announce_cpu_s`` for all of them, timed on
    the real batcher and table) and reach the replicas in the next delta."""
    survivors = n - 1
    heard = detection.heard
    k = replica_count(survivors)
    encode_s, snap_bytes, load_s = snapshot_cost
    ready = heard[0] + topology_s
    jobs: list[tuple[float, str]] = []
    for j in range(1, 1 + k):
        subscribed = max(heard[j] + topology_s, ready) + 2 * net.delay(rng)
        resumed = j - 1 < len(resumes.replicas) and resumes.replicas[j - 1]
        jobs.append((subscribed, "resume" if resumed else "snapshot"))
    if resumes.standby_snapshot and k + 1 < survivors:
        # A standby with no copy subscribes STANDBY_SNAPSHOT_DELAY_S after it became one.
        became = max(heard[k + 1] + topology_s, ready) + STANDBY_SNAPSHOT_DELAY_S
        jobs.append((became + 2 * net.delay(rng), "standby"))
    per_announce = GRPC_CALL_S + announce_cpu_s / max(1, survivors)
    for i in range(1, survivors):
        jobs.append((max(heard[i] + topology_s, ready) + net.delay(rng), "announce"))
    jobs.sort()
    busy_until = nic_free = ready
    encoded = False
    loaded_at: list[float] = []
    last_announce = ready
    for arrival, kind in jobs:
        start = max(busy_until, arrival)
        if kind in ("snapshot", "standby"):
            if snapshots == "per stream" or not encoded:
                busy_until = start + encode_s
                encoded = True
            nic_free = max(nic_free, busy_until, arrival) + snap_bytes / NIC_BYTES_S
            if kind == "snapshot":  # the standby serves nobody yet: nobody waits for it
                loaded_at.append(nic_free + net.delay(rng) + load_s)
        elif kind == "resume":
            loaded_at.append(arrival + net.delay(rng))
        else:
            busy_until = start + per_announce
            last_announce = busy_until
    flushed = last_announce + BATCH_WINDOW_S
    delivered = flushed + k * STREAM_SEND_S + net.delay(rng)
    snapshots_done = max(loaded_at, default=ready)
    consistent = max(snapshots_done, delivered)
    return Failover(
        n,
        functions,
        detection.all_heard_s,
        topology_s,
        snapshots_done - ready,
        delivered - ready,
        consistent,
    )


def snapshot_cost(table: RoutingTable) -> tuple[float, int, float]:
    """(encode s, bytes, a replica's decode + load s) of the table's snapshot, real code."""
    snap = table.snapshot()
    encode_s = timed(lambda: [m.SerializeToString() for m in wire.update_to_pb(snap)], 1)
    data = [m.SerializeToString() for m in wire.update_to_pb(snap)]

    def load() -> None:
        assembler = wire.SnapshotAssembler()
        update = None
        for part in data:
            message = pb.TableUpdate()
            message.ParseFromString(part)
            update = assembler.add(message) or update
        assert update is not None
        ReplicaCopy().apply(update)

    return encode_s, sum(len(d) for d in data), timed(load, 1)


def announce_cpu(table: RoutingTable, sets: Sequence[set[str]]) -> float:
    """The new master's CPU for every survivor's announce: the real batcher and table, on the
    table the promoted replica holds (the common case: nothing was lost, so nothing changes;
    the table keeps its content)."""
    table.restart_lineage(table.lineage + "+")
    batcher = Batcher(lambda: 0.0, max_pending=10**9)

    def run() -> None:
        for i, functions in enumerate(sets):
            batcher.announce(endpoint(i), functions)
        batch = batcher.take()
        if batch is not None:
            table.apply_batch(batch)

    return timed(run, 1)


# -- 4. rollout ------------------------------------------------------------------------------


def rollout(n: int, handover_s: float) -> dict[str, Any]:
    """A rollout of ``n`` nodes from 1.0.0 to 2.0.0 driven by the real ``plan.next_step``:
    launches get ready ``NODE_START_S`` later, terminated nodes are gone ``DRAIN_S`` later,
    the handover takes ``handover_s``. The plan is asked at every tick at which something
    changed (between those it can only answer the same ``Wait``)."""
    states = {
        f"node-{i:05d}": plan.NodeState(f"node-{i:05d}", "1.0.0", 0, True, True, False, 1e6)
        for i in range(n)
    }
    seen: dict[str, float] = {}  # new nodes not ready yet -> when the controller saw them
    events: list[tuple[float, str, str]] = []  # (when, "ready"|"gone"|"handover", name)
    master, master_version, generation = "node-00000", "1.0.0", 0
    launched = calls = 0
    t = plan_s = 0.0
    while True:
        while events and events[0][0] <= t + 1e-9:
            _, kind, name = heapq.heappop(events)
            if kind == "gone":
                del states[name]
            elif kind == "ready":
                states[name] = dataclasses.replace(states[name], member=True, ready=True)
                del seen[name]
            else:
                master_version = "2.0.0"
        nodes = list(states.values())
        if seen:
            nodes = [
                dataclasses.replace(s, age_s=t - seen[s.name]) if s.name in seen else s
                for s in nodes
            ]
        observed = plan.Observed(
            desired="2.0.0",
            master=master,
            master_version=master_version,
            generation=generation,
            size=n,
            canaries=CANARIES,
            canary_timeout_s=120.0,
            nodes=nodes,
        )
        began = time.perf_counter()
        step = plan.next_step(observed)
        plan_s += time.perf_counter() - began
        calls += 1
        match step:
            case plan.Done():
                break
            case plan.Launch(count=count, generation=gen):
                for _ in range(count):
                    name = f"new-{launched:05d}"
                    launched += 1
                    states[name] = plan.NodeState(name, "2.0.0", gen, False, False, False, 0.0)
                    seen[name] = t
                    heapq.heappush(events, (t + NODE_START_S, "ready", name))
            case plan.Terminate(name=name):
                if name == master:
                    raise RuntimeError("the plan terminated the master")
                states[name] = dataclasses.replace(states[name], draining=True)
                heapq.heappush(events, (t + DRAIN_S, "gone", name))
            case plan.Handover(target=target, generation=gen):
                generation, master = gen, target
                states[target] = dataclasses.replace(states[target], generation=gen)
                heapq.heappush(events, (t + handover_s, "handover", target))
            case plan.Abort(reason=reason):
                raise RuntimeError(f"the rollout aborted: {reason}")
            case plan.Wait():
                if not events:
                    raise RuntimeError(f"the plan waits for nothing: {step.reason}")
        following = events[0][0] if events else t
        t = max(t + PLAN_TICK_S, math.ceil(following / PLAN_TICK_S - 1e-9) * PLAN_TICK_S)
    return {"n": n, "seconds": t, "plan_calls": calls, "plan_cpu_per_call_s": plan_s / calls}


# -- 5. policies -----------------------------------------------------------------------------

POLICIES: dict[str, Callable[[int], tuple[int, int]]] = {
    # name -> N -> (streams the master feeds, replicas that serve workers)
    "sqrt(N) replicas": lambda n: (replica_count(n), replica_count(n)),
    "fixed k = 10": lambda n: (replica_count(n, 10), replica_count(n, 10)),
    "3 tiers (N^1/3 relays)": lambda n: (
        max(1, math.ceil(n ** (1 / 3))),
        max(1, math.ceil(n ** (2 / 3))),
    ),
}


def policy_limits(
    unit: dict[str, float], rate: float, hit: float, grid: Sequence[int]
) -> dict[str, dict[str, Any]]:
    """For each policy and each N of ``grid``: each resource's use over its limit, and the
    first N at which one passes 1. ``unit`` holds the per-item costs measured at the largest
    simulated N (the batch's CPU and bytes, a query, a delta's apply, a snapshot)."""
    out: dict[str, dict[str, Any]] = {}
    batches = 1 / BATCH_WINDOW_S
    for name, shape in POLICIES.items():
        rows = []
        first: dict[str, int | None] = {}
        for n in grid:
            fanout, serving = shape(n)
            workers = max(0, n - 1 - serving)
            per_replica = workers / serving if serving else 0.0
            master = (
                REGISTRATIONS_PER_S * GRPC_CALL_S * (1 + BATCH_WINDOW_S / DIGEST_PERIOD_S)
                + batches * unit["batch_cpu_s"]
                + batches * (unit["encode_s"] + fanout * STREAM_SEND_S)
            )
            relay = (
                batches * (unit["encode_s"] + n ** (1 / 3) * STREAM_SEND_S)
                if name.startswith("3 tiers")
                else 0.0
            )
            replica = per_replica * (rate * (1 - hit) + 1 / DIGEST_PERIOD_S) * unit["query_s"]
            replica += batches * unit["apply_s"] + relay
            nic = batches * fanout * unit["delta_bytes"] / NIC_BYTES_S
            # After a failover the replicas and the standby resume across the fork: the one
            # snapshot left is the new standby's, encoded on the new master's loop (the
            # announces wait behind it) and sent once. Before: one per stream, ``fanout``.
            snapshots = unit["snapshot_encode_s"] + unit["snapshot_bytes"] / NIC_BYTES_S
            use = {
                "master CPU": master / ONE_CORE,
                "master NIC": nic,
                "replica CPU": replica / ONE_CORE,
                "failover snapshot (share of 10 s)": snapshots / FAILOVER_TARGET_S,
            }
            rows.append({"n": n, "fanout": fanout, "serving": serving, **use})
            for resource, value in use.items():
                if value >= 1 and first.get(resource) is None:
                    first[resource] = n
                first.setdefault(resource, None)
        runs_out = sorted(((v, r) for r, v in first.items() if v is not None))
        out[name] = {
            "rows": rows,
            "first_n": first,
            "first": {"resource": runs_out[0][1], "n": runs_out[0][0]} if runs_out else None,
        }
    return out


# -- the run ---------------------------------------------------------------------------------


def calibration(seed: int, tries: int) -> list[dict[str, Any]]:
    """The membership model against kinship measured on real processes (10 nodes)."""
    rows = []
    references = [
        ("lan", 10, 6.23, "kinship-behaviour.md: every survivor sees it dead, median of 3"),
        ("lan", 10, 5.55, "docs/benchmarks.md: tierfaas failover, median of 5"),
        ("local", 10, 1.33, "kinship-behaviour.md, median of 3"),
        ("local", 5, 1.20, "docs/benchmarks.md, median of 5"),
        ("local", 20, 1.40, "docs/benchmarks.md, median of 5"),
    ]
    for preset, n, measured, source in references:
        params = _swim.SwimParams.from_kinship(preset)
        rng = random.Random(seed)
        runs = [_swim.detect_death(n, params, _swim.Network(), rng) for _ in range(tries)]
        simulated = statistics.median(r.all_heard_s for r in runs)
        rows.append(
            {
                "preset": preset,
                "n": n,
                "simulated_s": simulated,
                # the first dead declaration: a pause this long kills (lan, 10 nodes, SIGSTOP:
                # dead at 5.2-5.6 s measured, kinship-behaviour.md)
                "dead_s": statistics.median(r.dead_s for r in runs),
                "measured_s": measured,
                "error": simulated / measured - 1,
                "source": source,
            }
        )
    return rows


def topology_seconds(n: int, repeats: int) -> float:
    """The real ``compute_topology`` over ``n`` live members: what every node's event loop
    spends after each membership change."""
    view = members(n)
    return timed(lambda: compute_topology(view), repeats)


VARIANTS: dict[str, tuple[Keeping, bool]] = {
    # name -> (who resumes across the fork, the large gossip preset)
    "before: snapshots, lan": ("none", False),
    "replicas resume, lan": ("replicas", False),
    "+ standby, lan": ("standby", False),
    "before: snapshots, large": ("none", True),
    "as built: + standby, large": ("standby", True),
}
AS_BUILT = "as built: + standby, large"
"""The failover table's configuration: the product now, with the gossip preset meant for
clusters of ~1,000 nodes and more (``GossipSettings.large``)."""


class _BatchCosts:
    """``batch_cost`` at each batch size asked, timed once per table."""

    def __init__(self, table: RoutingTable, n: int, functions: int, seed: int) -> None:
        self._args = (table, n, functions)
        self._seed = seed
        self._known: dict[int, BatchCost] = {}

    def __call__(self, pairs: int) -> BatchCost:
        if pairs not in self._known:
            rng = random.Random(self._seed + pairs)
            self._known[pairs] = batch_cost(*self._args, pairs, rng)
        return self._known[pairs]


def apply_cost(table: RoutingTable) -> float:
    """A replica's CPU to apply the master's last delta (the real ``apply_delta``)."""
    deltas = table.since(table.version - 1, table.lineage)
    if not deltas:
        return 0.0
    last = deltas[-1]
    copy = RoutingTable(table.lineage, last.prev_version)

    def run() -> None:
        copy.apply_delta(
            dataclasses.replace(last, prev_version=copy.version, version=copy.version + 1)
        )

    return timed(run, 5)


def _detections(
    n: int, params: _swim.SwimParams, net: _swim.Network, seed: int, tries: int
) -> list[_swim.Detection]:
    rng = random.Random(seed * 31 + n)
    return [_swim.detect_death(n, params, net, rng) for _ in range(tries)]


def simulate(args: argparse.Namespace) -> dict[str, Any]:
    quick: bool = args.quick
    seed: int = args.seed
    ns = [100, 1_000, 3_000, 10_000]
    fs = [1_000, 10_000] if quick else [1_000, 10_000, 100_000]
    net = _swim.Network(loss=args.loss)
    lan = _swim.SwimParams.from_tierfaas("lan")
    faster = _swim.SwimParams.from_tierfaas("large")  # GossipSettings.large, as kinship gets it
    out: dict[str, Any] = {"ns": ns, "functions": fs}
    out["tuned_gossip"] = {
        "preset": "large",
        "probe_interval": faster.probe_interval,
        "probe_timeout": faster.probe_timeout,
        "suspicion_mult": faster.suspicion_mult,
        "max_members": faster.max_members,
    }
    print("calibration ...", flush=True)
    out["calibration"] = calibration(seed, 10 if quick else 30)

    out["topology"] = {}
    out["detection"] = {}
    runs: dict[tuple[int, bool], list[_swim.Detection]] = {}
    for n in ns:
        began = time.perf_counter()
        out["topology"][n] = topology_seconds(n, 1 if (quick or n >= 3_000) else TOPOLOGY_REPEATS)
        tries = 1 if quick and n >= 3_000 else (3 if quick else 5)
        runs[n, False] = _detections(n, lan, net, seed, tries)
        runs[n, True] = _detections(n, faster, net, seed, tries)
        flat = _detections(n, dataclasses.replace(lan, log_scaled=False), net, seed, tries)
        lossy = _detections(n, lan, dataclasses.replace(net, loss=LOSSY), seed, tries)
        lan_runs = runs[n, False]
        out["detection"][n] = {
            "tries": tries,
            "first_suspect_s": statistics.median(r.first_suspect_s for r in lan_runs),
            "dead_s": statistics.median(r.dead_s for r in lan_runs),
            "all_heard_s": statistics.median(r.all_heard_s for r in lan_runs),
            "all_heard_max_s": max(r.all_heard_s for r in lan_runs),
            "all_heard_flat_s": statistics.median(r.all_heard_s for r in flat),
            "all_heard_tuned_s": statistics.median(r.all_heard_s for r in runs[n, True]),
            "all_heard_lossy_s": statistics.median(r.all_heard_s for r in lossy),
            "suspicion_min_s": lan.suspicion_min_s(n),
            "push_pull_bytes_per_s": _swim.push_pull_bytes_per_s(n, lan, MEMBER_BYTES),
            "over_max_members": n > lan.max_members,
            "over_max_members_large": n > faster.max_members,
            # A node frozen this long is declared dead (the first declaration after the
            # freeze); a shorter pause is a suspicion it refutes on resume.
            "fatal_pause_s": statistics.median(r.dead_s for r in lan_runs),
            "fatal_pause_min_s": min(r.dead_s for r in lan_runs),
            "fatal_pause_large_s": statistics.median(r.dead_s for r in runs[n, True]),
            "fatal_pause_large_min_s": min(r.dead_s for r in runs[n, True]),
            "suspicion_min_large_s": faster.suspicion_min_s(n),
            "probe_bytes_per_s": _swim.probe_bytes_per_s(lan),
            "probe_bytes_per_s_large": _swim.probe_bytes_per_s(faster),
            # Cluster-wide false suspicions per second on loss alone (each node is probed
            # once per probe interval on average), at the lossy column's loss.
            "false_suspicions_per_s": n
            * _swim.false_suspicion_ratio(lan, LOSSY)
            / lan.probe_interval,
            "false_suspicions_per_s_large": n
            * _swim.false_suspicion_ratio(faster, LOSSY)
            / faster.probe_interval,
        }
        print(f"  N={n:,}: topology {out['topology'][n] * 1e3:,.0f} ms, detection "
              f"{out['detection'][n]['all_heard_s']:.1f} s ({time.perf_counter() - began:.1f} s)",
              flush=True)  # fmt: skip

    rows: list[dict[str, Any]] = []
    failovers = []
    memory = {}
    for functions in fs:
        rng = random.Random(seed + functions)
        # tracemalloc slows what it traces 2-3x: --quick measures 20,000 functions at most and
        # counts the same bytes per route beyond.
        routes, used = table_bytes(min(functions, 20_000) if quick else functions, 1_000, rng)
        memory[functions] = {"routes": routes, "bytes": used, "bytes_per_route": used / routes}
        snap: tuple[float, int, float] | None = None
        for n in reversed(ns):
            began = time.perf_counter()
            rng = random.Random(seed * 7919 + n + functions)
            sets = warm_sets(n, functions, rng)
            table = table_of(sets)
            copy = ReplicaCopy()
            copy.apply(table.snapshot())
            cost_at = _BatchCosts(table, n, functions, seed)
            k = replica_count(n)
            topo_s = out["topology"][n]
            cpu = master_cpu(REGISTRATIONS_PER_S, k, n - 1 - k, cost_at, topo_s)
            absorbed = absorbed_rate(k, cost_at)
            per_query = query_cost(copy, functions, rng)
            one = cost_at(max(1, round(REGISTRATIONS_PER_S * BATCH_WINDOW_S)))
            apply_s = apply_cost(table)
            busiest = busiest_share(n, "sqrt", 1_000 if quick else 5_000, rng)
            replica = replica_load(
                n, k, args.rate, args.hit, per_query, apply_s, 1 / BATCH_WINDOW_S, busiest
            )
            if snap is None:  # one size of table per F: timed once, at the largest N
                snap = snapshot_cost(table)
            held = (table.lineage, table.version)
            ann = announce_cpu(table, sets)  # restarts the lineage: the promoted table
            decided = resumes_after_death(n, table, held)
            variants: dict[str, Any] = {}
            for name, (keeping, gossip) in VARIANTS.items():
                results = [
                    failover(
                        n,
                        functions,
                        d,
                        topo_s,
                        snap,
                        ann,
                        net,
                        random.Random(seed + i),
                        resumes=decided[keeping],
                    )
                    for i, d in enumerate(runs[n, gossip])
                ]
                middle = sorted(results, key=lambda x: x.consistent_s)[len(results) // 2]
                variants[name] = dataclasses.asdict(middle) | {
                    "passed": middle.passed,
                    "snapshots_needed": decided[keeping].replicas.count(False),
                    "standby_snapshot": decided[keeping].standby_snapshot,
                }
            failovers.append(variants[AS_BUILT] | {"variants": variants})
            rows.append(
                {
                    "n": n,
                    "functions": functions,
                    "replicas": k,
                    "routes": len(table),
                    "master_cpu_at_1000": cpu["total"],
                    "master_cpu_items": cpu,
                    "master_pass": cpu["total"] < ONE_CORE,
                    "registrations_per_s_one_core": absorbed,
                    "batch_cpu_ms": one.cpu_s * 1e3,
                    "batch_pairs": one.pairs,
                    "delta_bytes": one.delta_bytes,
                    "encode_delta_us": one.encode_s * 1e6,
                    "stream_bytes_per_s": cpu["stream_bytes_per_s"],
                    "table_bytes": memory[functions]["bytes_per_route"] * len(table),
                    "replica_queries_per_s": replica["queries_per_s"],
                    "replica_workers_busiest": replica["workers_busiest"],
                    "replica_cpu": replica["cpu"],
                    "query_us": per_query * 1e6,
                    "apply_delta_us": apply_s * 1e6,
                    "snapshot_encode_s": snap[0],
                    "snapshot_bytes": snap[1],
                    "snapshot_load_s": snap[2],
                    "announce_wave_cpu_s": ann,
                }
            )
            print(f"  N={n:,} F={functions:,}: {time.perf_counter() - began:.1f} s", flush=True)
    out["rows"] = sorted(rows, key=lambda r: (r["functions"], r["n"]))
    out["failover"] = sorted(failovers, key=lambda r: (r["functions"], r["n"]))
    out["memory"] = memory

    print("rollout ...", flush=True)
    handover = {}
    for r in rows:
        if r["n"] == MAX_N:  # the target's copy: encoded and checked at both ends, sent, loaded
            handover[r["functions"]] = (
                2 * r["snapshot_encode_s"]
                + r["snapshot_bytes"] / NIC_BYTES_S
                + r["snapshot_load_s"]
            )
    rollout_f = fs[0]
    out["rollout_functions"] = rollout_f
    out["rollout_handover_s"] = handover
    out["rollout"] = []
    real_up_to = 1_000 if quick else MAX_N
    for n in [10, *ns]:
        if n <= real_up_to:
            out["rollout"].append(rollout(n, handover[rollout_f]) | {"extrapolated": False})
        else:
            base = [r for r in out["rollout"] if not r["extrapolated"]]
            slope = (base[-1]["seconds"] - base[-2]["seconds"]) / (base[-1]["n"] - base[-2]["n"])
            seconds = base[-1]["seconds"] + slope * (n - base[-1]["n"])
            out["rollout"].append({"n": n, "seconds": seconds, "extrapolated": True})

    grid = [100, 300, 1_000, 3_000, 10_000, 30_000, 100_000, 300_000, 1_000_000]
    out["policies"] = {}
    for functions in fs:
        at = next(r for r in rows if r["n"] == MAX_N and r["functions"] == functions)
        unit: dict[str, float] = {
            "batch_cpu_s": at["batch_cpu_ms"] / 1e3,
            "encode_s": at["encode_delta_us"] / 1e6,
            "delta_bytes": at["delta_bytes"],
            "query_s": at["query_us"] / 1e6,
            "apply_s": at["apply_delta_us"] / 1e6,
            "snapshot_encode_s": at["snapshot_encode_s"],
            "snapshot_bytes": at["snapshot_bytes"],
        }
        out["policies"][functions] = {
            "units": unit,
            "by_policy": policy_limits(unit, args.rate, args.hit, grid),
        }
    return out


# -- report ----------------------------------------------------------------------------------


def _fmt_s(seconds: float) -> str:
    if seconds >= 3600:
        return f"{seconds / 3600:.1f} h"
    if seconds >= 120:
        return f"{seconds / 60:.0f} min"
    return f"{seconds:.1f} s"


def _size(nbytes: float) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if nbytes >= scale:
            return f"{nbytes / scale:.1f} {unit}"
    return f"{nbytes:.0f} B"


MARKDOWN = False
"""Set by ``--markdown``: the tables as docs/scale.md shows them."""


def _show(title: str, columns: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    if MARKDOWN:
        print(f"**{title}**\n\n{c.markdown_table(columns, rows)}\n")
    else:
        c.print_table(title, columns, rows)


def report(data: dict[str, Any]) -> dict[str, Any]:
    """Prints every table (markdown with ``--markdown``); returns the verdicts."""
    _show(
        "Calibration: the membership model against kinship on real processes "
        "(kill -9 -> every survivor sees it dead)",
        ["preset, N", "simulated median", "measured median", "error", "source",
         "declared dead (sim)"],
        [
            [f"{r['preset']}, {r['n']}", f"{r['simulated_s']:.2f} s", f"{r['measured_s']:.2f} s",
             f"{r['error']:+.0%}", r["source"], f"{r.get('dead_s', math.nan):.2f} s"]
            for r in data["calibration"]
        ],
    )  # fmt: skip
    _show(
        "Membership (lan preset) and topology per N",
        ["N", "first suspect", "declared dead", "all survivors heard", "same, flat timeout",
         "same, large preset", f"same, {LOSSY:.0%} loss", "suspicion min",
         "push-pull per node", "> max_members", "topology per change"],
        [
            [f"{int(n):,}", f"{d['first_suspect_s']:.1f} s", f"{d['dead_s']:.1f} s",
             f"{d['all_heard_s']:.1f} s", f"{d['all_heard_flat_s']:.1f} s",
             f"{d['all_heard_tuned_s']:.1f} s", f"{d.get('all_heard_lossy_s', math.nan):.1f} s",
             f"{d['suspicion_min_s']:.0f} s",
             f"{_size(d['push_pull_bytes_per_s'])}/s",
             "YES" if d["over_max_members"] else "no",
             f"{data['topology'][n] * 1e3:,.0f} ms"]
            for n, d in data["detection"].items()
        ],
    )  # fmt: skip
    _show(
        "The large gossip preset against lan: what it costs and risks (a pause at least this "
        f"long is a death, median (min); false suspicions across the cluster at {LOSSY:.0%} loss)",
        ["N", "all heard dead, lan", "all heard dead, large", "fatal pause, lan",
         "fatal pause, large", "suspicion min, large", "probes per node, lan / large",
         "false suspicions/s, lan / large", "push-pull per node", "> max_members, large"],
        [
            [f"{int(n):,}", f"{d['all_heard_s']:.1f} s", f"{d['all_heard_tuned_s']:.1f} s",
             f"{d['fatal_pause_s']:.1f} s ({d['fatal_pause_min_s']:.1f})",
             f"{d['fatal_pause_large_s']:.1f} s ({d['fatal_pause_large_min_s']:.1f})",
             f"{d['suspicion_min_large_s']:.0f} s",
             f"{_size(d['probe_bytes_per_s'])}/s / {_size(d['probe_bytes_per_s_large'])}/s",
             f"{d['false_suspicions_per_s']:.2g} / {d['false_suspicions_per_s_large']:.2g}",
             f"{_size(d['push_pull_bytes_per_s'])}/s",
             "YES" if d["over_max_members_large"] else "no"]
            for n, d in data["detection"].items()
            if "fatal_pause_s" in d
        ],
    )  # fmt: skip
    rows = data["rows"]
    _show(
        "The master at 1,000 registrations/s (target at 10,000 nodes: below one core)",
        ["N", "functions", "replicas", "routes", "CPU (cores)", "regs/s one core absorbs",
         "batch CPU (100 regs)", "stream out", "table memory", "target"],
        [
            [f"{r['n']:,}", f"{r['functions']:,}", str(r["replicas"]), f"{r['routes']:,}",
             f"{r['master_cpu_at_1000']:.3f}", f"{r['registrations_per_s_one_core']:,.0f}",
             f"{r['batch_cpu_ms']:.2f} ms", f"{_size(r['stream_bytes_per_s'])}/s",
             _size(r["table_bytes"]),
             ("PASS" if r["master_pass"] else "FAIL") if r["n"] == MAX_N else ""]
            for r in rows
        ],
    )  # fmt: skip
    _show(
        f"Replicas: the busiest one at {data['rate']:,.0f} calls/s per node, route-cache hit "
        f"ratio {data['hit']:.0%}, one digest check per worker per second",
        ["N", "functions", "workers (busiest)", "queries/s", "CPU (cores)", "per query",
         "full copy memory"],
        [
            [f"{r['n']:,}", f"{r['functions']:,}", f"{r['replica_workers_busiest']:.0f}",
             f"{r['replica_queries_per_s']:,.0f}", f"{r['replica_cpu']:.3f}",
             f"{r['query_us']:.1f} us", _size(r["table_bytes"])]
            for r in rows
        ],
    )  # fmt: skip
    _show(
        f"Failover, {AS_BUILT}: master killed -> every replica holds a consistent table "
        "(target at 10,000 nodes: <= 10 s)",
        ["N", "functions", "all heard dead", "topology", "replicas caught up", "announces",
         "consistent", "target"],
        [
            [f"{f['n']:,}", f"{f['functions']:,}", f"{f['detect_all_s']:.1f} s",
             f"{f['topology_s']:.2f} s", f"{f['snapshots_s']:.2f} s",
             f"{f['announces_s']:.2f} s", f"{f['consistent_s']:.1f} s",
             ("PASS" if f["passed"] else "FAIL") if f["n"] == MAX_N else ""]
            for f in data["failover"]
        ],
    )  # fmt: skip
    names = list(VARIANTS)
    _show(
        "Failover before and after (consistent table, seconds; PASS/FAIL at 10,000 nodes; "
        "in brackets: the snapshots replicas wait for)",
        ["N", "functions", *names],
        [
            [f"{f['n']:,}", f"{f['functions']:,}"]
            + [f"{f['variants'][v]['consistent_s']:.1f}"
               + ((" PASS" if f["variants"][v]["passed"] else " FAIL") if f["n"] == MAX_N else "")
               + (f" [{f['variants'][v]['snapshots_needed']}]"
                  if "snapshots_needed" in f["variants"][v] else "")
               for v in names]
            for f in data["failover"]
        ],
    )  # fmt: skip
    _show(
        f"Rollout with the real plan, one node replaced at a time, handover of "
        f"{data['rollout_functions']:,} functions (10 nodes measured: 17.2 s)",
        ["N", "duration", "plan calls", "plan CPU per call"],
        [
            [f"{r['n']:,}", _fmt_s(r["seconds"]) + (" (extrapolated)" if r["extrapolated"] else ""),
             f"{r.get('plan_calls', 0):,}" if not r["extrapolated"] else "-",
             f"{r['plan_cpu_per_call_s'] * 1e3:.2f} ms" if not r["extrapolated"] else "-"]
            for r in data["rollout"]
        ],
    )  # fmt: skip
    policy_rows = []
    resources: list[str] = []
    for functions, entry in data["policies"].items():
        for name, p in entry["by_policy"].items():
            first = p["first"]
            resources = list(p["first_n"])
            policy_rows.append(
                [f"{name}, {int(functions):,} functions",
                 first["resource"] if first else "none up to 1M",
                 f"{first['n']:,}" if first else "-"]
                + [f"{v:,}" if v else "-" for v in p["first_n"].values()]
            )  # fmt: skip
    _show(
        "Which resource runs out first, at what N (control plane as built; the membership "
        "limits above apply to every policy)",
        ["policy", "first to run out", "at N", *[f"{r} at N" for r in resources]],
        policy_rows,
    )
    at_max = [r for r in rows if r["n"] == MAX_N]
    fo_max = [f for f in data["failover"] if f["n"] == MAX_N]
    return {
        "master_below_one_core_at_10000": all(r["master_pass"] for r in at_max),
        "failover_within_10s_at_10000": all(f["passed"] for f in fo_max),
        "failover_at_10000_s": max(f["consistent_s"] for f in fo_max),
        "master_cpu_at_10000": max(r["master_cpu_at_1000"] for r in at_max),
    }


# -- plots -----------------------------------------------------------------------------------


def plot(data: dict[str, Any]) -> list[str]:
    """docs/scale-*.png; a message instead when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return ["matplotlib is not installed: no plots (pip install matplotlib into the venv)"]
    written = []
    docs = c.REPO_ROOT / "docs"

    def save(fig: Any, name: str) -> None:
        fig.tight_layout()
        target = docs / f"scale-{name}.png"
        fig.savefig(target, dpi=80, bbox_inches="tight")
        plt.close(fig)
        written.append(f"plot: {target.relative_to(c.REPO_ROOT)}")

    fs = data["functions"]
    fig, ax = plt.subplots(figsize=(10, 4.5))
    variants = [v for v in data["failover"][0]["variants"] if v != AS_BUILT]
    for functions in fs:
        pts = [f for f in data["failover"] if f["functions"] == functions]
        ax.plot([p["n"] for p in pts], [p["consistent_s"] for p in pts], "o-",
                label=f"{AS_BUILT}, {functions:,} functions")  # fmt: skip
    largest = fs[-1]
    pts = [f for f in data["failover"] if f["functions"] == largest]
    for variant, style in zip(variants, ["^-.", "v-.", "s:", "d:"], strict=False):
        ax.plot([p["n"] for p in pts], [p["variants"][variant]["consistent_s"] for p in pts],
                style, label=f"{variant}, {largest:,} functions")  # fmt: skip
    ns = [int(n) for n in data["detection"]]
    ax.plot(ns, [data["detection"][n]["all_heard_s"] for n in data["detection"]], "k--",
            label="every survivor heard it dead (lan)")  # fmt: skip
    ax.plot(ns, [data["detection"][n]["all_heard_tuned_s"] for n in data["detection"]], "k-",
            lw=0.8, label="same, large preset")  # fmt: skip
    ax.plot(ns, [data["detection"][n]["all_heard_flat_s"] for n in data["detection"]], "k:",
            label="same (lan), suspicion timeout flat in N")  # fmt: skip
    ax.axhline(FAILOVER_TARGET_S, color="red", lw=1, label="target (10 s)")
    ax.set(xscale="log", yscale="log", xlabel="nodes", ylabel="seconds from kill -9",
           title="Master failover: until every replica holds a consistent table")  # fmt: skip
    # Outside the axes, on the right: inside, it covered the curves.
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    save(fig, "failover")

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for functions in fs:
        pts = [r for r in data["rows"] if r["functions"] == functions]
        axes[0].plot([p["n"] for p in pts], [p["master_cpu_at_1000"] for p in pts], "o-",
                     label=f"master, {functions:,} functions")  # fmt: skip
        axes[0].plot([p["n"] for p in pts], [p["replica_cpu"] for p in pts], "s--",
                     label=f"busiest replica, {functions:,} functions")  # fmt: skip
    axes[0].axhline(ONE_CORE, color="red", lw=1, label="one core")
    axes[0].set(xscale="log", yscale="log", xlabel="nodes", ylabel="cores",
                title="CPU at 1,000 registrations/s")  # fmt: skip
    axes[0].legend(fontsize=7)
    axes[1].plot(ns, [data["topology"][n] for n in data["detection"]], "o-")
    axes[1].set(xscale="log", yscale="log", xlabel="nodes", ylabel="seconds",
                title="compute_topology per membership change")  # fmt: skip
    save(fig, "cpu")

    shown = list(data["policies"])[len(data["policies"]) // 2]
    by_policy = data["policies"][shown]["by_policy"]
    fig, axes = plt.subplots(1, len(by_policy), figsize=(14, 4), sharey=True)
    for ax, (name, p) in zip(axes, by_policy.items(), strict=True):
        grid = [r["n"] for r in p["rows"]]
        for resource in p["first_n"]:
            ax.plot(grid, [max(r[resource], 1e-4) for r in p["rows"]], "o-", label=resource)
        ax.axhline(1.0, color="red", lw=1)
        ax.set(xscale="log", yscale="log", xlabel="nodes",
               title=f"{name}, {int(shown):,} functions")  # fmt: skip
    axes[0].set_ylabel("share of the limit")
    axes[0].legend(fontsize=7)
    save(fig, "policies")

    fig, ax = plt.subplots(figsize=(6, 4))
    real = [r for r in data["rollout"] if not r["extrapolated"]]
    extra = [r for r in data["rollout"] if r["extrapolated"]]
    ax.plot([r["n"] for r in real], [r["seconds"] / 60 for r in real], "o-", label="real plan")
    if extra:
        ax.plot([r["n"] for r in extra], [r["seconds"] / 60 for r in extra], "x:",
                label="extrapolated (--quick)")  # fmt: skip
    ax.set(xscale="log", yscale="log", xlabel="nodes", ylabel="minutes",
           title="Rollout duration, one node at a time")  # fmt: skip
    ax.legend(fontsize=8)
    save(fig, "rollout")
    return written


# -- main ------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer functions and tries: < 60 s")
    parser.add_argument("--seed", type=int, default=22)
    parser.add_argument("--rate", type=float, default=1_000.0, help="calls/s per node")
    parser.add_argument("--hit", type=float, default=0.9, help="route-cache hit ratio")
    parser.add_argument("--loss", type=float, default=0.0, help="datagram loss ratio")
    parser.add_argument("--no-plot", action="store_true", help="write no docs/scale-*.png")
    parser.add_argument("--replot", type=Path, metavar="JSON", help="only redraw the plots")
    parser.add_argument("--markdown", action="store_true", help="print the tables in markdown")
    args = parser.parse_args()
    global MARKDOWN
    MARKDOWN = args.markdown
    if args.replot is not None:
        saved = json.loads(args.replot.read_text())
        if args.markdown:
            report(saved)
        for line in plot(saved):
            print(line)
        return
    began = time.perf_counter()
    data = simulate(args) | {"rate": args.rate, "hit": args.hit, "loss": args.loss}
    verdicts = report(data)
    for name, value in verdicts.items():
        print(f"{name}: {value}")
    if not args.no_plot and not args.quick:
        for line in plot(data):
            print(line)
    path = c.write_results(
        "scale",
        {
            "machine": c.machine_info(),
            "when": c.now_iso(),
            "commit": c.git_commit(),
            "quick": args.quick,
            "seed": args.seed,
            **data,
            "verdicts": verdicts,
            "seconds": time.perf_counter() - began,
        },
    )
    print(f"results: {path.relative_to(c.REPO_ROOT)} ({time.perf_counter() - began:.0f} s)")


if __name__ == "__main__":
    main()
