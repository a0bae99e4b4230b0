"""The node's HTTP API (ASGI, served by uvicorn with httptools on uvloop).

    POST /function/{name}   invoke (GET and PUT too; an http exec function also takes PATCH,
                            DELETE and OPTIONS, and any path below it: /function/{name}/a/b)
    GET  /healthz           the process answers (never blocked by user code)
    GET  /readyz            200 when this node takes invocations, 503 with the reason if not
    GET  /v1/functions      the release's functions, settings, instances and stats on this node
    GET  /v1/functions/{name}  one of them, with its recent errors on this node
    GET  /v1/cluster        members, roles and replica assignment as this node sees them
    GET  /v1/routes         the routing table this node holds (master or replica)
    GET  /                  the live dashboard (and /dashboard.js, /dashboard.css)
    GET  /functions.html?name=NAME   the dashboard's page of one function
    GET  /v1/dashboard      the cluster's topology, warm map, rates and their recent curves
                            (?since=SEQ: only the newer points; /stream: SSE, 1/s)
    GET  /v1/dashboard/functions/{name}   what that page shows, gathered from every node
    GET  /v1/stats          this node's counters, read by the dashboard of any node
    GET  /metrics           Prometheus text format
    GET  /v1/logs           what a function's instances printed on this node (ndjson; follow)
    POST /async-function/{name}, /v1/calls..., /v1/dead-letters
                            asynchronous calls (``tierfaas.calls.api``), when the node has them

Every response carries ``X-Request-Id`` (the caller's if it sent a valid one). Errors are JSON
``{error, message, request_id}`` with the status of ``tierfaas.errors``. A function with API
keys, and the admin endpoints when an admin token is set on a non-loopback address, answer
401 without the right credential (``http/auth.py``). docs/openapi.yaml describes every route;
tests/e2e/test_openapi.py keeps it true.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import TYPE_CHECKING, Any, Protocol

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from tierfaas import errors
from tierfaas.calls import api as calls_api
from tierfaas.clock import Clock, monotonic
from tierfaas.config import NodeConfig
from tierfaas.funclogs import api as logs_api
from tierfaas.funcstats.stats import function_stats
from tierfaas.http import auth, function_page
from tierfaas.http.asgi import (
    ClientDisconnected,
    Headers,
    Receive,
    Scope,
    Send,
    error_body,
    error_headers,
    read_body_rest,
    respond,
    respond_error,
    respond_json,
)
from tierfaas.http.dashboard import STATIC_PATHS, Dashboard, node_stats, static_file
from tierfaas.http.history import parse_since
from tierfaas.http.metrics import UNKNOWN, Metrics
from tierfaas.http.protocol import FunctionCall, write_answer
from tierfaas.names import is_valid_name
from tierfaas.routing.router import RawHeaders, Reply, Router
from tierfaas.runtime import PendingCall, Runtime
from tierfaas.tracing.http import traced

if TYPE_CHECKING:
    from tierfaas.calls.api import CallsApi
    from tierfaas.funclogs.store import LogStore
    from tierfaas.tracing.exporter import OtlpExporter
    from tierfaas.tracing.spans import Tracer

log = logging.getLogger(__name__)

_REQUEST_ID_RE = re.compile(rb"[A-Za-z0-9._-]{1,64}")
_FUNCTION_PREFIX = "/function/"
FUNCTIONS_PREFIX = "/v1/functions/"
_INVOKE_METHODS = frozenset({"POST", "GET", "PUT"})
# What an http exec function (a web server of its own) may also be called with. Not HEAD: its
# answer has no body whatever its Content-Length says.
_HTTP_FUNCTION_METHODS = _INVOKE_METHODS | {"PATCH", "DELETE", "OPTIONS"}
_PREFIX_BYTES = len(_FUNCTION_PREFIX)
_NO_BODY = frozenset({204, 304})
# Headers of an error's answer that ``FunctionCall.answer`` writes itself.
_FRAMED_HERE = frozenset({b"x-request-id", b"connection"})
# What an admin token guards (when required): everything that shows the cluster's inside.
# Invocations have their own API keys; health, readiness and the function list stay open.
ADMIN_PATHS = frozenset(
    {"/v1/cluster", "/v1/routes", "/v1/stats", "/v1/dashboard", "/v1/dashboard/stream",
     "/metrics", "/v1/logs"} | STATIC_PATHS
)  # fmt: skip
_ADMIN_CHALLENGE = 'Basic realm="tierfaas admin", charset="UTF-8"'


def _subpath(scope: Scope) -> str:
    """What follows ``/function/NAME`` in the request's URL, as the client sent it (percent
    escapes kept), "/" when nothing does. Raises ``BadRequest`` for bytes a request line
    cannot carry."""
    return _raw_subpath(scope.get("raw_path") or scope["path"].encode("utf-8"))


def _raw_subpath(raw: bytes) -> str:
    """``_subpath`` of the raw path ``raw``."""
    _, slash, rest = raw[_PREFIX_BYTES:].partition(b"/")
    if not slash or not rest:
        return "/"
    if any(byte <= 0x20 or byte >= 0x7F for byte in rest):
        raise errors.BadRequest("the path below /function/NAME has bytes a URL cannot carry")
    return "/" + rest.decode("ascii")


class CallRouter(Protocol):
    """What the app asks of its router: ``Router``, or a fake in the unit tests. A protocol,
    not the class, so that the compiled call path (``tierfaas.native``) takes either."""

    forwarded: int  # calls sent on to another node and answered there

    async def handle(
        self,
        name: str,
        body: bytes,
        *,
        request_id: str,
        method: str,
        query: str,
        headers: RawHeaders,
        started: float,
        path: str = "/",
        call: tuple[str, int] | None = None,
    ) -> Reply: ...

    def call_now(
        self,
        name: str,
        body: bytes,
        *,
        request_id: str,
        method: str,
        query: str,
        headers: RawHeaders,
        started: float,
        path: str,
    ) -> PendingCall | None: ...

    def finish_now(
        self, name: str, started: float, request_id: str, call: PendingCall
    ) -> Reply: ...


class _LocalCall:
    """The callback that answers a call ``NodeApp._call_now`` sent, once its future is done."""

    __slots__ = ("app", "call", "label", "name", "pending", "request_id", "started")

    def __init__(
        self,
        app: NodeApp,
        call: FunctionCall,
        name: str,
        label: str,
        request_id: str,
        started: float,
        pending: PendingCall,
    ) -> None:
        self.app, self.call, self.name, self.label = app, call, name, label
        self.request_id, self.started, self.pending = request_id, started, pending

    def __call__(self, future: asyncio.Future[Any]) -> None:
        self.app._local_call_done(self)


class NodeApp:
    """The ASGI app of one node. ``router`` runs or forwards each call (default: a standalone
    router); ``not_ready_reason`` says why /readyz answers 503 (None: ready), and
    ``not_ready_fatal`` whether that will never change; ``cluster_view`` answers /v1/cluster
    and the dashboard, ``routes_view`` /v1/routes (None: 404, a node without a cluster);
    ``clock`` times the intervals of the dashboard's rates."""

    def __init__(
        self,
        runtime: Runtime,
        config: NodeConfig,
        metrics: Metrics,
        node_name: str,
        not_ready_reason: Callable[[], str | None] = lambda: None,
        cluster_view: Callable[[], Awaitable[dict[str, Any]]] | None = None,
        router: CallRouter | None = None,
        *,
        not_ready_fatal: Callable[[], bool] = lambda: False,
        routes_view: Callable[[], dict[str, Any]] | None = None,
        clock: Clock = monotonic,
    ) -> None:
        self.clock = clock  # the dashboard's rate intervals
        self.router: CallRouter = router or Router.standalone(runtime, node_name)
        self.cluster_view = cluster_view
        self.routes_view = routes_view
        self.runtime = runtime
        self.config = config
        self.metrics = metrics
        self.node_name = node_name
        self.not_ready_reason = not_ready_reason
        self.not_ready_fatal = not_ready_fatal
        self.draining = False
        self.in_flight = 0
        self.last_call = 0.0  # time.monotonic() of the last invocation's arrival
        self.requests = 0
        self.id_prefix = os.urandom(4).hex()
        # The http exec functions: servers of their own, which take more methods.
        self.http_functions = frozenset(
            name
            for name, spec in runtime.release.functions.items()
            if spec.command is not None and spec.command.protocol == "http"
        )
        # Functions that need an API key: name -> accepted digests (usually empty).
        self.api_keys = {
            name: spec.api_keys for name, spec in runtime.release.functions.items() if spec.api_keys
        }
        token = auth.load_admin_token(config.admin_token_file)
        # The token is required off loopback only: `make run` users open the dashboard as is.
        self.admin_digests = (
            (auth.digest(token),) if token is not None and not config.http.is_loopback else ()
        )
        if token is None and not config.http.is_loopback:
            log.warning(
                "the admin endpoints (cluster, routes, stats, dashboard, metrics) are open to "
                "anyone who reaches http://%s: set --admin-token-file or $%s",
                config.http,
                auth.ADMIN_TOKEN_ENV,
            )
        # Every node of a cluster has the same token; this one shows it to its peers when its
        # dashboard reads their /v1/stats.
        peer_headers = {} if token is None else {"authorization": f"Bearer {token}"}
        self.dashboard = Dashboard(
            self._view, self._stats, node_name, peer_headers, clock=clock,
            known=lambda name: name in self.runtime.release.functions,
            self_url=f"http://{config.http}",
        )  # fmt: skip
        self.calls: CallsApi | None = None
        """The asynchronous calls' routes (set by the node once its call service exists)."""
        self.logs: LogStore | None = None
        """What the functions printed on this node (set by the node; None: ``/v1/logs`` 404)."""
        self.tracer: Tracer | None = None
        """Records each invocation's spans (set by the node with --otlp-endpoint; None: off)."""
        self.span_exporter: OtlpExporter | None = None
        """Where ``tracer``'s spans go; the node closes it when it stops."""

    async def _view(self) -> dict[str, Any]:
        if self.cluster_view is not None:
            return await self.cluster_view()
        me = {
            "name": self.node_name, "role": "master", "http": None, "state": "alive",
            "version": self.runtime.release.version,
        }  # fmt: skip
        return {"self": self.node_name, "master": self.node_name, "standalone": True,
                "members": [me]}  # fmt: skip

    def _stats(self) -> dict[str, Any]:
        return node_stats(
            self.node_name,
            self.runtime,
            self.metrics,
            self.router.forwarded,
            self.runtime.release.version,
            self.config.isolation,
            self.clock,
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return  # lifespan and websockets are not used
        request_id, length = self._request_id_and_length(scope["headers"])
        path: str = scope["path"]
        try:
            if path.startswith(_FUNCTION_PREFIX):
                name, _, _ = path[_PREFIX_BYTES:].partition("/")
                if self.tracer is None:  # the one check tracing costs when it is off
                    await self._invoke(scope, receive, send, name, request_id, length)
                else:
                    await traced(
                        self.tracer, self._invoke, scope, receive, send, name, request_id, length
                    )
            elif path == "/v1/dashboard/stream":
                if scope["method"] != "GET":
                    raise errors.MethodNotAllowed(f"{path} only answers GET", allow="GET")
                if self.admin_digests:
                    self._check_admin(scope)
                await self.dashboard.stream(receive, send, lambda: self.draining, request_id)
            elif path == "/v1/logs":
                await self._logs(scope, receive, send, request_id)
            elif path.startswith(function_page.PATH):
                await self._function_page(scope, send, path, request_id)
            elif self.calls is not None and calls_api.handles(path):
                check = self._check_admin if self.admin_digests else None
                await self.calls.serve(scope, receive, send, path, request_id, check)
            else:
                await self._admin(scope, send, path, request_id)
        except ClientDisconnected:
            pass
        except errors.HttpError as error:
            await respond_error(send, error, request_id)

    def _request_id_and_length(self, headers: Headers) -> tuple[str, bytes | None]:
        """The request's id (the client's X-Request-Id when it is a valid one, else a new one)
        and its Content-Length as sent, in one pass over the headers."""
        given = length = None
        for key, value in headers:
            if key == b"x-request-id":
                given = value
            elif key == b"content-length":
                length = value
        if given is not None and _REQUEST_ID_RE.fullmatch(given):
            return given.decode(), length
        # Unique across nodes (random per-process prefix) and cheap (a counter).
        self.requests += 1
        return f"{self.id_prefix}{self.requests:08x}", length

    # -- invocations -----------------------------------------------------------------------

    def serve_call(self, call: FunctionCall) -> Coroutine[Any, Any, None] | None:
        """Serves one invocation the HTTP protocol took without uvicorn's ASGI cycle (the
        protocol's ``FunctionCall``: its body is all in), with the same checks, routing,
        metrics and answers as the ASGI path (``_invoke``), which the node takes instead with
        tracing on. A call its function has a free slot for here is sent at once and
        answered from its future's callback, with no task (``Router.call_now``); else this
        returns the coroutine that serves it, for the protocol to run as a task."""
        request_id, length = self._request_id_and_length(call.headers)
        path = call.path
        name = path[_PREFIX_BYTES:].partition(b"/")[0].decode("ascii")
        try:
            started = time.monotonic()
            label = self._admit(name, call.method, call.headers, length, started)
            if self._call_now(call, name, label, request_id, started):
                return None
        except errors.HttpError as error:
            self._answer_error(call, error, request_id)
            return None
        except Exception:
            self._answer_failure(call, name, request_id)
            return None
        return self._serve_admitted(call, name, label, request_id, started)

    async def _serve_admitted(
        self, call: FunctionCall, name: str, label: str, request_id: str, started: float
    ) -> None:
        try:
            query = call.query
            reply = await self._run(
                name, label, call.body, request_id, call.method,
                query.decode("latin-1") if query else "", call.headers, started,
                _raw_subpath(call.path),
            )  # fmt: skip
        except errors.HttpError as error:
            self._answer_error(call, error, request_id)
            return
        except Exception:
            self._answer_failure(call, name, request_id)
            return
        self._answer_reply(call, reply, request_id)

    def _call_now(
        self, call: FunctionCall, name: str, label: str, request_id: str, started: float
    ) -> bool:
        """``_run`` without a task for a call its function has a free slot for here: true
        when sent (answered by ``_LocalCall``), or refused and answered; false, and nothing
        changed, when it is ``_run``'s to serve."""
        body = call.body
        if len(body) > self.config.max_body_bytes:
            return False
        query = call.query
        try:
            pending = self.router.call_now(
                name, body, request_id=request_id, method=call.method,
                query=query.decode("latin-1") if query else "", headers=call.headers,
                started=started, path=_raw_subpath(call.path),
            )  # fmt: skip
        except errors.HttpError as exc:
            self._run_failed(label, exc, started, request_id, name)
            raise
        if pending is None:
            return False
        self.in_flight += 1
        self.last_call = started
        answer = _LocalCall(self, call, name, label, request_id, started, pending)
        pending.future.add_done_callback(answer)
        return True

    def _local_call_done(self, local: _LocalCall) -> None:
        self.in_flight -= 1
        call, request_id = local.call, local.request_id
        try:
            reply = self.router.finish_now(local.name, local.started, request_id, local.pending)
        except errors.HttpError as exc:
            self._run_failed(local.label, exc, local.started, request_id, local.name)
            self._answer_error(call, exc, request_id)
            return
        except asyncio.CancelledError:
            return  # as a cancelled task answers nothing
        except Exception:
            self._answer_failure(call, local.name, request_id)
            return
        self._run_succeeded(local.label, reply, local.started)
        self._answer_reply(call, reply, request_id)

    def _answer_reply(self, call: FunctionCall, reply: Reply, request_id: str) -> None:
        status = reply.status
        call.answer(status, reply.headers, b"" if status in _NO_BODY else reply.body,
                    request_id.encode(), self.draining)  # fmt: skip

    def _answer_error(self, call: FunctionCall, error: errors.HttpError, request_id: str) -> None:
        # The answer adds the X-Request-Id, and closes as the error says.
        headers = [(b"content-type", b"application/json")]
        headers += (h for h in error_headers(error, request_id) if h[0] not in _FRAMED_HERE)
        body = json.dumps(error_body(error, request_id), separators=(",", ":")).encode()
        call.answer(error.status, headers, body, request_id.encode(),
                    error.close_connection or self.draining)  # fmt: skip

    def _answer_failure(self, call: FunctionCall, name: str, request_id: str) -> None:
        """As uvicorn's cycle would answer an exception: logged, and a 500 that says little."""
        log.exception("request %s to %s failed", request_id, name[:80])
        failure = errors.HttpError("the node failed to serve this call; see its log")
        body = json.dumps(error_body(failure, request_id), separators=(",", ":")).encode()
        json_type = [(b"content-type", b"application/json")]
        call.answer(failure.status, json_type, body, request_id.encode(), True)

    async def _invoke(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        name: str,
        request_id: str,
        length: bytes | None,
    ) -> None:
        # The hot path of the node under tracing, and for the requests the protocol leaves to
        # ASGI (serve_call's doc): no helper coroutines, headers as precomputed tuples.
        started = time.monotonic()
        method: str = scope["method"]
        label = self._admit(name, method, scope["headers"], length, started)
        limit = self.config.max_body_bytes
        message = await receive()
        body: bytes = message.get("body", b"")
        if message["type"] != "http.request" or message.get("more_body", False):
            try:
                body = await read_body_rest(message, receive, limit)
            except errors.BodyTooLarge as exc:
                self.metrics.record(label, exc.code, False, time.monotonic() - started)
                raise
        query: bytes = scope["query_string"]
        reply = await self._run(
            name, label, body, request_id, method,
            query.decode("latin-1") if query else "", scope["headers"], started, _subpath(scope),
        )  # fmt: skip
        status = reply.status
        headers, body, id_bytes = reply.headers, reply.body, request_id.encode()
        # One write, through uvicorn's cycle; tracing watches the ASGI messages instead.
        if self.tracer is None and write_answer(send, status, headers, body, id_bytes,
                                                self.draining):  # fmt: skip
            return
        headers.append((b"x-request-id", id_bytes))
        if status in _NO_BODY:  # an exec function's: such an answer has no body (RFC 9110)
            body = b""
        else:
            headers.append((b"content-length", b"%d" % len(body)))
        if self.draining:
            headers.append((b"connection", b"close"))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    def _admit(
        self, name: str, method: str, headers: Headers, length: bytes | None, started: float
    ) -> str:
        """Checks an invocation before it runs: its method, its function's name, its API key
        and its declared length. Returns the function's metrics label; raises the error to
        answer (counted in the metrics when the function is known)."""
        if method not in _INVOKE_METHODS and (
            method not in _HTTP_FUNCTION_METHODS or name not in self.http_functions
        ):
            allow = "GET, POST, PUT"
            if name in self.http_functions:
                allow = "GET, POST, PUT, PATCH, DELETE, OPTIONS"
            raise errors.MethodNotAllowed(
                f"use POST (or GET) on /function/{name[:80]}, not {method[:20]}", allow=allow
            )
        pools = self.runtime.pools
        if name not in pools and not is_valid_name(name):  # release names are valid
            raise errors.BadName(
                f"{name[:80]!r} is not a function name (1-64 of [A-Za-z0-9._-]); "
                "see GET /v1/functions"
            )
        label = name if name in pools else UNKNOWN
        keys = self.api_keys.get(name)
        if keys is not None and not auth.authorized(headers, keys):
            self.metrics.unauthorized.labels("api_key").inc()
            self.metrics.record(label, "unauthorized", False, time.monotonic() - started)
            raise errors.Unauthorized(
                f"{name!r} needs an API key: send 'Authorization: Bearer KEY' or 'X-Api-Key: KEY'"
            )
        limit = self.config.max_body_bytes
        if length is not None and length.isdigit() and int(length) > limit:
            self.metrics.record(label, errors.BodyTooLarge.code, False, time.monotonic() - started)
            raise errors.BodyTooLarge(
                f"the body is {int(length)} bytes; this node accepts at most {limit}"
            )
        return label

    async def _run(
        self,
        name: str,
        label: str,
        body: bytes,
        request_id: str,
        method: str,
        query: str,
        headers: Headers,
        started: float,
        path: str,
    ) -> Reply:
        """Routes one admitted invocation (``_admit``) and records its outcome. While draining,
        calls that still arrive on open connections are served (a client that sent one cannot
        know yet); the answer closes the connection, and the listener is closed, so the
        client's next connection goes to another node."""
        self.in_flight += 1
        self.last_call = started
        try:
            limit = self.config.max_body_bytes
            if len(body) > limit:
                raise errors.BodyTooLarge(f"the body is over the limit of {limit} bytes")
            reply = await self.router.handle(
                name, body, request_id=request_id, method=method, query=query, headers=headers,
                started=started, path=path,
            )  # fmt: skip
        except errors.HttpError as exc:
            self._run_failed(label, exc, started, request_id, name)
            raise
        finally:
            self.in_flight -= 1
        self._run_succeeded(label, reply, started)
        return reply

    def _run_succeeded(self, label: str, reply: Reply, started: float) -> None:
        status = reply.status
        self.metrics.record(
            label,
            "ok" if status == 200 else f"http_{status}",
            reply.cold,
            time.monotonic() - started,
        )

    def _run_failed(
        self, label: str, exc: errors.HttpError, started: float, request_id: str, name: str
    ) -> None:
        self.metrics.record(label, exc.code, False, time.monotonic() - started)
        if isinstance(exc, errors.FunctionError):
            log.info("request %s to %s failed: %s: %s", request_id, name, exc.code, exc)

    # -- admin -----------------------------------------------------------------------------

    async def _admin(self, scope: Scope, send: Send, path: str, request_id: str) -> None:
        headers: Headers = [(b"x-request-id", request_id.encode())]
        if scope["method"] not in ("GET", "HEAD"):
            raise errors.MethodNotAllowed(f"{path[:200]!r} only answers GET")
        if self.admin_digests and path in ADMIN_PATHS:
            self._check_admin(scope)
        if path == "/healthz":
            await respond_json(send, 200, {"status": "ok", "node": self.node_name}, headers)
        elif path == "/readyz":
            reason = "draining" if self.draining else self.not_ready_reason()
            if reason is None:
                await respond_json(send, 200, {"ready": True}, headers)
            else:
                headers.append((b"retry-after", str(self.config.retry_after_s).encode()))
                # fatal: this node will never be ready (its release does not import).
                answer = {"ready": False, "reason": reason, "fatal": self.not_ready_fatal()}
                await respond_json(send, 503, answer, headers)
        elif path == "/v1/functions":
            await respond_json(send, 200, self._functions(), headers)
        elif path.startswith(FUNCTIONS_PREFIX):
            if self.admin_digests:  # its recent errors show the functions' inside
                self._check_admin(scope)
            await respond_json(send, 200, self._function(path[len(FUNCTIONS_PREFIX) :]), headers)
        elif path == "/v1/routes":
            if self.routes_view is None:
                raise errors.NotFound("this node runs without a cluster: it holds no routes")
            await respond_json(send, 200, self.routes_view(), headers)
        elif path == "/v1/cluster" and self.cluster_view is not None:
            await respond_json(send, 200, await self.cluster_view(), headers)
        elif path == "/v1/stats":
            await respond_json(send, 200, self._stats(), headers)
        elif path == "/v1/dashboard":
            since = parse_since(scope["query_string"])
            await respond_json(send, 200, await self.dashboard.overview(since), headers)
        elif (page := static_file(path)) is not None:
            body, content_type = page
            headers.append((b"cache-control", b"no-cache"))
            await respond(send, 200, body, content_type, headers)
        elif path == "/metrics":
            body = generate_latest(self.metrics.registry)
            await respond(send, 200, body, CONTENT_TYPE_LATEST.encode(), headers)
        else:
            raise errors.NotFound(
                f"no such path {path[:200]!r}; invoke functions at /function/NAME "
                "and list them at /v1/functions"
            )

    async def _logs(self, scope: Scope, receive: Receive, send: Send, request_id: str) -> None:
        if scope["method"] != "GET":
            raise errors.MethodNotAllowed("/v1/logs only answers GET", allow="GET")
        if self.admin_digests:
            self._check_admin(scope)
        if self.logs is None:
            raise errors.NotFound("this node keeps no function logs")
        store = self.logs
        query = logs_api.parse_query(scope["query_string"], store.wall(), store.__contains__)
        headers: Headers = [(b"x-request-id", request_id.encode())]
        await logs_api.serve_logs(store, query, receive, send, headers, lambda: self.draining)

    async def _function_page(self, scope: Scope, send: Send, path: str, request_id: str) -> None:
        if scope["method"] != "GET":
            raise errors.MethodNotAllowed(f"{path[:200]!r} only answers GET", allow="GET")
        if self.admin_digests:
            self._check_admin(scope)
        page = await self.dashboard.function_view(path.removeprefix(function_page.PATH))
        await respond_json(send, 200, page, [(b"x-request-id", request_id.encode())])

    def _check_admin(self, scope: Scope) -> None:
        if not auth.authorized(scope["headers"], self.admin_digests):
            self.metrics.unauthorized.labels("admin").inc()
            raise errors.Unauthorized(
                "this endpoint needs the admin token: send 'Authorization: Bearer TOKEN' "
                "(or Basic credentials with the token as password)",
                challenge=_ADMIN_CHALLENGE,
            )

    def _functions(self) -> dict[str, Any]:
        release = self.runtime.release
        return {
            "release": {"name": release.name, "version": release.version},
            "node": self.node_name,
            "functions": [self._entry(function) for function in self.runtime.functions()],
        }

    def _entry(self, function: dict[str, Any]) -> dict[str, Any]:
        """One function's entry of /v1/functions: its settings, instances and stats here."""
        # Every function of a node runs under the node's isolation (--isolation).
        return {
            **function,
            "isolation": self.config.isolation,
            "stats": function_stats(self.runtime.stats, function),
        }

    def _function(self, name: str) -> dict[str, Any]:
        """``GET /v1/functions/NAME``: its entry and its most recent errors on this node."""
        if name not in self.runtime.pools:
            if not is_valid_name(name):
                raise errors.BadName(
                    f"{name[:80]!r} is not a function name (1-64 of [A-Za-z0-9._-])"
                )
            raise errors.UnknownFunction(
                f"no function named {name[:80]!r} in release {self.runtime.release.name} "
                f"{self.runtime.release.version}; see /v1/functions"
            )
        release = self.runtime.release
        return {
            "node": self.node_name,
            "release": {"name": release.name, "version": release.version},
            "function": self._entry(self.runtime.function(name)),
            "recent_errors": self.runtime.stats.recent_errors(name),
        }
