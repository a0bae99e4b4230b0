"""The run of an async call: straight to this node's pool when its function has a free slot
here, else through the router.

A free slot here is the router's first rule (``LocalState.runs_here_now``): with one, the
router runs the call here without looking further. Asking the pool directly skips the rest
of ``Router.handle`` for the common case of an async call, which the dispatcher starts only
within the function's share of slots: the scan for hop headers (a stored request has none:
the accept drops them), the headers' dict built for a route that is not taken, the route
decision and the reply's headers (a run's answer is read for its status, content type and
body). The handler sees the same context, and the route is counted as the router counts it.
Without a free slot (all busy, none warm, or the function cold here) the router decides:
queue here, forward to a warm peer or start an instance.
"""

from __future__ import annotations

from collections.abc import Awaitable, Sequence

from tierfaas.calls.ports import Header
from tierfaas.routing.router import (
    CALL_ATTEMPT,
    CALL_ID,
    NOT_FOR_HANDLERS,
    Reply,
    Router,
    handler_headers,
)
from tierfaas.runtime import Runtime


def context_headers(headers: Sequence[Header], call: tuple[str, int] | None) -> dict[str, str]:
    """The headers a handler's context shows for a stored request (as the router shows them),
    with the call's id and attempt."""
    seen = handler_headers(headers, NOT_FOR_HANDLERS)
    if call is not None:
        seen[CALL_ID] = call[0]
        seen[CALL_ATTEMPT] = str(call[1])
    return seen


class LocalFirst:
    """A ``RunCall``: ``router.handle`` but for a call whose function has a free slot on
    ``runtime`` here, which it runs there itself."""

    def __init__(self, router: Router, runtime: Runtime) -> None:
        self.router = router
        self.runtime = runtime

    def __call__(
        self,
        name: str,
        body: bytes,
        *,
        request_id: str,
        method: str,
        query: str,
        headers: Sequence[Header],
        started: float,
        path: str = "/",
        call: tuple[str, int] | None = None,
    ) -> Awaitable[Reply]:
        pool = self.runtime.pool(name)  # 404 before anything else, as the router
        if pool.free_slots()[1] <= 0:
            return self.router.handle(
                name, body, request_id=request_id, method=method, query=query,
                headers=headers, started=started, path=path, call=call,
            )  # fmt: skip
        context = context_headers(headers, call) if pool.takes_context else None
        return self._here(name, body, request_id, method, query, context, started, path)

    async def _here(
        self, name: str, body: bytes, request_id: str, method: str, query: str,
        context: dict[str, str] | None, started: float, path: str,
    ) -> Reply:  # fmt: skip
        result = await self.runtime.invoke(
            name, body, request_id=request_id, method=method, path=path, query=query,
            headers=context, started=started,
        )  # fmt: skip
        self.router.metrics.routes.inc("local-cold" if result.cold else "local-warm")
        headers = [(b"content-type", result.content_type.encode("latin-1"))]
        if result.headers:
            headers += result.headers
        return Reply(result.status, result.body, headers, result.cold)
