"""A real cluster of 10 to 40 nodes, each in its own network namespace (issue 22, point 2).

    .venv/bin/python benchmarks/netns_cluster.py                 # N = 10, 20, 40, lan, 3 trials
    .venv/bin/python benchmarks/netns_cluster.py --quick         # N = 10, lan, 1 trial, < 60 s
    # --sizes 10,40  --presets lan,local  --trials T  --loss P (% of packets between nodes)
    # --idle S (the quiet window), --markdown, --keep-logs
    .venv/bin/python benchmarks/netns_cluster.py --report RESULTS.json... --markdown

Needs root, ``ip netns`` and ``nft`` (``tierfaas.testing.netns``, the chaos suite's fabric):
every node gets a namespace, a real address on one bridge (10.231.S.11...), its own ports
(HTTP 8080, gossip 7946, control 7947), a cluster key, and the test release; ``--loss`` drops
that share of the packets between nodes with nftables (``numgen random``) for the whole run.
The benchmark's client is the root namespace (10.231.S.1), never cut off.

Measured for each size and gossip preset, in this order on one cluster:

1. *idle*: once every node agrees (same master, replicas and assignment, N members) and has
   settled, nobody calls anything for ``--idle`` seconds; each node's CPU (the node and its
   zygote, utime + stime from /proc) over that window, and its RSS at the end;
2. *registration*: a function warm nowhere is called on a worker; from the call's send until
   the master and every replica list it in ``/v1/routes`` (each polled every 20 ms): the
   table's convergence for one new registration, its cold start included (the warm event
   comes before the answer, so the answer is no better start). Workers hold no table: a
   worker's lookup asks its replica (and the master on a miss), so the holders' convergence
   is the cluster's;
3. *warm ratio*: a bounded loop of ``CALLS_PER_NODE x N`` calls, ``IN_FLIGHT`` at a time, to
   the few functions of ``FUNCTIONS`` on every node in turn (seeded order); the share answered
   by a warm instance (``x-tierfaas-route`` local-warm or forwarded-warm);
4. *failover* (``--trials`` times): ``kill -9`` of the master's process group; every survivor's
   ``/v1/cluster`` polled every ``poll_s(N)``: when the victim is first seen suspect and first
   seen gone (by any survivor: the gossip's detection), when every survivor names the same new
   master (the issue's *agreement*), then when the master's and every replica's table equal
   the truth (each survivor's warm functions from ``/v1/functions``) at the master's lineage
   and version (the simulator's *consistent table*). The next try kills the new master of
   the survivors (N, N - 1, N - 2 nodes): restarting the victim would give the same N, but 40
   rejoins on a loaded machine take minutes and bring false deaths of their own.

Beside each measured row, ``_calibration.py`` runs the simulator's models (``_swim.py`` and
``scale.failover``) at the same N and preset, and the comparison is printed (the issue's
target: within 25 % at 40 nodes). Results: tables on stdout, benchmarks/results/netns_cluster.json.

Load matters: 40 Python nodes on 2 shared cores are CPU-bound when anything else runs; the
load average is recorded before and after each configuration.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import random
import re
import shutil
import signal
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import aiohttp

import _calibration
import _common as c
from tierfaas.keys import KEY_ENV, generate_key
from tierfaas.testing import netns
from tierfaas.testing.cluster import agreement

TESTREL = c.REPO_ROOT / "tests" / "fixtures" / "testrel"
HTTP, GOSSIP = 8080, 7946
FUNCTIONS = ["echo", "asyncecho", "pkgfn", "ctx", "jsonval"]
"""Cheap functions of the test release; the first ``--trials`` of them also serve the
registration trials (warm nowhere before)."""
CALLS_PER_NODE = 20
IN_FLIGHT = 8
POLL_PER_NODE_S = 1 / 160
"""Each survivor's /v1/cluster is read every ``poll_s(N)`` during a failover (0.1 s up to 16
nodes, 0.25 s at 40): ~160 requests/s in all, a small share of the 2 cores that the nodes
need to probe on time; the figures are late by up to one interval."""


def poll_s(size: int) -> float:
    return max(0.1, size * POLL_PER_NODE_S)


TABLE_POLL_S = 0.02
REQUEST_TIMEOUT_S = 5.0
SEEDS = 3
GOSSIP_COUNTER = "gossip_udp"
PROBE_WINDOW_S = 3.0


def datagram_rate(packets: int, seconds: float, size: int) -> float:
    """Gossip datagrams each node sends per second. In a quiet cluster each probe is a ping
    and its ack (gossip rounds carry only news), so 2 / ``probe_interval`` (2/s under ``lan``);
    more means news keeps flowing: suspicions of busy nodes, their refutations, metadata."""
    return packets / size / seconds


@dataclass(frozen=True)
class Settings:
    sizes: list[int]
    presets: list[str]
    trials: int
    idle_s: float
    loss: int
    stagger_s: float = 0.1
    form_timeout_s: float = 180.0
    failover_timeout_s: float = 60.0


# -- the cluster ----------------------------------------------------------------------------


class Cluster:
    """``size`` nodes on a fresh fabric; ``close()`` (also on Ctrl-C or an error) kills every
    process in its namespaces and deletes them."""

    def __init__(self, size: int, preset: str, log_dir: Path) -> None:
        self.size = size
        self.preset = preset
        self.fabric = netns.Fabric("b", size)
        self.log_dir = log_dir
        self.key = generate_key()
        self.nodes: list[netns.NetnsNode] = []

    def name(self, index: int) -> str:
        return f"n{index + 1}"

    def index_of(self, name: str) -> int:
        return int(name[1:]) - 1

    def url(self, index: int) -> str:
        return f"http://{self.fabric.addresses[index]}:{HTTP}"

    def start(self, stagger_s: float) -> None:
        """Builds the fabric and starts every node, oldest first (they rank in that order)."""
        began = time.monotonic()
        self.fabric.up()
        self.fabric.count(GOSSIP_COUNTER, f"udp dport {GOSSIP}")
        seeds = ",".join(f"{a}:{GOSSIP}" for a in self.fabric.addresses[:SEEDS])
        for i, address in enumerate(self.fabric.addresses):
            args = [
                "--name", self.name(i),
                "--gossip", f"{address}:{GOSSIP}",
                "--join", seeds,
                "--gossip-preset", self.preset,
            ]  # fmt: skip
            node = netns.NetnsNode(
                self.fabric,
                i,
                release=TESTREL,
                port=HTTP,
                extra_args=args,
                log_path=self.log_dir / f"{self.name(i)}.log",
                env={KEY_ENV: self.key},
            )
            self.nodes.append(node.start(wait=False))
            time.sleep(stagger_s)
        elapsed = time.monotonic() - began
        print(f"  fabric and {self.size} nodes started in {elapsed:.1f} s", flush=True)

    async def wait_healthy(self, session: aiohttp.ClientSession, timeout_s: float) -> None:
        """Until every node answers /healthz (each asked with a long timeout: 40 nodes
        importing at once on 2 cores answer slowly), or one has exited."""
        deadline = time.monotonic() + timeout_s
        waiting = set(range(self.size))
        while waiting and time.monotonic() < deadline:
            for i in waiting:
                process = self.nodes[i].process
                if process is not None and process.poll() is not None:
                    raise RuntimeError(f"{self.name(i)} exited: {self.nodes[i].log_tail(1500)}")
            answers = await asyncio.gather(
                *(get_json(session, f"{self.url(i)}/healthz") for i in sorted(waiting))
            )
            waiting -= {i for i, a in zip(sorted(waiting), answers, strict=True) if a}
            await asyncio.sleep(0.2)
        if waiting:
            names = [self.name(i) for i in sorted(waiting)]
            raise TimeoutError(f"{names} not healthy after {timeout_s:g} s")

    def close(self) -> None:
        for node in self.nodes:
            with contextlib.suppress(Exception):
                node.discard()
        self.fabric.down()


def new_session() -> aiohttp.ClientSession:
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=0, limit_per_host=4),
        timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S),
    )


async def get_json(session: aiohttp.ClientSession, url: str) -> Any:
    """The JSON of a 200 answer, or None (any error: the node may be busy or dead)."""
    try:
        async with session.get(url) as response:
            if response.status != 200:
                return None
            return json.loads(await response.read())
    except (aiohttp.ClientError, TimeoutError, OSError, ValueError):
        return None


async def views(
    session: aiohttp.ClientSession, cluster: Cluster, indexes: Sequence[int]
) -> list[Any]:
    return await asyncio.gather(
        *(get_json(session, f"{cluster.url(i)}/v1/cluster") for i in indexes)
    )


async def wait_agreed(
    session: aiohttp.ClientSession, cluster: Cluster, indexes: Sequence[int], timeout_s: float
) -> tuple[Any, dict[str, Any]]:
    """Until every node of ``indexes`` gives the same ``agreement`` naming exactly those nodes,
    every one alive; returns it and one view."""
    deadline = time.monotonic() + timeout_s
    names = {cluster.name(i) for i in indexes}
    last: Any = None
    while time.monotonic() < deadline:
        seen = await views(session, cluster, indexes)
        if all(v is not None and v.get("joined") for v in seen):
            keys = {agreement(v) for v in seen}
            members = {m["name"] for m in seen[0]["members"] if m["state"] == "alive"}
            last = (len(keys), sorted(names ^ members))
            if len(keys) == 1 and members == names and seen[0]["master"] is not None:
                return keys.pop(), seen[0]
        await asyncio.sleep(0.25)
    raise TimeoutError(f"{len(indexes)} nodes did not agree in {timeout_s:g} s: {last}")


def holders(view: dict[str, Any]) -> list[str]:
    """The nodes that hold a table: the master and the replicas."""
    return [m["name"] for m in view["members"] if m["role"] in ("master", "replica")]


# -- 1. idle ---------------------------------------------------------------------------------


_SUSPECTS = re.compile(r'^tierfaas_membership_events_total\{event="MemberSuspect"\} (\S+)$', re.M)


async def suspicions(session: aiohttp.ClientSession, cluster: Cluster) -> int:
    """MemberSuspect events seen so far, summed over every node (its /metrics)."""
    total = 0.0
    for i in range(cluster.size):
        try:
            async with session.get(f"{cluster.url(i)}/metrics") as response:
                found = _SUSPECTS.search((await response.read()).decode())
        except (aiohttp.ClientError, TimeoutError, OSError):
            continue
        total += float(found[1]) if found else 0.0
    return int(total)


async def measure_idle(
    session: aiohttp.ClientSession, cluster: Cluster, seconds: float
) -> dict[str, Any]:
    """CPU of each node (process and zygote) over a quiet window, and RSS at its end; the
    gossip datagrams and the suspicions raised meanwhile (read around it, not in it)."""
    pids = [node.pid for node in cluster.nodes]
    suspected = await suspicions(session, cluster)
    before = [c.tree_cpu_seconds(pid) for pid in pids]
    packets = cluster.fabric.counted(GOSSIP_COUNTER)
    began = time.monotonic()
    await asyncio.sleep(seconds)
    elapsed = time.monotonic() - began
    packets = cluster.fabric.counted(GOSSIP_COUNTER) - packets
    after = [c.tree_cpu_seconds(pid) for pid in pids]
    suspected = await suspicions(session, cluster) - suspected
    cpu = [(b - a) / elapsed for a, b in zip(before, after, strict=True)]
    node_rss = [_rss_mib(pid) for pid in pids]
    tree_rss = [sum(_rss_mib(p) for p in c.process_tree(pid)) for pid in pids]
    return {
        "window_s": elapsed,
        "cpu_share": c.summarize(cpu),
        "cpu_share_total": sum(cpu),
        "node_rss_mib": c.summarize(node_rss),
        "tree_rss_mib": c.summarize(tree_rss),
        "tree_processes": statistics.median(len(c.process_tree(pid)) for pid in pids),
        "gossip_datagrams": packets,
        "suspicions": suspected,
        "datagrams_per_node_s": datagram_rate(packets, elapsed, cluster.size),
    }


def _rss_mib(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


# -- 2. one registration ---------------------------------------------------------------------


async def measure_registration(
    session: aiohttp.ClientSession, cluster: Cluster, function: str, caller: int
) -> dict[str, Any]:
    """Calls ``function`` (warm nowhere) on node ``caller``, polling the caller's
    ``/v1/functions`` and every holder's ``/v1/routes`` from the moment the call is sent; the
    convergence is from the instance first seen warm on the caller (its warm event, which
    comes before the call's answer) until the master and every replica list it."""
    view = await get_json(session, f"{cluster.url(caller)}/v1/cluster")
    tables = holders(view)
    seen: dict[str, float] = {}
    warm_at: list[float] = []
    done = asyncio.Event()
    began = time.monotonic()

    async def watch_caller() -> None:
        while not warm_at and not done.is_set():
            listing = await get_json(session, f"{cluster.url(caller)}/v1/functions")
            now = time.monotonic() - began
            if listing is not None and any(
                f["name"] == function and f["instances"] > 0 for f in listing["functions"]
            ):
                warm_at.append(now)
            await asyncio.sleep(TABLE_POLL_S)

    async def watch(name: str) -> None:
        url = f"{cluster.url(cluster.index_of(name))}/v1/routes"
        while not done.is_set():
            table = await get_json(session, url)
            if table is not None and function in table["routes"]:
                seen[name] = time.monotonic() - began
                return
            await asyncio.sleep(TABLE_POLL_S)

    watchers = [asyncio.create_task(watch_caller())]
    watchers += [asyncio.create_task(watch(name)) for name in tables]
    try:
        async with session.post(f"{cluster.url(caller)}/function/{function}", data=b"hi") as r:
            await r.read()
            status, route = r.status, r.headers.get("x-tierfaas-route", "")
            served_by = r.headers.get("x-tierfaas-served-by", "")
        answered = time.monotonic() - began
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.gather(*watchers[1:]), 30.0)
    finally:
        done.set()
        await asyncio.gather(*watchers, return_exceptions=True)
    last = max(seen.values()) if len(seen) == len(tables) else None
    return {
        "function": function,
        "caller": cluster.name(caller),
        "status": status,
        "route": route,
        "served_by": served_by,
        "answered_s": answered,
        "warm_seen_s": warm_at[0] if warm_at else None,
        "holders": len(tables),
        "per_holder_s": seen,
        "all_from_send_s": last,
    }


