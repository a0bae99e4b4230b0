"""Tracing's pure parts and its records on the pool, on a ``FakeClock``: W3C traceparent and
tracestate parsed and written, parent-based and ratio sampling, a call's server span and
children (``Tracer``, ``record``), and the spans the pool adds for a call (cold start, queue
wait, execution) under a fake runtime."""

from __future__ import annotations

import asyncio
import itertools

import pytest

from tierfaas import errors
from tierfaas.testing import FakeClock, RuntimeHarness, fake_release
from tierfaas.tracing import record
from tierfaas.tracing.calls import begin_accept, carried_headers, end_accept, traced_attempt
from tierfaas.tracing.context import (
    SpanContext,
    extract,
    parse_traceparent,
    parse_tracestate,
    traceparent,
)
from tierfaas.tracing.http import traced
from tierfaas.tracing.sampling import sampled
from tierfaas.tracing.spans import CURRENT, Kind, Span, Tracer

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
SPAN = "00f067aa0ba902b7"
VALID = f"00-{TRACE}-{SPAN}-01"


# -- traceparent and tracestate ------------------------------------------------------------------


def test_a_valid_traceparent_names_the_callers_span() -> None:
    assert parse_traceparent(VALID) == SpanContext(TRACE, SPAN, True)
    assert parse_traceparent(f"00-{TRACE}-{SPAN}-00") == SpanContext(TRACE, SPAN, False)
    assert parse_traceparent(f"00-{TRACE}-{SPAN}-03") == SpanContext(TRACE, SPAN, True)


@pytest.mark.parametrize(
    "value",
    [
        "",
        "garbage",
        VALID.upper(),  # hex is lower-case only
        f"ff-{TRACE}-{SPAN}-01",  # version ff is invalid
        f"00-{'0' * 32}-{SPAN}-01",  # all-zero trace id
        f"00-{TRACE}-{'0' * 16}-01",  # all-zero span id
        f"00-{TRACE[:-1]}-{SPAN}-01",  # short trace id
        f"00-{TRACE}-{SPAN}-1",
        f"00-{TRACE}-{SPAN}-01-extra",  # version 00 has exactly four fields
        f"00_{TRACE}_{SPAN}_01",
        f"00-{TRACE}-{SPAN}-zz",
        f"01-{TRACE}-{SPAN}-01x",  # a later version's extra fields follow a dash
    ],
)
def test_a_malformed_traceparent_is_ignored(value: str) -> None:
    assert parse_traceparent(value) is None


def test_a_later_version_is_read_by_its_first_four_fields() -> None:
    assert parse_traceparent(f"cc-{TRACE}-{SPAN}-01-what-comes-later") == SpanContext(
        TRACE, SPAN, True
    )


def test_traceparent_is_written_as_version_00() -> None:
    assert traceparent(TRACE, SPAN, True) == VALID
    assert traceparent(TRACE, SPAN, False) == f"00-{TRACE}-{SPAN}-00"
    assert parse_traceparent(traceparent(TRACE, SPAN, False)) == SpanContext(TRACE, SPAN, False)


def test_tracestate_is_kept_joined_or_dropped_whole() -> None:
    assert parse_tracestate(["rojo=00f067aa0ba902b7", " congo=t61rcWkgMzE "]) == (
        "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE"
    )
    assert parse_tracestate(["a=1,,b=2"]) == "a=1,b=2"
    assert parse_tracestate(["Upper=1"]) == ""  # keys are lower-case
    assert parse_tracestate(["novalue"]) == ""
    assert parse_tracestate([",".join(f"k{n}=v" for n in range(33))]) == ""  # > 32 members
    assert parse_tracestate(["k=" + "v" * 255, "l=" + "v" * 255]) == ""  # > 512 characters
    assert parse_tracestate([]) == ""


def test_extract_reads_the_raw_headers() -> None:
    headers = [(b"traceparent", VALID.encode()), (b"tracestate", b"vendor=abc")]
    assert extract(headers) == SpanContext(TRACE, SPAN, True, "vendor=abc")
    assert extract([(b"traceparent", b"  " + VALID.encode() + b" ")]) == SpanContext(
        TRACE, SPAN, True
    )
    assert extract([]) is None
    assert extract([(b"tracestate", b"vendor=abc")]) is None  # a state alone names no parent
    # Two traceparents are ambiguous: a new trace, as for a malformed one.
    assert extract([(b"traceparent", VALID.encode())] * 2) is None


# -- sampling ------------------------------------------------------------------------------------


def test_a_parent_decides_for_its_children() -> None:
    assert sampled(SpanContext(TRACE, SPAN, True), TRACE, 0.0)
    assert not sampled(SpanContext(TRACE, SPAN, False), TRACE, 1.0)


