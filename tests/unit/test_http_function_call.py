"""Invocations the node's HTTP protocol serves without uvicorn's ASGI cycle
(``tierfaas.http.protocol.FunctionCall`` and ``NodeApp.serve_call``), driven in process: bytes
fed to the protocol over a fake transport and a fake loop, the app's coroutines stepped by hand
(no socket, no running loop, no sleep).

- The same request gets the same bytes back every way (the ASGI path is the reference; a
  call served by a task; one sent at once to a free slot and answered from its future): an
  answer, the typed errors the app gives before and after routing, keep-alive and close.
- A call sent at once takes no task and is answered only when its future is done; one
  refused before it is sent is answered at once.
- Requests the protocol leaves to ASGI (a body not declared small, ``Expect``, HTTP/1.0,
  escapes in the path, other paths) are served there, unchanged.
- A pipelined request behind a call waits for its answer; a client gone gets nothing; a body
  that never comes is the body timeout's; an answer uvicorn would refuse is a typed 500.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import pytest
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import RequestResponseCycle
from uvicorn.server import ServerState

from tierfaas import errors
from tierfaas.config import Address, NodeConfig
from tierfaas.http.app import NodeApp
from tierfaas.http.metrics import Metrics
from tierfaas.http.protocol import (
    FUNCTION_CALL_BODY_BYTES,
    BoundedHttpProtocol,
    FunctionCall,
    bounded_protocol,
)
from tierfaas.manifest import EntryPoint, ExecCommand, FunctionSpec, Release
from tierfaas.routing.router import Reply, Router
from tierfaas.runtime import PendingCall, Runtime
from tierfaas.testing.transport import FakeTransport

from .test_http_answer import DATE, KEEP_ALIVE_S, FakeLoop

MAX_BODY = 1000


class FakeFuture:
    """What the app does with a sent call's future: it adds the callback that answers."""

    def __init__(self) -> None:
        self.callbacks: list[Callable[[Any], None]] = []

    def add_done_callback(self, callback: Callable[[Any], None]) -> None:
        self.callbacks.append(callback)


class FakeRouter:
    """Answers each call with ``reply`` (or raises ``raises``) and records what reached it.
    With ``now``, a call goes out at once (``call_now``: as to a free slot, with no task), or
    raises ``refuses_now`` there; ``complete()`` then resolves what went out."""

    forwarded = 0

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []
        self.reply = Reply(200, b"done", [(b"content-type", b"text/plain")])
        self.raises: Exception | None = None
        self.now = False
        self.refuses_now: Exception | None = None
        self.sent: list[FakeFuture] = []

    async def handle(self, name: str, body: bytes, **kwargs: Any) -> Reply:
        return self._answer(name, body, kwargs)

    def call_now(self, name: str, body: bytes, **kwargs: Any) -> PendingCall | None:
        if not self.now:
            return None
        if self.refuses_now is not None:
            raise self.refuses_now
        kwargs.pop("started")
        self.calls.append({"name": name, "body": body, **kwargs})
        future = FakeFuture()
        self.sent.append(future)
        return PendingCall(cast(Any, future), cast(Any, None), 0.0, False)

    def finish_now(self, name: str, started: float, request_id: str, call: PendingCall) -> Reply:
        return self._answer(name, None, None)

    def complete(self) -> None:
        sent, self.sent = self.sent, []
        for future in sent:
            for callback in future.callbacks:
                callback(future)

    def _answer(self, name: str, body: bytes | None, kwargs: dict[str, Any] | None) -> Reply:
        if kwargs is not None:
            kwargs.pop("started")  # the app's clock reading: differs between runs
            self.calls.append({"name": name, "body": body, **kwargs})
        if self.raises is not None:
            raise self.raises
        return Reply(self.reply.status, self.reply.body, list(self.reply.headers))


