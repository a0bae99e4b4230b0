"""Asynchronous calls (issue 20) through a real 2-node loopback cluster (127.0.47.x): every
point of the HTTP contract (docs/openapi.yaml, docs/architecture.md) and every bad input.

The release (tests/asyncrel.py) is written into the module's tmp dir; its functions append
``{"call_id", "attempt", "node", ...}`` to a ledger file before doing anything, so runs are
counted outside the cluster. The nodes run with small bounds so each behaviour shows fast:
``--async-queue-max 8``, ``--max-body-bytes 65536``, retries after 0.1-0.4 s
(``--retry-base-s 0.1 --retry-cap-s 0.4``).

The schedule test must not wait for a whole minute: the nodes' wall clocks are shifted
(libfaketime, as tests/e2e/test_cluster.py does for a skewed node; every node by the same
offset, so they agree with each other) so that a minute boundary falls ~12 s after the
cluster starts. The ``tick`` function (``schedule = "* * * * *"``) then fires at that
boundary and every minute after it, and the test waits at most until the first one (+ a
margin).

The tests at the end start clusters of their own (127.0.48.x), for what changes a cluster:
no live peer (503), a standalone node, a keyed accept whose forwarding node dies while the
home waits for a frozen holder, a drain (SIGTERM), and a copy that reaches a frozen holder
after its deadline.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import math
import re
import signal
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.asyncrel import (
    API_KEY,
    AsyncCluster,
    Reply,
    call_state,
    get_call,
    post_async,
    read_ledger,
    request,
    result_json,
    runs_by_call,
    runs_of_call,
    tick_seconds,
    write_release,
)
from tierfaas.calls.replication import keyed_homes
from tierfaas.procs import free_port
from tierfaas.testing.clockshift import clock_shift_env
from tierfaas.testing.cluster import LocalCluster
from tierfaas.testing.nodes import NodeProcess, http_get
from tierfaas.testing.wait import eventually

pytestmark = pytest.mark.e2e

SUBNET = "127.0.47"
QUEUE_MAX = 8
MAX_BODY = 65536
RETRY_CAP_S = 0.4
NODE_ARGS = [
    "--isolation", "process",
    "--async-queue-max", str(QUEUE_MAX),
    "--max-body-bytes", str(MAX_BODY),
    "--retry-base-s", "0.1",
    "--retry-cap-s", str(RETRY_CAP_S),
]  # fmt: skip
TICK_LEAD_S = 12.0  # the first minute boundary falls this long after the cluster starts
FINAL = ("succeeded", "failed", "dead")
RECORD_KEYS = {
    "call_id", "function", "state", "attempts", "accepted_at", "finished_at", "node",
    "result", "error", "callback",
}  # fmt: skip
ID_RE = re.compile(r"^([A-Za-z0-9._-]+)~([A-Za-z0-9._-]+)~([0-9a-f]{16})$")


# -- the cluster ----------------------------------------------------------------------------


@dataclass
class Cluster:
    ac: AsyncCluster
    a: NodeProcess  # the node tests send to (the master: it started first)
    b: NodeProcess  # the other one
    ledger: Path
    tmp: Path
    shift_s: float  # the nodes' clocks read this much ahead of the real one
    started: float  # time.time() when the nodes were started

    def name(self, node: NodeProcess) -> str:
        return self.ac.name(node)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    tmp = tmp_path_factory.mktemp("async")
    ledger = tmp / "ledger.jsonl"
    rel = write_release(tmp / "rel", ledger)
    now = time.time()
    shift_s = (-(now + TICK_LEAD_S)) % 60
    env = clock_shift_env(round(shift_s * 1000))
    ac = AsyncCluster(rel, tmp, 2, subnet=SUBNET, args=NODE_ARGS, env=env)
    try:
        ac.start()
        yield Cluster(ac, ac.nodes[0], ac.nodes[1], ledger, tmp, shift_s, now)
    finally:
        ac.close()


# -- helpers ----------------------------------------------------------------------------------


def accepted(reply: Reply, *, replay: bool = False) -> str:
    """The call id of a 202 (checks the contract's answer), else fails with the answer. A
    replay of an idempotency key answers the first call's state, whatever it is by now."""
    assert reply.status == 202, (reply.status, reply.body[:300])
    body = reply.json()
    assert body["state"] in (("queued", "running", *FINAL) if replay else ("queued",)), body
    assert reply.headers["X-Call-Id"] == body["call_id"], (dict(reply.headers), body)
    return str(body["call_id"])


def wait_final(node: NodeProcess, call_id: str, timeout: float = 20.0) -> dict[str, Any]:
    def final() -> dict[str, Any] | None:
        record = call_state(node.url, call_id)
        return record if record["state"] in FINAL else None

    record = eventually(final, timeout, 0.05, what=f"{call_id} to finish")
    assert record is not None
    return record


def calls_listed(node: NodeProcess, query: str = "") -> list[dict[str, Any]]:
    """``GET /v1/calls?limit=1000&...``: this node's calls."""
    reply = request("GET", f"{node.url}/v1/calls?limit=1000{query}")
    assert reply.status == 200, (reply.status, reply.body[:300])
    return listed(reply.json())


def listed(data: Any) -> list[dict[str, Any]]:
    """The list of calls in a listing answer (a list, or the object's list of records)."""
    if isinstance(data, list):
        return data
    for value in data.values():
        if isinstance(value, list) and all(isinstance(v, dict) and "call_id" in v for v in value):
            return value
    return []


def metric(node: NodeProcess, name: str, **labels: str) -> float:
    status, body = http_get(f"{node.url}/metrics")
    assert status == 200
    total = 0.0
    for line in body.decode().splitlines():
        if not line.startswith(name) or line.startswith("#"):
            continue
        head, _, value = line.rpartition(" ")
        if head.split("{")[0] != name:
            continue
        have = dict(re.findall(r'(\w+)="([^"]*)"', head))
        if all(have.get(k) == v for k, v in labels.items()):
            total += float(value)
    return total


def runs_of(cluster: Cluster, call_id: str) -> list[dict[str, Any]]:
    return runs_of_call(cluster.ledger, call_id)


def routes_list(node: NodeProcess, function: str) -> list[str]:
    status, body = http_get(f"{node.url}/v1/routes")
    assert status == 200
    return list(json.loads(body)["routes"].get(function, []))


def settle_retries() -> None:
    """Long enough for a retry that should not happen to have happened (the cap, thrice)."""
    time.sleep(3 * RETRY_CAP_S + 0.5)


def error_of(reply: Reply, status: int, *codes: str) -> None:
    assert reply.status == status, (reply.status, reply.body[:300])
    assert reply.code in codes, reply.body[:300]
    assert "X-Call-Id" not in reply.headers


# -- accept, run, read -------------------------------------------------------------------------


def test_a_202_names_the_call_which_runs_once_on_the_node_where_it_is_warm(
    cluster: Cluster,
) -> None:
    a, b = cluster.a, cluster.b
    # `remote` is warm on b only (a sync call there starts it: cold starts are local), and
    # the tables say so before the async call reaches a.
    sync = request("POST", f"{b.url}/function/remote", b"{}")
    assert sync.status == 200, sync.body
    assert sync.json()["node"] == b.host
    eventually(lambda: routes_list(a, "remote") == [cluster.name(b)], 10, what="the route")
    before = metric(a, "tierfaas_async_accepted_total", function="remote")

    call_id = accepted(post_async(a.url, "remote", {"token": "first"}))
    parts = ID_RE.fullmatch(call_id)
    assert parts is not None, call_id
    origin, holder, _ = parts.groups()
    assert (origin, holder) == (cluster.name(a), cluster.name(b))  # the copy is on b
    record = wait_final(a, call_id)
    assert record["state"] == "succeeded", record
    assert record["attempts"] == 1
    out = result_json(record)
    assert out["node"] == b.host  # ran where the function was warm
    assert (out["call_id"], out["attempt"], out["token"]) == (call_id, 1, "first")
    assert [(r["node"], r["attempt"]) for r in runs_of(cluster, call_id)] == [(b.host, 1)]
    assert metric(a, "tierfaas_async_accepted_total", function="remote") == before + 1


def test_get_shows_queued_or_running_then_succeeded_on_either_node(cluster: Cluster) -> None:
    a, b = cluster.a, cluster.b
    call_id = accepted(post_async(a.url, "work", {"sleep": 1.5, "token": "slow"}))
    first = call_state(b.url, call_id)  # asked on the node that does not own it
    assert set(first) == RECORD_KEYS, first
    assert first["state"] in ("queued", "running"), first
    assert first["result"] is None and first["error"] is None and first["callback"] is None
    assert first["function"] == "work" and first["call_id"] == call_id
    record = wait_final(a, call_id)
    assert record["state"] == "succeeded", record
    assert record["attempts"] == 1
    assert record["finished_at"] >= record["accepted_at"]
    assert record["result"]["status"] == 200
    assert record["result"]["content_type"].startswith("application/json")
    assert result_json(record)["token"] == "slow"
    on_b = call_state(b.url, call_id)
    for key in ("state", "attempts", "result", "accepted_at", "finished_at"):
        assert on_b[key] == record[key], key


def test_body_subpath_query_and_headers_reach_the_function_with_call_id_and_attempt(
    cluster: Cluster,
) -> None:
    a = cluster.a
    body = json.dumps({"token": "kept", "pad": "x" * 1000}).encode()
    reply = post_async(a.url, "work", body, {"X-Custom": "hi"}, subpath="/a/b?x=1&y=2")
    call_id = accepted(reply)
    record = wait_final(a, call_id)
    assert record["state"] == "succeeded", record
    out = result_json(record)
    assert (out["method"], out["path"], out["query"]) == ("POST", "/a/b", "x=1&y=2")
    assert out["custom"] == "hi" and out["body_len"] == len(body)
    assert (out["call_id"], out["attempt"]) == (call_id, 1)  # the handler's context
    # An http exec function sees them as request headers.
    http_id = accepted(post_async(a.url, "http", b"{}", subpath="/status/200"))
    assert wait_final(a, http_id)["state"] == "succeeded"
    (run,) = runs_of(cluster, http_id)
    assert (run["attempt"], run["path"]) == (1, "/status/200")


def test_a_sync_call_has_no_call_id_even_when_it_sends_one(cluster: Cluster) -> None:
    forged = {"X-Call-Id": "a~b~0123456789abcdef", "X-Call-Attempt": "7"}
    reply = request("POST", f"{cluster.a.url}/function/work", b"{}", forged)
    assert reply.status == 200, reply.body
    out = reply.json()
    assert (out["call_id"], out["attempt"]) == (None, 0)
    assert out["seen_call_id_header"] is None and out["seen_attempt_header"] is None


# -- retries and dead letters -------------------------------------------------------------------


def test_a_4xx_answer_fails_the_call_with_no_retry(cluster: Cluster) -> None:
    a = cluster.a
    call_id = accepted(post_async(a.url, "http", b"{}", subpath="/status/422"))
    record = wait_final(a, call_id)
    assert record["state"] == "failed", record
    assert record["attempts"] == 1
    assert record["result"] is not None and record["result"]["status"] == 422, record
    settle_retries()
    assert [r["attempt"] for r in runs_of(cluster, call_id)] == [1]
    assert call_state(cluster.b.url, call_id)["state"] == "failed"
    # A failed call may be retried by hand too: it runs once more, and fails again.
    retried = request("POST", f"{a.url}/v1/calls/{call_id}/retry")
    assert retried.status == 202, retried.body

    def failed_again() -> bool:
        return len(runs_of(cluster, call_id)) == 2 and wait_final(a, call_id)["state"] == "failed"

    eventually(failed_again, 20, what="the retried call to fail again")
    assert wait_final(a, call_id)["attempts"] == 1


def test_a_500_is_retried_with_backoff_and_succeeds(cluster: Cluster) -> None:
    a = cluster.a
    call_id = accepted(post_async(a.url, "work", {"fail_until": 1}))
    record = wait_final(a, call_id)
    assert record["state"] == "succeeded", record
    assert record["attempts"] == 2
    runs = runs_of(cluster, call_id)
    assert [r["attempt"] for r in runs] == [1, 2]
    # Full jitter: the pause is anywhere in [0, base]; never past the cap (plus slack for a
    # loaded machine).
    assert 0 <= runs[1]["t"] - runs[0]["t"] < RETRY_CAP_S + 3.0


def test_5xx_on_every_attempt_makes_a_dead_call_listed_and_retried_once_fixed(
    cluster: Cluster,
) -> None:
    a, b = cluster.a, cluster.b
    fixed = cluster.tmp / "fault-fixed"
    call_id = accepted(post_async(a.url, "work", {"fail_while_missing": str(fixed)}))
    record = wait_final(a, call_id)
    assert record["state"] == "dead", record
    assert record["attempts"] == 3  # max_retries 2 (the default)
    assert record["error"] is not None and record["error"]["error"], record
    assert [r["attempt"] for r in runs_of(cluster, call_id)] == [1, 2, 3]
    # Listed as a dead letter by either node (b asks a).
    letters = request("GET", f"{b.url}/v1/dead-letters?function=work")
    assert letters.status == 200, letters.body
    assert call_id in {c["call_id"] for c in listed(letters.json())}
    dead_on_a = calls_listed(a, "&state=dead&function=work")
    assert call_id in {c["call_id"] for c in dead_on_a}
    # The fault is fixed; a retry (sent to the other node) runs it again, attempts reset.
    fixed.write_text("")
    retried = request("POST", f"{b.url}/v1/calls/{call_id}/retry")
    assert retried.status == 202, retried.body
    assert retried.json()["state"] in ("queued", "running", "succeeded")
    record = wait_final(a, call_id)
    assert record["state"] == "succeeded", record
    assert record["attempts"] == 1
    assert [r["attempt"] for r in runs_of(cluster, call_id)] == [1, 2, 3, 1]
    letters = request("GET", f"{a.url}/v1/dead-letters?function=work")
    assert call_id not in {c["call_id"] for c in listed(letters.json())}
    # Only a dead or failed call may be retried.
    again = request("POST", f"{a.url}/v1/calls/{call_id}/retry")
    error_of(again, 409, "conflict")
    assert len(runs_of(cluster, call_id)) == 4


def test_a_timeout_is_retried_then_dead(cluster: Cluster) -> None:
    a = cluster.a
    call_id = accepted(post_async(a.url, "slow", {"sleep": 3}))  # timeout_s 1, max_retries 1
    record = wait_final(a, call_id, timeout=30)
    assert record["state"] == "dead", record
    assert record["attempts"] == 2
    assert record["error"] is not None, record
    settle_retries()
    assert [r["attempt"] for r in runs_of(cluster, call_id)] == [1, 2]


def test_max_retries_zero_means_one_attempt(cluster: Cluster) -> None:
    a = cluster.a
    call_id = accepted(post_async(a.url, "once", {"fail_until": 9}))
    record = wait_final(a, call_id)
    assert (record["state"], record["attempts"]) == ("dead", 1), record
    settle_retries()
    assert len(runs_of(cluster, call_id)) == 1


def test_listing_dead_letters_and_metrics(cluster: Cluster) -> None:
    a, b = cluster.a, cluster.b
    ids = [accepted(post_async(a.url, "once", {"token": f"list-{n}"})) for n in range(3)]
    for call_id in ids:
        assert wait_final(a, call_id)["state"] == "succeeded"
    newest = calls_listed(a, "&function=once&state=succeeded")
    assert [c["call_id"] for c in newest[:3]] == ids[::-1]  # newest first
    stamps = [c["accepted_at"] for c in newest]
    assert stamps == sorted(stamps, reverse=True)
    reply = request("GET", f"{a.url}/v1/calls?function=once&limit=2")
    assert reply.status == 200 and len(listed(reply.json())) == 2
    assert all(c["function"] == "once" for c in newest)
    assert calls_listed(b, "&function=once&state=succeeded") == []  # b keeps only copies
    letters = request("GET", f"{b.url}/v1/dead-letters?limit=1000")
    assert letters.status == 200, letters.body
    data = letters.json()
    assert data.get("unanswered") == [], data  # both nodes answered
    assert all(c["state"] == "dead" for c in listed(data))
    for name, labels in (
        ("tierfaas_async_accepted_total", {"function": "once"}),
        ("tierfaas_async_finished_total", {"function": "once", "state": "succeeded"}),
        ("tierfaas_async_attempts_total", {"function": "once"}),
    ):
        assert metric(a, name, **labels) >= 3, name
    _, body = http_get(f"{a.url}/metrics")
    assert b"tierfaas_async_queue{" in body  # the gauge is there


# -- idempotency ---------------------------------------------------------------------------------


def test_an_idempotency_key_repeated_through_the_other_node_returns_the_first_id(
    cluster: Cluster,
) -> None:
    a, b = cluster.a, cluster.b
    key = {"Idempotency-Key": f"order-{time.time_ns()}"}
    first = accepted(post_async(a.url, "work", {"token": "key-1", "sleep": 0.5}, key))
    repeat = post_async(b.url, "work", {"token": "key-2"}, key)
    assert accepted(repeat, replay=True) == first
    assert repeat.headers.get("X-Idempotent-Replay") == "true"
    assert wait_final(a, first)["state"] == "succeeded"
    later = post_async(b.url, "work", {"token": "key-3"}, key)  # after it finished, too
    assert accepted(later, replay=True) == first
    assert later.headers.get("X-Idempotent-Replay") == "true"
    settle_retries()
    tokens = [r["token"] for r in read_ledger(cluster.ledger) if r["token"] in ("key-2", "key-3")]
    assert tokens == []
    assert [r["token"] for r in runs_of(cluster, first)] == ["key-1"]
    # The same key for another function is another call.
    other = accepted(post_async(a.url, "once", {"token": "key-4"}, key))
    assert other != first
    assert wait_final(a, other)["state"] == "succeeded"


@pytest.mark.parametrize("key", ["", "k" * 129, "caf\u00e9"])
def test_a_malformed_idempotency_key_is_refused(cluster: Cluster, key: str) -> None:
    # The call carries a token of its own: the release's schedule and earlier tests' calls
    # may add lines to the ledger meanwhile.
    token = f"malformed-key-{uuid.uuid4().hex}"
    headers = {"Idempotency-Key": key}
    if not key.isascii():  # http.client sends headers as latin-1: a non-ASCII byte
        body = json.dumps({"token": token}).encode()
        reply = request_raw(cluster.a, "/async-function/work", body, headers)
    else:
        reply = post_async(cluster.a.url, "work", {"token": token}, headers)
    error_of(reply, 400, "bad_request")
    time.sleep(0.3)
    assert not [r for r in read_ledger(cluster.ledger) if r.get("token") == token]


def request_raw(node: NodeProcess, path: str, body: bytes, headers: dict[str, str]) -> Reply:
    """A POST whose header values are sent as latin-1 bytes (urllib refuses non-ASCII)."""
    conn = http.client.HTTPConnection(node.host, node.port, timeout=10)
    try:
        conn.putrequest("POST", path)
        for k, v in headers.items():
            conn.putheader(k.encode(), v.encode("latin-1"))
        conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body)
        response = conn.getresponse()
        return Reply(response.status, response.headers, response.read())
    finally:
        conn.close()


