"""Scenario 1, crash: kill -9 a worker, a replica, the master, then the master and the replica
next in line at once, under a steady load sent round-robin to every node. Before those, the
same for one function instance and for the zygote of the node running the most instances,
which lives on: only the calls on the dead processes may fail, each with a typed 502
instance_crashed.

Per kill: the client stops sending to the victims just before (a load balancer's health check
would see them go), notes the ids it has in flight on them, and kills them. Only those calls,
and calls a survivor had forwarded to a victim (502 ``forward_failed`` naming it), may go
without a 2xx. Recovery is the time from the kill until every survivor agrees on the members
and roles and the master's and every replica's table equal what the nodes run (and name no
dead node). Each victim is then restarted (same address and name) before the next kill.

Short (make test): 5 nodes, the four kills once. Long (make chaos): 7 nodes, three rounds,
each ending with the master and every replica killed at once (4 of 7 nodes: a worker, which
holds no copy of the table, becomes master and rebuilds it from the nodes' announcements).
Addresses: 127.0.11.10-29.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.chaos.cluster import ChaosCluster
from tests.chaos.harness import account, chaos_mode, write_result
from tests.chaos.load import Load

pytestmark = [pytest.mark.e2e, pytest.mark.chaos]

MODE = chaos_mode()
SIZE, ROUNDS = (5, 1) if MODE == "short" else (7, 3)
STAGES = ["an instance", "a zygote", "worker", "replica", "master", "two at once"]
if MODE == "long":
    STAGES.append("master and every replica")  # 4 of 7: a worker becomes master
# Local preset: one death is seen everywhere in ~1.3 s and the tables follow within a batch
# window; several at once take longer (fewer peers confirm each suspicion: ~5.5 s for 4 of 7).
RECOVERY_BOUND_S = {1: 10.0, 2: 12.0, 4: 15.0}


def pick(cluster: ChaosCluster, stage: str) -> list[str]:
    """The victims of ``stage``, by role in the current (agreed) view."""
    ranked = [m["name"] for m in cluster.view(cluster.live()[0])["members"]]
    roles = cluster.roles()
    if stage == "busiest":  # the node running the most instances, whatever its role
        return [max(ranked, key=lambda n: len(cluster.session_processes(n)))]
    if stage == "worker":
        return [next(n for n in reversed(ranked) if roles[n] == "worker")]
    if stage == "replica":
        return [next(n for n in reversed(ranked) if roles[n] == "replica")]
    if stage == "master":
        return [ranked[0]]
    if stage == "master and every replica":
        return [n for n in ranked if roles[n] in ("master", "replica")]
    return ranked[:2]  # the master and the replica that would succeed it


@pytest.mark.timeout(120 if MODE == "short" else 600)
def test_kill_9_under_load_loses_only_calls_in_flight_on_the_victims(tmp_path: Path) -> None:
    cluster = ChaosCluster(tmp_path, SIZE, subnet="127.0.11", first_host=10)
    load: Load | None = None
    try:
        cluster.start()
        load = Load(cluster.urls()).start()
        time.sleep(2.0)  # every function warm on every node, the table settled
        cluster.wait_right(time.monotonic(), 10)
        for round_ in range(ROUNDS):
            for stage in STAGES:
                if stage in ("an instance", "a zygote"):  # the node lives on
                    kind = stage.split()[1]
                    victim = pick(cluster, "busiest")[0]
                    kill = cluster.kill_process(victim, kind, f"{stage} (round {round_ + 1})")
                    cluster.wait_right(kill.at, 20, kill)
                    time.sleep(1.0)
                    continue
                victims = pick(cluster, stage)
                for name in victims:
                    load.remove(name)
                in_flight = {rid for name in victims for rid in load.in_flight_on(name)}
                kill = cluster.kill(victims, f"{stage} (round {round_ + 1})", in_flight)
                cluster.wait_right(kill.at, 20, kill)
                for name in victims:
                    cluster.restart(name)
                for name in victims:
                    cluster.wait_ready(name)
                    load.add(name, cluster.nodes[name].url)
                rejoined = time.monotonic()
                cluster.wait_right(rejoined, 20)
                time.sleep(1.0)
        sent_before_stop = load.count()
    finally:
        if load is not None:
            load.stop()
        cluster.close()

    result, problems = account("crash", MODE, load.outcomes, cluster.kills, cluster.ledger())
    recoveries = [k.recovery_s for k in cluster.kills if k.recovery_s is not None]
    result.recovery_s = round(max(recoveries), 2)
    result.extra["nodes"] = SIZE
    result.extra["kills"] = len(cluster.kills)
    result.extra["preset"] = "local"
    result.notes = (
        f"{SIZE} nodes, local gossip preset, ~{load.rate:.0f} req/s round-robin straight to the "
        f"nodes ({load.workers} connections, 50 ms calls); {len(cluster.kills)} kills "
        f"({', '.join(STAGES)}; 'two at once' = the master and the replica next in line), "
        "each victim restarted after recovery. recovery_s: worst time from a kill until every "
        "survivor agrees on members and roles and every table equals the truth."
    )
    write_result(result)
    print(result)
    assert problems == [], "\n".join(problems[:30])
    assert sent_before_stop > 200 * ROUNDS  # the client ran throughout
    for kill in cluster.kills:
        assert kill.recovery_s is not None, kill
        assert kill.recovery_s < RECOVERY_BOUND_S[len(kill.victims)], kill