# -- 3. warm ratio ---------------------------------------------------------------------------


async def measure_warm(
    session: aiohttp.ClientSession, cluster: Cluster, calls: int, seed: int
) -> dict[str, Any]:
    """``calls`` calls spread over every node and ``FUNCTIONS``, ``IN_FLIGHT`` at a time."""
    rng = random.Random(seed)
    plan = [(i % cluster.size, rng.choice(FUNCTIONS)) for i in range(calls)]
    rng.shuffle(plan)
    routes: Counter[str] = Counter()
    failures: Counter[str] = Counter()
    latencies: list[float] = []
    todo = iter(plan)

    async def worker() -> None:
        for index, function in todo:
            began = time.monotonic()
            try:
                url = f"{cluster.url(index)}/function/{function}"
                async with session.post(url, data=b"x") as reply:
                    await reply.read()
                    ok = reply.status == 200
                    routes[reply.headers.get("x-tierfaas-route", "?") if ok else "error"] += 1
                    if not ok:
                        failures[f"http {reply.status}"] += 1
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                routes["error"] += 1
                failures[type(exc).__name__] += 1
            latencies.append(time.monotonic() - began)

    began = time.monotonic()
    await asyncio.gather(*(worker() for _ in range(IN_FLIGHT)))
    elapsed = time.monotonic() - began
    answered = sum(v for k, v in routes.items() if k != "error")
    warm = sum(v for k, v in routes.items() if k.endswith("-warm"))
    return {
        "calls": calls,
        "elapsed_s": elapsed,
        "routes": dict(routes),
        "warm_ratio": c.ratio(warm, answered),
        "errors": routes["error"],
        "failures": dict(failures),
        "latency_ms": c.summarize(latencies, 1e3),
    }