def test_new_traces_are_sampled_by_their_ids_lower_half() -> None:
    low = "f" * 16 + "0" * 15 + "1"  # the lower 64 bits decide, not the upper
    high = "0" * 16 + "f" * 16
    assert sampled(None, low, 0.01) and not sampled(None, high, 0.99)
    assert sampled(None, high, 1.0) and not sampled(None, low, 0.0)
    ids = [f"{n:016x}{n * 0x9E3779B97F4A7C15 % (1 << 64):016x}" for n in range(4000)]
    share = sum(sampled(None, i, 0.25) for i in ids) / len(ids)
    assert 0.22 < share < 0.28
    # The same id gets the same answer on every node.
    assert [sampled(None, i, 0.25) for i in ids] == [sampled(None, i, 0.25) for i in ids]


# -- the tracer and a call's spans ---------------------------------------------------------------


def tracer(clock: FakeClock, ratio: float = 1.0) -> tuple[Tracer, list[Span]]:
    exported: list[Span] = []
    counter = itertools.count(1)
    made = Tracer(
        "node-a",
        exported.append,
        ratio=ratio,
        clock=clock,
        wall=lambda: 1_700_000_000 * 10**9 + round(clock() * 1e9),
        new_id=lambda bits: f"{next(counter):0{bits // 4}x}",
    )
    return made, exported


def test_a_call_with_a_traceparent_is_a_child_of_the_callers_span() -> None:
    clock = FakeClock()
    made, exported = tracer(clock)
    assert made.wall_offset_ns == 1_700_000_000 * 10**9
    headers = [(b"traceparent", VALID.encode()), (b"tracestate", b"vendor=abc")]
    trace = made.begin(headers, "POST /function/{name}", attributes={"faas.name": "f"})
    assert trace.recording
    clock.advance(0.25)
    forward_id, sent = trace.outgoing()
    assert sent == {
        "traceparent": f"00-{TRACE}-{forward_id}-01",
        "tracestate": "vendor=abc",
    }
    record.forwarded(
        trace, forward_id, 1000.1, 1000.2, node="node-b", address="127.0.0.2:8080",
        method="POST", status=200,
    )  # fmt: skip
    trace.end({"http.response.status_code": 200})
    forward, server = exported
    assert (server.trace_id, server.parent_id, server.kind) == (TRACE, SPAN, Kind.SERVER)
    assert (server.start, server.end) == (1000.0, 1000.25)
    assert server.attributes == {"faas.name": "f", "http.response.status_code": 200}
    assert server.error is None and server.state == "vendor=abc"
    assert (forward.span_id, forward.parent_id, forward.kind) == (
        forward_id,
        server.span_id,
        Kind.CLIENT,
    )
    assert forward.attributes == {
        "http.request.method": "POST",
        "server.address": "127.0.0.2",
        "server.port": 8080,
        "tierfaas.forward.node": "node-b",
        "http.response.status_code": 200,
    }


def test_a_call_without_a_valid_traceparent_starts_a_new_trace() -> None:
    made, exported = tracer(FakeClock())
    trace = made.begin([(b"traceparent", b"00-not-a-trace-01")], "POST /function/{name}")
    trace.end({}, "HTTP 502")
    (server,) = exported
    assert server.parent_id == "" and server.trace_id == f"{1:032x}"
    assert server.error == "HTTP 502"


def test_an_unsampled_trace_records_nothing_but_passes_its_decision_on() -> None:
    made, exported = tracer(FakeClock())
    trace = made.begin([(b"traceparent", f"00-{TRACE}-{SPAN}-00".encode())], "x")
    assert not trace.recording
    span_id, sent = trace.outgoing()
    assert sent == {"traceparent": f"00-{TRACE}-{span_id}-00"}
    record.ran(trace, "f", 1.0, 2.0, 3.0, 1, False)
    trace.end({})
    assert exported == []
    # A new trace outside the ratio likewise, and its forwards carry its id unsampled.
    made, exported = tracer(FakeClock(), ratio=0.0)
    trace = made.begin([], "x")
    assert not trace.recording and trace.outgoing()[1]["traceparent"].endswith("-00")
    trace.end({})
    assert exported == []


def test_a_failed_forward_records_its_error() -> None:
    made, exported = tracer(FakeClock())
    trace = made.begin([], "x")
    record.forwarded(
        trace, "f" * 16, 1.0, 2.0, node="b", address="[::1]:80", method="POST", status=None,
        error=ConnectionResetError("reset by peer"),
    )  # fmt: skip
    record.forwarded(
        trace, "e" * 16, 1.0, 2.0, node="b", address="10.0.0.1:80", method="POST", status=503,
        reject="busy",
    )  # fmt: skip
    failed, rejected = exported
    assert failed.error == "reset by peer"
    assert failed.attributes["error.type"] == "ConnectionResetError"
    assert failed.attributes["server.address"] == "::1"
    assert rejected.error is None  # refused unrun, and tried elsewhere: no failure
    assert rejected.attributes["tierfaas.forward.reject"] == "busy"


