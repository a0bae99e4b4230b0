"""``tierfaas status`` fetching its view over HTTP from a fake node on loopback: each table
holder is asked for its version, and one that does not answer shows as unknown."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from tierfaas.status import fetch_cluster, fetch_functions


class _Fake(BaseHTTPRequestHandler):
    answers: dict[str, Any] = {}

    def do_GET(self) -> None:
        body = self.answers.get(self.path)
        if body is None:
            self.send_error(404)
            return
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def fake_node() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Fake)
    # serve_forever checks for shutdown() once per poll: 0.5 s by default, a wait per test.
    thread = threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_fetch_cluster_asks_each_table_holder_for_its_version(fake_node: str) -> None:
    dead = "127.0.0.1:9"  # discard port: nothing answers
    _Fake.answers = {
        "/v1/cluster": {
            "self": "m",
            "master": "m",
            "members": [
                {"name": "m", "role": "master", "http": fake_node},
                {"name": "r", "role": "replica", "http": dead},
                {"name": "w", "role": "worker", "http": fake_node},
            ],
        },
        "/v1/routes": {"version": 12, "lineage": "L", "loaded": True, "routes": {"f": ["m"]}},
    }
    view = fetch_cluster(f"http://{fake_node}", routes_timeout=0.5)
    by_name = {m["name"]: m for m in view["members"]}
    assert by_name["m"]["table"] == {"version": 12, "lineage": "L", "loaded": True}
    assert by_name["r"]["table"] is None
    assert "table" not in by_name["w"]


def test_fetch_functions_reads_the_nodes_function_list(fake_node: str) -> None:
    shown = {"release": {"name": "r", "version": "1"}, "node": "m", "functions": []}
    _Fake.answers = {"/v1/functions": shown}
    assert fetch_functions(f"http://{fake_node}/") == shown
    _Fake.answers = {}  # a node without the list (404): nothing to show, no error
    assert fetch_functions(f"http://{fake_node}") is None
    assert fetch_functions("http://127.0.0.1:9", timeout=0.5) is None  # nothing answers


def test_fetch_cluster_reads_each_members_memory_from_its_stats(fake_node: str) -> None:
    dead = "127.0.0.1:9"  # discard port: nothing answers
    stats = {
        "memory_used_bytes": 100 * 2**20, "memory_budget_bytes": 2048 * 2**20,
        "memory_booked_bytes": 200 * 2**20, "evictions_last_min": 3, "requests": 5,
    }  # fmt: skip
    _Fake.answers = {
        "/v1/cluster": {
            "self": "asked",
            "master": "asked",
            "members": [
                {"name": "asked", "role": "master", "http": None},  # standalone: no address
                {"name": "r", "role": "replica", "http": dead},
                {"name": "w", "role": "worker", "http": fake_node},
            ],
        },
        "/v1/stats": stats,
    }
    view = fetch_cluster(f"http://{fake_node}", routes_timeout=0.5)
    by_name = {m["name"]: m for m in view["members"]}
    shown = {"used_bytes": 100 * 2**20, "budget_bytes": 2048 * 2**20, "evictions_last_min": 3}
    assert by_name["asked"]["memory"] == shown  # the node asked, at the URL given
    assert by_name["w"]["memory"] == shown
    assert by_name["r"]["memory"] is None
