"""Tracing through real node processes and a real OTLP/HTTP receiver (tests/otlp_receiver.py,
which decodes every post with the official OTLP classes).

A 2-node cluster (hosts 127.0.73.10-11, this file's) posts its spans to the receiver. A call
sent to node A with a caller's ``traceparent`` and forwarded to B gives spans from both nodes
in the caller's trace, each parent link in place (caller -> A's server span -> A's forward ->
B's server span -> B's execution); the first call of a function shows its cold start and its
phases. A malformed ``traceparent`` starts a new trace. A standalone node without
``--otlp-endpoint`` makes no span at all; one whose collector is dead, or too slow to answer,
serves its calls as fast as ever.

``relay`` (tests/fixtures/printer, ``--cold-starts local``) is started on B only, so a call to
it on A is forwarded once the routing table has it (as in test_logs.py).
"""

from __future__ import annotations

import json
import secrets
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.otlp_receiver import OtlpReceiver, Received
from tierfaas.procs import free_port
from tierfaas.testing.cluster import LocalCluster
from tierfaas.testing.nodes import NodeProcess, http_get
from tierfaas.testing.wait import eventually

pytestmark = pytest.mark.e2e

PRINTER = Path(__file__).parent.parent / "fixtures" / "printer"
SERVER, CLIENT, CONSUMER = 2, 3, 5  # OTLP's Span.SpanKind
STATUS_ERROR = 2


def call(
    url: str, function: str, request_id: str, traceparent: str | None = None
) -> tuple[int, dict[str, str]]:
    """POSTs to ``function``; (status, the answer's headers, lower-case)."""
    headers = {"X-Request-Id": request_id}
    if traceparent is not None:
        headers["traceparent"] = traceparent
        headers["tracestate"] = "vendor=abc"
    sent = urllib.request.Request(
        f"{url}/function/{function}", data=b"traced", method="POST", headers=headers
    )
    try:
        with urllib.request.urlopen(sent, timeout=15) as answer:
            return answer.status, {k.lower(): v for k, v in answer.headers.items()}
    except urllib.error.HTTPError as exc:
        return exc.code, {}


def caller_context() -> tuple[str, str, str]:
    """A caller's (trace id, span id, traceparent), sampled."""
    trace_id, span_id = secrets.token_hex(16), secrets.token_hex(8)
    return trace_id, span_id, f"00-{trace_id}-{span_id}-01"


def one(spans: list[Received], **match: object) -> Received:
    """The one span with these fields (``node``, ``name``, ``kind``...)."""
    found = [s for s in spans if all(getattr(s, k) == v for k, v in match.items())]
    assert len(found) == 1, (match, [(s.node, s.name, s.kind, s.parent_id) for s in spans])
    return found[0]


@pytest.fixture(scope="module")
def receiver() -> Iterator[OtlpReceiver]:
    with OtlpReceiver() as started:
        yield started


@pytest.fixture(scope="module")
def cluster(
    receiver: OtlpReceiver, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LocalCluster]:
    logs = tmp_path_factory.mktemp("tracing")
    args = ["--cold-starts", "local", "--otlp-endpoint", receiver.url]
    with LocalCluster(
        PRINTER, 2, subnet="127.0.73", first_host=10, log_dir=logs, extra_args=args
    ) as started:
        eventually(
            lambda: all(
                sum(m["state"] == "alive" for m in LocalCluster.view(n)["members"]) == 2
                for n in started.nodes
            ),
            30.0,
        )
        for node in started.nodes:
            url = f"{node.url}/readyz"
            eventually(lambda url=url: http_get(url)[0] == 200, 20.0)  # type: ignore[misc]
        yield started


