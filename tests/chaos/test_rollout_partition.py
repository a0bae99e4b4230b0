"""Scenario "isolated master during a rollout" (issue 17.3): fencing and the majority guard.

Three nodes of 1.0.0 run in network namespaces (``netns.Fabric``), each launched by the local
provider (``LocalSettings.hosts`` and ``launch_prefix``: every node gets a namespace of its
own through ``ip netns exec``), all following one registry. 2.0.0 is published; as soon as
the master has launched its canary, the master is cut off from every other node (nftables
drops every packet between them, both ways). From then on:

- the cut-off master (minority: 1 of the 4 members it knew) must terminate and launch
  nothing: its provider calls are suspended by the majority guard, and its status writes are
  refused once the majority's master claimed a newer term;
- the majority (the two other old nodes and the canary) declares it dead, elects a master of
  its own, which claims a newer term, hands the table to the canary and finishes the rollout:
  it completes once (one history entry for 2.0.0), or aborts once;
- the client (the root namespace, which reaches every node) calls the majority side only,
  following the provider's records as a load balancer with health checks would (a node is
  added once it answers ``/readyz``, removed once its record is draining): no call fails.

The old master is an old node like the others: the majority's new master drains it at the
end (a SIGTERM on this machine crosses the cut). Short and long are the same run (~60 s).
Skipped unless root with ``ip netns`` and ``nft``.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from tests.chaos.cluster import CHAOSREL
from tests.chaos.harness import Mode, ScenarioResult, chaos_mode, write_result
from tests.chaos.load import Load
from tierfaas.deploy.local import LocalProvider, LocalSettings
from tierfaas.deploy.registry import DirectoryRegistry
from tierfaas.keys import generate_key
from tierfaas.testing import netns
from tierfaas.testing.nodes import http_get

pytestmark = [pytest.mark.e2e, pytest.mark.chaos]

MODE: Mode = chaos_mode()
SLOTS = 10  # namespaces: 3 nodes of 1.0.0, the canary, the replacements, and spares
HTTP, GOSSIP = 8080, 7946
CANARY_TIMEOUT_S = 8.0  # shorter than the majority takes to elect a master

_why_not = netns.unavailable()
if _why_not is not None:
    pytestmark = [*pytestmark, pytest.mark.skip(reason=f"skipped: {_why_not}")]


def release(tmp: Path, version: str) -> Path:
    folder = tmp / f"chaosrel-{version}"
    shutil.copytree(CHAOSREL, folder)
    toml = folder / "tierfaas.toml"
    toml.write_text(toml.read_text().replace('version = "1.0.0"', f'version = "{version}"'))
    return folder


def netns_script(tmp: Path, fabric: netns.Fabric) -> Path:
    """``SCRIPT HOST ARGV...``: runs ARGV in the namespace that holds HOST."""
    cases = "\n".join(
        f"  {address}) ns={ns} ;;"
        for address, ns in zip(fabric.addresses, fabric.nodes, strict=True)
    )
    script = tmp / "in-netns"
    script.write_text(
        f'#!/bin/sh\ncase "$1" in\n{cases}\n  *) echo "no namespace for $1" >&2; exit 2 ;;\n'
        f'esac\nshift\nexec ip netns exec "$ns" "$@"\n'
    )
    script.chmod(0o755)
    return script


def view(address: str) -> dict[str, Any] | None:
    with contextlib.suppress(OSError, ValueError):
        status, body = http_get(f"http://{address}:{HTTP}/v1/cluster", timeout=2.0)
        if status == 200:
            data: dict[str, Any] = json.loads(body)
            return data
    return None


def ready(address: str) -> bool:
    with contextlib.suppress(OSError):
        return http_get(f"http://{address}:{HTTP}/readyz", timeout=1.0)[0] == 200
    return False


def wait(check: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


class Balancer:
    """Keeps the client's node list in step with the provider's records, majority side only:
    a running node that answers ``/readyz`` is added, a draining or gone one removed."""

    def __init__(self, provider: LocalProvider, load: Load, excluded: set[str]) -> None:
        self.provider = provider
        self.load = load
        self.excluded = excluded
        self.seen: set[str] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> Balancer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(OSError, ValueError):
                records = {r.name: r for r in self.provider.records()}
                for name in list(self.load.live):
                    if name not in records or records[name].phase != "running":
                        self.load.remove(name)
                for name, r in records.items():
                    if name in self.excluded or r.phase != "running" or name in self.load.live:
                        continue
                    if ready(r.host):
                        self.load.add(name, f"http://{r.http}")
                        self.seen.add(name)
            self._stop.wait(0.2)


@pytest.mark.timeout(240)
def test_an_isolated_master_changes_nothing_and_the_majority_rolls_once(tmp_path: Path) -> None:
    fabric = netns.Fabric("r", SLOTS)
    registry = DirectoryRegistry(tmp_path / "registry")
    registry.publish(release(tmp_path, "1.0.0"))
    state = tmp_path / "provider"
    load: Load | None = None
    balancer: Balancer | None = None
    timeline: dict[str, float] = {}
    try:
        fabric.up()
        key_file = tmp_path / "cluster.key"
        key_file.write_text(generate_key() + "\n")
        key_file.chmod(0o600)
        settings = LocalSettings(
            registry=str(registry.root),
            key_file=str(key_file),
            cluster_port=GOSSIP,
            first_host=fabric.addresses[0],
            seeds=[f"{a}:{GOSSIP}" for a in fabric.addresses[:3]],
            gossip_preset="lan",
            drain_timeout_s=5.0,
            extra_args=[
                "--isolation",
                "process",
                "--canaries",
                "1",
                "--canary-timeout-s",
                f"{CANARY_TIMEOUT_S:g}",
                "--registry-poll-s",
                "0.5",
            ],
            hosts=fabric.addresses,
            launch_prefix=[str(netns_script(tmp_path, fabric)), "{host}"],
            http_port=HTTP,
        )
        provider = LocalProvider.create(state, settings)
        os.environ["CHAOS_LEDGER"] = str(tmp_path / "ledger.ids")  # the nodes inherit it
        provider.launch_now("1.0.0", 0, 3)
        old = fabric.addresses[:3]

        def formed() -> str | None:
            """The master all three agree on (rank follows their start, not launch order)."""
            views = [view(a) for a in old]
            masters = {v["master"] for v in views if v is not None and len(v["members"]) == 3}
            return masters.pop() if len(masters) == 1 and None not in views else None

        old_master = wait(formed, 60, "the three nodes of 1.0.0 to form")
        old_host = old_master.split("-")[0]
        cut = fabric.addresses.index(old_host)
        majority = [i for i in range(3) if i != cut]
        load = Load(
            {
                f"{fabric.addresses[i]}-{GOSSIP}": f"http://{fabric.addresses[i]}:{HTTP}"
                for i in majority
            }
        )
        load.rate, load.workers = 40.0, 8
        load.start()
        balancer = Balancer(provider, load, excluded={old_master}).start()
        time.sleep(2.0)

        timeline["published"] = time.monotonic()
        registry.publish(release(tmp_path, "2.0.0"))
        canary = wait(
            lambda: [r.name for r in provider.records() if r.version == "2.0.0"],
            30,
            "the master to launch its canary",
        )[0]
        fabric.partition([cut], [i for i in range(SLOTS) if i != cut])
        timeline["cut"] = time.monotonic()

        def finished() -> dict[str, Any] | None:
            history = (registry.read_status() or {}).get("history", [])
            ends = [h for h in history if h.get("to") == "2.0.0" and h.get("result")]
            return ends[0] if ends else None

        entry = wait(finished, 150, "the majority to finish the rollout")
        timeline["finished"] = time.monotonic()
        time.sleep(2.0)
        balancer.stop()
        load.stop()
        status = registry.read_status() or {}
        records = provider.records()
        old_log = (state / "logs" / f"{old_master}.log").read_text(errors="replace")
    finally:
        if balancer is not None:
            balancer.stop()
        if load is not None:
            load.stop()
        os.environ.pop("CHAOS_LEDGER", None)
        fabric.down()

    ends = [h for h in status.get("history", []) if h.get("to") == "2.0.0"]
    # The steps the old master took (``RolloutController._take`` logs each): before the cut
    # it launched the canary; after it, nothing may follow.
    steps = re.findall(
        r"rollout to 2\.0\.0: (launch .*|drain .*|abort: .*|hand the table .*)", old_log
    )
    minority_lines = [s for s in steps if not s.startswith("launch 1 node(s) in generation 0")]
    suspended = old_log.count("no majority")
    fenced = old_log.count("fenced")
    outcomes = load.outcomes
    ledger = tmp_path / "ledger.ids"
    runs = Counter(ledger.read_text().split()) if ledger.exists() else Counter()
    ran_twice = sorted(rid for rid, times in runs.items() if times > 1)
    ok_never_ran = sorted(o.rid for o in outcomes if o.ok and not runs.get(o.rid))
    ok = sum(o.ok for o in outcomes)
    typed = sum(o.typed for o in outcomes)
    failed = sum(o.failed for o in outcomes)
    failed_detail: dict[str, int] = {}
    for o in outcomes:
        if o.failed:
            failed_detail[o.code] = failed_detail.get(o.code, 0) + 1
    typed_detail: dict[str, int] = {}
    for o in outcomes:
        if o.typed:
            typed_detail[o.code] = typed_detail.get(o.code, 0) + 1
    result = ScenarioResult(
        "rollout_partition",
        MODE,
        sent=len(outcomes),
        ok=ok,
        typed_errors=typed,
        failed=failed,
        failed_detail=failed_detail,
        recovery_s=round(timeline["finished"] - timeline["cut"], 1),
        extra={
            "result": entry.get("result"),
            "history_entries_for_2_0_0": len(ends),
            "events": [e["text"] for e in entry.get("events", [])],
            "old_master": old_master,
            "canary": canary,
            "old_master_steps": steps,
            "minority_no_majority_warnings": suspended,
            "minority_fenced_writes": fenced,
            "term_at_end": status.get("term"),
            "majority_at_end": status.get("majority"),
            "nodes_at_end": sorted((r.name, r.version) for r in records),
            "typed_detail": typed_detail,
            "exactly_once": {"ran_twice": len(ran_twice), "ok_never_ran": len(ok_never_ran)},
            "publish_to_cut_s": round(timeline["cut"] - timeline["published"], 1),
        },
        notes=(
            "3 nodes of 1.0.0 in network namespaces, launched by the local provider; 2.0.0 "
            "published and the master cut off from every other node right after it launched "
            "its canary. The cut-off master launched and terminated nothing (no majority); the "
            "majority elected a master, claimed a newer term and rolled to 2.0.0 once; "
            "recovery_s: from the cut to the end of the rollout. ~40 req/s to the majority."
        ),
    )
    write_result(result)
    print(json.dumps(result.extra, indent=1))
    print(f"sent {result.sent} ok {ok} typed {typed} failed {failed} {failed_detail}")
    assert old_host not in {r.host for r in records}, "the old master was not drained"
    assert entry["result"] == "done", entry
    assert len(ends) == 1, ends
    assert minority_lines == [], minority_lines
    # A guard held it back: the majority guard when its own view loses the majority first,
    # else the fence, when the majority's master claims a newer term first (the old master
    # then drops its term and, with no majority, claims none: logged at debug only).
    assert suspended + fenced > 0, (suspended, fenced)
    assert failed == 0, failed_detail
    assert ran_twice == [] and ok_never_ran == [], (ran_twice[:5], ok_never_ran[:5])
    assert {v for _, v in result.extra["nodes_at_end"]} == {"2.0.0"}
