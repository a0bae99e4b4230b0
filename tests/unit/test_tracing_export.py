"""Spans on the wire: the OTLP protobuf encoding (``tracing.otlp``) decoded with the official
generated classes (opentelemetry-proto), and the exporter's bounded queue, which drops and
counts rather than wait. No socket: nothing here posts."""

from __future__ import annotations

import asyncio

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import Span as OtlpSpan
from opentelemetry.proto.trace.v1.trace_pb2 import Status
from prometheus_client import CollectorRegistry

from tierfaas.tracing import otlp
from tierfaas.tracing.compose import make, traces_url
from tierfaas.tracing.exporter import OtlpExporter, TraceMetrics
from tierfaas.tracing.spans import Kind, Span

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"


def server_span() -> Span:
    return Span(
        TRACE,
        "00f067aa0ba902b7",
        "b7ad6b7169203331",
        "POST /function/{name}",
        Kind.SERVER,
        start=10.0,
        end=10.25,
        attributes={
            "faas.name": "hello",
            "faas.coldstart": True,
            "http.response.status_code": 504,
            "tierfaas.offset": -3,
            "tierfaas.share": 0.5,
            "tierfaas.text": "é ✓",
        },
        error="the function timed out",
        state="vendor=abc",
        events=[("ready", 10.125)],
    )


def decode(body: bytes) -> ExportTraceServiceRequest:
    request = ExportTraceServiceRequest()
    request.ParseFromString(body)
    return request


def test_the_encoding_is_otlps_as_the_official_classes_read_it() -> None:
    root = Span("a" * 32, "1" * 16, "", "execute hello", Kind.INTERNAL, 11.0, 11.5)
    body = otlp.export_request(
        [server_span(), root],
        {"service.name": "tierfaas", "service.instance.id": "node-a"},
        ("tierfaas", "0.1.0"),
        offset_ns=1_700_000_000 * 10**9,
    )
    request = decode(body)
    (resource_spans,) = request.resource_spans
    resource = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
    assert resource == {"service.name": "tierfaas", "service.instance.id": "node-a"}
    (scope_spans,) = resource_spans.scope_spans
    assert (scope_spans.scope.name, scope_spans.scope.version) == ("tierfaas", "0.1.0")
    first, second = scope_spans.spans
    assert first.trace_id.hex() == TRACE
    assert first.span_id.hex() == "00f067aa0ba902b7"
    assert first.parent_span_id.hex() == "b7ad6b7169203331"
    assert first.trace_state == "vendor=abc"
    assert first.name == "POST /function/{name}"
    assert first.kind == OtlpSpan.SPAN_KIND_SERVER
    assert first.start_time_unix_nano == 1_700_000_010_000_000_000
    assert first.end_time_unix_nano == 1_700_000_010_250_000_000
    values = {a.key: a.value for a in first.attributes}
    assert values["faas.name"].string_value == "hello"
    assert values["faas.coldstart"].bool_value is True
    assert values["http.response.status_code"].int_value == 504
    assert values["tierfaas.offset"].int_value == -3
    assert values["tierfaas.share"].double_value == 0.5
    assert values["tierfaas.text"].string_value == "é ✓"
    assert list(values) == list(server_span().attributes)  # in order, none lost
    (event,) = first.events
    assert (event.name, event.time_unix_nano) == ("ready", 1_700_000_010_125_000_000)
    assert first.status.code == Status.STATUS_CODE_ERROR
    assert first.status.message == "the function timed out"
    # A root span has no parent; one that did not fail leaves its status unset.
    assert second.parent_span_id == b"" and second.kind == OtlpSpan.SPAN_KIND_INTERNAL
    assert second.status.code == Status.STATUS_CODE_UNSET
    assert second.trace_state == "" and not second.attributes


def test_an_unfinished_span_ends_where_it_started() -> None:
    span = Span(TRACE, "1" * 16, "", "x", Kind.INTERNAL, start=5.0)  # end 0.0
    request = decode(otlp.export_request([span], {}, ("t", "1"), 0))
    (one,) = request.resource_spans[0].scope_spans[0].spans
    assert one.start_time_unix_nano == one.end_time_unix_nano == 5_000_000_000


def test_the_traces_url_follows_otlps_endpoint_rules() -> None:
    assert traces_url("http://collector:4318") == "http://collector:4318/v1/traces"
    assert traces_url("http://collector:4318/") == "http://collector:4318/v1/traces"
    assert traces_url("https://c.example/otlp/v1/traces") == "https://c.example/otlp/v1/traces"


def spans(count: int) -> list[Span]:
    return [Span(TRACE, f"{n + 1:016x}", "", "x", Kind.INTERNAL, 1.0, 2.0) for n in range(count)]


def counted(registry: CollectorRegistry, outcome: str) -> float:
    value = registry.get_sample_value("tierfaas_trace_spans_total", {"outcome": outcome})
    return 0.0 if value is None else value


async def test_a_full_queue_drops_and_counts_and_batches_are_bounded() -> None:
    registry = CollectorRegistry()
    exporter = OtlpExporter(
        "http://127.0.0.1:9/v1/traces", {}, TraceMetrics(registry), offset_ns=0,
        max_queue=10, max_batch=4,
    )  # fmt: skip
    for span in spans(13):
        exporter.add(span)  # never waits, never raises
    assert len(exporter.queue) == 10
    assert counted(registry, "dropped") == 3
    assert [len(exporter.take_batch()) for _ in range(4)] == [4, 4, 2, 0]
    request = decode(exporter.encode(spans(3)))
    assert len(request.resource_spans[0].scope_spans[0].spans) == 3
    await exporter.close()  # nothing queued: nothing posted
    exporter.add(spans(1)[0])  # after close: dropped, counted
    assert counted(registry, "dropped") == 4 and not exporter.queue
    assert exporter.task is not None and exporter.task.done()
    await asyncio.sleep(0)


async def test_make_builds_a_tracer_whose_spans_reach_the_exporter() -> None:
    registry = CollectorRegistry()
    tracer, exporter = make("http://127.0.0.1:4318", 1.0, "node-a", ("rel", "1"), registry)
    assert exporter.endpoint == "http://127.0.0.1:4318/v1/traces"
    assert exporter.resource["service.instance.id"] == "node-a"
    assert exporter.resource["tierfaas.release.version"] == "1"
    assert exporter.offset_ns == tracer.wall_offset_ns
    assert tracer.ratio == 1.0 and tracer.node == "node-a"
    exporter.task = asyncio.get_running_loop().create_future()  # as if started: add() queues
    trace = tracer.begin([], "x")
    trace.end({})
    assert [s.span_id for s in exporter.queue] == [trace.span.span_id]