def make_app(tmp_path: Path) -> tuple[NodeApp, FakeRouter]:
    config = NodeConfig(
        release_dir=tmp_path, http=Address("127.0.0.1", 8080), max_body_bytes=MAX_BODY
    )

    def exec_spec(name: str) -> FunctionSpec:
        return FunctionSpec(name=name, handler=None, command=ExecCommand(("./x",), "http"))

    functions = {
        "web": exec_spec("web"),
        "py": FunctionSpec(name="py", handler=EntryPoint("mod", "fn", tmp_path / "mod.py")),
    }
    runtime = Runtime(Release("r", "1", tmp_path, functions), config)
    router = FakeRouter()
    app = NodeApp(runtime, config, Metrics(), "n1", router=cast(Router, router))
    app.id_prefix = "n1-"  # random per app: the same for both ways
    return app, router


def connection(
    app: Any, direct: bool, config: NodeConfig | None = None
) -> tuple[BoundedHttpProtocol, FakeTransport, FakeLoop]:
    """A protocol serving ``app``: invocations as ``FunctionCall`` when ``direct`` (through
    ``app.serve_call``), else all through ASGI."""
    node_config = config or NodeConfig(release_dir=Path("."), http=Address("127.0.0.1", 8080))
    protocol_class = bounded_protocol(
        node_config, lambda reason: None, app.serve_call if direct else None
    )
    uvicorn_config = Config(app, loop="none", lifespan="off", timeout_keep_alive=int(KEEP_ALIVE_S))
    state = ServerState()
    state.default_headers = [DATE]
    loop = FakeLoop()
    protocol = protocol_class(uvicorn_config, state, {}, loop)  # type: ignore[arg-type]
    transport = FakeTransport()
    protocol.connection_made(transport)  # type: ignore[arg-type]
    return protocol, transport, loop


def request(
    method: bytes = b"POST",
    target: bytes = b"/function/web",
    body: bytes = b"payload",
    headers: bytes = b"",
    version: bytes = b"HTTP/1.1",
) -> bytes:
    return b"%s %s %s\r\nHost: x\r\nX-Request-Id: rid-1\r\n%sContent-Length: %d\r\n\r\n%s" % (
        method,
        target,
        version,
        headers,
        len(body),
        body,
    )


def exchange(app: Any, direct: bool, data: bytes) -> tuple[bytes, FakeTransport, Any]:
    """What one connection writes for ``data``, and the connection's last cycle."""
    protocol, transport, loop = connection(app, direct)
    protocol.data_received(data)
    loop.run_tasks()
    app.router.complete()
    return b"".join(transport.writes), transport, protocol.cycle


WAYS = ("asgi", "task", "now")


def three_ways(tmp_path: Path, data: bytes, setup: Callable[[FakeRouter], None] = lambda r: None
) -> tuple[dict[str, bytes], dict[str, list[dict[str, Any]]]]:  # fmt: skip
    """The bytes written for ``data`` the ASGI way, as a FunctionCall served by a task, and as
    one sent at once (fresh apps, so the request-id counters agree), and what reached
    routing each way."""
    answers, calls = {}, {}
    for way in WAYS:
        app, router = make_app(tmp_path)
        setup(router)
        router.now = way == "now"
        answers[way], _, _ = exchange(app, way != "asgi", data)
        calls[way] = router.calls
    return answers, calls


CASES: dict[str, tuple[bytes, Callable[[FakeRouter], None]]] = {
    "answered": (request(), lambda r: None),
    "subpath and query": (request(target=b"/function/web/a/b?q=1&x"), lambda r: None),
    "GET, no body": (
        b"GET /function/py HTTP/1.1\r\nHost: x\r\nX-Request-Id: rid-1\r\n\r\n",
        lambda r: None,
    ),
    "no request id": (
        b"POST /function/py HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi",
        lambda r: None,
    ),
    "function's status and headers": (
        request(),
        lambda r: setattr(r, "reply", Reply(418, b"tea", [(b"x-teapot", b"short")])),
    ),
    "no content": (request(), lambda r: setattr(r, "reply", Reply(204, b"dropped", []))),
    "method not allowed": (request(method=b"PATCH", target=b"/function/py"), lambda r: None),
    "bad name": (request(target=b"/function/no*such"), lambda r: None),
    "declared body over the limit": (request(body=b"x" * (MAX_BODY + 1)), lambda r: None),
    "function error": (
        request(),
        lambda r: setattr(r, "raises", errors.FunctionTimeout("'web' took too long")),
    ),
    "overloaded": (
        request(),
        lambda r: setattr(r, "raises", errors.Overloaded("busy", retry_after_s=2.0)),
    ),
    "client asks to close": (request(headers=b"Connection: close\r\n"), lambda r: None),
}


