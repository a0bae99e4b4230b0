"""A model of kinship's SWIM (with Lifeguard) failure detection, for benchmarks/scale.py.

kinship is Rust and runs one node per process, so 10,000 real nodes do not fit on one
machine; this model replays what its documented mechanisms do, over a simulated network, so
that the time from a node's death until every survivor has declared it dead can be estimated
at any N. The parameters are kinship's own (``SwimParams.from_kinship`` reads them off
``kinship.Config.lan()``, the preset tierfaas runs on real networks), and the result is checked
against the figures measured on real processes (shared/reference/kinship-behaviour.md,
docs/benchmarks.md: 10 nodes, lan: every survivor sees the victim dead 6.23 s median after
``kill -9``, exactly 4.0 s after the first suspect).

The mechanisms, and the assumptions where kinship's documentation says nothing:
- *Probing*: each node probes one member per ``probe_interval``, walking a shuffled list of
  the others (round robin), from a random phase. A dead member is found by the first prober
  whose walk reaches it; that node suspects it at the end of that probe period (the direct
  ping times out after ``probe_timeout``, indirect pings get the rest of the period). Every
  later prober that reaches it suspects it too, independently: a *confirmation*.
- *Suspicion* (Lifeguard, as in hashicorp/memberlist, which SWIM-with-Lifeguard libraries
  follow): a node that hears of a suspicion starts a timer of ``max = suspicion_max_mult x
  min`` which shrinks towards ``min = suspicion_mult x max(1, log10 N) x probe_interval`` as
  independent confirmations arrive, reaching ``min`` at ``k = min(expected_confirmations,
  N - 2)``. The first timer to fire declares the member dead. The log10 N factor is
  memberlist's and kinship's (its docs/design.md), and the real cluster of
  benchmarks/netns_cluster.py measures it: 4.0 s, 5.2 s and 6.3-6.7 s from the first
  suspicion to the death at 10, 20 and 40 nodes (4 x log10 N: 4.0, 5.2, 6.4).
- *Declaration*: every node that hears the suspicions runs a Lifeguard timer of its own
  (kinship's docs/design.md), so each survivor declares the member dead at the earlier of its
  own timer and the first declarer's Dead gossip. (Measured on the 40-node cluster: every
  survivor drops the victim within 0.1 s of the first at 10 and 20 nodes, faster than one
  gossip spread from a single declarer, which the model assumed before.)
- *Dissemination*: a node that learns news gossips it every ``gossip_interval`` to
  ``gossip_nodes`` random members, until it has sent it ``retransmit_mult x ceil(log10(N +
  1))`` times. Messages are delayed by the network's latency and lost with its loss ratio.
  Piggybacking on probe packets is left out (the gossip rounds are 5x more frequent under
  ``lan``), which errs on the slow side.

Everything is deterministic for a given ``random.Random``.
"""

from __future__ import annotations

import heapq
import math
import random
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class SwimParams:
    """The kinship settings the model uses (seconds and counts, kinship's names)."""

    probe_interval: float
    probe_timeout: float
    suspicion_mult: int
    suspicion_max_mult: int
    expected_confirmations: int
    gossip_interval: float
    gossip_nodes: int
    retransmit_mult: int
    push_pull_interval: float
    max_members: int
    log_scaled: bool = True
    """The suspicion timeout grows with log10 N (memberlist's rule, kinship's too, measured
    at 10-40 nodes); False models a library whose timeout is the same at any N."""

    @classmethod
    def from_kinship(cls, preset: str = "lan") -> SwimParams:
        """The values of kinship's preset when kinship is installed (building a ``Config``
        opens no socket), else the values read from kinship 0.4.0's presets."""
        try:
            import kinship
        except ImportError:  # pragma: no cover - kinship is a dependency of tierfaas
            return LAN if preset == "lan" else LOCAL
        maker = kinship.Config.lan if preset == "lan" else kinship.Config.local
        return cls.from_config(maker(bind="127.0.0.1:0", insecure_plaintext=True))

    @classmethod
    def from_tierfaas(cls, preset: str) -> SwimParams:
        """The values tierfaas hands kinship for its gossip preset ``lan``, ``large`` or
        ``local`` (``GossipSettings``, through the adapter's own ``_config``)."""
        from tierfaas.config import Address
        from tierfaas.membership.kinship_adapter import GossipSettings, KinshipMembership

        make = {"lan": GossipSettings.lan, "large": GossipSettings.large}.get(preset)
        bind = Address("127.0.0.1", 0)
        settings = make(bind=bind, key=None) if make else GossipSettings.local(bind=bind)
        return cls.from_config(KinshipMembership(settings, name="sim")._config())

    @classmethod
    def from_config(cls, config: Any) -> SwimParams:
        """The values of a ``kinship.Config``."""
        return cls(
            probe_interval=float(config.probe_interval),
            probe_timeout=float(config.probe_timeout),
            suspicion_mult=int(config.suspicion_mult),
            suspicion_max_mult=int(config.suspicion_max_mult),
            expected_confirmations=int(config.expected_confirmations),
            gossip_interval=float(config.gossip_interval),
            gossip_nodes=int(config.gossip_nodes),
            retransmit_mult=int(config.retransmit_mult),
            push_pull_interval=float(config.push_pull_interval),
            max_members=int(config.max_members),
        )

    def suspicion_min_s(self, n: int) -> float:
        """The shortest suspicion timeout at ``n`` members (all confirmations in)."""
        scale = max(1.0, math.log10(max(1, n))) if self.log_scaled else 1.0
        return self.suspicion_mult * scale * self.probe_interval

    def suspicion_timeout_s(self, n: int, confirmations: int) -> float:
        """Lifeguard's timeout after ``confirmations`` independent suspicions beyond the first."""
        low = self.suspicion_min_s(n)
        high = self.suspicion_max_mult * low
        k = min(self.expected_confirmations, n - 2)
        if k < 1:
            return low
        fraction = math.log(confirmations + 1) / math.log(k + 1)
        return max(low, high - (high - low) * fraction)

    def retransmits(self, n: int) -> int:
        """How many times a node sends one piece of news (memberlist's retransmit limit)."""
        return self.retransmit_mult * math.ceil(math.log10(n + 1))


