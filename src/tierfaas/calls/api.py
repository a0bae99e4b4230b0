"""The HTTP routes of asynchronous calls (``NodeApp`` hands these paths over):

    POST /async-function/{name}[/sub/path]   accept: 202 {"call_id", "state"} + X-Call-Id
    GET  /v1/calls/{id}                      the call's record, asked of its nodes if need be
    POST /v1/calls/{id}/retry                a dead or failed call queued again (202; else 409)
    GET  /v1/calls?state=&function=&limit=   this node's calls, newest first
    GET  /v1/dead-letters?function=&limit=   the dead calls of every live node

Everything that can be refused is refused before anything is kept: the method (405), the
function (404), its API key (401), the body's size (413), a malformed Idempotency-Key (400)
or callback URL (400 ``bad_callback``); then the service may refuse with 429 ``queue_full``
or 503. The last four routes are admin endpoints (the admin token, when one is required).
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Callable

from tierfaas import errors
from tierfaas.calls import ids
from tierfaas.calls.model import STATES, Request
from tierfaas.calls.service import CallService
from tierfaas.http import auth
from tierfaas.http.asgi import Headers, Receive, Scope, Send, read_body, respond_json
from tierfaas.http.protocol import write_answer
from tierfaas.names import is_valid_name
from tierfaas.routing import forwarding as fw
from tierfaas.tracing.calls import CARRIED, begin_accept, carried_headers, end_accept
from tierfaas.tracing.spans import CallTrace, Tracer

ASYNC_PREFIX = "/async-function/"
_ASYNC_BYTES = len(ASYNC_PREFIX)
CALLS_PATH = "/v1/calls"
DEAD_LETTERS_PATH = "/v1/dead-letters"
MAX_KEY_CHARS = 128
MAX_LIST = 1000
# A call travels to its holder in one gRPC message (at most 8 MiB): the body must fit in it.
MAX_ASYNC_BODY_BYTES = 7 * 1024 * 1024
# Request headers not kept with a call: hop-by-hop ones, ours, and the nodes' hop headers.
_NOT_KEPT = frozenset(
    {"connection", "keep-alive", "transfer-encoding", "host", "content-length", "x-request-id",
     "x-call-id", "x-call-attempt", "x-callback-url", "upgrade", "te", "trailer",
     "proxy-authorization"}
    | set(fw.INTERNAL)
)  # fmt: skip
# The node's own credentials for a function with API keys are not written to disk.
_CREDENTIALS = frozenset({"authorization", "x-api-key"})
# The same as the bytes the server gives (lower case): a dropped header is never decoded.
_NOT_KEPT_RAW = frozenset(name.encode("latin-1") for name in _NOT_KEPT)
_NOT_KEPT_KEYED = _NOT_KEPT_RAW | frozenset(name.encode("latin-1") for name in _CREDENTIALS)
_CARRIED_RAW = frozenset(name.encode("latin-1") for name in CARRIED)

CheckCallback = Callable[[str], str]
"""Returns the normalized callback URL, or raises a 400 ``bad_callback``."""


def handles(path: str) -> bool:
    if path in (CALLS_PATH, DEAD_LETTERS_PATH):
        return True
    return path.startswith(ASYNC_PREFIX) or path.startswith(CALLS_PATH + "/")


def _subpath(scope: Scope) -> str:
    raw: bytes = scope.get("raw_path") or scope["path"].encode("utf-8")
    _, slash, rest = raw[_ASYNC_BYTES:].partition(b"/")
    if not slash or not rest:
        return "/"
    if any(byte <= 0x20 or byte >= 0x7F for byte in rest):
        raise errors.ClientError("the path below /async-function/NAME has bytes a URL cannot carry")
    return "/" + rest.decode("ascii")


def _query(scope: Scope) -> dict[str, str]:
    raw: bytes = scope.get("query_string", b"")
    return dict(urllib.parse.parse_qsl(raw.decode("latin-1")))


def _limit(params: dict[str, str]) -> int:
    text = params.get("limit", "100")
    if not text.isdigit() or not 1 <= int(text) <= MAX_LIST:
        raise errors.ClientError(f"limit must be a number in 1..{MAX_LIST}")
    return int(text)


def _key(value: bytes) -> str:
    if not 1 <= len(value) <= MAX_KEY_CHARS or any(b < 0x21 or b > 0x7E for b in value):
        raise errors.ClientError(
            f"Idempotency-Key must be 1-{MAX_KEY_CHARS} printable ASCII characters"
        )
    return value.decode("ascii")


class CallsApi:
    """Serves the routes above for ``service``. ``api_keys``: function -> accepted digests;
    ``check_callback`` checks an X-Callback-Url against the node's allow-list (None: this
    node sends no callbacks, and a call asking for one is refused)."""

    def __init__(
        self,
        service: CallService,
        *,
        api_keys: dict[str, tuple[bytes, ...]],
        max_body_bytes: int,
        check_callback: CheckCallback | None,
        on_unauthorized: Callable[[], None] = lambda: None,
    ) -> None:
        self.service = service
        self.api_keys = api_keys
        self.max_body_bytes = min(max_body_bytes, MAX_ASYNC_BODY_BYTES)
        self.check_callback = check_callback
        self.on_unauthorized = on_unauthorized
        self.tracer: Tracer | None = None
        """Set by the node with ``--otlp-endpoint``: each accept is a span (``tracing.calls``)."""

    async def serve(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        path: str,
        request_id: str,
        check_admin: Callable[[Scope], None] | None,
    ) -> None:
        headers: Headers = [(b"x-request-id", request_id.encode())]
        method: str = scope["method"]
        if path.startswith(ASYNC_PREFIX):
            if self.tracer is None:  # the one check tracing costs when it is off
                await self._accept(scope, receive, send, path, request_id, None)
            else:
                await self._traced_accept(self.tracer, scope, receive, send, path, request_id)
            return
        if check_admin is not None:
            check_admin(scope)
        if path.endswith("/retry") and path.startswith(CALLS_PATH + "/"):
            if method != "POST":
                raise errors.MethodNotAllowed(f"{path[:200]!r} only answers POST", allow="POST")
            call_id = self._call_id(path[len(CALLS_PATH) + 1 : -len("/retry")])
            await respond_json(send, 202, await self.service.get(call_id, retry=True), headers)
            return
        if method not in ("GET", "HEAD"):
            raise errors.MethodNotAllowed(f"{path[:200]!r} only answers GET")
        params = _query(scope)
        if path == CALLS_PATH:
            state = params.get("state") or None
            if state is not None and state not in STATES:
                raise errors.ClientError(f"state must be one of {', '.join(STATES)}")
            function = self._function_filter(params)
            calls = self.service.listed(state, function, _limit(params))
            await respond_json(send, 200, {"node": self.service.node, "calls": calls}, headers)
        elif path == DEAD_LETTERS_PATH:
            function = self._function_filter(params)
            answer = await self.service.dead_letters(function, _limit(params))
            await respond_json(send, 200, answer, headers)
        else:
            call_id = self._call_id(path[len(CALLS_PATH) + 1 :])
            await respond_json(send, 200, await self.service.get(call_id), headers)

    @staticmethod
    def _call_id(text: str) -> str:
        call_id = urllib.parse.unquote(text)
        try:
            ids.parse(call_id)
        except ValueError as exc:
            raise errors.ClientError(f"{call_id[:160]!r} is not a call id: {exc}") from None
        return call_id

    @staticmethod
    def _function_filter(params: dict[str, str]) -> str | None:
        function = params.get("function") or None
        if function is not None and not is_valid_name(function):
            raise errors.BadName(f"{function[:80]!r} is not a function name")
        return function

    async def _traced_accept(
        self, tracer: Tracer, scope: Scope, receive: Receive, send: Send, path: str,
        request_id: str,
    ) -> None:  # fmt: skip
        name = path[_ASYNC_BYTES:].partition("/")[0][:80]
        trace = begin_accept(tracer, scope["headers"], name, request_id)
        try:
            call_id = await self._accept(scope, receive, send, path, request_id, trace)
        except errors.HttpError as exc:
            end_accept(trace, exc.status, None, exc.code)
            raise
        except BaseException as exc:
            end_accept(trace, 500, None, type(exc).__name__)
            raise
        end_accept(trace, 202, call_id, None)

    async def _accept(
        self, scope: Scope, receive: Receive, send: Send, path: str, request_id: str,
        trace: CallTrace | None,
    ) -> str:  # fmt: skip
        """Accepts one call and answers 202; returns its id. With ``trace`` (tracing on), the
        call keeps the accept span's ``traceparent`` instead of the caller's."""
        name = path[_ASYNC_BYTES:].partition("/")[0]
        if scope["method"] != "POST":
            raise errors.MethodNotAllowed(
                f"use POST on /async-function/{name[:80]}, not {scope['method'][:20]}",
                allow="POST",
            )
        if name not in self.service.functions:  # a release's names are valid ones
            if not is_valid_name(name):
                raise errors.BadName(
                    f"{name[:80]!r} is not a function name (1-64 of [A-Za-z0-9._-])"
                )
            raise errors.NotFound(f"no function {name!r} in this release; see GET /v1/functions")
        keys = self.api_keys.get(name)
        if keys is not None and not auth.authorized(scope["headers"], keys):
            self.on_unauthorized()
            raise errors.Unauthorized(
                f"{name!r} needs an API key: send 'Authorization: Bearer KEY' or 'X-Api-Key: KEY'"
            )
        subpath = _subpath(scope)
        key: str | None = None
        callback: str | None = None
        kept: list[tuple[str, str]] = []
        dropped = _NOT_KEPT_RAW if keys is None else _NOT_KEPT_KEYED
        if trace is not None:
            dropped = dropped | _CARRIED_RAW
        for raw_name, raw_value in scope["headers"]:
            if raw_name in dropped:
                if raw_name == b"x-callback-url":
                    callback = raw_value.decode("latin-1")
                continue
            if raw_name == b"idempotency-key":
                key = _key(raw_value)
            kept.append((raw_name.decode("latin-1"), raw_value.decode("latin-1")))
        if trace is not None:
            kept += carried_headers(trace)
        if callback is not None:
            if self.check_callback is None:
                raise errors.BadCallback("this node sends no callbacks")
            callback = self.check_callback(callback)
        body = await read_body(scope, receive, self.max_body_bytes)
        query: bytes = scope.get("query_string", b"")
        request = Request(body, subpath, query.decode("latin-1"), tuple(kept))
        accepted = await self.service.accept(name, request, idem_key=key, callback_url=callback)
        call_id = accepted.call_id.encode()
        headers: Headers = [(b"x-call-id", call_id)]
        state = "queued"
        if accepted.replay:
            headers.append((b"x-idempotent-replay", b"true"))
            first = self.service.store.get(accepted.call_id)
            state = first.state if first is not None else state
        # Formatted, not json.dumps (a tenth of the accept's time in py-spy): an id and a
        # state have no character JSON escapes (ids.parse, model.STATES).
        answer = b'{"call_id":"%s","state":"%s"}' % (call_id, state.encode())
        headers.append((b"content-type", b"application/json"))
        id_bytes = request_id.encode()
        if write_answer(send, 202, headers, answer, id_bytes, False):  # one write, as invokes
            return accepted.call_id
        headers += ((b"x-request-id", id_bytes), (b"content-length", b"%d" % len(answer)))
        await send({"type": "http.response.start", "status": 202, "headers": headers})
        await send({"type": "http.response.body", "body": answer})
        return accepted.call_id
