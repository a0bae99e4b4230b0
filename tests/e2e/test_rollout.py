"""Rollouts with real processes (issue 7): ``tierfaas up`` follows a registry, ``tierfaas
publish`` makes a new version desired, and the master rolls the cluster under client load.

Addresses: 127.0.5.x, 127.0.6.x, 127.0.7.x (one range per test; a rollout counts up).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tierfaas.testing.nodes import free_port, run_cli

pytestmark = pytest.mark.e2e

DEMO = Path(__file__).parent.parent.parent / "examples" / "demo"


def tierfaas(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return run_cli(*args, timeout=timeout)


def make_release(
    tmp: Path, version: str, *, greeting: str, broken: bool = False, import_s: float = 0.0
) -> Path:
    folder = tmp / f"release-{version}"
    shutil.copytree(DEMO, folder)
    toml = folder / "tierfaas.toml"
    toml.write_text(toml.read_text().replace('version = "1.0.0"', f'version = "{version}"'))
    handlers = folder / "handlers.py"
    code = handlers.read_text().replace('f"Hello, {name}!', 'f"' + greeting + ", {name}!")
    if broken:
        code = "import this_module_does_not_exist  # noqa\n" + code
    if import_s:  # a release whose canaries take this long to get ready
        code = f"import time\ntime.sleep({import_s})\n" + code
    handlers.write_text(code)
    return folder


@dataclass
class Load:
    """About ``rate`` requests/s through ``url`` over keep-alive connections, each outcome
    recorded: (time, status or the exception's name, body). Runs in its own thread."""

    url: str
    rate: float = 100.0
    workers: int = 4
    outcomes: list[tuple[float, str, str]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> Load:
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        assert self._thread is not None
        self._thread.join(30)

    async def _run(self) -> None:
        connector = aiohttp.TCPConnector(limit=self.workers)
        timeout = aiohttp.ClientTimeout(total=20)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
            await asyncio.gather(*(self._worker(session) for _ in range(self.workers)))

    async def _worker(self, session: aiohttp.ClientSession) -> None:
        period = self.workers / self.rate
        while not self._stop.is_set():
            began = time.monotonic()
            try:
                async with session.post(f"{self.url}/function/hello", data=b"load") as r:
                    body = (await r.read()).decode(errors="replace")
                    self.outcomes.append((time.time(), str(r.status), body))
            except (aiohttp.ClientError, TimeoutError) as exc:
                self.outcomes.append((time.time(), exc.__class__.__name__, ""))
            await asyncio.sleep(max(0.0, period - (time.monotonic() - began)))

    def failures(self, since: float = 0.0) -> list[tuple[float, str, str]]:
        return [o for o in self.outcomes if o[0] >= since and o[1] != "200"]


class Cluster:
    def __init__(self, tmp: Path, first_host: str, nodes: int = 5) -> None:
        self.state_dir = tmp / "state"
        self.registry = self.state_dir / "registry"
        self.port = free_port("127.0.0.1")
        self.url = f"http://127.0.0.1:{self.port}"
        self.first_host = first_host
        self.nodes = nodes

    def up(self) -> None:
        result = tierfaas(
            "up", "--detach", "--nodes", str(self.nodes), "--port", str(self.port),
            "--release", str(DEMO), "--state-dir", str(self.state_dir),
            "--first-host", self.first_host, "--registry-poll-s", "0.5",
            "--drain-timeout-s", "10", "--log-level", "info",
        )  # fmt: skip
        assert result.returncode == 0, result.stdout + result.stderr

    def down(self) -> None:
        result = tierfaas("down", "--state-dir", str(self.state_dir))
        assert result.returncode == 0, result.stdout + result.stderr

    def publish(self, release: Path) -> None:
        result = tierfaas("publish", str(release), "--registry", str(self.registry))
        assert result.returncode == 0, result.stdout + result.stderr

    def status(self) -> dict[str, Any]:
        try:
            data: dict[str, Any] = json.loads((self.registry / "rollout.json").read_text())
        except (OSError, ValueError):
            return {}
        return data

    def finished(self, version: str) -> dict[str, Any] | None:
        for entry in self.status().get("history", []):
            if entry.get("to") == version and entry.get("result") in ("done", "aborted"):
                return dict(entry)
        return None

    def wait_finished(self, version: str, timeout_s: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            entry = self.finished(version)
            if entry is not None:
                return entry
            time.sleep(0.2)
        logs = self.state_dir / "provider" / "logs"
        tails = {p.name: p.read_text()[-1500:] for p in sorted(logs.glob("*.log"))}
        raise AssertionError(f"no end of the rollout to {version}: {self.status()} {tails}")

    def records(self) -> list[dict[str, Any]]:
        # The provider removes a dead node's record while this reads the folder: a file listed
        # a moment ago may be gone.
        folder = self.state_dir / "provider" / "nodes"
        found = []
        for path in sorted(folder.glob("*.json")):
            with contextlib.suppress(FileNotFoundError):
                found.append(json.loads(path.read_text()))
        return found

    def master(self) -> dict[str, Any]:
        view = json.loads(
            subprocess.run(
                ["curl", "-sf", f"{self.url}/v1/cluster"], capture_output=True, check=True
            ).stdout
        )
        (record,) = [r for r in self.records() if r["name"] == view["master"]]
        return record


@pytest.fixture
def cluster_factory(tmp_path: Path) -> Iterator[Any]:
    made: list[Cluster] = []

    def make(first_host: str) -> Cluster:
        cluster = Cluster(tmp_path, first_host)
        made.append(cluster)
        cluster.up()
        return cluster

    yield make
    for cluster in made:
        tierfaas("down", "--state-dir", str(cluster.state_dir))


def test_a_rollout_under_load_fails_no_request(tmp_path: Path, cluster_factory: Any) -> None:
    cluster = cluster_factory("127.0.5.10")
    v2 = make_release(tmp_path, "2.0.0", greeting="Hello from v2")
    load = Load(cluster.url).start()
    try:
        time.sleep(2.0)
        began = time.monotonic()
        cluster.publish(v2)
        entry = cluster.wait_finished("2.0.0", 60)
        took = time.monotonic() - began
        done_at = time.time()
        time.sleep(2.0)
    finally:
        load.stop()
    assert entry["result"] == "done", entry
    assert took < 60
    assert load.failures() == [], Counter(o[1] for o in load.failures())
    assert len(load.outcomes) > 100 * (took + 3) * 0.5  # the client really ran throughout
    after = [o for o in load.outcomes if o[0] > done_at + 0.5]
    assert after and all("Hello from v2" in o[2] for o in after)
    records = cluster.records()
    assert len(records) == 5 and {r["version"] for r in records} == {"2.0.0"}
    assert entry["handover"]["routes"] > 0  # the v2 master held the table at once
    print(f"rollout of 5 nodes: {took:.1f} s, {len(load.outcomes)} requests, 0 failed")


def test_a_release_that_does_not_import_stops_at_its_canaries(
    tmp_path: Path, cluster_factory: Any
) -> None:
    cluster = cluster_factory("127.0.6.10")
    broken = make_release(tmp_path, "2.0.0", greeting="never", broken=True)
    load = Load(cluster.url).start()
    try:
        time.sleep(1.0)
        cluster.publish(broken)
        entry = cluster.wait_finished("2.0.0", 60)
        # The abort SIGTERMs the canaries; each leaves and drains before its record goes
        # (seconds on a loaded machine), while v1 keeps serving the load.
        deadline = time.monotonic() + 30
        while {r["version"] for r in cluster.records()} != {"1.0.0"}:
            assert time.monotonic() < deadline, cluster.records()
            time.sleep(0.2)
    finally:
        load.stop()
    assert entry["result"] == "aborted"
    assert "this_module_does_not_exist" in entry["reason"], entry
    status = cluster.status()
    assert "this_module_does_not_exist" in status["failed"]["2.0.0"]
    assert load.failures() == []
    assert all("Hello, load!" in o[2] for o in load.outcomes)
    records = cluster.records()
    assert len(records) == 5 and {r["version"] for r in records} == {"1.0.0"}
    shown = tierfaas("rollout", "status", "--registry", str(cluster.registry))
    assert "this_module_does_not_exist" in shown.stdout


def test_the_rollout_finishes_when_the_old_master_is_killed(
    tmp_path: Path, cluster_factory: Any
) -> None:
    cluster = cluster_factory("127.0.7.10")
    v2 = make_release(tmp_path, "2.0.0", greeting="Hello from v2")
    master = cluster.master()
    load = Load(cluster.url).start()
    try:
        time.sleep(1.0)
        cluster.publish(v2)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # canaries launched, no handover yet
            events = " ".join(e["text"] for e in (cluster.status().get("rollout") or {}).get(
                "events", []))  # fmt: skip
            if "launched" in events:
                break
            time.sleep(0.05)
        killed_at = time.time()
        os.kill(master["pid"], signal.SIGKILL)
        entry = cluster.wait_finished("2.0.0", 60)
        time.sleep(2.0)
    finally:
        load.stop()
    assert entry["result"] == "done", entry
    failed = load.failures()
    # Only calls in flight on the killed process may fail: at most one per client connection,
    # all within a moment of the kill.
    print(f"killed the v1 master {master['name']}: {len(failed)} failed requests: {failed}")
    assert len(failed) <= load.workers
    assert all(killed_at - 0.5 <= t <= killed_at + 2.0 for t, _, _ in failed)
    records = cluster.records()
    assert len(records) == 5 and {r["version"] for r in records} == {"2.0.0"}


def test_abort_rolls_back_to_the_previous_version(tmp_path: Path, cluster_factory: Any) -> None:
    cluster = cluster_factory("127.0.15.10")
    # Its canaries take 20 s to get ready, far longer than the abort takes to land (the CLI,
    # then the master's next read of the registry, every 0.5 s here), so the rollout is still
    # running when it does. The master may read the registry between the abort's two writes
    # (the version marked failed, then the previous one desired): that too is an abort.
    v2 = make_release(tmp_path, "2.0.0", greeting="Hello from v2", import_s=20.0)
    load = Load(cluster.url).start()
    try:
        time.sleep(1.0)
        cluster.publish(v2)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            current = cluster.status().get("rollout") or {}
            if any("launched" in e["text"] for e in current.get("events", [])):
                break
            time.sleep(0.05)
        aborted = tierfaas("rollout", "abort", "--registry", str(cluster.registry))
        assert aborted.returncode == 0, aborted.stdout + aborted.stderr
        assert "1.0.0 is desired again" in aborted.stdout
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            records = cluster.records()
            status = cluster.status()
            if (
                status.get("phase") == "idle"
                and len(records) == 5
                and {r["version"] for r in records} == {"1.0.0"}
            ):
                break
            time.sleep(0.2)
        time.sleep(1.0)
    finally:
        load.stop()
    assert status.get("phase") == "idle", status
    assert {r["version"] for r in cluster.records()} == {"1.0.0"}
    assert [h["result"] for h in status["history"] if h["to"] == "2.0.0"] == ["aborted"]
    assert "aborted by the operator" in status["failed"]["2.0.0"]
    assert load.failures() == [], Counter(o[1] for o in load.failures())
    assert "Hello, load!" in load.outcomes[-1][2]
    again = tierfaas("rollout", "abort", "--registry", str(cluster.registry))
    assert again.returncode == 1 and "no rollout is running" in again.stderr


def test_the_master_replaces_a_node_that_died(tmp_path: Path, cluster_factory: Any) -> None:
    cluster = cluster_factory("127.0.16.10")
    deadline = time.monotonic() + 20
    while cluster.status().get("size") != 5 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert cluster.status().get("size") == 5  # the size to keep, recorded by the master
    master = cluster.master()
    victim = next(r for r in cluster.records() if r["name"] != master["name"])
    os.kill(victim["pid"], signal.SIGKILL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        names = {r["name"] for r in cluster.records()}
        if len(names) == 5 and victim["name"] not in names and cluster.status()["phase"] == "idle":
            break
        time.sleep(0.2)
    records = cluster.records()
    assert len(records) == 5 and victim["name"] not in {r["name"] for r in records}
    events = " ".join(e["text"] for e in cluster.status()["history"][-1]["events"])
    assert "1 node(s) lost: replacing them" in events
