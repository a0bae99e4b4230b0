"""``tierfaas logs`` and ``GET /v1/logs`` through a real 3-node cluster (hosts 127.0.0.170-172,
this file's): lines merged from the three nodes in time order, a request's lines found by its
id after a forward (the call lands on one node and runs on another), ``--follow`` receiving a
line printed after it started, and bad input (unknown function, malformed ``since``).

Each node runs its own instance of ``say`` (``--cold-starts local``: a first call starts
where it lands); ``relay`` is started on one node only, so a call to it elsewhere is
forwarded once the routing table has it.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from tierfaas.testing.cluster import LocalCluster
from tierfaas.testing.nodes import NodeProcess, http_get
from tierfaas.testing.wait import eventually

pytestmark = pytest.mark.e2e

PRINTER = Path(__file__).parent.parent / "fixtures" / "printer"


def call(
    node: NodeProcess, function: str, body: str, request_id: str, query: str = ""
) -> tuple[int, str]:
    """Invokes ``function`` on ``node``; (status, the node that served it)."""
    sent = urllib.request.Request(
        f"{node.url}/function/{function}{query}",
        data=body.encode(),
        method="POST",
        headers={"X-Request-Id": request_id},
    )
    try:
        with urllib.request.urlopen(sent, timeout=15) as answer:
            return answer.status, answer.headers.get("x-tierfaas-served-by", "")
    except urllib.error.HTTPError as exc:
        return exc.code, ""


def tierfaas(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tierfaas.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def json_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    logs = tmp_path_factory.mktemp("logs")
    with LocalCluster(
        PRINTER, 3, first_host=170, log_dir=logs, extra_args=["--cold-starts", "local"]
    ) as started:
        started.wait_ready()
        yield started


def test_lines_of_three_nodes_come_merged_in_time_order(cluster: LocalCluster) -> None:
    names = {cluster.name_of(node) for node in cluster.nodes}
    # Calls sent to every node at once, each keeping its instance busy for a moment: a node
    # whose call finds the function nowhere warm, or warm but busy, runs it itself. Rounds
    # until each node ran one (``served``: request id -> node).
    served: dict[str, str] = {}
    for round_ in range(10):
        with ThreadPoolExecutor(3) as pool:
            ids = [f"merge-{round_}-{n}" for n in range(3)]
            bodies = [f"hello-{request_id}" for request_id in ids]
            answers = pool.map(call, cluster.nodes, ["say"] * 3, bodies, ids, ["?0.5"] * 3)
            for request_id, (status, served_by) in zip(ids, answers, strict=True):
                assert status == 200
                served[request_id] = served_by
        if set(served.values()) == names:
            break
    assert set(served.values()) == names, served
    first = cluster.nodes[0]

    def merged() -> list[dict[str, Any]] | None:
        result = tierfaas("logs", "say", "--url", first.url, "--json")
        assert result.returncode == 0, result.stderr
        lines = json_lines(result.stdout)
        said = [line for line in lines if line["text"].startswith("said hello-")]
        found = {line["request"] for line in said}
        return lines if {line["node"] for line in said} == names and found >= set(served) else None

    lines = eventually(merged, 10.0)
    assert lines is not None
    times = [line["time"] for line in lines]
    assert times == sorted(times)
    for request_id, served_by in served.items():
        mine = [line for line in lines if line["request"] == request_id]
        assert {(line["stream"], line["text"]) for line in mine} == {
            ("stdout", f"said hello-{request_id} in say"),
            ("stderr", f"warned hello-{request_id}"),
        }
        assert {line["node"] for line in mine} == {served_by}
        assert all(line["function"] == "say" and line["instance"] >= 1 for line in mine)
        assert all(line["time_iso"].endswith("Z") for line in mine)
    # The text form shows each line's node; --node keeps one node's lines.
    shown = tierfaas("logs", "say", "--url", first.url)
    assert shown.returncode == 0, shown.stderr
    for node in cluster.nodes:
        assert f" {cluster.name_of(node)} #" in shown.stdout
    second = cluster.name_of(cluster.nodes[1])
    only = tierfaas("logs", "say", "--url", first.url, "--json", "--node", second)
    assert {line["node"] for line in json_lines(only.stdout)} == {second}


def test_a_forwarded_call_is_found_by_its_request_id(cluster: LocalCluster) -> None:
    home, caller = cluster.nodes[2], cluster.nodes[0]
    assert call(home, "relay", "warm-up", "relay-warm")[0] == 200  # relay now runs on home
    # The caller's first call must find relay warm on home in the table: a call that finds
    # no route starts relay on the caller, which then runs every later call itself.
    home_name = cluster.name_of(home)

    def routed() -> bool:
        for node in cluster.nodes:
            status, body = http_get(f"{node.url}/v1/routes")
            table = json.loads(body) if status == 200 else {}
            holds_table = table.get("role") in ("master", "replica")
            if holds_table and home_name not in table["routes"].get("relay", []):
                return False
        return True

    eventually(routed, 15.0, what="relay on home in the master's and replicas' tables")

    def forwarded() -> str | None:
        request_id = f"fwd-{time.monotonic_ns()}"
        status, served_by = call(caller, "relay", "over-there", request_id)
        assert status == 200
        return request_id if served_by == cluster.name_of(home) else None

    request_id = eventually(forwarded, 15.0, interval=0.2)  # once the table has relay on home
    assert request_id is not None
    result = tierfaas("logs", "relay", "--url", caller.url, "--request", request_id, "--json")
    assert result.returncode == 0, result.stderr
    lines = json_lines(result.stdout)
    assert {(line["node"], line["stream"], line["text"]) for line in lines} == {
        (cluster.name_of(home), "stdout", "said over-there in relay"),
        (cluster.name_of(home), "stderr", "warned over-there"),
    }
    assert all(line["request"] == request_id for line in lines)


def test_follow_receives_a_line_printed_after_it_started(cluster: LocalCluster) -> None:
    first, other = cluster.nodes[0], cluster.nodes[1]
    follower = subprocess.Popen(
        [sys.executable, "-m", "tierfaas.cli", "logs", "say", "--follow", "--json",
         "--url", first.url, "--since", "1s"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )  # fmt: skip
    arrived: queue.Queue[str] = queue.Queue()

    def read() -> None:
        assert follower.stdout is not None
        for line in follower.stdout:
            arrived.put(line)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        time.sleep(2.0)  # let the follower connect to every node (it could print nothing)
        assert follower.poll() is None, follower.stderr.read() if follower.stderr else ""
        marker = f"after-follow-{time.monotonic_ns()}"
        assert call(other, "say", marker, "follow-1")[0] == 200
        deadline = time.monotonic() + 15.0
        seen: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            try:
                line = json.loads(arrived.get(timeout=0.5))
            except queue.Empty:
                continue
            seen.append(line)
            if line.get("text") == f"said {marker} in say":
                break
        else:
            pytest.fail(f"the follower did not print the new line; it printed {seen}")
        assert line["node"] == cluster.name_of(other) and line["request"] == "follow-1"
    finally:
        os.killpg(follower.pid, signal.SIGINT)
        try:
            follower.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(follower.pid, signal.SIGKILL)
            follower.wait(10)
        reader.join(5)


def test_bad_input_gets_a_typed_answer(cluster: LocalCluster) -> None:
    node = cluster.nodes[0]

    def get(query: str) -> tuple[int, dict[str, Any]]:
        status, body = http_get(f"{node.url}/v1/logs?{query}", timeout=5)
        return status, json.loads(body)

    status, error = get("function=nope")
    assert (status, error["error"]) == (404, "unknown_function")
    status, error = get("function=say&since=yesterday")
    assert (status, error["error"]) == (400, "bad_query")
    assert "since" in error["message"] and error["request_id"]
    status, error = get("since=5m")
    assert (status, error["error"]) == (400, "bad_query")
    assert http_get(f"{node.url}/healthz")[0] == 200  # the connection's refusal, not a crash
    unknown = tierfaas("logs", "nope", "--url", node.url)
    assert unknown.returncode == 1 and "unknown_function" in unknown.stderr
    malformed = tierfaas("logs", "say", "--url", node.url, "--since", "yesterday")
    assert malformed.returncode == 2 and "since" in malformed.stderr
    assert "Traceback" not in unknown.stderr + malformed.stderr


def test_a_huge_line_and_a_flood_are_cut_dropped_and_counted(cluster: LocalCluster) -> None:
    node = cluster.nodes[1]
    status, served_by = call(node, "flood", "", "flood-1")
    assert status == 200

    def counted() -> dict[str, float] | None:
        status, body = http_get(f"{node.url}/metrics", timeout=5)
        assert status == 200
        found = {}
        for text in body.decode().splitlines():
            for name in ("output_dropped_lines_total", "output_truncated_lines_total",
                         "log_lines_total"):  # fmt: skip
                if text.startswith(f'tierfaas_{name}{{function="flood"}}'):
                    found[name] = float(text.rsplit(" ", 1)[1])
        return found if found.get("output_dropped_lines_total", 0) > 0 else None

    metrics = eventually(counted, 15.0)
    assert metrics is not None
    assert metrics["output_truncated_lines_total"] >= 1
    # The node kept a bounded log of it and answers as before.
    served = next(n for n in cluster.nodes if cluster.name_of(n) == served_by)
    status, body = http_get(f"{served.url}/v1/logs?function=flood&limit=10000", timeout=10)
    assert status == 200
    lines = json_lines(body.decode())
    # The output rate let through a bounded part: the burst (256 KiB) and a few seconds' rate.
    assert 0 < len(lines) < 10_000
    huge = [line for line in lines if line["text"].startswith("xxxx")]
    assert huge and all(len(line["text"]) < 4200 for line in huge)
    assert "…[truncated" in huge[0]["text"]
    eventually(
        lambda: any(
            "…[dropped" in line["text"]
            for line in json_lines(
                http_get(f"{served.url}/v1/logs?function=flood&limit=10000", timeout=10)[1].decode()
            )
        ),
        10.0,
    )
    assert http_get(f"{node.url}/healthz")[0] == 200
    assert call(node, "say", "still-here", "after-flood")[0] == 200


def test_an_exec_functions_lines_are_kept_too(cluster: LocalCluster) -> None:
    node = cluster.nodes[2]
    status, served_by = call(node, "web", "from-node", "exec-1")
    assert status == 200

    def found() -> list[dict[str, Any]] | None:
        result = tierfaas("logs", "web", "--url", node.url, "--request", "exec-1", "--json")
        assert result.returncode == 0, result.stderr
        lines = json_lines(result.stdout)
        return lines if len(lines) == 2 else None

    lines = eventually(found, 10.0)
    assert lines is not None
    assert {(line["stream"], line["text"], line["node"]) for line in lines} == {
        ("stdout", "exec said from-node", served_by),
        ("stderr", "exec warned from-node", served_by),
    }
