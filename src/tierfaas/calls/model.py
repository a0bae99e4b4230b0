"""An asynchronous call as it is kept: what was asked, where it stands, how it ended.

A call is immutable; a change makes a new one (``dataclasses.replace``). Its record turns
final (``succeeded``, ``failed``, ``dead``) once; only an operator's retry makes a final call
``queued`` again. Times are Unix seconds (they outlive the process that wrote them).
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar, dataclass_transform

_T = TypeVar("_T")

State = Literal["queued", "running", "succeeded", "failed", "dead"]
STATES: tuple[State, ...] = ("queued", "running", "succeeded", "failed", "dead")
FINAL: frozenset[str] = frozenset({"succeeded", "failed", "dead"})
Role = Literal["own", "copy"]
"""``own``: this node runs the call and keeps its record; ``copy``: the second copy of
another node's call, run only if that node's run is gone (``takeover``)."""


@dataclass_transform(frozen_default=True, field_specifiers=(field,))
def record(cls: type[_T]) -> type[_T]:
    """A frozen dataclass to the type checker (mypy rejects the assignment of a field),
    equal and hashed by its fields as a frozen one, but built without a frozen one's
    ``object.__setattr__`` per field: that made a ``Call`` cost ~3 µs to construct instead
    of ~0.7 µs, and every call is constructed several times on the origin and the holder
    (profiled). Nothing assigns a field at run time either: a change makes a new one."""
    return dataclass(slots=True, unsafe_hash=True)(cls)


@record
class Request:
    """What the function is given when the call runs (always as a POST)."""

    body: bytes = b""
    path: str = "/"
    query: str = ""
    headers: tuple[tuple[str, str], ...] = ()


@record
class Result:
    """The function's answer: its HTTP status, content type and body."""

    status: int
    content_type: str
    body: bytes


@record
class Failure:
    """A typed error in place of an answer (a timeout, a crash, the node's refusal)."""

    status: int
    error: str
    message: str


@record
class Call:
    call_id: str
    function: str
    accepted_at: float
    request: Request = field(default_factory=Request)
    role: Role = "own"
    state: State = "queued"
    attempts: int = 0
    due_at: float = 0.0
    """When it may run (again): the accept's time, or a retry's backoff."""
    finished_at: float | None = None
    node: str = ""
    """The node that keeps its record (the origin, or the holder that took it over)."""
    idem_key: str | None = None
    callback_url: str | None = None
    callback_state: str | None = None
    """``pending`` until delivered, then ``delivered`` or ``failed``."""
    callback_attempts: int = 0
    result: Result | None = None
    failure: Failure | None = None

    @property
    def final(self) -> bool:
        return self.state in FINAL


def ended(call: Call, attempts: int, state: State, finished_at: float | None,
          result: Result | None, failure: Failure | None, due_at: float) -> Call:  # fmt: skip
    """``call`` after an attempt: ``dataclasses.replace`` spelled out, for the path every
    call takes (replace looks up the fields each time: several times the cost)."""
    c = call
    return Call(
        c.call_id, c.function, c.accepted_at, c.request, c.role, state, attempts, due_at,
        finished_at, c.node, c.idem_key, c.callback_url, c.callback_state,
        c.callback_attempts, result, failure,
    )  # fmt: skip


def as_copy(call: Call) -> Call:
    """``call`` as a holder keeps it (role ``copy``): ``replace`` spelled out, as ``ended``."""
    c = call
    return Call(
        c.call_id, c.function, c.accepted_at, c.request, "copy", c.state, c.attempts,
        c.due_at, c.finished_at, c.node, c.idem_key, c.callback_url, c.callback_state,
        c.callback_attempts, c.result, c.failure,
    )  # fmt: skip


def body_json(body: bytes) -> dict[str, str]:
    """A body in JSON: ``{"body": text}`` when it is UTF-8, else ``{"body_base64": ...}``."""
    try:
        return {"body": body.decode("utf-8")}
    except UnicodeDecodeError:
        return {"body_base64": base64.b64encode(body).decode("ascii")}


def view(call: Call) -> dict[str, Any]:
    """The call as ``GET /v1/calls/{id}`` shows it (and a callback carries it)."""
    result = None
    if call.result is not None:
        result = {
            "status": call.result.status,
            "content_type": call.result.content_type,
            **body_json(call.result.body),
        }
    error = None
    if call.failure is not None:
        error = {"error": call.failure.error, "message": call.failure.message}
    callback = None
    if call.callback_url is not None:
        callback = {
            "url": call.callback_url,
            "state": call.callback_state or "pending",
            "attempts": call.callback_attempts,
        }
    return {
        "call_id": call.call_id,
        "function": call.function,
        "state": call.state,
        "attempts": call.attempts,
        "accepted_at": call.accepted_at,
        "finished_at": call.finished_at,
        "node": call.node,
        "result": result,
        "error": error,
        "callback": callback,
    }