# -- 4. failover -----------------------------------------------------------------------------


@dataclass
class Failover:
    victim: str
    n: int  # live nodes before the kill
    poll_s: float  # each survivor's view read this often
    datagrams_per_node_s: float = math.nan  # over PROBE_WINDOW_S before the kill
    first_suspect_s: float | None = None  # some survivor shows the victim suspect
    first_gone_s: float | None = None  # some survivor no longer lists it (declared dead)
    all_gone_s: float | None = None  # no survivor lists it
    agreement_s: float | None = None  # every survivor names the same new master
    full_agreement_s: float | None = None  # same master, replicas, assignment, N - 1 members
    table_s: float | None = None  # master and replicas: the truth, at the master's version
    new_master: str | None = None
    per_node_master_s: dict[str, float] = field(default_factory=dict)
    other_masters: list[str] = field(default_factory=list)  # a master other than the last
    polls: int = 0
    failed_polls: int = 0
    tables_why: str = ""
    on_lineage_s: dict[str, float] = field(default_factory=dict)  # holder -> on the new lineage


class Watch:
    """What the survivors' views say after the kill, as the polls come in: feeds a
    ``Failover`` and says when every survivor agrees."""

    def __init__(self, result: Failover, survivors: int) -> None:
        self.result = result
        self.survivors = survivors
        self.latest: dict[str, tuple[Any, ...]] = {}  # survivor -> its agreement()
        self.lists_victim: dict[str, bool] = {}  # survivor -> the victim alive or suspect

    def saw(self, name: str, view: dict[str, Any], now: float) -> bool:
        """Takes ``name``'s view at ``now`` (s after the kill); True once all agree."""
        r = self.result
        states = {m["name"]: m["state"] for m in view["members"]}
        state = states.get(r.victim)
        if state == "suspect" and r.first_suspect_s is None:
            r.first_suspect_s = now
        self.lists_victim[name] = state in ("alive", "suspect")
        if not self.lists_victim[name] and r.first_gone_s is None:
            r.first_gone_s = now
        complete = len(self.lists_victim) == self.survivors
        if complete and r.all_gone_s is None and not any(self.lists_victim.values()):
            r.all_gone_s = now
        key = agreement(view)
        self.latest[name] = key
        if key[0] not in (r.victim, None):
            r.per_node_master_s.setdefault(name, now)
        if len(self.latest) < self.survivors:
            return False
        masters = {k[0] for k in self.latest.values()}
        if r.agreement_s is None and len(masters) == 1 and r.victim not in masters:
            r.agreement_s = now
            r.new_master = key[0]
        one = len(set(self.latest.values())) == 1
        if r.full_agreement_s is None and one and key[3] == self.survivors and key[0] != r.victim:
            r.full_agreement_s = now
        return r.agreement_s is not None and r.full_agreement_s is not None