def parsed(answer: bytes) -> tuple[bytes, list[bytes], bytes]:
    """An answer's status line, its header lines in order of name, and its body."""
    head, _, body = answer.partition(b"\r\n\r\n")
    status, *lines = head.split(b"\r\n")
    return status, sorted(lines), body


@pytest.mark.parametrize("case", list(CASES))
def test_a_call_gets_the_answer_the_asgi_path_writes(tmp_path: Path, case: str) -> None:
    data, setup = CASES[case]
    answers, calls = three_ways(tmp_path, data, setup)
    by_asgi = answers["asgi"]
    assert by_asgi.startswith(b"HTTP/1.1 ")
    for way in ("task", "now"):
        if by_asgi.startswith((b"HTTP/1.1 2", b"HTTP/1.1 4")) and b"json" not in by_asgi:
            assert answers[way] == by_asgi  # the function's answer: the same bytes
        else:  # an error's: the same lines, the request id last rather than first
            assert parsed(answers[way]) == parsed(by_asgi)
        assert calls[way] == calls["asgi"]


def test_a_call_is_served_without_the_asgi_cycle(tmp_path: Path) -> None:
    app, router = make_app(tmp_path)
    written, transport, cycle = exchange(app, True, request())
    assert isinstance(cycle, FunctionCall) and cycle.response_complete
    assert written.endswith(b"\r\n\r\ndone") and not transport.closed
    assert router.calls[0]["body"] == b"payload"


@pytest.mark.parametrize(
    "data",
    [
        request(body=b"x" * (FUNCTION_CALL_BODY_BYTES + 1)),
        b"POST /function/web HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"3\r\nabc\r\n0\r\n\r\n",
        request(headers=b"Expect: 100-continue\r\n"),
        request(version=b"HTTP/1.0"),
        request(target=b"/function/w%65b"),
        request(target=b"/function/web/x#frag"),
        request(target=b"/healthz", method=b"GET", body=b""),
        request(method=b"HEAD", body=b""),
    ],
    ids=[
        "large body",
        "chunked",
        "expect",
        "HTTP/1.0",
        "escaped",
        "fragment",
        "not a call",
        "HEAD",
    ],
)
def test_requests_left_to_asgi_are_served_there(tmp_path: Path, data: bytes) -> None:
    config = NodeConfig(release_dir=tmp_path, http=Address("127.0.0.1", 8080), max_body_bytes=10**6)
    router = FakeRouter()
    runtime = Runtime(make_app(tmp_path)[0].runtime.release, config)
    app = NodeApp(runtime, config, Metrics(), "n1", router=cast(Router, router))
    protocol, transport, loop = connection(app, True, config)
    protocol.data_received(data)
    assert isinstance(protocol.cycle, RequestResponseCycle)
    loop.run_tasks()
    written = b"".join(transport.writes)
    assert written.startswith(b"HTTP/1.")
    if data.startswith(b"POST"):
        assert router.calls and b"\r\n\r\ndone" in written
    if data.startswith(b"HEAD"):
        assert written.startswith(b"HTTP/1.1 405 ") and written.endswith(b"\r\n\r\n")


def test_a_pipelined_request_waits_for_the_answer_before_it(tmp_path: Path) -> None:
    app, router = make_app(tmp_path)
    protocol, transport, loop = connection(app, True)
    second = request(target=b"/function/py", body=b"two")
    protocol.data_received(request() + second)
    assert isinstance(protocol.cycle, RequestResponseCycle)  # the second, queued
    assert protocol.pipeline
    loop.run_tasks()  # the first call answers, then the second starts and answers
    written = b"".join(transport.writes)
    assert written.count(b"HTTP/1.1 200 OK") == 2
    assert [c["body"] for c in router.calls] == [b"payload", b"two"]
    assert not transport.closed


def test_a_client_gone_before_the_answer_gets_nothing(tmp_path: Path) -> None:
    app, router = make_app(tmp_path)
    protocol, transport, loop = connection(app, True)
    protocol.data_received(request())
    protocol.connection_lost(None)
    loop.run_tasks()
    assert router.calls  # the call ran; its answer has nowhere to go
    assert transport.writes == []