# -- bad input: answered before anything is kept --------------------------------------------


def test_bad_input_is_answered_before_anything_is_kept(cluster: Cluster) -> None:
    a = cluster.a
    # Only ``work``'s calls are counted: the release's schedule fires ``tick`` every minute,
    # which this node may accept, keep and run meanwhile.

    def kept() -> int:
        return len(calls_listed(a, "&function=work"))

    def runs() -> int:
        return sum(1 for r in read_ledger(cluster.ledger) if tick_seconds(r["tick"]) is None)

    kept_before, runs_before = kept(), runs()
    accepted_before = metric(a, "tierfaas_async_accepted_total", function="work")

    error_of(post_async(a.url, "nosuchfn", {}), 404, "not_found", "unknown_function")
    error_of(post_async(a.url, "work", b"x" * (MAX_BODY + 1)), 413, "body_too_large")
    for url in (
        "not a url",
        "ftp://127.0.0.1:9/x",
        "http://",
        "http://127.0.0.1:notaport/x",
        "http://10.20.30.40:9/hook",  # not in the default allow-list (loopback only)
    ):
        reply = post_async(a.url, "work", {}, {"X-Callback-Url": url})
        error_of(reply, 400, "bad_callback")
    for method in ("GET", "PUT"):
        reply = request(method, f"{a.url}/async-function/work", b"{}" if method == "PUT" else None)
        error_of(reply, 405, "method_not_allowed")
        assert reply.headers.get("Allow") == "POST"

    time.sleep(0.5)  # anything kept by mistake would have run by now
    assert kept() == kept_before
    assert runs() == runs_before
    assert metric(a, "tierfaas_async_accepted_total", function="work") == accepted_before


