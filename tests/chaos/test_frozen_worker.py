"""Chaos scenario, frozen worker: a worker with every function warm is frozen (SIGSTOP) until
the others declare it dead and the master drops its routes, then resumed (SIGCONT), under a
steady load sent to the other nodes.

The worker comes back with the same run (kinship keeps the epoch and raises the incarnation)
and receives no event of its own death, so nothing but anti-entropy (control/digest.py) tells
it that the master lost its routes. The promise (issue 17): its functions are back in every
table (the master's and every replica's ``/v1/routes``) within 2 s of it being alive again,
the tables then equal the truth, and no request fails that was not in flight on it. The
victim's /metrics counts the repair (``tierfaas_anti_entropy_repairs_total``), recorded per
freeze with its rejected writes and its checks that waited or failed.

"Alive again" is when the master's membership holds the worker alive once more (the issue's
"alive and reachable"); the time from SIGCONT, which adds gossip's rejoin, is reported too.
The load stops sending to the worker before the freeze (a load balancer's health check would)
and sends to it again once it is back; calls it held, and calls a survivor had forwarded to
it, are the ones that were in flight on it.

Short (make test): 4 nodes, one freeze. Long (make chaos): a worker, then a replica (whose
copy must also catch up with what the master streamed meanwhile), then a worker again. Local
gossip preset (a pause of ~1.5 s is a death).
Addresses: 127.0.21.10-19.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path
from typing import Any

import pytest

from tests.chaos.cluster import ChaosCluster, Kill, get_json, wait_for
from tests.chaos.harness import account, chaos_mode, write_result
from tests.chaos.load import Load
from tierfaas.testing.nodes import NodeProcess, http_get

pytestmark = [pytest.mark.e2e, pytest.mark.chaos]

MODE = chaos_mode()
SIZE = 4
FREEZES = ("worker",) if MODE == "short" else ("worker", "replica", "worker")
BOUND_S = 2.0  # the bound, from the worker being alive again
MAX_FREEZE_S = 15.0  # a bound on the wait for the death, never the plan


def holders(cluster: ChaosCluster, frozen: str | None = None) -> list[dict[str, Any]]:
    """The ``/v1/routes`` of the master and every replica (``frozen`` is not asked)."""
    nodes = [n for n in cluster.live() if cluster.name_of(n) != frozen]
    tables = [get_json(node, "/v1/routes") for node in nodes]
    return [t for t in tables if t["role"] in ("master", "replica")]


def warm_on(cluster: ChaosCluster, name: str) -> set[str]:
    listing = get_json(cluster.nodes[name], "/v1/functions")
    return {f["name"] for f in listing["functions"] if f["instances"] > 0}


def routed(table: dict[str, Any], name: str) -> set[str]:
    return {f for f, names in table["routes"].items() if name in names}


def counter(node: NodeProcess, sample: str) -> float:
    """One sample of ``node``'s /metrics, e.g. ``tierfaas_anti_entropy_repairs_total``."""
    status, body = http_get(f"{node.url}/metrics")
    assert status == 200
    for line in body.decode().splitlines():
        if line.startswith(sample + " "):
            return float(line.split()[-1])
    return 0.0


ANTI_ENTROPY = {
    "repairs": "tierfaas_anti_entropy_repairs_total",
    "rejected": "tierfaas_writes_rejected_total",
    "waits": 'tierfaas_anti_entropy_checks_total{answer="wait"}',
    "failed_checks": 'tierfaas_anti_entropy_checks_total{answer="failed"}',
}


def state_at(cluster: ChaosCluster, master: str, victim: str) -> str | None:
    """``victim``'s state in ``master``'s membership (None: not a member, i.e. dead)."""
    members = cluster.view(cluster.nodes[master])["members"]
    return next((m["state"] for m in members if m["name"] == victim), None)


def master_holds_alive(cluster: ChaosCluster, master: str, victim: str) -> bool:
    return state_at(cluster, master, victim) == "alive"


def freeze_until_dropped(cluster: ChaosCluster, victim: str, master: str) -> tuple[float, float]:
    """SIGSTOP ``victim`` until no table routes to it, then SIGCONT; (stopped, continued)."""
    node = cluster.nodes[victim]
    node.signal(signal.SIGSTOP)
    stopped = time.monotonic()
    try:
        deadline = stopped + MAX_FREEZE_S
        while time.monotonic() < deadline:
            tables = holders(cluster, frozen=victim)
            dropped = tables and not any(routed(t, victim) for t in tables)
            if dropped and state_at(cluster, master, victim) is None:  # dead, not suspect
                break
            time.sleep(0.05)
        else:
            raise AssertionError(f"{victim} frozen {MAX_FREEZE_S} s and still routed to")
    finally:
        node.signal(signal.SIGCONT)
    return stopped, time.monotonic()