LAN = SwimParams(1.0, 0.5, 4, 6, 3, 0.2, 3, 4, 30.0, 8192)
"""kinship 0.4.0 ``Config.lan()``."""
LOCAL = SwimParams(0.2, 0.1, 3, 6, 3, 0.2, 3, 4, 15.0, 8192)
"""kinship 0.4.0 ``Config.local()``."""


@dataclass(frozen=True, slots=True)
class Network:
    """One-way delay: log-normal around ``median_s`` (``sigma`` its spread); ``loss``: the
    share of datagrams dropped."""

    median_s: float = 0.0003
    sigma: float = 0.6
    loss: float = 0.0

    def delay(self, rng: random.Random) -> float:
        return self.median_s * math.exp(self.sigma * rng.gauss(0.0, 1.0))

    def lost(self, rng: random.Random) -> bool:
        return self.loss > 0 and rng.random() < self.loss


def spread(
    n: int, source: int, start: float, params: SwimParams, net: Network, rng: random.Random
) -> list[float]:
    """When each of ``n`` nodes (0..n-1) first hears news that ``source`` has at ``start``:
    push gossip with a retransmit limit, and for the few nodes that misses, a probe's reply.

    Dijkstra over the gossip graph: a node's sends depend only on when it heard, so taking
    nodes in the order they heard gives every node its earliest arrival."""
    heard = [math.inf] * n
    heard[source] = start
    done = [False] * n
    queue = [(start, source)]
    budget = params.retransmits(n)
    per_round = params.gossip_nodes
    interval = params.gossip_interval
    phases = [rng.random() * interval for _ in range(n)]
    while queue:
        when, node = heapq.heappop(queue)
        if done[node]:
            continue
        done[node] = True
        phase = phases[node]
        tick = phase + math.ceil((when - phase) / interval) * interval
        sent = 0
        while sent < budget:
            for _ in range(min(per_round, budget - sent)):
                sent += 1
                target = rng.randrange(n - 1)
                target += target >= node  # anyone but itself
                if done[target] or net.lost(rng):
                    continue
                arrival = tick + net.delay(rng)
                if arrival < heard[target]:
                    heard[target] = arrival
                    heapq.heappush(queue, (arrival, target))
            tick += interval
    _piggyback(heard, params, net, rng)
    return heard