def test_a_function_with_api_keys_needs_one_for_an_async_call_too(cluster: Cluster) -> None:
    a = cluster.a
    kept_before = len(calls_listed(a, "&function=locked"))  # a schedule's tick may be kept too
    refused = post_async(a.url, "locked", {"token": "no-key"})
    error_of(refused, 401, "unauthorized")
    wrong = post_async(a.url, "locked", {"token": "wrong-key"}, {"X-Api-Key": "not-the-key"})
    error_of(wrong, 401, "unauthorized")
    assert len(calls_listed(a, "&function=locked")) == kept_before
    call_id = accepted(post_async(a.url, "locked", {"token": "key"}, {"X-Api-Key": API_KEY}))
    record = wait_final(a, call_id)
    assert record["state"] == "succeeded", record  # the run needs no key from the client
    tokens = {r["token"] for r in read_ledger(cluster.ledger)}
    assert "key" in tokens and not {"no-key", "wrong-key"} & tokens


def test_unknown_and_malformed_call_ids(cluster: Cluster) -> None:
    a, b = cluster.a, cluster.b
    unknown = f"{cluster.name(a)}~{cluster.name(b)}~0123456789abcdef"
    error_of(get_call(a.url, unknown), 404, "not_found")
    error_of(get_call(b.url, unknown), 404, "not_found")
    error_of(get_call(a.url, "nosuchnode~other~0123456789abcdef"), 404, "not_found")
    for bad in ("abc", "a~b", "a~b~xyz", "a~b~0123456789abcdef~d"):
        error_of(get_call(a.url, bad), 400, "bad_request")
    error_of(request("POST", f"{a.url}/v1/calls/{unknown}/retry"), 404, "not_found")


