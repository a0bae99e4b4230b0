"""Calls to and from ``tierfaas.v1.CallRecord``. Decoding never trusts the peer: a record
whose id, function, state or numbers are not valid raises ``BadMessage``."""

from __future__ import annotations

import math

from tierfaas.calls import ids
from tierfaas.calls.model import STATES, Call, Failure, Request, Result
from tierfaas.control import tierfaas_pb2 as pb
from tierfaas.control.wire import BadMessage
from tierfaas.names import is_valid_name

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


def size(call: Call) -> int:
    """About the bytes ``call`` takes in a message (to bound a batch)."""
    request = call.request
    headers = sum(len(k) + len(v) + 4 for k, v in request.headers)
    result = len(call.result.body) if call.result is not None else 0
    return 256 + len(request.body) + len(request.path) + len(request.query) + headers + result
