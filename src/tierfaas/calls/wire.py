"""Calls to and from their two wire forms: ``tierfaas.v1.CallRecord`` (the gRPC calls:
AcceptCall) and a *row*, a list of plain values that msgpack carries on the calls lane
(``calls/lane.py``: copies and outcomes, the hot path; a row costs a few microseconds to
encode where a protobuf record built field by field costs several times that). Decoding
never trusts the peer: a record or row whose id, function, state, types or numbers are not
valid raises ``BadMessage``.

A row's fields are positional: ONLY APPEND to ``ROW_FIELDS`` (a decoder ignores fields past
the ones it knows, so an older node reads a newer row)."""

from __future__ import annotations

import math
from itertools import chain
from typing import Any

from tierfaas.calls import ids
from tierfaas.calls.model import STATES, Call, Failure, Request, Result, Role
from tierfaas.control import tierfaas_pb2 as pb
from tierfaas.control.wire import BadMessage
from tierfaas.names import NAME_RE, is_valid_name

MAX_HEADERS = 256


def to_pb(call: Call, *, with_request: bool = True) -> pb.CallRecord:
    """``call`` as a record; without its request for an outcome (the holder has it)."""
    record = pb.CallRecord(
        call_id=call.call_id,
        function=call.function,
        accepted_at=call.accepted_at,
        due_at=call.due_at,
        attempts=call.attempts,
        idem_key=call.idem_key or "",
        callback_url=call.callback_url or "",
        state=call.state,
        finished_at=call.finished_at or 0.0,
        callback_state=call.callback_state or "",
        callback_attempts=call.callback_attempts,
        node=call.node,
    )
    if with_request:
        request = call.request
        record.path, record.query, record.body = request.path, request.query, request.body
        record.headers.extend(pb.CallHeader(name=k, value=v) for k, v in request.headers)
    if call.result is not None:
        record.result_status = call.result.status
        record.result_type = call.result.content_type
        record.result_body = call.result.body
    if call.failure is not None:
        record.error = call.failure.error
        record.error_message = call.failure.message
        record.error_status = call.failure.status
    return record


def _time(value: float, what: str) -> float:
    if not math.isfinite(value) or value < 0:
        raise BadMessage(f"{what} is not a time")
    return value


def from_pb(record: pb.CallRecord, *, with_id: bool = True) -> Call:
    """The call ``record`` holds; raises ``BadMessage`` when it is not a valid one."""
    if with_id:
        try:
            ids.parse(record.call_id)
        except ValueError as exc:
            raise BadMessage(f"call_id: {exc}") from None
    if not is_valid_name(record.function):
        raise BadMessage("function is not a valid name")
    if record.state not in STATES:
        raise BadMessage(f"state {record.state[:20]!r} is not a call state")
    if len(record.headers) > MAX_HEADERS:
        raise BadMessage(f"more than {MAX_HEADERS} headers")
    result = None
    if record.result_status:
        result = Result(record.result_status, record.result_type, record.result_body)
    failure = None
    if record.error:
        failure = Failure(record.error_status, record.error, record.error_message)
    return Call(
        call_id=record.call_id,
        function=record.function,
        accepted_at=_time(record.accepted_at, "accepted_at"),
        request=Request(
            record.body,
            record.path or "/",
            record.query,
            tuple((h.name, h.value) for h in record.headers),
        ),
        state=record.state,  # checked above
        attempts=record.attempts,
        due_at=_time(record.due_at, "due_at"),
        finished_at=_time(record.finished_at, "finished_at") or None,
        node=record.node,
        idem_key=record.idem_key or None,
        callback_url=record.callback_url or None,
        callback_state=record.callback_state or None,
        callback_attempts=record.callback_attempts,
        result=result,
        failure=failure,
    )


ROW_FIELDS = (
    "call_id", "function", "accepted_at", "due_at", "attempts", "idem_key", "callback_url",
    "state", "finished_at", "callback_state", "callback_attempts", "node",
    "path", "query", "body", "headers", "result", "failure",
)  # fmt: skip
_ROW_LEN = len(ROW_FIELDS)
_REQUEST_AT = ROW_FIELDS.index("path")
Row = list[Any]
_NO_REQUEST = Request()


def to_row(call: Call, *, with_request: bool = True) -> Row:
    """``call`` as a row; without its request for an outcome (the holder has it)."""
    r, f = call.result, call.failure
    row: Row = [
        call.call_id, call.function, call.accepted_at, call.due_at, call.attempts,
        call.idem_key, call.callback_url, call.state, call.finished_at, call.callback_state,
        call.callback_attempts, call.node, None, None, None, None,
        None if r is None else (r.status, r.content_type, r.body),
        None if f is None else (f.status, f.error, f.message),
    ]  # fmt: skip
    if with_request:
        request = call.request
        row[_REQUEST_AT : _REQUEST_AT + 4] = (
            request.path, request.query, request.body, request.headers
        )  # fmt: skip
    return row