async def measure_failover(
    session: aiohttp.ClientSession, cluster: Cluster, live: Sequence[int], timeout_s: float
) -> Failover:
    """kill -9 of the master of the ``live`` nodes; see the module's docstring, point 4."""
    _, before = await wait_agreed(session, cluster, live, 60.0)
    victim = before["master"]
    survivors = [i for i in live if cluster.name(i) != victim]
    result = Failover(victim=victim, n=len(live), poll_s=poll_s(len(live)))
    packets = cluster.fabric.counted(GOSSIP_COUNTER)
    await asyncio.sleep(PROBE_WINDOW_S)
    packets = cluster.fabric.counted(GOSSIP_COUNTER) - packets
    result.datagrams_per_node_s = datagram_rate(packets, PROBE_WINDOW_S, len(live))
    watch = Watch(result, len(survivors))
    agreed = asyncio.Event()
    t0 = time.monotonic()
    cluster.nodes[cluster.index_of(victim)].kill()  # SIGKILL to its group (zygote, instances)

    async def poll(index: int) -> None:
        while not agreed.is_set():
            view = await get_json(session, f"{cluster.url(index)}/v1/cluster")
            result.polls += 1
            if view is None:
                result.failed_polls += 1
            elif watch.saw(cluster.name(index), view, time.monotonic() - t0):
                agreed.set()
            if not agreed.is_set():
                await asyncio.sleep(poll_s(len(live)))

    tasks = [asyncio.create_task(poll(i)) for i in survivors]
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(agreed.wait(), timeout_s)
    agreed.set()
    await asyncio.gather(*tasks, return_exceptions=True)
    if result.full_agreement_s is None:
        return result
    deadline = t0 + timeout_s
    while time.monotonic() < deadline:
        why = await tables_wrong(session, cluster, survivors, victim, result, t0)
        if why is None:
            result.table_s = time.monotonic() - t0
            break
        result.tables_why = why
        await asyncio.sleep(TABLE_POLL_S)
    return result


