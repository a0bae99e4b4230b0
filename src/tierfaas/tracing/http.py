"""The server span of an invocation: what the HTTP app runs instead of the bare invocation
when tracing is on (``NodeApp`` checks ``tracer`` once per call and calls ``traced``).

It opens the call's ``CallTrace`` from the request's ``traceparent``, makes it ``CURRENT``
for the call's task, and ends the server span with what the answer said: the status, the
route the call took (``X-Tierfaas-Route``: local-warm, local-cold, forwarded-warm,
forwarded-cold), the node that ran it, and for an error its typed code.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from tierfaas import errors
from tierfaas.http.asgi import Receive, Scope, Send
from tierfaas.tracing.spans import CURRENT, Attribute, Tracer

ROUTE = "/function/{name}"
_ROUTE_HEADER, _SERVED_BY, _START = (
    b"x-tierfaas-route",
    b"x-tierfaas-served-by",
    b"x-tierfaas-start",
)
_HOP_HEADER, _REJECT = b"x-tierfaas-hops", b"x-tierfaas-reject"

Invoke = Callable[[Scope, Receive, Send, str, str, bytes | None], Awaitable[None]]


async def traced(
    tracer: Tracer,
    invoke: Invoke,
    scope: Scope,
    receive: Receive,
    send: Send,
    name: str,
    request_id: str,
    length: bytes | None,
) -> None:
    """Runs ``invoke`` (the app's own) inside the call's server span."""
    method: str = scope["method"]
    headers = scope["headers"]
    attributes: dict[str, Attribute] = {
        "http.request.method": method,
        "http.route": ROUTE,
        "url.path": scope["path"],
        "faas.trigger": "http",
        "faas.name": name,
        "faas.invocation_id": request_id,
        "tierfaas.node": tracer.node,
    }
    if any(key == _HOP_HEADER for key, _ in headers):
        attributes["tierfaas.forwarded_in"] = True
    trace = tracer.begin(headers, f"{method} {ROUTE}", attributes=attributes)
    ended: dict[str, Attribute] = {}
    error: str | None = None

    async def answer(message: MutableMapping[str, Any]) -> None:
        if message["type"] == "http.response.start":
            ended["http.response.status_code"] = message["status"]
            for key, value in message.get("headers", ()):
                if key == _ROUTE_HEADER:
                    ended["tierfaas.route"] = value.decode("latin-1")
                elif key == _SERVED_BY:
                    ended["tierfaas.served_by"] = value.decode("latin-1")
                elif key == _START:
                    ended["faas.coldstart"] = value == b"cold"
                elif key == _REJECT:  # a forward refused unrun here (the sender goes on)
                    ended["tierfaas.forward.reject"] = value.decode("latin-1")
        await send(message)

    token = CURRENT.set(trace)
    try:
        await invoke(scope, receive, answer, name, request_id, length)
    except errors.HttpError as exc:
        ended["http.response.status_code"] = exc.status
        ended["error.type"] = exc.code
        if exc.status >= 500:
            error = exc.message[:300]
        raise
    except BaseException as exc:
        ended["error.type"] = type(exc).__name__
        error = "the call did not finish"
        raise
    finally:
        CURRENT.reset(token)
        status = ended.get("http.response.status_code")
        if error is None and isinstance(status, int) and status >= 500:
            error = f"HTTP {status}"
            ended.setdefault("error.type", str(status))
        trace.end(ended, error)
