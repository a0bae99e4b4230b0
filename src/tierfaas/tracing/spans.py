"""Spans as tierfaas records them, and the trace of one call on this node.

Theory of operation. The HTTP app opens a ``CallTrace`` for each invocation when tracing is
on (``Tracer.begin``) and sets it as ``CURRENT`` for the call's task; the router (a
forward), the pool (queue wait, execution) and the cold start the call set off (a task that
inherits the call's context) read ``CURRENT`` and add finished child spans to it. With
tracing off nothing sets ``CURRENT``: each of those places costs one context-variable read
that answers None.

A span is recorded after the fact, with the start and end its recorder measured on the
node's monotonic clock; the exporter turns those into Unix nanoseconds with one offset taken
when the tracer was made (``wall_offset_ns``), so a span costs no wall-clock read. Recording
appends the finished span to the exporter's bounded queue and returns: nothing here waits.

A call whose trace is not sampled still gets a ``CallTrace`` (``recording`` false): it
records nothing but still hands its trace id and flags on to the node it forwards to, so that
node follows the same decision.
"""

from __future__ import annotations

import random
import secrets
import time
from collections.abc import Callable, Iterable
from contextvars import ContextVar
from dataclasses import dataclass, field
from enum import IntEnum

from tierfaas.clock import Clock, monotonic
from tierfaas.tracing.context import SpanContext, extract, traceparent
from tierfaas.tracing.sampling import sampled

Attribute = str | bool | int | float


class Kind(IntEnum):
    """OTLP's ``Span.SpanKind`` numbers."""

    INTERNAL = 1
    SERVER = 2
    CLIENT = 3
    PRODUCER = 4
    CONSUMER = 5


@dataclass(slots=True)
class Span:
    """One finished (or, for a call's server span, open) span. ``start``/``end``: the
    tracer's monotonic clock, seconds; ``error``: the status message of a failed span (None:
    status unset, as OpenTelemetry leaves a span that did not fail)."""

    trace_id: str
    span_id: str
    parent_id: str  # "" for a trace's root
    name: str
    kind: Kind
    start: float
    end: float = 0.0
    attributes: dict[str, Attribute] = field(default_factory=dict)
    error: str | None = None
    state: str = ""  # the tracestate the span was made under
    events: list[tuple[str, float]] = field(default_factory=list)  # (name, clock time)


Export = Callable[[Span], None]


# Ids need to be unique, not secret (as OpenTelemetry's SDKs make them): a Mersenne Twister
# seeded from the OS, as ``secrets`` would cost a system call per id.
_random = random.Random(secrets.randbits(128))


def _random_id(bits: int) -> str:
    while True:
        value = _random.getrandbits(bits)
        if value:  # all zero is the spec's "invalid"
            return f"{value:0{bits // 4}x}"


class Tracer:
    """Makes this node's spans and hands each finished one to ``export`` (the exporter's
    queue). ``ratio``: the share of new traces that are sampled (``sampling.sampled``);
    ``new_id(bits)``: random hex ids (injected by tests)."""

    def __init__(
        self,
        node: str,
        export: Export,
        *,
        ratio: float = 1.0,
        clock: Clock = monotonic,
        wall: Callable[[], int] = time.time_ns,
        new_id: Callable[[int], str] = _random_id,
    ) -> None:
        self.node = node
        self.export = export
        self.ratio = ratio
        self.clock = clock
        self.new_id = new_id
        # Unix nanoseconds = clock nanoseconds + this (one reading: a span reads no wall
        # clock). Integer: a float of Unix nanoseconds is off by up to 128 ns.
        self.wall_offset_ns = wall() - round(clock() * 1e9)

    def begin(
        self,
        headers: Iterable[tuple[bytes, bytes]],
        name: str,
        kind: Kind = Kind.SERVER,
        attributes: dict[str, Attribute] | None = None,
    ) -> CallTrace:
        """The trace of a call that arrived with ``headers``: a child of the caller's span when
        they carry a valid ``traceparent``, else the root of a new trace. Its server span
        starts now and ends with ``CallTrace.end``."""
        parent = extract(headers)
        trace_id = parent.trace_id if parent is not None else self.new_id(128)
        recording = sampled(parent, trace_id, self.ratio)
        span = Span(
            trace_id,
            self.new_id(64),
            "" if parent is None else parent.span_id,
            name,
            kind,
            self.clock(),
            attributes={} if attributes is None else attributes,
            state="" if parent is None else parent.state,
        )
        return CallTrace(self, span, recording)


class CallTrace:
    """The spans of one call on this node: its server span and the children its parts add."""

    __slots__ = ("recording", "span", "tracer")

    def __init__(self, tracer: Tracer, span: Span, recording: bool) -> None:
        self.tracer = tracer
        self.span = span
        self.recording = recording

    def child(
        self,
        name: str,
        start: float,
        end: float,
        attributes: dict[str, Attribute] | None = None,
        *,
        parent_id: str | None = None,
        kind: Kind = Kind.INTERNAL,
        error: str | None = None,
        span_id: str | None = None,
    ) -> str:
        """Records a finished span under the call's server span (or under ``parent_id``);
        returns its id (made up here unless ``span_id`` is given)."""
        span_id = span_id or self.tracer.new_id(64)
        if self.recording:
            server = self.span
            self.tracer.export(
                Span(
                    server.trace_id,
                    span_id,
                    parent_id or server.span_id,
                    name,
                    kind,
                    start,
                    end,
                    {} if attributes is None else attributes,
                    error,
                    server.state,
                )
            )
        return span_id

    def outgoing(self) -> tuple[str, dict[str, str]]:
        """A new span id for a request this call sends on (a forward), and the headers that
        make the receiver's spans its children: ``traceparent`` and, if any, ``tracestate``."""
        span_id = self.tracer.new_id(64)
        span = self.span
        headers = {"traceparent": traceparent(span.trace_id, span_id, self.recording)}
        if span.state:
            headers["tracestate"] = span.state
        return span_id, headers

    def end(self, attributes: dict[str, Attribute], error: str | None = None) -> None:
        """Ends the server span now, with ``attributes`` added, and exports it."""
        span = self.span
        span.end = self.tracer.clock()
        span.attributes.update(attributes)
        span.error = error
        if self.recording:
            self.tracer.export(span)

    def context(self) -> SpanContext:
        """The server span's place in its trace."""
        span = self.span
        return SpanContext(span.trace_id, span.span_id, self.recording, span.state)


CURRENT: ContextVar[CallTrace | None] = ContextVar("tierfaas_call_trace", default=None)
"""The trace of the call the running task serves (None: tracing is off, or no call)."""