async def tables_wrong(
    session: aiohttp.ClientSession,
    cluster: Cluster,
    survivors: Sequence[int],
    victim: str,
    result: Failover,
    t0: float,
) -> str | None:
    """None when the master's and every replica's table equal the truth (each survivor's warm
    functions) at the master's lineage and version and name no dead node; else what is wrong.
    Notes in ``result.on_lineage_s`` when each holder first holds the new master's lineage."""
    view = await get_json(session, f"{cluster.url(survivors[0])}/v1/cluster")
    if view is None:
        return "no view"
    names = holders(view)
    tables = await asyncio.gather(
        *(get_json(session, f"{cluster.url(cluster.index_of(n))}/v1/routes") for n in names)
    )
    if any(t is None for t in tables):
        return "a holder did not answer"
    masters = [t for t in tables if t["role"] == "master"]
    if len(masters) != 1:
        return f"{len(masters)} masters among the holders"
    position = (masters[0]["lineage"], masters[0]["version"])
    for table in tables:
        if table["lineage"] == position[0]:
            result.on_lineage_s.setdefault(table["node"], time.monotonic() - t0)
    for table in tables:
        if (table["lineage"], table["version"]) != position:
            return f"{table['node']} at {table['version']}, master at {position[1]}"
        if any(victim in nodes for nodes in table["routes"].values()):
            return f"{table['node']} routes to the dead {victim}"
    listings = await asyncio.gather(
        *(get_json(session, f"{cluster.url(i)}/v1/functions") for i in survivors)
    )
    truth: dict[str, list[str]] = {}
    for listing in listings:
        if listing is None:
            return "a survivor did not list its functions"
        for function in listing["functions"]:
            if function["instances"] > 0:
                truth.setdefault(function["name"], []).append(listing["node"])
    real = {f: sorted(n) for f, n in truth.items()}
    for table in tables:
        if {f: sorted(n) for f, n in table["routes"].items()} != real:
            return f"{table['node']} differs from the truth"
    return None


