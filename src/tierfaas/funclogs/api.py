"""``GET /v1/logs?function=&since=&request=&follow=&limit=``: a function's lines on this node.

The answer is ``application/x-ndjson``: one ``LogLine`` JSON object a line, oldest first. With
``follow=true`` the answer does not end: after the lines so far it sends each new line as the
node reads it, until the client leaves or the node drains (a follower is woken at least once a
second to see that). A follower that falls ``FOLLOW_QUEUE_LINES`` behind is told how many lines
it missed, in a line ``{"missed": N, "node": ...}`` (no ``text``). ``parse_query`` is pure.
"""

from __future__ import annotations

import asyncio
import json
import re
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass

from tierfaas import errors
from tierfaas.funclogs.line import LogLine
from tierfaas.funclogs.since import parse_since
from tierfaas.funclogs.store import MAX_FOLLOWERS, LogStore, TooManyFollowers
from tierfaas.http.asgi import Headers, Receive, Send

LOGS_PATH = "/v1/logs"
DEFAULT_LIMIT = 1000
MAX_LIMIT = 10_000
WAKE_S = 1.0
"""How often a follower checks that its client is still there and the node not draining."""
NDJSON = b"application/x-ndjson"
_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")
_TRUE = {"true": True, "1": True, "false": False, "0": False, "": False}


@dataclass(frozen=True, slots=True)
class LogQuery:
    function: str
    since: float | None
    request: str | None
    follow: bool
    limit: int


def parse_query(query: bytes, now: float, known: Callable[[str], bool]) -> LogQuery:
    """The query of ``GET /v1/logs`` (its raw query string); ``now`` is Unix time, for a
    ``since`` duration. Raises ``BadQuery`` (400) for a malformed parameter and
    ``UnknownFunction`` (404) for a function the node's release does not have."""
    try:
        pairs = urllib.parse.parse_qs(
            query.decode("ascii"), keep_blank_values=True, strict_parsing=False
        )
    except (UnicodeDecodeError, ValueError):
        raise errors.BadQuery("the query string is not ASCII URL-encoded text") from None
    values: dict[str, str] = {}
    for key, given in pairs.items():
        if key not in ("function", "since", "request", "follow", "limit"):
            continue  # unknown parameters are ignored, as HTTP caches and proxies add some
        if len(given) > 1:
            raise errors.BadQuery(f"{key} is given {len(given)} times; give it once")
        values[key] = given[0]
    function = values.get("function")
    if not function:
        raise errors.BadQuery("function is missing: GET /v1/logs?function=NAME")
    if not known(function):
        raise errors.UnknownFunction(
            f"no function {function[:80]!r} in this node's release; see GET /v1/functions"
        )
    since = None
    if values.get("since"):
        try:
            since = parse_since(values["since"], now)
        except ValueError as exc:
            raise errors.BadQuery(str(exc)) from None
    request = values.get("request") or None
    if request is not None and not _REQUEST_ID.fullmatch(request):
        raise errors.BadQuery("request is not a request id (1-64 of [A-Za-z0-9._-])")
    follow = _TRUE.get(values.get("follow", "").lower())
    if follow is None:
        raise errors.BadQuery("follow takes true or false")
    limit = DEFAULT_LIMIT
    if "limit" in values:
        text = values["limit"]
        if not text.isdigit() or not 1 <= int(text) <= MAX_LIMIT:
            raise errors.BadQuery(f"limit takes a whole number in 1..{MAX_LIMIT}")
        limit = int(text)
    return LogQuery(function, since, request, follow, limit)


async def serve_logs(
    store: LogStore,
    query: LogQuery,
    receive: Receive,
    send: Send,
    headers: Headers,
    stopping: Callable[[], bool],
) -> None:
    """Answers one ``GET /v1/logs`` (``query`` parsed); ``stopping``: the node drains."""
    headers = [(b"content-type", NDJSON), (b"cache-control", b"no-cache"), *headers]
    if not query.follow:
        lines = await store.read(query.function, query.since, query.request, query.limit)
        body = b"".join(line.encode() for line in lines)
        headers.append((b"content-length", b"%d" % len(body)))
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})
        return
    try:
        follower = store.follow(query.function, query.request)
    except TooManyFollowers:
        raise errors.Overloaded(
            f"{query.function!r} has {MAX_FOLLOWERS} followers on this node already",
            retry_after_s=5,
        ) from None
    gone = asyncio.ensure_future(_disconnected(receive))
    try:
        # Followed before the read: a line printed meanwhile is queued, never lost. One the
        # read also returns is not sent twice.
        lines = await store.read(query.function, query.since, query.request, query.limit)
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await _send(send, lines)
        sent_until = lines[-1] if lines else None
        while not gone.done() and not stopping():
            ready = asyncio.ensure_future(follower.ready.wait())
            await asyncio.wait({gone, ready}, timeout=WAKE_S, return_when="FIRST_COMPLETED")
            ready.cancel()
            new, missed = follower.take()
            if sent_until is not None:  # skip what the first read sent already
                new = new[new.index(sent_until) + 1 :] if sent_until in new else new
                sent_until = None
            if missed:
                note = {"missed": missed, "node": store.node, "function": query.function}
                await _send_raw(send, json.dumps(note).encode() + b"\n")
            await _send(send, new)
        await send({"type": "http.response.body", "body": b"", "more_body": False})
    finally:
        gone.cancel()
        store.unfollow(query.function, follower)


async def _send(send: Send, lines: list[LogLine]) -> None:
    if lines:
        await _send_raw(send, b"".join(line.encode() for line in lines))


async def _send_raw(send: Send, body: bytes) -> None:
    await send({"type": "http.response.body", "body": body, "more_body": True})


async def _disconnected(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