def test_a_cold_start_has_its_phases_in_order() -> None:
    made, exported = tracer(FakeClock())
    trace = made.begin([], "x")
    record.cold_start(trace, "f", 10.0, 10.5, instance=3, forked=10.1, init_s=0.3)
    cold, spawn, init, ready = exported
    assert cold.name == "cold start" and cold.parent_id == trace.span.span_id
    assert cold.attributes == {"faas.name": "f", "tierfaas.instance": 3}
    assert {s.parent_id for s in (spawn, init, ready)} == {cold.span_id}
    assert [(s.name, s.start, s.end) for s in (spawn, init, ready)] == [
        ("spawn", 10.0, 10.1),
        ("init", 10.1, pytest.approx(10.4)),
        ("ready", pytest.approx(10.4), 10.5),
    ]
    # An exec function reports no init: what follows the fork is all "ready".
    exported.clear()
    record.cold_start(trace, "f", 10.0, 10.5, forked=10.1)
    assert [(s.name, s.start, s.end) for s in exported[1:]] == [
        ("spawn", 10.0, 10.1),
        ("ready", 10.1, 10.5),
    ]
    # A failed start is one span with its error.
    exported.clear()
    record.cold_start(trace, "f", 10.0, 10.5, error=TimeoutError("no READY"))
    (failed,) = exported
    assert failed.error == "no READY" and failed.attributes["error.type"] == "TimeoutError"


# -- the pool's spans ----------------------------------------------------------------------------

RELEASE = fake_release({"f": {"memory_mb": 64, "concurrency": 1, "max_instances": 1}})


async def test_the_pool_records_cold_start_queue_wait_and_execution() -> None:
    clock = FakeClock()
    made, exported = tracer(clock)
    async with RuntimeHarness(RELEASE, clock=clock) as rt:
        traces = [made.begin([], f"call {n}") for n in range(3)]
        tasks = []
        for trace, body in zip(traces, (b"0.1", b"0.2", b"0.1"), strict=True):
            token = CURRENT.set(trace)  # the call's task copies it, as an HTTP call's does
            tasks.append(rt.call("f", body))
            CURRENT.reset(token)
            await rt.run_for(0.0)
        await rt.run_for(1.0)
        assert [t.result().cold for t in tasks] == [True, True, True]
    by_trace = {
        trace.span.trace_id: [(s.name, s.start, s.end) for s in exported
                              if s.trace_id == trace.span.trace_id]
        for trace in traces
    }  # fmt: skip
    first, second, third = (by_trace[t.span.trace_id] for t in traces)
    # The first call started the instance (0.3 s), then ran 0.1 s on it.
    assert first == [
        ("cold start", 1000.0, pytest.approx(1000.3)),
        ("queue", 1000.0, pytest.approx(1000.3)),
        ("execute f", pytest.approx(1000.3), pytest.approx(1000.4)),
    ]
    # The others queued behind it for the one instance (max_instances 1), each in turn.
    assert second == [
        ("queue", 1000.0, pytest.approx(1000.4)),
        ("execute f", pytest.approx(1000.4), pytest.approx(1000.6)),
    ]
    assert third == [
        ("queue", 1000.0, pytest.approx(1000.6)),
        ("execute f", pytest.approx(1000.6), pytest.approx(1000.7)),
    ]
    execute = next(s for s in exported if s.name == "execute f")
    assert execute.attributes == {"faas.name": "f", "tierfaas.instance": 1, "faas.coldstart": True}


async def test_a_warm_call_records_only_its_execution_and_untraced_calls_nothing() -> None:
    clock = FakeClock()
    made, exported = tracer(clock)
    async with RuntimeHarness(RELEASE, clock=clock) as rt:
        untraced = rt.call("f", b"0.1")
        await rt.run_for(1.0)
        assert untraced.result().cold and exported == []
        trace = made.begin([], "warm")
        token = CURRENT.set(trace)
        warm = rt.call("f", b"0.1")
        CURRENT.reset(token)
        await rt.run_for(1.0)
        assert not warm.result().cold
    assert [(s.name, s.attributes["faas.coldstart"]) for s in exported] == [("execute f", False)]


# -- the server span around an invocation --------------------------------------------------------


