"""W3C Trace Context (https://www.w3.org/TR/trace-context/): the ``traceparent`` and
``tracestate`` headers, parsed and written. Pure: no clock, no randomness, no I/O.

A ``traceparent`` is ``VERSION-TRACE_ID-PARENT_ID-FLAGS`` in lower-case hex (2-32-16-2
digits). What the spec says a receiver must do with a bad one is what happens here: it is
ignored (``parse_traceparent`` answers None) and the call starts a new trace; it is never an
error. Version ``ff`` is invalid; a version above ``00`` is read by its first four fields, as
the spec asks of a receiver that knows only version 00. ``tracestate`` is carried on as the
caller sent it (joined when repeated), or dropped whole when it is not a list of ``key=value``
members, has more than 32 of them, or is longer than 512 characters.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

TRACEPARENT = b"traceparent"
TRACESTATE = b"tracestate"
SAMPLED = 0x01

_HEX = frozenset("0123456789abcdef")
_ZERO_TRACE = "0" * 32
_ZERO_SPAN = "0" * 16
_MAX_STATE_CHARS = 512
_MAX_STATE_MEMBERS = 32
# A member: key "=" value (the spec's grammar, simplified to what is easy to check here).
_STATE_MEMBER = re.compile(r"[a-z0-9][a-z0-9_\-*/@]{0,255}=[\x20-\x2b\x2d-\x3c\x3e-\x7e]{0,255}")


@dataclass(frozen=True, slots=True)
class SpanContext:
    """Where a span sits in a trace: its trace, its own id (the parent of what it starts),
    whether the trace is sampled, and the vendors' ``tracestate`` carried along."""

    trace_id: str  # 32 lower-case hex digits, not all zero
    span_id: str  # 16 lower-case hex digits, not all zero
    sampled: bool
    state: str = ""


def _is_hex(text: str, length: int) -> bool:
    return len(text) == length and _HEX.issuperset(text)


def parse_traceparent(value: str) -> SpanContext | None:
    """The caller's span as a ``traceparent`` header names it, or None when it is malformed
    (the call then starts a new trace)."""
    if len(value) < 55 or value[2] != "-":
        return None
    version = value[:2]
    if not _is_hex(version, 2) or version == "ff":
        return None
    if version == "00" and len(value) != 55:
        return None
    if len(value) > 55 and value[55] != "-":  # a later version may add fields after a dash
        return None
    trace_id, span_id, flags = value[3:35], value[36:52], value[53:55]
    if value[35] != "-" or value[52] != "-":
        return None
    if not (_is_hex(trace_id, 32) and _is_hex(span_id, 16) and _is_hex(flags, 2)):
        return None
    if trace_id == _ZERO_TRACE or span_id == _ZERO_SPAN:
        return None
    return SpanContext(trace_id, span_id, bool(int(flags, 16) & SAMPLED))


def parse_tracestate(values: Iterable[str]) -> str:
    """The ``tracestate`` to carry on ("" to drop it): the header's values joined, if they
    are well formed."""
    joined = ",".join(v.strip() for v in values if v.strip())
    if not joined or len(joined) > _MAX_STATE_CHARS:
        return ""
    members = [m.strip() for m in joined.split(",") if m.strip()]
    if len(members) > _MAX_STATE_MEMBERS:
        return ""
    if not all(_STATE_MEMBER.fullmatch(m) for m in members):
        return ""
    return ",".join(members)


def traceparent(trace_id: str, span_id: str, sampled: bool) -> str:
    """The version-00 ``traceparent`` that names span ``span_id`` of trace ``trace_id``."""
    return f"00-{trace_id}-{span_id}-{'01' if sampled else '00'}"


def extract(headers: Iterable[tuple[bytes, bytes]]) -> SpanContext | None:
    """The caller's span from a request's raw headers (ASGI: lower-case names), with its
    ``tracestate``; None when there is no valid ``traceparent``. A repeated ``traceparent``
    is ambiguous, and ignored like a malformed one."""
    parent: list[bytes] = []
    state: list[str] = []
    for key, value in headers:
        if key == TRACEPARENT:
            parent.append(value)
        elif key == TRACESTATE:
            state.append(value.decode("latin-1"))
    if len(parent) != 1:
        return None
    found = parse_traceparent(parent[0].decode("latin-1").strip())
    if found is None or not state:
        return found
    return SpanContext(found.trace_id, found.span_id, found.sampled, parse_tracestate(state))