# -- one configuration -----------------------------------------------------------------------


async def run_cluster(cluster: Cluster, settings: Settings, out: dict[str, Any]) -> None:
    size = cluster.size
    async with new_session() as session:
        began = time.monotonic()
        await cluster.wait_healthy(session, settings.form_timeout_s)
        out["healthy_s"] = time.monotonic() - began
        await wait_agreed(session, cluster, range(size), settings.form_timeout_s)
        out["agreed_s"] = time.monotonic() - began
        print(f"  healthy after {out['healthy_s']:.1f} s, agreed after {out['agreed_s']:.1f} s",
              flush=True)  # fmt: skip
    await asyncio.sleep(3.0)  # the joins' gossip and first anti-entropy checks die down
    async with new_session() as session:
        out["idle"] = await measure_idle(session, cluster, settings.idle_s)
    idle = out["idle"]
    print(f"  idle: {_pct(idle['cpu_share']['p50'])} CPU, {idle['node_rss_mib']['p50']:.0f} MiB "
          f"per node, {idle['datagrams_per_node_s']:.1f} gossip datagrams/s per node, "
          f"{idle['suspicions']} suspicions", flush=True)  # fmt: skip
    async with new_session() as session:
        _, view = await wait_agreed(session, cluster, range(size), 60.0)
        workers = [cluster.index_of(m["name"]) for m in view["members"] if m["role"] == "worker"]
        out["registration"] = []
        for trial in range(settings.trials):
            caller = workers[(trial * 7) % len(workers)]
            one = await measure_registration(session, cluster, FUNCTIONS[trial], caller)
            out["registration"].append(one)
            print(f"  registration {trial + 1}: {_s(one['all_from_send_s'])} to {one['holders']} "
                  f"holders ({one['route']} on {one['served_by']})", flush=True)  # fmt: skip
            await asyncio.sleep(1.0)
        out["warm"] = await measure_warm(session, cluster, CALLS_PER_NODE * size, seed=size)
        print(f"  warm ratio: {out['warm']['warm_ratio']:.1%} of {out['warm']['calls']} calls, "
              f"routes {out['warm']['routes']}", flush=True)  # fmt: skip
        out["failover"] = []
        live = list(range(size))
        for trial in range(settings.trials):
            one = await measure_failover(session, cluster, live, settings.failover_timeout_s)
            out["failover"].append(asdict(one))
            print(f"  failover {trial + 1} (N={one.n}, {one.datagrams_per_node_s:.1f} "
                  "datagrams/s): "
                  f"suspect {_s(one.first_suspect_s)}, dead "
                  f"{_s(one.first_gone_s)}, all gone {_s(one.all_gone_s)}, agreement "
                  f"{_s(one.agreement_s)}, tables {_s(one.table_s)}"
                  f"{'' if one.table_s else ' (' + one.tables_why + ')'}", flush=True)  # fmt: skip
            if one.agreement_s is None:
                raise RuntimeError(f"no agreement after the master {one.victim} was killed")
            # The next try kills the new master of the survivors: a restarted victim would
            # rejoin the same, but 40 rejoins under load take minutes and add false deaths.
            live.remove(cluster.index_of(one.victim))


