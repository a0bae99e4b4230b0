"""An OTLP/HTTP trace receiver for tests: ``POST /v1/traces`` on loopback, each body decoded
with the official OTLP classes (opentelemetry-proto) and its spans kept as ``Received``.

It runs in a thread of the test's process (``http.server``), so the node processes under
test post to it as to any collector. ``delay_s`` makes it a slow collector (each answer
waits that long); ``status`` a failing one.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue


def _value(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    return None if kind is None else getattr(value, kind)


@dataclass(frozen=True)
class Received:
    """One span as the receiver decoded it (ids in hex, as traceparent writes them)."""

    trace_id: str
    span_id: str
    parent_id: str
    name: str
    kind: int
    start_ns: int
    end_ns: int
    attributes: dict[str, Any]
    resource: dict[str, Any]
    status_code: int
    status_message: str
    trace_state: str

    @property
    def node(self) -> str:
        return str(self.resource.get("service.instance.id", ""))


def decode(body: bytes) -> list[Received]:
    """The spans of one OTLP/HTTP protobuf body."""
    request = ExportTraceServiceRequest()
    request.ParseFromString(body)
    spans = []
    for resource_spans in request.resource_spans:
        resource = {a.key: _value(a.value) for a in resource_spans.resource.attributes}
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                spans.append(
                    Received(
                        trace_id=span.trace_id.hex(),
                        span_id=span.span_id.hex(),
                        parent_id=span.parent_span_id.hex(),
                        name=span.name,
                        kind=span.kind,
                        start_ns=span.start_time_unix_nano,
                        end_ns=span.end_time_unix_nano,
                        attributes={a.key: _value(a.value) for a in span.attributes},
                        resource=resource,
                        status_code=span.status.code,
                        status_message=span.status.message,
                        trace_state=span.trace_state,
                    )
                )
    return spans


class OtlpReceiver:
    """Listens on ``host`` (a free port); ``url`` is its base URL. Use as a context manager."""

    def __init__(self, host: str = "127.0.0.1", delay_s: float = 0.0, status: int = 200) -> None:
        self.spans: list[Received] = []
        self.posts = 0
        self.content_types: list[str] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(length)
                if delay_s:
                    time.sleep(delay_s)
                if self.path != "/v1/traces":
                    self.send_response(404)
                    self.end_headers()
                    return
                spans = decode(body)
                with receiver.lock:
                    receiver.posts += 1
                    receiver.content_types.append(self.headers.get("Content-Type", ""))
                    receiver.spans.extend(spans)
                self.send_response(status)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer((host, 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host!s}:{port}"

    def received(self, where: Callable[[Received], bool] = lambda _: True) -> list[Received]:
        with self.lock:
            return [span for span in self.spans if where(span)]

    def trace(self, trace_id: str) -> list[Received]:
        return self.received(lambda span: span.trace_id == trace_id)

    def __enter__(self) -> OtlpReceiver:
        self.thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)
