"""A version whose build step fails stops at its canaries, with the build's last lines in the
rollout's reason; ``tierfaas up`` on such a release fails at once with them. (Mirrors
tests/e2e/test_rollout.py's release that does not import, on a smaller cluster.)"""

from __future__ import annotations

import contextlib
import json
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tierfaas.testing.nodes import free_port, run_cli

DEMO = Path(__file__).parent.parent.parent / "examples" / "demo"
BROKEN_MAKEFILE = (
    "all:\n\t@echo compiling hello.c\n\t@echo 'hello.c:3: error: expected ;'\n\t@false\n"
)


def broken_release(tmp: Path, version: str) -> Path:
    folder = tmp / f"release-{version}"
    shutil.copytree(DEMO, folder)
    toml = folder / "tierfaas.toml"
    toml.write_text(
        toml.read_text().replace('version = "1.0.0"', f'version = "{version}"\nbuild = ["make"]')
    )
    (folder / "Makefile").write_text(BROKEN_MAKEFILE)
    return folder


class SmallCluster:
    def __init__(self, tmp: Path, first_host: str, nodes: int = 3) -> None:
        self.state_dir = tmp / "state"
        self.registry = self.state_dir / "registry"
        self.port = free_port("127.0.0.1")
        self.first_host = first_host
        self.nodes = nodes

    def up(self) -> None:
        result = run_cli(
            "up", "--detach", "--nodes", str(self.nodes), "--port", str(self.port),
            "--release", str(DEMO), "--state-dir", str(self.state_dir),
            "--first-host", self.first_host, "--registry-poll-s", "0.5", "--canaries", "1",
            "--drain-timeout-s", "3", "--isolation", "process", "--log-level", "info",
            timeout=120,
        )  # fmt: skip
        assert result.returncode == 0, result.stdout + result.stderr

    def down(self) -> None:
        run_cli("down", "--state-dir", str(self.state_dir), timeout=120)

    def status(self) -> dict[str, Any]:
        try:
            data: dict[str, Any] = json.loads((self.registry / "rollout.json").read_text())
        except (OSError, ValueError):
            return {}
        return data

    def wait_finished(self, version: str, timeout_s: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for entry in self.status().get("history", []):
                if entry.get("to") == version and entry.get("result") in ("done", "aborted"):
                    return dict(entry)
            time.sleep(0.2)
        logs = self.state_dir / "provider" / "logs"
        tails = {p.name: p.read_text()[-1500:] for p in sorted(logs.glob("*.log"))}
        raise AssertionError(f"no end of the rollout to {version}: {self.status()} {tails}")

    def versions(self) -> set[str]:
        folder = self.state_dir / "provider" / "nodes"
        found = set()
        for path in folder.glob("*.json"):
            with contextlib.suppress(FileNotFoundError):  # removed by the provider meanwhile
                found.add(json.loads(path.read_text())["version"])
        return found


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[SmallCluster]:
    made = SmallCluster(tmp_path, "127.0.18.10")
    made.up()
    try:
        yield made
    finally:
        made.down()


def test_a_version_whose_build_fails_stops_at_its_canaries(
    tmp_path: Path, cluster: SmallCluster
) -> None:
    broken = broken_release(tmp_path, "2.0.0")
    result = run_cli("publish", str(broken), "--registry", str(cluster.registry))
    assert result.returncode == 0, result.stdout + result.stderr
    entry = cluster.wait_finished("2.0.0", 90)
    assert entry["result"] == "aborted", entry
    assert "build failed (exit 2)" in entry["reason"], entry
    assert "hello.c:3: error: expected ;" in entry["reason"], entry
    assert "hello.c:3: error" in cluster.status()["failed"]["2.0.0"]
    shown = run_cli("rollout", "status", "--registry", str(cluster.registry))
    assert "hello.c:3: error" in shown.stdout, shown.stdout
    deadline = time.monotonic() + 30  # the canary drains and goes; v1 keeps serving
    while cluster.versions() != {"1.0.0"}:
        assert time.monotonic() < deadline, cluster.versions()
        time.sleep(0.2)


def test_up_on_a_release_whose_build_fails_stops_at_once_with_its_last_lines(
    tmp_path: Path,
) -> None:
    broken = broken_release(tmp_path, "1.0.0")
    began = time.monotonic()
    result = run_cli(
        "up", "--nodes", "2", "--port", str(free_port("127.0.0.1")), "--release", str(broken),
        "--state-dir", str(tmp_path / "state"), "--first-host", "127.0.18.30",
        "--isolation", "process", timeout=120,
    )  # fmt: skip
    assert result.returncode == 2, result.stdout + result.stderr
    output = result.stdout + result.stderr
    assert "hello.c:3: error: expected ;" in output and "exit 2" in output, output
    assert time.monotonic() - began < 60
    assert not list((tmp_path / "state").glob("provider/nodes/*.json"))  # no node started