def freeze_once(
    cluster: ChaosCluster, load: Load, victim: str, role: str, master: str, label: str
) -> Any:
    """One freeze of ``victim``, measured (see the module docstring)."""
    warm = warm_on(cluster, victim)
    assert warm, f"{victim} has nothing warm"
    load.remove(victim)
    in_flight = set(load.in_flight_on(victim))
    node = cluster.nodes[victim]
    counted = {key: counter(node, sample) for key, sample in ANTI_ENTROPY.items()}
    stopped, continued = freeze_until_dropped(cluster, victim, master)
    # A Kill record (kind "node") excuses the calls that were in flight on the frozen worker.
    cluster.kills.append(Kill(label, [victim], [role], stopped, in_flight))
    departed = cluster.view(cluster.nodes[master])["departed"]
    declared = [d["reason"] for d in departed if d["name"] == victim]
    alive_at = wait_for(
        lambda: master_holds_alive(cluster, master, victim) and time.monotonic(),
        10,
        f"{master} to hold {victim} alive again",
    )

    def back() -> float | bool:
        return all(warm <= routed(t, victim) for t in holders(cluster)) and time.monotonic()

    back_at = wait_for(back, 10, f"{victim}'s {sorted(warm)} back in every table")
    # What the victim's /metrics says its anti-entropy did to get there.
    counted = {key: counter(node, sample) - counted[key] for key, sample in ANTI_ENTROPY.items()}
    cluster.wait_right(continued, 10)
    load.add(victim, cluster.nodes[victim].url)
    return {
        "victim": victim,
        "role": role,
        "functions": sorted(warm),
        "frozen_s": round(continued - stopped, 2),
        "declared": declared[-1] if declared else None,
        "rejoin_s": round(max(0.0, alive_at - continued), 2),
        "back_after_alive_s": round(max(0.0, back_at - alive_at), 2),
        "back_after_sigcont_s": round(back_at - continued, 2),
        "anti_entropy": counted,
    }


@pytest.mark.timeout(120 if MODE == "short" else 300)
def test_a_frozen_worker_is_back_in_every_table_within_2_s(tmp_path: Path) -> None:
    cluster = ChaosCluster(tmp_path, SIZE, subnet="127.0.21", first_host=10)
    load: Load | None = None
    freezes: list[dict[str, Any]] = []
    try:
        cluster.start()
        load = Load(cluster.urls()).start()
        time.sleep(2.0)  # the load has warmed functions on every node
        cluster.wait_right(time.monotonic(), 10)
        for round_, role in enumerate(FREEZES):
            roles = cluster.roles()
            master = next(n for n, r in roles.items() if r == "master")
            victim = sorted(n for n, r in roles.items() if r == role)[-1]
            label = f"SIGSTOP {role} (round {round_ + 1})"
            freezes.append(freeze_once(cluster, load, victim, role, master, label))
            time.sleep(1.0)
    finally:
        for node in cluster.live():
            node.signal(signal.SIGCONT)
        if load is not None:
            load.stop()
        cluster.close()

    runs = cluster.ledger()
    result, problems = account("frozen_worker", MODE, load.outcomes, cluster.kills, runs)
    result.recovery_s = max(f["back_after_alive_s"] for f in freezes)
    result.extra.update(nodes=SIZE, preset="local", freezes=freezes)
    result.notes = (
        f"{SIZE} nodes, local gossip preset, ~{load.rate:.0f} req/s to the other nodes. A node "
        f"with functions warm (in turn: {', '.join(FREEZES)}) is SIGSTOPped until the others "
        "declare it dead and no table routes to it, then SIGCONTed. recovery_s: from the master "
        "holding it alive again until its functions are back in the master's and every "
        "replica's table (bound 2 s); back_after_sigcont_s adds gossip's rejoin."
    )
    write_result(result)
    print(result)
    assert problems == [], "\n".join(problems[:30])
    for freeze in freezes:
        assert freeze["declared"] == "dead", freeze  # past the death timeout, not a leave
        assert freeze["back_after_alive_s"] <= BOUND_S, freeze
        # Its master did not change: only a repair brought its routes back, and /metrics says so.
        assert freeze["anti_entropy"]["repairs"] >= 1, freeze
