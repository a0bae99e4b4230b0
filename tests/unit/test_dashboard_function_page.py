"""The dashboard's page of one function: what it gathers from the nodes, how it merges it,
and its answers to bad names and unknown functions."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from tierfaas.config import Address, NodeConfig
from tierfaas.funclogs.line import LogLine
from tierfaas.http import function_page
from tierfaas.http.app import NodeApp
from tierfaas.http.metrics import UNKNOWN, Metrics
from tierfaas.manifest import load_release
from tierfaas.runtime import Runtime
from tierfaas.testing import FakeClock
from tierfaas.testing.asgi import request

TESTREL = Path(__file__).parent.parent / "fixtures" / "testrel"


def node_app() -> NodeApp:
    config = NodeConfig(release_dir=TESTREL, http=Address("127.0.0.1", 8080))
    return NodeApp(
        Runtime(load_release(TESTREL), config), config, Metrics(), "n1", clock=FakeClock()
    )


def test_a_nodes_stats_count_calls_and_latency_per_function() -> None:
    app = node_app()
    app.metrics.record("echo", "ok", True, 0.0004)
    app.metrics.record("echo", "ok", False, 0.003)
    app.metrics.record("echo", "timeout", False, 40.0)
    app.metrics.record(UNKNOWN, "unknown_function", False, 0.0001)
    stats = json.loads(request(app, "/v1/stats")[2])
    assert set(stats["calls"]) == {"echo"}  # calls to unknown names have no page
    echo = stats["calls"]["echo"]
    assert (echo["requests"], echo["errors"], echo["cold_starts"]) == (3, 1, 1)
    buckets = echo["latency_buckets"]
    assert len(buckets) == len(stats["latency_bounds"]) + 1 and sum(buckets) == 3
    assert buckets[0] == 1 and buckets[-1] == 1  # <= 0.5 ms, and over the last bound


def test_the_histogram_sums_every_nodes_buckets() -> None:
    bounds = [0.01, 0.1]
    samples: list[dict[str, Any]] = [
        {"latency_bounds": bounds, "calls": {"f": {"latency_buckets": [1, 2, 3]}}},
        {"latency_bounds": bounds, "calls": {"f": {"latency_buckets": [10, 0, 0]}, "g": {}}},
        {"latency_bounds": bounds, "calls": {"g": {"latency_buckets": [5, 5, 5]}}},
        {"latency_bounds": bounds},  # a node of an older release: nothing per function
    ]
    assert function_page.latency_histogram(samples, "f") == {
        "bounds": bounds, "counts": [11, 2, 3], "calls": 16,
    }  # fmt: skip
    assert function_page.latency_histogram(samples, "h") == {"bounds": [], "counts": [], "calls": 0}


def test_recent_errors_merge_newest_first_with_their_node_and_are_cut() -> None:
    def error(time_ms: int, message: str = "boom") -> dict[str, Any]:
        return {"time_ms": time_ms, "request_id": f"r{time_ms}", "status": 500,
                "error": "handler_error", "message": message}  # fmt: skip

    answers = [
        ("a", {"node": "a", "recent_errors": [error(30), error(10)]}),
        ("b", {"node": "b", "recent_errors": [error(20, "x" * 1000), {"time_ms": "junk"}, 7]}),
        ("c", {"error": "unknown_function"}),  # not this answer's shape: nothing from it
        ("d", ["not", "an", "object"]),
    ]
    merged = function_page.recent_errors(answers)
    assert [(e["node"], e["time_ms"]) for e in merged] == [("a", 30), ("b", 20), ("a", 10)]
    assert len(merged[1]["message"]) == function_page.MESSAGE_CHARS
    assert function_page.recent_errors(answers, limit=1)[0]["request_id"] == "r30"


def test_log_lines_of_every_node_merge_in_time_order_and_keep_the_newest() -> None:
    def line(at: float, node: str, text: str) -> bytes:
        return LogLine(at, "f", node, 1, "stdout", None, text).encode()

    a = line(1.0, "a", "one") + line(4.0, "a", "four")
    b = line(2.0, "b", "two") + b'{"missed": 3, "node": "b"}\n' + b"torn{\n" + line(3.0, "b", "3")
    merged = function_page.log_lines([a, b])
    assert [entry["text"] for entry in merged] == ["one", "two", "3", "four"]
    assert [e["text"] for e in function_page.log_lines([a, b], limit=2)] == ["3", "four"]


def test_a_functions_curve_is_zero_where_it_had_no_call() -> None:
    points = [
        {"seq": 1, "t": 10.0, "functions": {"f": {"requests": 2.0, "errors": 0.0,
                                                  "cold_starts": 1.0, "p99_s": 0.01}}},
        {"seq": 2, "t": 11.0, "functions": {"g": {"requests": 5.0}}},
    ]  # fmt: skip
    curve = function_page.function_points(points, "f")
    assert curve[0] == {"seq": 1, "t": 10.0, "requests": 2.0, "errors": 0.0,
                        "cold_starts": 1.0, "p99_s": 0.01}  # fmt: skip
    assert curve[1] == {"seq": 2, "t": 11.0, "requests": 0.0, "errors": 0.0,
                        "cold_starts": 0.0, "p99_s": None}  # fmt: skip


def primed(app: NodeApp, answers: dict[str, tuple[int, bytes]]) -> list[str]:
    """``app``'s dashboard has sampled once (so no first-sample wait) and reads the nodes
    from ``answers`` (by path) instead of sockets; returns the URLs it asked for."""
    asked: list[str] = []

    async def get(url: str) -> tuple[int, bytes] | None:
        asked.append(url)
        path = url.split("8080", 1)[1]
        return answers.get(path.split("?")[0])

    app.dashboard._get = get  # type: ignore[method-assign]
    asyncio.run(app.dashboard._overview())
    return asked


def test_the_page_of_a_function_gathers_its_errors_and_lines_from_the_nodes() -> None:
    app = node_app()
    app.metrics.record("echo", "ok", False, 0.002)
    error = {"time_ms": 5, "request_id": "r1", "status": 504, "error": "timeout", "message": "x"}
    errors = {"node": "n1", "recent_errors": [error]}
    lines = LogLine(1.0, "echo", "n1", 1, "stderr", "r1", "hello").encode()
    asked = primed(
        app,
        {"/v1/functions/echo": (200, json.dumps(errors).encode()), "/v1/logs": (200, lines)},
    )
    status, _, body = request(app, "/v1/dashboard/functions/echo")
    assert status == 200
    page = json.loads(body)
    assert page["name"] == "echo" and page["self"] == "n1"
    assert page["latency"]["calls"] == 1
    assert page["errors_reported_by"] == 1 and page["recent_errors"][0]["error"] == "timeout"
    assert [line["text"] for line in page["logs"]] == ["hello"]
    assert page["nodes"] == [{"name": "n1", "reachable": True, "instances": 0, "busy": 0}]
    assert "http://127.0.0.1:8080/v1/logs?function=echo&since=15m&limit=100" in asked


def test_nodes_without_the_errors_endpoint_give_an_empty_list_not_an_error() -> None:
    app = node_app()
    primed(app, {"/v1/functions/echo": (404, b'{"error": "not_found"}')})
    status, _, body = request(app, "/v1/dashboard/functions/echo")
    page = json.loads(body)
    assert status == 200 and page["recent_errors"] == [] and page["errors_reported_by"] == 0
    assert page["logs"] == []  # a node that did not answer adds no line


def test_an_unknown_function_and_a_bad_name_are_told_apart() -> None:
    app = node_app()
    primed(app, {})
    status, _, body = request(app, "/v1/dashboard/functions/nosuch")
    assert status == 404 and json.loads(body)["error"] == "unknown_function"
    assert "nosuch" in json.loads(body)["message"]
    status, _, body = request(app, "/v1/dashboard/functions/a%20b")
    assert status == 400 and json.loads(body)["error"] == "bad_name"


def test_the_function_page_and_its_data_need_the_admin_token_off_loopback(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("s3cret-admin-token-0123")
    token.chmod(0o600)
    config = NodeConfig(release_dir=TESTREL, http=Address("10.0.0.1", 8080), admin_token_file=token)
    app = NodeApp(Runtime(load_release(TESTREL), config), config, Metrics(), "n1")
    for path in ("/functions.html", "/functions.js", "/charts.js", "/v1/dashboard/functions/echo"):
        assert request(app, path)[0] == 401, path
    status, headers, body = request(
        app, "/functions.html", {"authorization": "Bearer s3cret-admin-token-0123"}
    )
    assert status == 200 and headers["content-type"].startswith("text/html")
    assert b"/functions.js" in body
