"""The spans of an asynchronous call: its accept and each of its attempts.

The accept is a SERVER span of the caller's trace (or the root of a new one), named like the
route (``POST /async-function/{name}``) and carrying the call id. The call keeps the accept
span's own ``traceparent`` among its headers, so every attempt, run later on this node or by
the holder that took the call over, is a CONSUMER span under the accept: one trace from the
caller through the queue to each execution, whatever node ran it. An attempt's span is
``CURRENT`` while it runs, so the router adds its forward, queue-wait and cold-start spans
under it, as it does under a synchronous call's server span.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from typing import TypeVar

from tierfaas.tracing.context import traceparent
from tierfaas.tracing.spans import CURRENT, Attribute, CallTrace, Kind, Tracer

ACCEPT_ROUTE = "/async-function/{name}"
CARRIED = frozenset({"traceparent", "tracestate"})
"""The headers of the caller's trace, which a call keeps as its accept span's instead."""

T = TypeVar("T")


def begin_accept(
    tracer: Tracer, headers: Iterable[tuple[bytes, bytes]], name: str, request_id: str
) -> CallTrace:
    """The accept's server span, started now."""
    return tracer.begin(
        headers,
        f"POST {ACCEPT_ROUTE}",
        attributes={
            "http.request.method": "POST",
            "http.route": ACCEPT_ROUTE,
            "faas.trigger": "http",
            "faas.name": name,
            "faas.invocation_id": request_id,
            "tierfaas.node": tracer.node,
        },
    )


def carried_headers(trace: CallTrace) -> list[tuple[str, str]]:
    """What the call keeps in place of the caller's ``traceparent``/``tracestate``: the
    accept span's place in the trace, so that attempts become its children."""
    context = trace.context()
    headers = [("traceparent", traceparent(context.trace_id, context.span_id, context.sampled))]
    if context.state:
        headers.append(("tracestate", context.state))
    return headers


def end_accept(trace: CallTrace, status: int, call_id: str | None, error: str | None) -> None:
    """Ends the accept's span with the answer's status and, once accepted, the call id."""
    ended: dict[str, Attribute] = {"http.response.status_code": status}
    if call_id is not None:
        ended["tierfaas.call.id"] = call_id
    if error is not None:
        ended["error.type"] = error
    trace.end(ended, None if status < 500 else (error or f"HTTP {status}"))


async def traced_attempt(
    tracer: Tracer,
    headers: Iterable[tuple[bytes, bytes]],
    function: str,
    call_id: str,
    attempt: int,
    run: Callable[[], Awaitable[T]],
    status_of: Callable[[T], int],
) -> T:
    """Runs ``run`` (one attempt of a call) inside its CONSUMER span, ``CURRENT`` meanwhile."""
    trace = tracer.begin(
        headers,
        f"run {function}",
        Kind.CONSUMER,
        attributes={
            "faas.trigger": "pubsub",
            "faas.name": function,
            "faas.invocation_id": call_id,
            "tierfaas.call.attempt": attempt,
            "tierfaas.node": tracer.node,
        },
    )
    ended: dict[str, Attribute] = {}
    error: str | None = None
    token = CURRENT.set(trace)
    try:
        reply = await run()
        status = status_of(reply)
        ended["http.response.status_code"] = status
        if status >= 500:
            error = f"HTTP {status}"
        return reply
    except BaseException as exc:
        code = getattr(exc, "code", None)
        ended["error.type"] = code if isinstance(code, str) else type(exc).__name__
        failed_with = getattr(exc, "status", None)
        if isinstance(failed_with, int):
            ended["http.response.status_code"] = failed_with
        error = str(exc)[:300] or type(exc).__name__
        raise
    finally:
        CURRENT.reset(token)
        trace.end(ended, error)
