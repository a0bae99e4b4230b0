"""Calling a node's ASGI app in process: no socket, no server (for unit tests)."""

from __future__ import annotations

import asyncio
from typing import Any

from tierfaas.http.app import NodeApp


def request(
    app: NodeApp, path: str, headers: dict[str, str] | None = None, method: str = "GET"
) -> tuple[int, dict[str, str], bytes]:
    """One request with an empty body (``path`` may end in ``?QUERY``): its status, headers
    and body. Runs its own event loop
    and closes the app's dashboard after."""
    path, _, query = path.partition("?")
    scope: dict[str, Any] = {
        "type": "http",
        "method": method,
        "path": path,
        "query_string": query.encode(),
        "headers": [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()],
    }
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    async def run() -> None:
        await app(scope, receive, send)  # type: ignore[arg-type]
        await app.dashboard.close()

    asyncio.run(run())
    start = sent[0]
    got = {k.decode(): v.decode() for k, v in start["headers"]}
    return start["status"], got, b"".join(m.get("body", b"") for m in sent[1:])