def run_config(size: int, preset: str, settings: Settings, log_root: Path) -> dict[str, Any]:
    log_dir = log_root / f"{preset}-{size}"
    log_dir.mkdir(parents=True, exist_ok=True)
    out: dict[str, Any] = {"n": size, "preset": preset, "loss_percent": settings.loss}
    out["load_before"] = list(os.getloadavg())
    cluster = Cluster(size, preset, log_dir)
    try:
        cluster.start(settings.stagger_s)
        if settings.loss:
            cluster.fabric.loss(settings.loss)
        try:
            asyncio.run(run_cluster(cluster, settings, out))
        except (RuntimeError, TimeoutError) as exc:  # keep what was measured before
            out["error"] = str(exc)
            print(f"N={size} {preset}: FAILED: {exc}", file=sys.stderr, flush=True)
        if settings.loss:
            out["packets_dropped"] = cluster.fabric.dropped()
    finally:
        out["load_after"] = list(os.getloadavg())
        cluster.close()
    if "idle" not in out:
        raise RuntimeError(out.get("error", "no measurement"))
    out["summary"] = summarize(out)
    out["simulated"] = _calibration.simulate(size, preset, settings.loss / 100, seed=size)
    return out


def summarize(out: dict[str, Any]) -> dict[str, Any]:
    """Medians over the trials (None where no trial got there)."""

    def med(values: Sequence[float | None]) -> float | None:
        got = [v for v in values if v is not None]
        return statistics.median(got) if got else None

    fo = out.get("failover", [])
    warm = out.get("warm", {})
    return {
        "registration_s": med([r["all_from_send_s"] for r in out.get("registration", [])]),
        "first_suspect_s": med([f["first_suspect_s"] for f in fo]),
        "first_gone_s": med([f["first_gone_s"] for f in fo]),
        "all_gone_s": med([f["all_gone_s"] for f in fo]),
        "agreement_s": med([f["agreement_s"] for f in fo]),
        "agreement_max_s": max((f["agreement_s"] or math.inf for f in fo), default=None),
        "trials": len(fo),
        "full_agreement_s": med([f["full_agreement_s"] for f in fo]),
        "table_s": med([f["table_s"] for f in fo]),
        "warm_ratio": warm.get("warm_ratio"),
        "datagrams_per_node_s": med([f["datagrams_per_node_s"] for f in fo]),
        "idle_datagrams_per_node_s": out["idle"]["datagrams_per_node_s"],
        "idle_cpu_share": out["idle"]["cpu_share"]["p50"],
        "idle_rss_mib": out["idle"]["node_rss_mib"]["p50"],
    }


# -- report ----------------------------------------------------------------------------------


def _s(value: float | None) -> str:
    return "-" if value is None or not math.isfinite(value) else f"{value:.2f} s"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.2f} %"


MEASURED = [
    "N", "preset", "load 1 min", "agreement median (max)", "target (detection + 2 s)",
    "first suspect",
    "declared dead", "all survivors", "tables after failover", "new registration",
    "warm ratio", "idle CPU / node", "RSS / node (+zygote)",
]  # fmt: skip

CALIBRATION = ["N", "preset", "what", "simulated", "measured", "error", "within 25 %"]


def measured_rows(results: Sequence[dict[str, Any]]) -> list[list[str]]:
    rows = []
    for r in results:
        s = r["summary"]
        target = _calibration.agreement_target_s(r["preset"], r["n"])
        ok = s["agreement_max_s"] is not None and s["agreement_max_s"] <= target
        rows.append(
            [
                str(r["n"]),
                r["preset"] + (f" {r['loss_percent']}% loss" if r["loss_percent"] else ""),
                f"{r['load_before'][0]:.1f}-{r['load_after'][0]:.1f}",
                f"{_s(s['agreement_s'])} ({_s(s['agreement_max_s'])})",
                f"{target:.1f} s {'PASS' if ok else 'FAIL'}",
                _s(s["first_suspect_s"]),
                _s(s["first_gone_s"]),
                _s(s["all_gone_s"]),
                _s(s["table_s"]),
                _s(s["registration_s"]),
                "-" if s["warm_ratio"] is None else f"{s['warm_ratio']:.1%}",
                _pct(s["idle_cpu_share"]),
                f"{s['idle_rss_mib']:.0f} MiB ({r['idle']['tree_rss_mib']['p50']:.0f})",
            ]
        )
    return rows