def test_a_forwarded_call_is_one_trace_across_both_nodes(
    cluster: LocalCluster, receiver: OtlpReceiver
) -> None:
    caller, home = cluster.nodes
    a, b = cluster.name_of(caller), cluster.name_of(home)
    # The first call of relay, on B: a cold start, in the caller's trace.
    trace_id, parent, header = caller_context()
    status, answer = call(home.url, "relay", "cold-1", header)
    assert status == 200 and answer["x-tierfaas-route"] == "local-cold"

    def cold_trace() -> list[Received] | None:
        spans = receiver.trace(trace_id)
        return spans if len(spans) >= 6 else None

    spans = eventually(cold_trace, 10.0, what="the cold call's spans")
    assert spans is not None
    server = one(spans, kind=SERVER)
    assert (server.node, server.parent_id, server.name) == (b, parent, "POST /function/{name}")
    assert server.trace_state == "vendor=abc"
    assert server.attributes["faas.name"] == "relay"
    assert server.attributes["faas.invocation_id"] == "cold-1"
    assert server.attributes["faas.trigger"] == "http"
    assert server.attributes["faas.coldstart"] is True
    assert server.attributes["tierfaas.route"] == "local-cold"
    assert server.attributes["tierfaas.node"] == b
    assert server.attributes["http.response.status_code"] == 200
    assert server.resource["service.name"] == "tierfaas"
    cold = one(spans, name="cold start")
    assert cold.parent_id == server.span_id
    phases = {s.name: s for s in spans if s.parent_id == cold.span_id}
    assert set(phases) == {"spawn", "init", "ready"}
    assert cold.start_ns <= phases["spawn"].start_ns <= phases["spawn"].end_ns
    assert phases["spawn"].end_ns <= phases["init"].start_ns <= phases["init"].end_ns
    assert phases["init"].end_ns <= phases["ready"].start_ns <= phases["ready"].end_ns
    assert phases["ready"].end_ns <= cold.end_ns
    execute = one(spans, name="execute relay")
    assert execute.parent_id == server.span_id and execute.attributes["faas.coldstart"] is True
    assert server.start_ns <= cold.start_ns and execute.end_ns <= server.end_ns

    # Once A's routes have relay on B, a call sent to A is forwarded there.
    def routed() -> bool:
        for node in cluster.nodes:
            status, body = http_get(f"{node.url}/v1/routes")
            table = json.loads(body) if status == 200 else {}
            if table.get("role") in ("master", "replica") and b not in table["routes"].get(
                "relay", []
            ):
                return False
        return True

    eventually(routed, 15.0, what="relay on B in the master's and replicas' tables")

    def forwarded() -> tuple[str, str] | None:
        trace_id, parent, header = caller_context()
        status, answer = call(caller.url, "relay", f"fwd-{time.monotonic_ns()}", header)
        assert status == 200
        return (trace_id, parent) if answer.get("x-tierfaas-served-by") == b else None

    found = eventually(forwarded, 15.0, interval=0.2, what="a call forwarded from A to B")
    assert found is not None
    trace_id, parent = found

    def both_nodes() -> list[Received] | None:
        spans = receiver.trace(trace_id)
        ran_on_b = [s for s in spans if s.node == b and s.name == "execute relay"]
        return spans if ran_on_b and any(s.node == a and s.kind == SERVER for s in spans) else None

    spans = eventually(both_nodes, 10.0, what="spans of the forwarded call from both nodes")
    assert spans is not None
    first = one(spans, node=a, kind=SERVER)
    # One forward ran on B; before it, B may have refused one unrun (A's first forward to B
    # carries no hop token of B's yet: ``hop_stale``, retried at once). Each is a span.
    forwards = [s for s in spans if s.node == a and s.kind == CLIENT]
    refused = [s for s in forwards if "tierfaas.forward.reject" in s.attributes]
    assert all(s.attributes["tierfaas.forward.reject"] == "hop_stale" for s in refused)
    forward = one([s for s in forwards if s not in refused])
    assert forward.attributes["http.response.status_code"] == 200
    second = one(spans, node=b, kind=SERVER, parent_id=forward.span_id)
    ran = one(spans, node=b, name="execute relay")
    assert first.parent_id == parent  # the caller's span
    assert {s.parent_id for s in forwards} == {first.span_id}
    assert {s.parent_id for s in spans if s.node == b and s.kind == SERVER} == {
        s.span_id for s in forwards
    }
    assert ran.parent_id == second.span_id
    assert {s.trace_id for s in spans} == {trace_id}
    assert first.attributes["tierfaas.route"] == "forwarded-warm"
    assert first.attributes["tierfaas.served_by"] == b
    assert second.attributes["tierfaas.forwarded_in"] is True
    assert second.trace_state == "vendor=abc"
    assert forward.attributes["tierfaas.forward.node"] == b
    assert forward.attributes["server.address"] == home.host
    assert forward.attributes["http.response.status_code"] == 200
    assert first.start_ns <= forward.start_ns <= forward.end_ns <= first.end_ns
    assert not [s for s in spans if s.node == a and s.name.startswith("execute")]


def test_a_malformed_traceparent_starts_a_new_trace(
    cluster: LocalCluster, receiver: OtlpReceiver
) -> None:
    node = cluster.nodes[0]
    bad = "00-" + "zz" * 16 + "-" + "ab" * 8 + "-01"
    status, _ = call(node.url, "say", "malformed-1", bad)
    assert status == 200

    def server_span() -> Received | None:
        found = receiver.received(
            lambda s: s.kind == SERVER and s.attributes.get("faas.invocation_id") == "malformed-1"
        )
        return found[0] if found else None

    span = eventually(server_span, 10.0, what="the server span of the malformed call")
    assert span is not None
    assert span.parent_id == ""  # a root: the header was ignored, not an error
    assert len(span.trace_id) == 32 and span.trace_id != "0" * 32
    assert "zz" not in span.trace_id


