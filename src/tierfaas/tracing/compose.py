"""The tracer and span exporter of a node that has ``--otlp-endpoint``."""

from __future__ import annotations

import socket
from urllib.parse import urlsplit

from prometheus_client import CollectorRegistry

from tierfaas.clock import Clock, monotonic
from tierfaas.tracing.exporter import OtlpExporter, TraceMetrics
from tierfaas.tracing.spans import Tracer


def traces_url(endpoint: str) -> str:
    """Where spans are posted for ``--otlp-endpoint``: a URL with no path is the collector's
    base URL and gets OTLP/HTTP's ``/v1/traces`` (as ``OTEL_EXPORTER_OTLP_ENDPOINT`` does);
    one with a path is used as it is (as ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``)."""
    parts = urlsplit(endpoint)
    if parts.path in ("", "/"):
        return f"{parts.scheme}://{parts.netloc}/v1/traces"
    return endpoint


def make(
    endpoint: str,
    ratio: float,
    node: str,
    release: tuple[str, str],
    registry: CollectorRegistry,
    clock: Clock = monotonic,
) -> tuple[Tracer, OtlpExporter]:
    """The tracer of node ``node`` and the exporter its spans go to."""
    metrics = TraceMetrics(registry)
    tracer = Tracer(node, lambda span: None, ratio=ratio, clock=clock)
    resource = {
        "service.name": "tierfaas",
        "service.instance.id": node,
        "host.name": socket.gethostname(),
        "tierfaas.release": release[0],
        "tierfaas.release.version": release[1],
    }
    exporter = OtlpExporter(
        traces_url(endpoint), resource, metrics, offset_ns=tracer.wall_offset_ns
    )
    tracer.export = exporter.add
    return tracer, exporter