def test_a_full_queue_answers_429_with_retry_after_and_keeps_nothing(cluster: Cluster) -> None:
    a = cluster.a
    ids = []
    refused: Reply | None = None
    # sleeper runs 2 async calls at a time (half of its 4 slots), each for 2.5 s: far longer
    # than filling the queue takes, so it fills.
    for n in range(QUEUE_MAX + 4):
        reply = post_async(a.url, "sleeper", {"sleep": 2.5, "token": f"fill-{n}"})
        if reply.status == 429:
            refused = reply
            break
        ids.append(accepted(reply))
    assert refused is not None, f"{len(ids)} accepted, none refused"
    error_of(refused, 429, "queue_full")
    assert int(refused.headers["Retry-After"]) >= 1
    states = [call_state(a.url, call_id)["state"] for call_id in ids]
    finished = sum(1 for state in states if state in FINAL)
    # Calls of earlier tests (a schedule's tick) may hold a place or two.
    assert QUEUE_MAX - 2 <= len(ids) - finished <= QUEUE_MAX, (len(ids), states)
    sleepers = {c["call_id"] for c in calls_listed(a, "&function=sleeper")}
    assert sleepers == set(ids)  # the refused call was not kept
    for call_id in ids:
        assert wait_final(a, call_id, timeout=60)["state"] == "succeeded"
    # Once drained, it accepts again.
    assert wait_final(a, accepted(post_async(a.url, "sleeper", {"token": "after"})))
    tokens = Counter(r["token"] for r in read_ledger(cluster.ledger))
    assert tokens[f"fill-{len(ids)}"] == 0  # the refused one never ran


