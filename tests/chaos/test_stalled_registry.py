"""Scenario "stalled registry" (issue 17.5): the master's registry stops answering reads for
5 s, as a shared volume (NFS, a Kubernetes volume) does, while a steady load calls every node.

How the stall is made: the registry's ``desired`` file is replaced by a FIFO (``mkfifo``).
The master's next read opens it and blocks in ``open(2)`` until a writer comes, a real
blocking read in the kernel, like a read of a hung mount. The test then opens the FIFO for
writing (``O_NONBLOCK`` succeeds only once a reader waits, so the open also proves the master
is blocked in it), keeps it open without writing for ``STALL_S`` (the master's ``read(2)``
blocks on), then writes the version and closes it, and puts the regular file back.

Checked: every call answered 2xx, on the master too (its latency during the stall against
before it), nobody suspected or declared dead, the roles unchanged (no failover), and the
master holds at most one thread more during the stall (the read that hangs, never a pile).

Short (make test): 3 nodes, ``lan`` preset (what a deployment uses). Long (make chaos): the
same, then again with ``local``, whose failure detector declares a node dead after a 1.5 s
pause: a master whose loop a registry read held would be replaced there.
Addresses: 127.0.27.10-12 (lan), 127.0.27.40-42 (local).
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import time
from pathlib import Path

import pytest

from tests.chaos.cluster import CHAOSREL, ChaosCluster
from tests.chaos.harness import Mode, account, chaos_mode, write_result
from tests.chaos.load import Load, Outcome
from tests.chaos.test_slow_node import delta, departures, events
from tierfaas.deploy.registry import DirectoryRegistry

pytestmark = [pytest.mark.e2e, pytest.mark.chaos]

MODE: Mode = chaos_mode()
SIZE = 3
STALL_S = 5.0


def threads(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("Threads:"):
                return int(line.split()[1])
    return 0


def latencies(outcomes: list[Outcome], target: str, since: float, until: float) -> dict[str, float]:
    window = sorted(
        o.done - o.sent for o in outcomes if o.target == target and since <= o.sent < until
    )
    if not window:
        return {"calls": 0}
    return {
        "calls": len(window),
        "p50_ms": round(window[len(window) // 2] * 1000, 1),
        "p99_ms": round(window[int(len(window) * 0.99)] * 1000, 1),
        "max_ms": round(window[-1] * 1000, 1),
    }


def wait_for_reader(fifo: Path, timeout: float) -> int:
    """The FIFO's write end, once a reader (the master's registry read) is blocked on it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            return os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
        except OSError as exc:
            if exc.errno != errno.ENXIO:  # ENXIO: no reader yet
                raise
        time.sleep(0.01)
    raise AssertionError(f"the master did not read {fifo} within {timeout} s")


PRESETS = ["lan"] if MODE == "short" else ["lan", "local"]


@pytest.mark.timeout(120)
@pytest.mark.parametrize("preset", PRESETS)
def test_a_stalled_registry_stalls_no_request_and_moves_no_role(
    tmp_path: Path, preset: str
) -> None:
    registry = DirectoryRegistry(tmp_path / "registry")
    info, _ = registry.publish(CHAOSREL)
    args = ("--registry", str(registry.root), "--registry-poll-s", "0.5")
    cluster = ChaosCluster(
        tmp_path,
        SIZE,
        subnet="127.0.27",
        first_host=10 if preset == "lan" else 40,
        preset=preset,
        extra_args=args,
    )
    load: Load | None = None
    desired = registry.root / "desired"
    fifo = registry.root / ".desired.fifo"
    writer: int | None = None
    try:
        formed = cluster.start().wait_formed(20)
        master = formed[0]
        pid = cluster.nodes[master].pid
        load = Load(cluster.urls(), rate=60.0, workers=8).start()
        time.sleep(3.0)
        before_events, gone_before = events(cluster), departures(cluster)
        threads_before = threads(pid)
        os.mkfifo(fifo)
        os.replace(fifo, desired)  # the master's next tick reads it: within 0.5 s
        writer = wait_for_reader(desired, 10.0)
        stalled = time.monotonic()
        threads_during = 0
        while time.monotonic() < stalled + STALL_S:
            threads_during = max(threads_during, threads(pid))
            time.sleep(0.1)
        os.write(writer, f"{info.version}\n".encode())
        os.close(writer)
        writer = None
        resumed = time.monotonic()
        registry.set_desired(info.version)  # the regular file again
        time.sleep(3.0)  # past when a suspicion or a failover would have shown
        seen = delta(events(cluster), before_events)
        new_departures = sorted(departures(cluster) - gone_before)
        agreed = cluster.agreed()
        log = cluster.nodes[master].log_tail(1_000_000)
    finally:
        if writer is not None:
            os.close(writer)
        with contextlib.suppress(OSError):
            if desired.is_fifo():
                registry.set_desired(info.version)
        if load is not None:
            load.stop()
        cluster.close()

    scenario = "stalled_registry" if preset == "lan" else f"stalled_registry_{preset}"
    result, problems = account(scenario, MODE, load.outcomes, [], cluster.ledger())
    on_master = latencies(load.outcomes, master, stalled, resumed)
    before = latencies(load.outcomes, master, stalled - 3.0, stalled)
    elsewhere = {
        name: latencies(load.outcomes, name, stalled, resumed) for name in formed[1] if name
    }
    stalls_logged = len(re.findall(r"no answer within|has not returned yet", log))
    result.recovery_s = 0.0
    result.extra.update(
        nodes=SIZE,
        preset=preset,
        stall_s=STALL_S,
        master=master,
        master_latency_during_stall=on_master,
        master_latency_before=before,
        replicas_latency_during_stall=elsewhere,
        membership_events=seen,
        new_departures=[list(d) for d in new_departures],
        roles_unchanged=agreed == formed,
        master_threads={"before": threads_before, "during_stall_max": threads_during},
        stall_warnings_logged=stalls_logged,
    )
    result.notes = (
        f"{SIZE} nodes, {preset} preset, ~60 req/s to every node. The master's registry read "
        f"blocks {STALL_S:.0f} s (a FIFO in place of the desired file): its calls answered at p99 "
        f"{on_master.get('p99_ms')} ms (max {on_master.get('max_ms')} ms) during the stall, "
        f"{before.get('p99_ms')} ms before; no suspicion, no failover."
    )
    write_result(result)
    print(result)
    assert problems == [], "\n".join(problems[:30])
    assert result.ok == result.sent
    assert on_master["calls"] > 20, on_master
    assert on_master["max_ms"] < 1500, on_master  # a blocked loop would hold them ~5000 ms
    assert seen.get("MemberSuspect", 0) == 0 and seen.get("MemberDown", 0) == 0, seen
    assert new_departures == []
    assert agreed == formed  # no failover
    assert threads_during <= threads_before + 2, (threads_before, threads_during)
