"""Scenario: suspect replica. A worker's replica is frozen (SIGSTOP) until gossip suspects it;
while it is suspect, the worker's lookups go to another replica or the master within 100 ms
(``tierfaas.control.targets``) instead of waiting out two timeouts (~1.5 s) on it.

Every node trusts a route for 0.1 ms (``--route-cache-ttl-s 0.0001``), so each call the
worker gets is a lookup; the function is warm on another node only, so each call is looked up
and forwarded there (``--hot-forwards-per-s 0``: the worker never starts it itself). The
calls are sent one at a time to the worker: before the freeze (not suspect), then while its
replica is suspect in the worker's own view (polled before and after the phase), and their
latency (lookup + forward + a function that returns at once) bounds the lookup's. The
worker's ``tierfaas_route_lookup_seconds`` histogram counts the lookups that took longer
than 100 ms in each phase: none while suspect.

The ``lan`` gossip preset, the one a deployment uses: it suspects a frozen node within a
second or two and declares it dead only seconds later, a window long enough to measure in.
Short (make test): 200 calls per phase; long (make chaos): 1000, and the freeze is repeated
three times. Addresses: 127.0.16.10-14.
"""

from __future__ import annotations

import http.client
import json
import re
import signal
import statistics
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.chaos.cluster import ChaosCluster
from tests.chaos.harness import Mode, account, chaos_mode, write_result
from tests.chaos.load import Outcome
from tierfaas.testing.nodes import http_get

pytestmark = [pytest.mark.e2e, pytest.mark.chaos]

MODE: Mode = chaos_mode()
SIZE = 5
CALLS = 200 if MODE == "short" else 1000
FREEZES = 1 if MODE == "short" else 3
SUSPECT_PHASE_S = 2.0  # well inside the lan preset's window between suspect and dead
BOUND_S = 0.1  # the bound on a lookup while the replica is suspect
FUNCTION = "alpha"
_BUCKET = re.compile(r'tierfaas_route_lookup_seconds_bucket\{le="([^"]+)"\} (\S+)')
_FAILURES = re.compile(r"^tierfaas_route_lookup_failures_total (\S+)", re.MULTILINE)


class Caller:
    """Calls to one node over one keep-alive connection, one at a time."""

    def __init__(self, cluster: ChaosCluster, name: str, outcomes: list[Outcome]) -> None:
        self.name = name
        node = cluster.nodes[name]
        self.conn = http.client.HTTPConnection(node.host, node.port, timeout=10)
        self.outcomes = outcomes

    def call(self) -> Outcome:
        rid = f"suspect-{uuid.uuid4().hex[:16]}"
        sent = time.monotonic()
        try:
            self.conn.request("POST", f"/function/{FUNCTION}", b"0", {"x-request-id": rid})
            response = self.conn.getresponse()
            response.read()
            status, code = response.status, "" if response.status < 300 else "http_error"
            served_by = response.getheader("x-tierfaas-served-by")
        except (OSError, http.client.HTTPException) as exc:
            self.conn.close()
            status, code, served_by = 0, type(exc).__name__, None
        outcome = Outcome(
            rid, FUNCTION, self.name, sent, time.monotonic(), status, code, served_by=served_by
        )
        self.outcomes.append(outcome)
        return outcome


def member_state(cluster: ChaosCluster, observer: str, name: str) -> str | None:
    view = cluster.view(cluster.nodes[observer])
    return next((m["state"] for m in view["members"] if m["name"] == name), None)


def wait_state(
    cluster: ChaosCluster, observer: str, name: str, state: str, timeout: float
) -> float:
    """Seconds until ``observer`` sees ``name`` in ``state``."""
    began = time.monotonic()
    while time.monotonic() - began < timeout:
        if member_state(cluster, observer, name) == state:
            return time.monotonic() - began
        time.sleep(0.02)
    raise AssertionError(f"{observer} did not see {name} {state} within {timeout} s")