# -- callbacks ------------------------------------------------------------------------------------


@dataclass
class Receiver:
    """An HTTP server that fails the first delivery of each call with 503 (half of its
    answers, when each call is then delivered at its second try) and records the others."""

    port: int = field(default_factory=lambda: free_port("127.0.0.1"))
    requests: int = 0
    refused: Counter[str] = field(default_factory=Counter)
    delivered: dict[str, list[tuple[dict[str, str], dict[str, Any]]]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                headers = {k.lower(): v for k, v in self.headers.items()}
                call_id = headers.get("x-call-id", "")
                with receiver.lock:
                    receiver.requests += 1
                    fail = not receiver.refused[call_id]
                    if fail:
                        receiver.refused[call_id] += 1
                    else:
                        receiver.delivered.setdefault(call_id, []).append(
                            (headers, json.loads(body))
                        )
                self.send_response(503 if fail else 200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_callbacks_reach_a_receiver_that_fails_half_its_answers(cluster: Cluster) -> None:
    a = cluster.a
    receiver = Receiver()
    try:
        hook = {"X-Callback-Url": receiver.url}
        wanted = {accepted(post_async(a.url, "work", {"token": f"cb-{n}"}, hook)): "succeeded"
                  for n in range(4)}  # fmt: skip
        wanted[accepted(post_async(a.url, "once", {"fail_until": 9}, hook))] = "dead"
        wanted[accepted(post_async(a.url, "http", b"{}", hook, "/status/404"))] = "failed"

        def all_delivered() -> bool:
            with receiver.lock:
                return set(receiver.delivered) >= set(wanted)

        eventually(all_delivered, 60, 0.1, describe=receiver.delivered.keys)
        time.sleep(1.0)  # a duplicate delivery would show now
        with receiver.lock:
            assert receiver.requests == 2 * len(wanted)  # each refused once, then delivered
            for call_id, state in wanted.items():
                (only,) = receiver.delivered[call_id]  # delivered once
                headers, payload = only
                assert headers["x-call-id"] == call_id
                assert headers["x-call-state"] == state
                assert payload["call_id"] == call_id and payload["state"] == state
                assert {"function", "attempts", "result", "error"} <= set(payload)
        for call_id in wanted:

            def recorded(call_id: str = call_id) -> dict[str, Any]:
                callback: dict[str, Any] = call_state(a.url, call_id)["callback"]
                assert callback["state"] == "delivered", callback
                return callback

            callback = eventually(recorded, 5, what=f"{call_id}'s delivery to be recorded")
            assert callback["url"] == receiver.url
            assert callback["attempts"] == 2
    finally:
        receiver.close()


# -- schedules -----------------------------------------------------------------------------------


def test_a_schedule_fires_each_tick_once(cluster: Cluster) -> None:
    # The first minute boundary on the nodes' clocks after they started.
    first_tick = math.ceil((cluster.started + cluster.shift_s) / 60) * 60
    first_tick_real = first_tick - cluster.shift_s
    deadline_s = max(0.0, first_tick_real - time.time()) + 20.0

    def ticked() -> list[dict[str, Any]]:
        return [r for r in read_ledger(cluster.ledger) if tick_seconds(r["tick"]) is not None]

    runs = eventually(ticked, deadline_s, 0.2, what=f"the tick at {first_tick} to run")
    settle_retries()
    runs = ticked()
    per_tick = Counter(tick_seconds(r["tick"]) for r in runs)
    assert first_tick in per_tick, per_tick
    assert all(t is not None and t % 60 == 0 for t in per_tick), per_tick
    assert set(per_tick.values()) == {1}, per_tick  # each tick ran once
    (run,) = [r for r in runs if tick_seconds(r["tick"]) == first_tick]
    record = wait_final(cluster.a, run["call_id"])
    assert (record["function"], record["state"]) == ("tick", "succeeded"), record


# -- no second copy, and a standalone node -----------------------------------------------------


def test_with_no_live_peer_a_cluster_node_answers_503_and_keeps_nothing(tmp_path: Path) -> None:
    ledger = tmp_path / "ledger.jsonl"
    rel = write_release(tmp_path / "rel", ledger, schedule=None)
    ac = AsyncCluster(rel, tmp_path, 2, subnet="127.0.48", args=NODE_ARGS)
    try:
        a, b = ac.start().nodes
        accepted(post_async(a.url, "work", {}))
        b.kill()

        def b_gone() -> bool:
            members = LocalCluster.view(a)["members"]
            return {m["name"] for m in members} == {ac.name(a)}

        eventually(b_gone, 15, what="a to see b dead")
        kept = len(calls_listed(a))
        reply = post_async(a.url, "work", {"token": "alone"}, retries_503=0)
        error_of(reply, 503, "unavailable")
        assert int(reply.headers["Retry-After"]) >= 1
        time.sleep(0.5)
        assert len(calls_listed(a)) == kept
        assert "alone" not in {r["token"] for r in read_ledger(ledger)}
    finally:
        ac.close()


def test_a_standalone_node_accepts_and_runs(tmp_path: Path) -> None:
    ledger = tmp_path / "ledger.jsonl"
    rel = write_release(tmp_path / "rel", ledger, schedule=None)
    args = [*NODE_ARGS, "--data-dir", str(tmp_path / "data")]
    with NodeProcess(
        rel, host="127.0.48.30", extra_args=args, log_path=tmp_path / "node.log"
    ) as node:
        call_id = accepted(post_async(node.url, "work", {"token": "standalone"}))
        record = wait_final(node, call_id)
        assert record["state"] == "succeeded", record
        assert result_json(record)["token"] == "standalone"


def test_a_keyed_accept_whose_forwarder_dies_mid_accept_still_runs(tmp_path: Path) -> None:
    """A keyed call sent to A has its home on B, which copies it to C. C is frozen, so B waits
    for the copy; A is killed meanwhile, which cancels B's handling of A's forwarded accept.
    Whatever B kept must not be left behind: the client's retry of the same key (through B,
    once C is back) answers 202, and the call runs."""
    ledger = tmp_path / "ledger.jsonl"
    rel = write_release(tmp_path / "rel", ledger, schedule=None)
    ac = AsyncCluster(rel, tmp_path, 3, subnet="127.0.48", args=NODE_ARGS, first_host=40)
    try:
        a, b, c = ac.start().nodes
        names = [ac.name(n) for n in (a, b, c)]
        want = [ac.name(b), ac.name(c), ac.name(a)]
        key = next(
            k
            for k in (f"forwarded-{n}" for n in range(10_000))
            if keyed_homes("work", k, names) == want
        )
        headers = {"Idempotency-Key": key}
        body = json.dumps({"token": "keyed"}).encode()

        def send() -> None:
            with contextlib.suppress(OSError):  # A dies with the request in flight
                post_async(a.url, "work", body, headers)

        sender = threading.Thread(target=send, daemon=True)
        assert c.process is not None
        c.signal(signal.SIGSTOP)
        try:
            sender.start()
            time.sleep(0.5)  # A has forwarded the accept; B waits for C's copy
            ac.kill(a)
            time.sleep(0.3)
        finally:
            c.signal(signal.SIGCONT)
        sender.join(10)
        ac.wait_agreed([b, c], 20)
        retry = post_async(b.url, "work", body, headers)
        call_id = accepted(retry, replay=True)
        record = wait_final(b, call_id, timeout=20)
        assert record["state"] == "succeeded", record
        assert [r["token"] for r in runs_of_call(ledger, call_id)] == ["keyed"]
    finally:
        ac.close()


def test_a_draining_node_refuses_new_calls_and_its_queued_ones_run_elsewhere(
    tmp_path: Path,
) -> None:
    """SIGTERM on the accepting node: new async calls get 503 (sent elsewhere), the calls it
    runs finish there, and the ones still queued run on the holder once its leave is seen."""
    ledger = tmp_path / "ledger.jsonl"
    rel = write_release(tmp_path / "rel", ledger, schedule=None)
    ac = AsyncCluster(rel, tmp_path, 2, subnet="127.0.48", args=NODE_ARGS, first_host=50)
    try:
        a, b = ac.start().nodes
        # sleeper runs two async calls at a time: two run, four wait.
        ids = [
            accepted(post_async(a.url, "sleeper", {"sleep": 1.5, "token": f"drain-{n}"}))
            for n in range(6)
        ]
        a.signal(signal.SIGTERM)

        def not_ready() -> bool:
            try:
                return http_get(f"{a.url}/readyz", timeout=1.0)[0] != 200
            except OSError:
                return True

        eventually(not_ready, 10, 0.02, what="a to start draining")
        with contextlib.suppress(OSError):  # or it has closed its listener already
            refused = post_async(a.url, "sleeper", {"token": "late"}, retries_503=0)
            error_of(refused, 503, "draining", "unavailable")
        assert a.process is not None and a.process.wait(60) == 0
        for call_id in ids:
            record = wait_final(b, call_id, timeout=30)
            assert record["state"] == "succeeded", record
        runs = runs_by_call(ledger)
        # A clean drain: each ran once (the calls A ran, it finished and told B about).
        assert [runs[call_id] for call_id in ids] == [1] * len(ids), read_ledger(ledger)
        assert "late" not in {r["token"] for r in read_ledger(ledger)}
    finally:
        ac.close()


def test_a_503_keeps_nothing_even_when_the_copy_arrives_late(tmp_path: Path) -> None:
    """The holder is frozen past the copy's deadline, so the accept answers 503 (nothing
    kept); the copy then reaches it when it resumes. When the origin dies later, the holder
    must not run a call whose client was told it was not kept."""
    ledger = tmp_path / "ledger.jsonl"
    rel = write_release(tmp_path / "rel", ledger, schedule=None)
    ac = AsyncCluster(
        rel, tmp_path, 2, subnet="127.0.48", args=NODE_ARGS, first_host=60, preset="lan"
    )
    try:
        a, b = ac.start().nodes
        accepted(post_async(a.url, "work", {"token": "warm"}))  # the copy channel is up
        b.signal(signal.SIGSTOP)
        try:
            reply = post_async(a.url, "work", {"token": "not-kept"}, retries_503=0)
        finally:
            b.signal(signal.SIGCONT)
        error_of(reply, 503, "unavailable")
        time.sleep(2.0)  # b handles what reached it while frozen
        ac.kill(a)
        # b sees a dead (lan preset: ~6 s) and runs a's calls it holds copies of.
        time.sleep(12.0)
        assert "not-kept" not in {r["token"] for r in read_ledger(ledger)}
    finally:
        ac.close()