async def test_the_server_span_takes_the_answers_status_route_and_start() -> None:
    made, exported = tracer(FakeClock())
    sent: list[dict[str, object]] = []

    async def send(message: dict[str, object]) -> None:
        sent.append(message)

    async def invoke(scope, receive, send, name, request_id, length) -> None:  # type: ignore[no-untyped-def]
        assert CURRENT.get() is not None  # the call's parts find its trace
        headers = [(b"x-tierfaas-route", b"local-cold"), (b"x-tierfaas-served-by", b"node-a"),
                   (b"x-tierfaas-start", b"cold")]  # fmt: skip
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b"ok"})

    scope = {
        "method": "POST",
        "path": "/function/f/sub",
        "headers": [(b"traceparent", VALID.encode())],
    }
    await traced(made, invoke, scope, None, send, "f", "req-1", None)  # type: ignore[arg-type]
    assert CURRENT.get() is None and len(sent) == 2
    (server,) = exported
    assert server.parent_id == SPAN and server.error is None
    assert server.attributes == {
        "http.request.method": "POST",
        "http.route": "/function/{name}",
        "url.path": "/function/f/sub",
        "faas.trigger": "http",
        "faas.name": "f",
        "faas.invocation_id": "req-1",
        "tierfaas.node": "node-a",
        "http.response.status_code": 200,
        "tierfaas.route": "local-cold",
        "tierfaas.served_by": "node-a",
        "faas.coldstart": True,
    }


async def test_a_typed_error_marks_the_server_span() -> None:
    made, exported = tracer(FakeClock())

    async def timed_out(scope, receive, send, name, request_id, length) -> None:  # type: ignore[no-untyped-def]
        raise errors.FunctionTimeout("'f' ran out of time")

    async def refused(scope, receive, send, name, request_id, length) -> None:  # type: ignore[no-untyped-def]
        raise errors.UnknownFunction("no function named 'g'")

    scope = {"method": "POST", "path": "/function/f", "headers": []}
    with pytest.raises(errors.FunctionTimeout):
        await traced(made, timed_out, scope, None, None, "f", "r1", None)  # type: ignore[arg-type]
    with pytest.raises(errors.UnknownFunction):
        await traced(made, refused, scope, None, None, "g", "r2", None)  # type: ignore[arg-type]
    failed, unknown = exported
    assert failed.error == "'f' ran out of time"
    assert failed.attributes["error.type"] == "timeout"
    assert failed.attributes["http.response.status_code"] == 504
    # The caller's error (4xx) leaves the status unset, as OpenTelemetry's HTTP rules say.
    assert unknown.error is None and unknown.attributes["http.response.status_code"] == 404
    assert unknown.attributes["error.type"] == "unknown_function"


# -- an async call's accept and attempts -----------------------------------------------------------


def test_an_async_call_keeps_its_accept_span_as_the_parent_of_its_attempts() -> None:
    clock = FakeClock()
    made, exported = tracer(clock)
    caller = [(b"traceparent", VALID.encode()), (b"tracestate", b"vendor=abc")]
    accept = begin_accept(made, caller, "f", "req-1")
    kept = carried_headers(accept)
    assert kept == [
        ("traceparent", traceparent(TRACE, accept.span.span_id, True)),
        ("tracestate", "vendor=abc"),
    ]
    clock.advance(0.001)
    end_accept(accept, 202, "a~b~0123456789abcdef", None)
    (accepted,) = exported
    assert (accepted.parent_id, accepted.kind) == (SPAN, Kind.SERVER)
    assert accepted.attributes["tierfaas.call.id"] == "a~b~0123456789abcdef"

    seen: list[object] = []

    async def run() -> int:
        seen.append(CURRENT.get())
        clock.advance(0.002)
        return 503

    raw = [(k.encode(), v.encode()) for k, v in kept]
    status = asyncio.run(traced_attempt(made, raw, "f", "a~b~1", 2, run, lambda s: s))
    assert status == 503
    attempt = exported[-1]
    assert seen[0] is not None and CURRENT.get() is None
    assert (attempt.trace_id, attempt.parent_id, attempt.kind) == (
        TRACE,
        accepted.span_id,
        Kind.CONSUMER,
    )
    assert attempt.attributes["tierfaas.call.attempt"] == 2
    assert attempt.attributes["http.response.status_code"] == 503
    assert attempt.error == "HTTP 503"
    assert attempt.end - attempt.start == pytest.approx(0.002)


def test_an_attempt_that_raises_ends_its_span_with_the_error_type() -> None:
    clock = FakeClock()
    made, exported = tracer(clock)

    async def run() -> int:
        raise errors.Overloaded("no room")

    with pytest.raises(errors.Overloaded):
        asyncio.run(traced_attempt(made, [], "f", "a~b~1", 1, run, lambda s: s))
    (span,) = exported
    assert span.attributes["error.type"] == errors.Overloaded.code
    assert span.attributes["http.response.status_code"] == errors.Overloaded.status
    assert span.parent_id == ""  # no traceparent kept: a new trace