def wait_routes(cluster: ChaosCluster, name: str, warm_on: str, timeout: float = 10) -> None:
    """Until node ``name``'s table says FUNCTION is warm on ``warm_on``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        routes = json.loads(http_get(f"{cluster.nodes[name].url}/v1/routes")[1])["routes"]
        if warm_on in routes.get(FUNCTION, []):
            return
        time.sleep(0.05)
    raise AssertionError(f"{name}'s table never showed {FUNCTION} warm on {warm_on}")


def lookup_stats(cluster: ChaosCluster, name: str) -> tuple[dict[str, float], int]:
    """Node ``name``'s lookup histogram (bound -> lookups at most that long, "+Inf" all) and
    its failed lookups, so far."""
    body = http_get(f"{cluster.nodes[name].url}/metrics")[1].decode()
    failed = _FAILURES.search(body)
    return {le: float(n) for le, n in _BUCKET.findall(body)}, int(float(failed[1])) if failed else 0


def lookup_figures(
    before: tuple[dict[str, float], int], after: tuple[dict[str, float], int]
) -> dict[str, Any]:
    """The lookups between two ``lookup_stats``: how many, how many over BOUND_S, how many
    failed, and the histogram bucket bounds their median and p99 fall in."""
    diff = {le: after[0].get(le, 0.0) - before[0].get(le, 0.0) for le in after[0]}
    total = int(diff.get("+Inf", 0))
    bounds = sorted((float(le), n) for le, n in diff.items())

    def quantile(q: float) -> float | None:
        return next((b * 1000 for b, n in bounds if n >= q * total), None) if total else None

    return {
        "lookups": total,
        "lookups_over_100ms": total - int(diff.get(str(BOUND_S), 0)),
        "lookups_failed": after[1] - before[1],
        "lookup_median_le_ms": quantile(0.5),
        "lookup_p99_le_ms": quantile(0.99),
    }


def latencies(outcomes: list[Outcome]) -> dict[str, Any]:
    took = sorted(o.done - o.sent for o in outcomes)
    if not took:
        return {"calls": 0}
    return {
        "calls": len(took),
        "median_ms": round(statistics.median(took) * 1000, 2),
        "p99_ms": round(took[min(len(took) - 1, int(len(took) * 0.99))] * 1000, 2),
        "max_ms": round(took[-1] * 1000, 2),
    }


def phase(caller: Caller, cluster: ChaosCluster, calls: int, limit_s: float) -> dict[str, Any]:
    """Up to ``calls`` calls within ``limit_s``; their latencies and the slow lookups."""
    before = lookup_stats(cluster, caller.name)
    began, outcomes = time.monotonic(), list[Outcome]()
    while len(outcomes) < calls and time.monotonic() - began < limit_s:
        outcomes.append(caller.call())
    figures = lookup_figures(before, lookup_stats(cluster, caller.name))
    served = sorted({o.served_by or "?" for o in outcomes})
    return {
        **latencies(outcomes),
        **figures,
        "served_by": served,
        "failed": sum(not o.ok for o in outcomes),
    }


@pytest.mark.timeout(120 if MODE == "short" else 300)
def test_lookups_skip_a_suspect_replica(tmp_path: Path) -> None:
    cluster = ChaosCluster(
        tmp_path,
        SIZE,
        subnet="127.0.16",
        first_host=10,
        preset="lan",
        # Every call a lookup; and no hot-function start on the worker (it forwards hundreds
        # of calls a second to one node, which would otherwise start the function there).
        extra_args=("--route-cache-ttl-s", "0.0001", "--hot-forwards-per-s", "0"),
    )
    phases: list[dict[str, Any]] = []
    outcomes: list[Outcome] = []
    frozen: str | None = None
    try:
        formed = cluster.start().wait_formed(10)
        members = cluster.view(cluster.live()[0])["members"]
        worker = next(m for m in members if m["role"] == "worker")
        replica = worker["replica"]
        # The function is warm on another replica only: the worker looks it up on every call
        # and forwards it there.
        warm_on = next(
            m["name"] for m in members if m["role"] == "replica" and m["name"] != replica
        )
        assert Caller(cluster, warm_on, outcomes).call().served_by == warm_on
        for name in (formed[0], replica):  # registered, and replicated to the worker's replica
            wait_routes(cluster, name, warm_on)
        caller = Caller(cluster, worker["name"], outcomes)
        deadline = time.monotonic() + 10
        while caller.call().served_by != warm_on:  # the worker's lookups find it there
            assert time.monotonic() < deadline, "the worker never found the function warm"
            time.sleep(0.05)
        for round_ in range(FREEZES):
            normal = phase(caller, cluster, CALLS, 30.0)
            frozen = replica
            cluster.nodes[replica].signal(signal.SIGSTOP)
            suspected_after = wait_state(cluster, worker["name"], replica, "suspect", 15)
            suspect = phase(caller, cluster, CALLS, SUSPECT_PHASE_S)
            still = member_state(cluster, worker["name"], replica)
            cluster.nodes[replica].signal(signal.SIGCONT)
            frozen = None
            wait_state(cluster, worker["name"], replica, "alive", 15)
            phases.append(
                {
                    "round": round_ + 1,
                    "worker": worker["name"],
                    "replica": replica,
                    "warm_on": warm_on,
                    "suspected_after_s": round(suspected_after, 2),
                    "still_suspect_after_phase": still == "suspect",
                    "not_suspect": normal,
                    "suspect": suspect,
                }
            )
            time.sleep(1.0)
    finally:
        if frozen is not None:
            cluster.nodes[frozen].signal(signal.SIGCONT)
        cluster.close()

    result, problems = account("suspect_replica", MODE, outcomes, [], cluster.ledger())
    worst = max(phases, key=lambda p: p["suspect"].get("p99_ms", 0.0))
    result.extra.update(nodes=SIZE, preset="lan", phases=phases)
    result.notes = (
        f"{SIZE} nodes, lan preset; a worker's replica SIGSTOPped until suspect, "
        f"{FREEZES}x. Calls to the worker, each a lookup + forward: while suspect median "
        f"{worst['suspect']['median_ms']} ms / p99 {worst['suspect']['p99_ms']} ms "
        f"(not suspect: {worst['not_suspect']['median_ms']} / "
        f"{worst['not_suspect']['p99_ms']} ms). The lookups alone (histogram buckets) while "
        f"suspect: median <= {worst['suspect']['lookup_median_le_ms']} ms, p99 <= "
        f"{worst['suspect']['lookup_p99_le_ms']} ms; over 100 ms: "
        f"{sum(p['suspect']['lookups_over_100ms'] for p in phases)}, failed: "
        f"{sum(p['suspect']['lookups_failed'] for p in phases)}."
    )
    write_result(result)
    print(result)
    assert problems == [], "\n".join(problems[:30])
    assert result.ok == result.sent
    for p in phases:
        assert p["still_suspect_after_phase"], p  # measured while suspect, not after
        assert p["suspect"]["calls"] >= 20, p
        assert p["suspect"]["lookups_over_100ms"] == 0, p
        assert p["suspect"]["p99_ms"] < BOUND_S * 1000, p
        assert p["suspect"]["lookups_failed"] == 0, p
        # Every call was looked up and forwarded to where the function is warm (a failed or
        # empty lookup would have started it on the worker, which then looks up no more).
        assert p["suspect"]["served_by"] == p["not_suspect"]["served_by"] == [p["warm_on"]], p
        assert p["suspect"]["lookups"] >= 20, p
