"""Spans encoded as an OTLP ``ExportTraceServiceRequest`` in protobuf's binary format, the
body of an OTLP/HTTP ``POST /v1/traces`` (``Content-Type: application/x-protobuf``).

Written out by hand, as the OTLP spec's messages are small and fixed: the fields below are
those of opentelemetry-proto's ``trace.proto``, ``common.proto``, ``resource.proto`` and
``trace_service.proto`` (v1), numbers included, and tests/unit/test_tracing_otlp.py decodes
the output with the official generated classes. Why not the official SDK and exporter:
docs/operations.md, "Tracing", and the ``tierfaas.tracing`` package docstring.

Pure: bytes out of spans, no I/O.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping, Sequence

from tierfaas.tracing.spans import Attribute, Kind, Span

_VARINT, _FIXED64, _BYTES, _FIXED32 = 0, 1, 2, 5
_STATUS_ERROR = 2
_INT64 = (1 << 64) - 1
_pack_q = struct.Struct("<Q").pack
_pack_d = struct.Struct("<d").pack


def _varint_slow(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


# Encoding is the exporter's main cost (pure Python, per span and attribute): the varints of
# lengths below 16 KiB, every tag and each (key, value) pair's whole KeyValue are looked up,
# not computed.
_SMALL = [_varint_slow(n) for n in range(1 << 14)]


def _varint(value: int) -> bytes:
    return _SMALL[value] if value < 16384 else _varint_slow(value)


_TAGS = {(n, w): _varint_slow(n << 3 | w) for n in range(1, 17) for w in (0, 1, 2, 5)}


def _tag(number: int, wire: int) -> bytes:
    return _TAGS[number, wire]


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited field: a string, bytes or an embedded message."""
    return _TAGS[number, _BYTES] + _varint(len(payload)) + payload


def _text(number: int, text: str) -> bytes:
    return _field(number, text.encode("utf-8", "replace")) if text else b""


def _fixed64(number: int, value: int) -> bytes:
    return _tag(number, _FIXED64) + _pack_q(value)


def any_value(value: Attribute) -> bytes:
    """``AnyValue``: string_value 1, bool_value 2, int_value 3 (int64), double_value 4."""
    if isinstance(value, bool):
        return _tag(2, _VARINT) + _varint(int(value))
    if isinstance(value, int):
        return _tag(3, _VARINT) + _varint(value & _INT64)
    if isinstance(value, float):
        return _tag(4, _FIXED64) + _pack_d(value)
    return _field(1, str(value).encode("utf-8", "replace"))


def key_value(key: str, value: Attribute) -> bytes:
    """``KeyValue``: key 1, value 2."""
    return _text(1, key) + _field(2, any_value(value))


_PAIRS: dict[tuple[str, type, Attribute], bytes] = {}
_MAX_PAIRS = 4096  # the cache is cleared when full: request ids and paths churn through it


def _attributes(number: int, attributes: Mapping[str, Attribute]) -> bytes:
    """Repeated ``KeyValue`` field ``number`` (each pair's encoding cached, by type too: True
    and 1 are equal keys of a dict but not the same attribute)."""
    out = []
    pairs = _PAIRS
    for key, value in attributes.items():
        cached = pairs.get((key, type(value), value))
        if cached is None:
            if len(pairs) >= _MAX_PAIRS:
                pairs.clear()
            cached = pairs[key, type(value), value] = _field(number, key_value(key, value))
        out.append(cached)
    return b"".join(out)


def _nanos(clock_s: float, offset_ns: int) -> int:
    return max(0, offset_ns + round(clock_s * 1e9))


_TRACE_ID = _TAGS[1, _BYTES] + b"\x10"  # tag and length (16) of a trace id
_SPAN_ID = _TAGS[2, _BYTES] + b"\x08"
_PARENT_ID = _TAGS[4, _BYTES] + b"\x08"
_START, _END = _TAGS[7, _FIXED64], _TAGS[8, _FIXED64]
_KINDS = {kind: _TAGS[6, _VARINT] + _varint(int(kind)) for kind in Kind}
_NAMES: dict[str, bytes] = {}  # span names are few ("execute NAME" per function)


def span(record: Span, offset_ns: int) -> bytes:
    """``Span``: trace_id 1, span_id 2, trace_state 3, parent_span_id 4, name 5, kind 6,
    start_time_unix_nano 7, end_time_unix_nano 8, attributes 9, events 11, status 15
    (``Status``: message 2, code 3). ``offset_ns``: Unix time less clock time, nanoseconds."""
    name = _NAMES.get(record.name)
    if name is None:
        if len(_NAMES) >= _MAX_PAIRS:
            _NAMES.clear()
        name = _NAMES[record.name] = _text(5, record.name)
    start = max(0, offset_ns + round(record.start * 1e9))
    end = max(start, offset_ns + round(record.end * 1e9))
    out = [_TRACE_ID, bytes.fromhex(record.trace_id), _SPAN_ID, bytes.fromhex(record.span_id)]
    if record.state:
        out.append(_text(3, record.state))
    if record.parent_id:
        out += (_PARENT_ID, bytes.fromhex(record.parent_id))
    out += (name, _KINDS[record.kind], _START, _pack_q(start), _END, _pack_q(end))
    out.append(_attributes(9, record.attributes))
    for event, at in record.events:  # ``Span.Event``: time_unix_nano 1, name 2
        out.append(_field(11, _fixed64(1, _nanos(at, offset_ns)) + _text(2, event)))
    if record.error is not None:
        status = _text(2, record.error) + _tag(3, _VARINT) + _varint(_STATUS_ERROR)
        out.append(_field(15, status))
    return b"".join(out)


def export_request(
    spans: Sequence[Span],
    resource: Mapping[str, Attribute],
    scope: tuple[str, str],
    offset_ns: int,
) -> bytes:
    """``ExportTraceServiceRequest`` { resource_spans 1: ``ResourceSpans`` { resource 1
    (``Resource``: attributes 1), scope_spans 2 (``ScopeSpans``: scope 1
    (``InstrumentationScope``: name 1, version 2), spans 2) } }: every span under one
    resource (this node) and one scope (tierfaas)."""
    scope_spans = _field(1, _text(1, scope[0]) + _text(2, scope[1])) + b"".join(
        _field(2, span(record, offset_ns)) for record in spans
    )
    resource_spans = _field(1, _attributes(1, resource)) + _field(2, scope_spans)
    return _field(1, resource_spans)
