"""CORE's smoke test of asynchronous calls on a real 2-node cluster: a call accepted by one
node is durable on both, runs (the handler sees its call id and attempt), is retried after a
5xx, and is reported succeeded by either node. (tests/e2e/test_async_calls.py tests every
point of the API.)"""

from __future__ import annotations

import functools
import json
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tierfaas.testing.cluster import LocalCluster
from tierfaas.testing.nodes import http_get
from tierfaas.testing.wait import eventually

pytestmark = pytest.mark.e2e

HANDLERS = """
def who(body, ctx):
    return {"call_id": ctx.call_id, "attempt": ctx.attempt, "body": body.decode()}


def second_time(body, ctx):
    if ctx.attempt < 2:
        raise RuntimeError("the first attempt fails")
    return {"attempt": ctx.attempt}
"""
MANIFEST = """
[release]
name = "asyncsmoke"
version = "1"

[defaults]
timeout_s = 5
memory_mb = 64

[functions.who]
handler = "fns:who"

[functions.second_time]
handler = "fns:second_time"
"""


def _post(url: str, body: bytes) -> tuple[int, dict[str, Any], dict[str, str]]:
    request = urllib.request.Request(url, data=body, method="POST")
    with urllib.request.urlopen(request, timeout=10) as response:
        headers = {k.lower(): v for k, v in response.headers.items()}
        return response.status, json.loads(response.read()), headers


def _call(url: str) -> dict[str, Any] | None:
    status, body = http_get(url, timeout=5)
    return json.loads(body) if status == 200 else None


def test_two_nodes_accept_run_and_report_a_call(tmp_path: Path) -> None:
    release = tmp_path / "release"
    release.mkdir()
    (release / "fns.py").write_text(HANDLERS)
    (release / "tierfaas.toml").write_text(MANIFEST)
    args = ["--isolation", "process", "--retry-base-s", "0.05", "--retry-cap-s", "0.1"]
    with LocalCluster(
        release, 2, subnet="127.0.61", first_host=10, extra_args=args, log_dir=tmp_path
    ) as cluster:
        a, b = cluster.nodes
        eventually(lambda: len(LocalCluster.view(a)["members"]) == 2 or None, 10)
        eventually(lambda: len(LocalCluster.view(b)["members"]) == 2 or None, 10)
        status, accepted, headers = _post(f"{a.url}/async-function/who", b"hello")
        assert status == 202 and accepted["state"] == "queued"
        call_id = accepted["call_id"]
        assert headers["x-call-id"] == call_id
        origin, holder, _ = call_id.split("~")
        assert origin == cluster.name_of(a) and holder == cluster.name_of(b)

        def done(url: str) -> dict[str, Any] | None:
            call = _call(url)
            return call if call is not None and call["state"] == "succeeded" else None

        for node in (a, b):  # either node reports it (b asks a, the origin)
            call = eventually(functools.partial(done, f"{node.url}/v1/calls/{call_id}"), 15)
            assert call is not None
            assert call["attempts"] == 1 and call["node"] == cluster.name_of(a)
            result = json.loads(call["result"]["body"])
            assert result == {"call_id": call_id, "attempt": 1, "body": "hello"}

        _, flaky, _ = _post(f"{b.url}/async-function/second_time", b"")
        call = eventually(lambda: done(f"{a.url}/v1/calls/{flaky['call_id']}"), 15)
        assert call is not None
        assert call["attempts"] == 2 and json.loads(call["result"]["body"]) == {"attempt": 2}

        # A sync call cannot pose as an async one: the headers are removed from outside.
        request = urllib.request.Request(
            f"{a.url}/function/who",
            data=b"x",
            headers={"X-Call-Id": "forged", "X-Call-Attempt": "7"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            assert json.loads(response.read()) == {"call_id": None, "attempt": 0, "body": "x"}