def test_a_body_that_never_comes_is_the_body_timeouts(tmp_path: Path) -> None:
    app, router = make_app(tmp_path)
    protocol, transport, loop = connection(app, True)
    protocol.data_received(request(body=b"0123456789")[:-4])  # 4 bytes short
    assert isinstance(protocol.cycle, FunctionCall) and loop.tasks == []
    loop.now += protocol.limits.body_timeout_s + 1
    protocol.check_deadlines(loop.now)
    written = b"".join(transport.writes)
    assert written.startswith(b"HTTP/1.1 408 ")
    assert router.calls == []


def test_a_node_shutting_down_closes_after_the_answer(tmp_path: Path) -> None:
    app, _ = make_app(tmp_path)
    protocol, transport, loop = connection(app, True)
    protocol.data_received(request())
    protocol.shutdown()  # as uvicorn does to every connection when the node stops
    loop.run_tasks()
    written = b"".join(transport.writes)
    assert b"connection: close\r\n" in written and transport.closed


@pytest.mark.parametrize(
    "reply",
    [Reply(200, b"x", [(b"x-bad", b"line\r\nbreak")]), Reply(999, b"x", [])],
    ids=["header", "status"],
)
def test_an_answer_http_cannot_carry_is_a_typed_500(tmp_path: Path, reply: Reply) -> None:
    app, router = make_app(tmp_path)
    router.reply = reply
    written, transport, _ = exchange(app, True, request())
    assert written.startswith(b"HTTP/1.1 500 ")
    body = json.loads(written.partition(b"\r\n\r\n")[2])
    assert (body["error"], body["request_id"]) == ("internal_error", "rid-1")
    assert transport.closed


def test_a_failure_of_the_node_itself_is_logged_and_a_typed_500(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    app, router = make_app(tmp_path)
    router.raises = RuntimeError("a bug")
    with caplog.at_level(logging.ERROR, logger="tierfaas.http.app"):
        written, transport, _ = exchange(app, True, request())
    assert written.startswith(b"HTTP/1.1 500 ")
    assert json.loads(written.partition(b"\r\n\r\n")[2])["error"] == "internal_error"
    assert "a bug" in caplog.text and transport.closed


def test_a_call_sent_at_once_is_answered_from_its_future_with_no_task(tmp_path: Path) -> None:
    app, router = make_app(tmp_path)
    router.now = True
    protocol, transport, loop = connection(app, True)
    protocol.data_received(request())
    assert loop.tasks == [] and len(router.sent) == 1
    assert transport.writes == [] and app.in_flight == 1
    router.complete()
    written = b"".join(transport.writes)
    assert written.startswith(b"HTTP/1.1 200 ") and written.endswith(b"\r\n\r\ndone")
    assert app.in_flight == 0 and not transport.closed
    assert app.metrics.calls.counts[("web", "ok", False)][0] == 1
    protocol.data_received(request(body=b"again"))  # the connection serves the next one
    router.complete()
    assert b"".join(transport.writes).count(b"HTTP/1.1 200 ") == 2


def test_a_call_refused_before_it_is_sent_is_answered_at_once(tmp_path: Path) -> None:
    app, router = make_app(tmp_path)
    router.now = True
    router.refuses_now = errors.FunctionTimeout("'web' ran out of time; it did not run")
    protocol, transport, loop = connection(app, True)
    protocol.data_received(request())
    assert loop.tasks == [] and router.sent == []
    written = b"".join(transport.writes)
    assert written.startswith(b"HTTP/1.1 504 ")
    assert json.loads(written.partition(b"\r\n\r\n")[2])["error"] == "timeout"
    assert app.in_flight == 0
    assert app.metrics.calls.counts[("web", "timeout", False)][0] == 1


def test_a_client_gone_before_a_call_sent_at_once_is_answered_gets_nothing(
    tmp_path: Path,
) -> None:
    app, router = make_app(tmp_path)
    router.now = True
    protocol, transport, _ = connection(app, True)
    protocol.data_received(request())
    protocol.connection_lost(None)
    router.complete()
    assert transport.writes == [] and app.in_flight == 0