def _time_of(value: Any, what: str) -> float:
    # ``type`` rather than ``isinstance``: msgpack gives exact types, and a bool is no time.
    if (type(value) is not float and type(value) is not int) or not 0 <= value < math.inf:
        raise BadMessage(f"{what} is not a time")
    return float(value)


def _count(value: Any, what: str) -> int:
    if type(value) is not int or not 0 <= value < 2**31:
        raise BadMessage(f"{what} is not a count in range")
    return int(value)


def _headers(headers: Any) -> tuple[tuple[str, str], ...]:
    if type(headers) is not list or len(headers) > MAX_HEADERS:
        raise BadMessage(f"headers are a list of at most {MAX_HEADERS} pairs")
    pairs = []
    for pair in headers:
        if type(pair) is not list or len(pair) != 2:
            raise BadMessage("a header is a pair of strings")
        name, value = pair
        if type(name) is not str or type(value) is not str:
            raise BadMessage("a header is a pair of strings")
        pairs.append((name, value))
    return tuple(pairs)


def from_row(row: Any, role: Role = "own") -> Call:
    """The call ``row`` holds, as a call of ``role`` here (a holder reads copies as its
    ``copy`` calls, built once); raises ``BadMessage`` when it is not a valid one.

    Every row of every copy and outcome passes here on the holder's loop: the checks are
    written out (exact types, one pattern for the id) rather than composed of small helpers,
    which cost the holder about a third of its loop time per call (profiled)."""
    if type(row) is not list or len(row) < _ROW_LEN:
        raise BadMessage("a call row is a list of its fields")
    (call_id, function, accepted_at, due_at, attempts, idem_key, callback_url, state,
     finished_at, callback_state, callback_attempts, node, path, query, body, headers,
     result, failure) = row[:_ROW_LEN]  # fmt: skip
    if type(call_id) is not str or not ids.is_valid(call_id):
        raise BadMessage("call_id is not a call id (ORIGIN~HOLDER~16 hex digits)")
    if type(function) is not str or NAME_RE.fullmatch(function) is None:
        raise BadMessage("function is not a valid name")
    if type(state) is not str or state not in STATES:
        raise BadMessage(f"state {str(state)[:20]!r} is not a call state")
    if type(node) is not str:
        raise BadMessage("node has the wrong type")
    request = _NO_REQUEST
    if path is not None:
        if type(path) is not str or type(query) is not str or type(body) is not bytes:
            raise BadMessage("path, query and body have the wrong types")
        request = Request(body, path or "/", query, () if headers == [] else _headers(headers))
    answer = None
    if result is not None:
        if type(result) is not list or len(result) != 3:
            raise BadMessage("result is (status, content type, body)")
        status, content_type, result_body = result
        if type(content_type) is not str or type(result_body) is not bytes:
            raise BadMessage("result type and body have the wrong types")
        answer = Result(_count(status, "result status"), content_type, result_body)
    error = None
    if failure is not None:
        if type(failure) is not list or len(failure) != 3:
            raise BadMessage("failure is (status, error, message)")
        status, code, message = failure
        if type(code) is not str or type(message) is not str:
            raise BadMessage("error and error message have the wrong types")
        error = Failure(_count(status, "error status"), code, message)
    if not (
        type(attempts) is int
        and 0 <= attempts < 2**31
        and type(callback_attempts) is int
        and 0 <= callback_attempts < 2**31
    ):
        raise BadMessage("attempts and callback_attempts are counts in range")
    if not (
        (idem_key is None or type(idem_key) is str)
        and (callback_url is None or type(callback_url) is str)
        and (callback_state is None or type(callback_state) is str)
    ):
        raise BadMessage("idem_key, callback_url and callback_state are texts or nothing")
    return Call(
        call_id, function, _time_of(accepted_at, "accepted_at"), request, role, state,
        attempts, _time_of(due_at, "due_at"),
        None if finished_at is None else _time_of(finished_at, "finished_at"), node,
        idem_key, callback_url, callback_state, callback_attempts, answer, error,
    )  # fmt: skip


def size(call: Call, *, with_request: bool = True) -> int:
    """About the bytes ``call`` takes in a message (to bound a batch)."""
    result = len(call.result.body) if call.result is not None else 0
    if not with_request:
        return 256 + result
    request = call.request
    headers = sum(map(len, chain.from_iterable(request.headers))) + 4 * len(request.headers)
    return 256 + len(request.body) + len(request.path) + len(request.query) + headers + result