def calibration_rows(results: Sequence[dict[str, Any]]) -> list[list[str]]:
    rows = []
    for r in results:
        for what, simulated, measured in _calibration.compare(r["simulated"], r["summary"]):
            error = simulated / measured - 1 if simulated and measured else None
            verdict = "-" if error is None else ("yes" if abs(error) <= 0.25 else "NO")
            if what == "new registration":  # a few ms of mechanism under the 20 ms polling
                verdict = "n/a: below the polling and the cold start"
            rows.append(
                [
                    str(r["n"]),
                    r["preset"],
                    what,
                    _s(simulated),
                    _s(measured),
                    "-" if error is None else f"{error:+.0%}",
                    verdict,
                ]
            )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="N = 10, lan, 1 trial, < 60 s")
    parser.add_argument("--sizes", default="10,20,40")
    parser.add_argument("--presets", default="lan")
    parser.add_argument("--trials", type=int)
    parser.add_argument("--idle", type=float, help="seconds of the quiet window")
    parser.add_argument("--loss", type=int, default=0, help="%% of packets dropped between nodes")
    parser.add_argument("--keep-logs", action="store_true")
    parser.add_argument("--markdown", action="store_true", help="also print Markdown tables")
    parser.add_argument("--report", nargs="+", type=Path, help="only print the tables of runs")
    args = parser.parse_args(argv)
    if args.report:
        configs = [r for path in args.report for r in json.loads(path.read_text())["configs"]]
        report("tierfaas on a real cluster of network namespaces", configs, args.markdown)
        return 0
    why = netns.unavailable()
    if why is not None:
        print(f"netns_cluster: cannot build the fabric: {why}", file=sys.stderr)
        return 2
    settings = Settings(
        sizes=[10] if args.quick else [int(s) for s in args.sizes.split(",")],
        presets=["lan"] if args.quick else args.presets.split(","),
        trials=args.trials or (1 if args.quick else 3),
        idle_s=args.idle or (3.0 if args.quick else 10.0),
        loss=args.loss,
    )
    if settings.trials > len(FUNCTIONS):
        parser.error(f"--trials: at most {len(FUNCTIONS)}")

    def on_sigterm(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, on_sigterm)
    # Ctrl-C cleans up too, even when started in the background (where it comes ignored).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    log_root = Path(tempfile.mkdtemp(prefix="tierfaas-bench-netns-"))
    began = time.perf_counter()
    results: dict[str, Any] = {
        "benchmark": "netns_cluster",
        "date": c.now_iso(),
        "commit": c.git_commit(),
        "machine": c.machine_info(),
        "command": " ".join(["benchmarks/netns_cluster.py", *(argv or sys.argv[1:])]),
        "settings": asdict(settings),
        "poll_s": {n: poll_s(n) for n in settings.sizes},
        "configs": [],
    }
    failed = False
    try:
        for preset in settings.presets:
            for size in settings.sizes:
                print(f"N={size} {preset}: starting", flush=True)
                try:
                    results["configs"].append(run_config(size, preset, settings, log_root))
                    failed = failed or "error" in results["configs"][-1]
                except (RuntimeError, TimeoutError) as exc:
                    failed = True
                    print(f"N={size} {preset}: FAILED: {exc}", file=sys.stderr, flush=True)
                    results.setdefault("errors", []).append(f"N={size} {preset}: {exc}")
    finally:
        if args.keep_logs or failed:
            print(f"node logs: {log_root}", file=sys.stderr)
        else:
            shutil.rmtree(log_root, ignore_errors=True)
    results["elapsed_s"] = time.perf_counter() - began
    others = "" if settings.presets == ["lan"] else "-" + "-".join(settings.presets)
    name = "netns_cluster" + others
    path = c.write_results(name, results)
    title = (
        f"tierfaas on a real cluster of network namespaces — {results['date']}, "
        f"{settings.trials} trials, {results['elapsed_s']:.0f} s (medians; load: 1-min average "
        "before-after)"
    )
    report(title, results["configs"], args.markdown)
    print(f"results: {path}")
    return 1 if failed else 0


def report(title: str, configs: Sequence[dict[str, Any]], markdown: bool) -> None:
    tables = [
        (title, MEASURED, measured_rows(configs)),
        ("simulated against measured", CALIBRATION, calibration_rows(configs)),
    ]
    for name, columns, rows in tables:
        c.print_table(name, columns, rows)
        if markdown:
            print("\n" + c.markdown_table(columns, rows) + "\n")


if __name__ == "__main__":
    sys.exit(main())