def test_a_node_without_an_endpoint_makes_no_span(receiver: OtlpReceiver) -> None:
    with NodeProcess(PRINTER, host="127.0.73.20") as node:
        before = receiver.posts
        trace_id, _, header = caller_context()
        for n in range(3):
            assert call(node.url, "say", f"untraced-{n}", header)[0] == 200
        time.sleep(1.5)  # longer than an exporter's batch interval
        assert receiver.posts == before
        assert receiver.trace(trace_id) == []
        _, metrics = http_get(f"{node.url}/metrics")
        assert b"tierfaas_trace_spans" not in metrics  # no tracer, no exporter


def _metric(url: str, outcome: str) -> float:
    _, text = http_get(f"{url}/metrics")
    for line in text.decode().splitlines():
        if line.startswith(f'tierfaas_trace_spans_total{{outcome="{outcome}"}}'):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_a_dead_collector_never_fails_a_call() -> None:
    dead = f"http://127.0.0.1:{free_port('127.0.0.1')}"  # nothing listens there
    with NodeProcess(PRINTER, host="127.0.73.21", extra_args=["--otlp-endpoint", dead]) as node:
        for n in range(20):
            status, _ = call(node.url, "say", f"dead-{n}")
            assert status == 200
        eventually(lambda: _metric(node.url, "failed") > 0, 10.0, what="failed exports counted")


def test_a_slow_collector_never_slows_a_call() -> None:
    # Each post waits 5 s for its answer, past the exporter's 2 s timeout.
    with (
        OtlpReceiver(delay_s=5.0) as slow,
        NodeProcess(PRINTER, host="127.0.73.22", extra_args=["--otlp-endpoint", slow.url]) as node,
    ):
        assert call(node.url, "say", "slow-warm")[0] == 200
        took = []
        for n in range(30):
            began = time.monotonic()
            status, _ = call(node.url, "say", f"slow-{n}")
            took.append(time.monotonic() - began)
            assert status == 200
            time.sleep(0.05)  # the run spans more than one batch interval
        # A call on this loaded 2-core machine takes milliseconds; a call held by the export
        # would take its 2 s timeout.
        assert max(took) < 1.0, took
        eventually(lambda: _metric(node.url, "failed") > 0, 10.0, what="timed-out posts counted")


def test_an_async_call_is_one_trace_from_its_accept_to_its_execution(
    cluster: LocalCluster, receiver: OtlpReceiver
) -> None:
    node = cluster.nodes[0]
    name = cluster.name_of(node)
    trace_id, parent, header = caller_context()
    sent = urllib.request.Request(
        f"{node.url}/async-function/say",
        data=b"queued",
        method="POST",
        headers={"traceparent": header, "tracestate": "vendor=abc", "X-Request-Id": "async-1"},
    )
    with urllib.request.urlopen(sent, timeout=15) as answer:
        assert answer.status == 202
        call_id = json.loads(answer.read())["call_id"]

    def executed() -> list[Received] | None:
        spans = receiver.trace(trace_id)
        return spans if any(s.name == "execute say" for s in spans) else None

    spans = eventually(executed, 15.0, what="the async call's spans")
    assert spans is not None
    accept = one(spans, kind=SERVER)
    assert (accept.node, accept.parent_id) == (name, parent)
    assert accept.name == "POST /async-function/{name}"
    assert accept.trace_state == "vendor=abc"
    assert accept.attributes["tierfaas.call.id"] == call_id
    assert accept.attributes["http.response.status_code"] == 202
    attempt = one(spans, kind=CONSUMER)
    assert attempt.parent_id == accept.span_id
    assert attempt.name == "run say"
    assert attempt.attributes["faas.invocation_id"] == call_id
    assert attempt.attributes["tierfaas.call.attempt"] == 1
    assert attempt.attributes["faas.trigger"] == "pubsub"
    assert attempt.attributes["http.response.status_code"] == 200
    assert attempt.trace_state == "vendor=abc"
    execute = one(spans, name="execute say")
    assert execute.parent_id == attempt.span_id
    # The call may start running while its 202 is still on its way: no order between the
    # accept's end and the attempt's start.
    assert accept.start_ns <= attempt.start_ns <= execute.start_ns <= execute.end_ns
    assert execute.end_ns <= attempt.end_ns


def test_a_refused_async_call_is_a_span_with_its_error(
    cluster: LocalCluster, receiver: OtlpReceiver
) -> None:
    node = cluster.nodes[0]
    trace_id, _, header = caller_context()
    sent = urllib.request.Request(
        f"{node.url}/async-function/no-such-function",
        data=b"x",
        method="POST",
        headers={"traceparent": header},
    )
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(sent, timeout=15)
    assert refused.value.code == 404
    spans = eventually(lambda: receiver.trace(trace_id) or None, 10.0, what="the 404's span")
    assert spans is not None
    accept = one(spans, kind=SERVER)
    assert accept.attributes["http.response.status_code"] == 404
    assert accept.attributes["error.type"] == "not_found"
    assert "tierfaas.call.id" not in accept.attributes
