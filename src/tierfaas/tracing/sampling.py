"""Which calls are traced: parent-based, then a ratio of new traces.

A call whose caller sent a valid ``traceparent`` follows the caller's decision (its sampled
flag), so one trace is recorded on every node it touches or on none. A call that starts a new
trace is sampled when its trace id falls in the first ``ratio`` of the id space (the lower 64
bits of the id, as OpenTelemetry's ``TraceIdRatioBased`` sampler reads them): the decision
is a function of the trace id alone, so every node that sees the id decides alike.
"""

from __future__ import annotations

from tierfaas.tracing.context import SpanContext

_ID_SPACE = 1 << 64


def sampled(parent: SpanContext | None, trace_id: str, ratio: float) -> bool:
    """Whether the call's spans are recorded (``trace_id``: its trace, the parent's if any)."""
    if parent is not None:
        return parent.sampled
    if ratio >= 1.0:
        return True
    if ratio <= 0.0:
        return False
    return int(trace_id[16:], 16) < int(ratio * _ID_SPACE)