def _piggyback(heard: list[float], params: SwimParams, net: Network, rng: random.Random) -> None:
    """Nodes the gossip rounds missed hear the news on a probe: each node pings one member
    per probe period and the reply piggybacks recent news. Taken from the node's first probe
    after half the others have heard (its target has heard by then, more likely than not);
    a probe whose ping or reply is lost tries again the next period, 50 times at most."""
    reached = sorted(t for t in heard if math.isfinite(t))
    if len(reached) < 2:
        return  # the source alone: nobody else can answer with the news
    half = reached[len(reached) // 2]
    interval = params.probe_interval
    for node, when in enumerate(heard):
        if math.isfinite(when):
            continue
        phase = rng.random() * interval
        tick = phase + math.ceil((half - phase) / interval) * interval
        for _ in range(50):
            if not (net.lost(rng) or net.lost(rng)):
                heard[node] = tick + 2 * net.delay(rng)
                break
            tick += interval


@dataclass(frozen=True, slots=True)
class Detection:
    """One death, in seconds from the ``kill``: the first suspicion, the dead declaration,
    and when each survivor had heard it (``heard``, survivors only)."""

    first_suspect_s: float
    dead_s: float
    heard: list[float]

    @property
    def all_heard_s(self) -> float:
        return max(self.heard)

    @property
    def median_heard_s(self) -> float:
        ordered = sorted(self.heard)
        return ordered[len(ordered) // 2]


def detect_death(
    n: int, params: SwimParams, net: Network, rng: random.Random, *, candidates: int = 12
) -> Detection:
    """Kill one member of a cluster of ``n`` at t = 0 and follow its detection.

    The survivors are 0..n-2. Probe times: each survivor reaches the victim in its shuffled
    walk at ``phase + interval x position``. The dead declaration is the earliest Lifeguard
    timer among the first ``candidates`` suspecters (the timers that start first; a later one
    starts later with the same confirmations). Each confirmation reaches a candidate after a
    dissemination delay drawn from one simulated spread at this ``n``."""
    if n < 2:
        raise ValueError("a death needs at least one survivor")
    survivors = n - 1
    interval = params.probe_interval
    suspects = sorted(
        rng.random() * interval + interval * rng.randrange(survivors) + interval
        for _ in range(survivors)
    )
    delays = [t for t in spread(survivors, 0, 0.0, params, net, rng)[1:] if math.isfinite(t)]
    first = suspects[0]
    dead = math.inf
    early = suspects[: min(candidates, survivors)]
    # Later suspecters than the candidates confirm too; their suspicion comes later still.
    later = suspects[len(early) : len(early) + params.expected_confirmations]
    fires = []
    for index, own in enumerate(early):
        heard_at = sorted(
            own if other == index else s + (rng.choice(delays) if delays else 0.0)
            for other, s in enumerate(early)
        )
        heard_at += [s + (rng.choice(delays) if delays else 0.0) for s in later]
        heard_at.sort()
        fires.append(_fires(heard_at, n, params))
    dead = min(fires)
    declarer = rng.randrange(survivors)
    heard = spread(survivors, declarer, dead, params, net, rng)
    # Every survivor that hears the suspicions runs a timer of its own (kinship's
    # docs/design.md: "both start T(C) timers"), so it declares the member dead at the
    # earlier of its own timer and the Dead gossip; the candidates' timers are their own.
    owners = dict(zip(rng.sample(range(survivors), len(early)), fires, strict=True))
    suspicions = early + later
    timeouts = [params.suspicion_timeout_s(n, c) for c in range(len(suspicions))]
    for node in range(survivors):
        own_fire = owners.get(node)
        if own_fire is None:
            lags = rng.choices(delays, k=len(suspicions)) if delays else [0.0] * len(suspicions)
            heard_at = sorted(map(sum, zip(suspicions, lags, strict=True)))
            own_fire = _fires(heard_at, n, params, timeouts)
        heard[node] = min(heard[node], own_fire)
    return Detection(first, dead, heard)


def _fires(
    heard_at: list[float], n: int, params: SwimParams, timeouts: list[float] | None = None
) -> float:
    """When a Lifeguard timer fires, given the times its node heard each independent
    suspicion (sorted; the first starts the timer, the others confirm). ``timeouts``: the
    timeout after each number of confirmations, when the caller computed them already."""
    if timeouts is None:
        timeouts = [params.suspicion_timeout_s(n, c) for c in range(len(heard_at))]
    start = heard_at[0]
    for confirmations, _ in enumerate(heard_at):
        fire = start + timeouts[confirmations]
        following = heard_at[confirmations + 1] if confirmations + 1 < len(heard_at) else math.inf
        if fire <= following:
            return fire
    return start + timeouts[len(heard_at) - 1]


PROBE_BYTES = 100
"""One probe datagram (ping or ack) on the wire: kinship's header and payload (sequence,
names), XChaCha20-Poly1305's nonce and tag, UDP and IP headers. An estimate."""


def probe_bytes_per_s(params: SwimParams) -> float:
    """What one node sends and receives per second in probes, whatever N: its own ping and
    the ack, and on average one ping of another node and its ack, per ``probe_interval``."""
    return 4.0 * PROBE_BYTES / params.probe_interval


def false_suspicion_ratio(params: SwimParams, loss: float) -> float:
    """The share of probes of a live node that fail on loss alone: the direct ping or its ack
    lost, and then each of the ``indirect`` indirect checks (four datagrams each) too. Such a
    suspicion is refuted by the live node once it hears of it (a gossip round or two), well
    within the shortest suspicion timeout; kinship's TCP fallback ping is left out, which
    errs on the high side."""
    direct = 1 - (1 - loss) ** 2
    return direct * (1 - (1 - loss) ** 4) ** INDIRECT_CHECKS


INDIRECT_CHECKS = 3
"""kinship 0.4.0 ``Config.lan().indirect_checks``."""


def push_pull_bytes_per_s(n: int, params: SwimParams, member_bytes: int) -> float:
    """What one node sends and receives per second in push-pull state syncs: each node opens
    one every ``push_pull_interval`` and is picked by one other on average, and each sync
    carries the whole member list both ways. (memberlist stretches the interval past 32
    members; kinship documents no such scaling, so none is assumed.)"""
    return 4.0 * n * member_bytes / params.push_pull_interval
