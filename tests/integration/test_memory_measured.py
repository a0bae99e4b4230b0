"""Memory by measurement on real nodes: a sandboxed instance's use is read from its cgroup (or
its PSS under --isolation process) and is far below its ``memory_mb``, and a node whose budget
holds two instances by their declared ``memory_mb`` keeps ten warm by their measured use."""

from __future__ import annotations

import json
import shutil
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tierfaas.testing.nodes import NodeProcess, http_get

DEMO = Path(__file__).parent.parent.parent / "examples" / "demo"
MiB = 1024 * 1024
SAMPLE_S = "0.2"


def call(node: NodeProcess, function: str) -> None:
    request = urllib.request.Request(f"{node.url}/function/{function}", data=b"x", method="POST")
    with urllib.request.urlopen(request, timeout=30) as response:
        assert response.status == 200


def stats(node: NodeProcess) -> dict[str, Any]:
    status, body = http_get(f"{node.url}/v1/stats")
    assert status == 200
    answer: dict[str, Any] = json.loads(body)
    return answer


def wait_for(node: NodeProcess, done: Any, timeout: float = 15.0) -> dict[str, Any]:
    """The node's stats once ``done(stats)`` holds; fails after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        now = stats(node)
        if done(now):
            return now
        assert time.monotonic() < deadline, f"not reached: {now}\n{node.log_tail()}"
        time.sleep(0.05)


@pytest.mark.parametrize("isolation", ["sandbox", "process"])
def test_an_instance_of_hello_measures_far_below_its_memory_mb(
    tmp_path: Path, isolation: str
) -> None:
    args = ["--memory-sample-s", SAMPLE_S, "--isolation", isolation]
    with NodeProcess(DEMO, extra_args=args, log_path=tmp_path / "node.log") as node:
        first = stats(node)
        assert first["memory_accounting"] == "measured"
        # Unset: the host's (or this container's) memory less the reserve.
        assert first["memory_budget_bytes"] > 512 * MiB
        call(node, "hello")
        measured = wait_for(node, lambda s: s["memory_used_bytes"] > 0)
        used = measured["memory_used_bytes"]
        assert used < 128 * MiB / 4, used  # demo's memory_mb is 128
        # The booking is the reading now, no more the start's estimate of 64 MiB.
        booked = wait_for(node, lambda s: s["memory_booked_bytes"] < 64 * MiB)
        assert booked["memory_booked_bytes"] > 0


def ten_functions(folder: Path) -> Path:
    """A release of ten functions at the default memory_mb (256)."""
    folder.mkdir()
    shutil.copy(DEMO / "handlers.py", folder / "handlers.py")
    lines = ['[release]\nname = "ten"\nversion = "1.0.0"\n']
    for i in range(10):
        lines.append(f'[functions.f{i}]\nhandler = "handlers:hello"\nkeep_alive_s = 600\n')
    (folder / "tierfaas.toml").write_text("\n".join(lines))
    return folder


def all_measured(stats: dict[str, Any]) -> bool:
    """Every instance's booking is its reading: none books a start's estimate (64 MiB)."""
    booked: int = stats["memory_booked_bytes"]
    used: int = stats["memory_used_bytes"]
    return used > 0 and booked - used < MiB


@pytest.mark.parametrize(("accounting", "warm"), [("measured", 10), ("declared", 2)])
def test_a_budget_of_two_declared_instances_keeps_ten_warm_by_measured_use(
    tmp_path: Path, accounting: str, warm: int
) -> None:
    release = ten_functions(tmp_path / "ten")
    args = [
        "--memory-budget-mb", "512", "--memory-sample-s", SAMPLE_S,
        "--memory-accounting", accounting,
    ]  # fmt: skip
    with NodeProcess(release, extra_args=args, log_path=tmp_path / "node.log") as node:
        for i in range(10):
            call(node, f"f{i}")
            if accounting == "measured":  # the new instance's reading replaces its estimate
                wait_for(node, all_measured)
        final = stats(node)
        instances = sum(f["instances"] for f in final["functions"].values())
        assert instances == warm, final
        assert final["evictions"] == 10 - warm
        assert final["memory_booked_bytes"] <= 512 * MiB
