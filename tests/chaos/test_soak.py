"""Scenario 5, soak: a steady load while a random node is killed (-9) and restarted every
PERIOD seconds.

Nothing may go unanswered but calls in flight on a killed process, every answered call ran
exactly once, and the nodes that live through the whole soak do not grow: their RSS and open
file descriptors, sampled every 2 s, stay within the bounds below of their value at the end of
the warm-up (the first kill cycle plus 10 s: instances started, connection pools filled,
allocator arenas grown). The two nodes started last are never killed, so there are always
long-lived runs to measure; as the others die and come back younger, those two climb the
ranks (worker -> replica -> master), so the measure covers role changes too.

Short (make test): 5 nodes, 30 s, a kill every 8 s. Long (make chaos): 6 nodes, 10 min, a
kill every 30 s. Addresses: 127.0.13.10-29.
"""

from __future__ import annotations

import os
import random
import time
from pathlib import Path
from typing import Any

import pytest

from tests.chaos.cluster import ChaosCluster, open_fds, rss_kib
from tests.chaos.harness import account, chaos_mode, write_result
from tests.chaos.load import Load

pytestmark = [pytest.mark.e2e, pytest.mark.chaos]

MODE = chaos_mode()
SIZE, DURATION_S, PERIOD_S = (5, 30.0, 8.0) if MODE == "short" else (6, 600.0, 30.0)
SEED = int(os.environ.get("TIERFAAS_CHAOS_SEED", "8"))
# Growth allowed over the soak, from the end of the warm-up to the end. See the module doc
# and docs/reliability.md for why these values.
RSS_BOUND_MIB = 10.0
FD_BOUND = 16


def sample(cluster: ChaosCluster, names: list[str], into: dict[str, list[tuple[float, int, int]]]):
    for name in names:
        node = cluster.nodes[name]
        try:
            into.setdefault(name, []).append(
                (time.monotonic(), rss_kib(node.pid), open_fds(node.pid))
            )
        except OSError:
            pass


@pytest.mark.timeout(180 if MODE == "short" else 1200)
def test_soak_with_a_kill_and_restart_every_period(tmp_path: Path) -> None:
    rng = random.Random(SEED)
    cluster = ChaosCluster(tmp_path, SIZE, subnet="127.0.13", first_host=10)
    load: Load | None = None
    samples: dict[str, list[tuple[float, int, int]]] = {}
    try:
        cluster.start()
        names = list(cluster.nodes)
        observed = names[-2:]  # started last: never killed
        killable = names[:-2]
        load = Load(cluster.urls()).start()
        began = time.monotonic()
        ends = began + DURATION_S
        next_kill = began + PERIOD_S
        warm_until: float | None = None
        while time.monotonic() < ends:
            sample(cluster, observed, samples)
            if time.monotonic() >= next_kill:
                victim = rng.choice(killable)
                load.remove(victim)
                kill = cluster.kill([victim], "soak", set(load.in_flight_on(victim)))
                kill.label = f"{kill.roles[0]} at {kill.at - began:.0f} s"
                cluster.wait_right(kill.at, 20, kill)
                cluster.restart(victim)
                cluster.wait_ready(victim)
                load.add(victim, cluster.nodes[victim].url)
                next_kill += PERIOD_S
                if warm_until is None:
                    warm_until = time.monotonic() + 10.0
            time.sleep(2.0)
        sample(cluster, observed, samples)
        cluster.wait_right(time.monotonic(), 20)
        processes = {n: len(cluster.session_processes(n)) for n in cluster.nodes}
        roles = cluster.roles()
        observed_roles = {n: roles.get(n) for n in observed}
    finally:
        if load is not None:
            load.stop()
        cluster.close()

    result, problems = account("soak", MODE, load.outcomes, cluster.kills, cluster.ledger())
    growth = growth_of(samples, warm_until or began)
    recoveries = [k.recovery_s for k in cluster.kills if k.recovery_s is not None]
    result.recovery_s = round(max(recoveries), 2)
    result.extra.update(
        nodes=SIZE,
        duration_s=DURATION_S,
        kill_period_s=PERIOD_S,
        seed=SEED,
        preset="local",
        kills=len(cluster.kills),
        recovery_median_s=round(sorted(recoveries)[len(recoveries) // 2], 2),
        growth=growth,
        bounds={"rss_mib": RSS_BOUND_MIB, "fds": FD_BOUND},
        processes_per_node_at_end=processes,
        never_killed_roles_at_end=observed_roles,
    )
    worst_rss = max(g["rss_growth_mib"] for g in growth.values())
    worst_fds = max(g["fd_growth"] for g in growth.values())
    result.notes = (
        f"{SIZE} nodes, local preset, ~{load.rate:.0f} req/s for {DURATION_S:.0f} s; a random "
        f"node kill -9'd and restarted every {PERIOD_S:.0f} s ({len(cluster.kills)} kills). "
        f"Two never-killed nodes: RSS growth <= {worst_rss:.1f} MiB (bound {RSS_BOUND_MIB:.0f}), "
        f"fds <= {worst_fds:+d} (bound {FD_BOUND})."
    )
    write_result(result)
    print(result)
    assert problems == [], "\n".join(problems[:30])
    for name, g in growth.items():
        assert g["rss_growth_mib"] <= RSS_BOUND_MIB, (name, g)
        assert g["fd_growth"] <= FD_BOUND, (name, g)
    # Bounded process count per node: the node, its zygote, at most 7 instances (3 functions
    # x 2 + delta x 1).
    assert all(count <= 9 for count in processes.values()), processes


def growth_of(
    samples: dict[str, list[tuple[float, int, int]]], warm_until: float
) -> dict[str, dict[str, Any]]:
    """Per node: RSS and fds at the end of the warm-up, at the end, the growth, the peak."""
    out = {}
    for name, rows in samples.items():
        after = [r for r in rows if r[0] >= warm_until] or rows[-1:]
        base, last = after[0], after[-1]
        out[name] = {
            "rss_base_mib": round(base[1] / 1024, 1),
            "rss_end_mib": round(last[1] / 1024, 1),
            "rss_peak_mib": round(max(r[1] for r in after) / 1024, 1),
            "rss_growth_mib": round((last[1] - base[1]) / 1024, 1),
            "fds_base": base[2],
            "fds_end": last[2],
            "fds_peak": max(r[2] for r in after),
            "fd_growth": last[2] - base[2],
        }
    return out
