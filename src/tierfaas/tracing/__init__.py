"""Distributed tracing: W3C Trace Context in, OpenTelemetry spans out over OTLP/HTTP.

With ``--otlp-endpoint URL`` a node records, for each call it takes, a server span and the
child spans of what the call did here (queue wait, cold start and its phases, forward,
execution), and posts them in batches to the collector at URL; the node it forwards a call to
gets the call's ``traceparent`` and records its part of the same trace. Without the setting
nothing is made: no tracer, no exporter, no task; a call pays the app's check of its tracer
and the pool's read of a context variable that answers None.

- ``context.py``: ``traceparent``/``tracestate`` parsed and written (pure)
- ``sampling.py``: parent-based sampling, then ``--trace-sample`` of new traces (pure)
- ``spans.py``: the span record, the tracer and a call's trace (``CURRENT``)
- ``otlp.py``: spans as an OTLP ``ExportTraceServiceRequest`` in protobuf (pure)
- ``exporter.py``: the bounded queue and the batching, posting task
- ``record.py``: the child spans a forward, a run and a cold start add (pure)
- ``http.py``: the server span around an invocation
- ``compose.py``: the tracer and exporter of a node with ``--otlp-endpoint``

This package's ``__init__`` imports nothing: the pool and the router import ``spans`` and
``record`` alone.

Why not the official ``opentelemetry-sdk`` with ``opentelemetry-exporter-otlp-proto-http``:
both install beside this project's protobuf 7 and grpcio (1.45.2, checked), but measured on
this machine kind the SDK's call path costs about 6 times what these records do, and its
encoding about 8 times per span (its context API, span processor lock and attribute checks run
on the event loop's thread; docs/operations.md, "Tracing", has the numbers), and its exporter
posts with ``requests`` from a thread of its own, retrying a dead collector with backoff while
it competes with the event loop for the GIL. The records here are plain slotted objects,
encoded only in the export task; tests decode that encoding with the official generated
classes (opentelemetry-proto, a dev dependency), so the wire format is the spec's.
"""
