"""``tierfaas functions``/``describe`` asking every node (``funcstats.client.gather``) against
fake nodes on loopback: each live member is asked, a node that cannot be reached or answers
an error is named with why, a 404 ``unknown_function`` says the function is not in that
node's release, and a dead member is not asked."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from tierfaas.funclogs.client import LogsError
from tierfaas.funcstats.client import gather

Answers = dict[str, tuple[int, Any]]  # path -> (status, JSON body)


def _handler(answers: Answers) -> type[BaseHTTPRequestHandler]:
    class Fake(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            status, body = answers.get(self.path, (404, {"error": "not_found", "message": "?"}))
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: Any) -> None:
            pass

    return Fake


@pytest.fixture
def fake_nodes() -> Iterator[Callable[[Answers], str]]:
    servers: list[ThreadingHTTPServer] = []

    def start(answers: Answers) -> str:
        server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(answers))
        threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True).start()
        servers.append(server)
        return f"127.0.0.1:{server.server_address[1]}"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def test_every_live_member_is_asked_and_each_failure_is_named(
    fake_nodes: Callable[[Answers], str],
) -> None:
    path = "/v1/functions/greet"
    unknown = {"error": "unknown_function", "message": "no function named 'greet'"}
    has_it = fake_nodes({path: (200, {"node": "a", "function": {"name": "greet"}})})
    lacks_it = fake_nodes({path: (404, unknown)})
    too_old = fake_nodes({})  # a node of a release without the path: 404 not_found
    draining = fake_nodes({path: (503, {"error": "draining", "message": "bye"})})
    members = [
        {"name": "a", "http": has_it, "state": "alive"},
        {"name": "b", "http": lacks_it, "state": "suspect"},
        {"name": "c", "http": too_old, "state": "alive"},
        {"name": "d", "http": draining, "state": "alive"},
        {"name": "e", "http": "127.0.0.1:9", "state": "alive"},  # nothing listens
        {"name": "f", "http": "127.0.0.1:9", "state": "dead"},  # not asked
    ]
    asked = fake_nodes({"/v1/cluster": (200, {"self": "a", "members": members})})

    found = gather(f"http://{asked}", path, None, timeout=5.0)

    assert found.answers == {"a": {"node": "a", "function": {"name": "greet"}}}
    assert found.not_found == {"b": "404 unknown_function: no function named 'greet'"}
    assert set(found.unanswered) == {"c", "d", "e"}
    assert found.unanswered["c"].startswith("404 not_found")
    assert found.unanswered["d"] == "503 draining: bye"
    assert "cannot reach http://127.0.0.1:9" in found.unanswered["e"]


def test_a_node_that_cannot_be_reached_is_a_logs_error() -> None:
    with pytest.raises(LogsError, match="cannot reach"):
        gather("http://127.0.0.1:9", "/v1/functions", None, timeout=2.0)
