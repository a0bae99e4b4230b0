"""The node's HTTP/1.1 protocol (``tierfaas.http.protocol``) driven in process: bytes fed to a
``BoundedHttpProtocol`` over a fake transport and a fake loop whose clock the test moves, the
app's coroutine stepped by hand (no socket, no running loop, no sleep).

- ``write_answer`` (an invocation's answer in one write) puts out exactly the bytes uvicorn's
  ``send`` does with its two messages, and leaves the connection in the same state; where
  ``send`` must decide (a header it refuses, one that frames the answer, a watched ``send``),
  it writes nothing and says so.
- The keep-alive timeout is the sweep's: an idle connection closes once ``timeout_keep_alive``
  has passed since its last answer, and not before; a new request restarts the count.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

import pytest
from uvicorn.config import Config
from uvicorn.server import ServerState

from tierfaas.http.protocol import BoundedHttpProtocol, write_answer
from tierfaas.testing.transport import FakeTransport

KEEP_ALIVE_S = 30.0
DATE = (b"date", b"Thu, 03 Dec 2026 19:00:00 GMT")
REQUEST = b"POST /function/hello HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nworld"


class FakeTimer:
    def cancel(self) -> None:
        pass


class FakeLoop:
    """The loop a protocol sees: its clock, its timers (never fired) and its tasks, which run
    when the test calls ``run_tasks`` (after the bytes of a request are all fed, as a real
    loop runs them after ``data_received`` returns)."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.tasks: list[Coroutine[Any, Any, None]] = []

    def time(self) -> float:
        return self.now

    def call_later(self, delay: float, callback: Callable[[], None]) -> FakeTimer:
        return FakeTimer()

    def create_task(self, coroutine: Coroutine[Any, Any, None], **_: Any) -> asyncio.Future[None]:
        self.tasks.append(coroutine)
        return FakeTask()  # type: ignore[return-value]

    def run_tasks(self) -> None:
        while self.tasks:
            coroutine = self.tasks.pop(0)
            with pytest.raises(StopIteration):
                coroutine.send(None)  # the app never waits here: the request is all in


class FakeTask:
    def add_done_callback(self, callback: Callable[[Any], None]) -> None:
        pass


Answer = Callable[[Callable[..., Any]], Coroutine[Any, Any, None]]


def connection(answer: Answer) -> tuple[BoundedHttpProtocol, FakeTransport, FakeLoop]:
    """A protocol whose app answers every request with ``answer(send)``."""

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        await answer(send)

    config = Config(app, loop="none", lifespan="off", timeout_keep_alive=int(KEEP_ALIVE_S))
    state = ServerState()
    state.default_headers = [DATE]
    loop = FakeLoop()
    protocol = BoundedHttpProtocol(config, state, {}, loop)  # type: ignore[arg-type]
    transport = FakeTransport()
    protocol.connection_made(transport)  # type: ignore[arg-type]
    return protocol, transport, loop


def serve(
    answer: Answer, request: bytes = REQUEST
) -> tuple[bytes, FakeTransport, BoundedHttpProtocol]:
    """What one connection writes for ``request`` answered by ``answer``."""
    protocol, transport, loop = connection(answer)
    protocol.data_received(request)
    loop.run_tasks()
    return b"".join(transport.writes), transport, protocol


def by_send(
    status: int, headers: list[tuple[bytes, bytes]], body: bytes, request_id: bytes, close: bool
) -> Answer:
    """The same answer as ``write_answer``'s, sent the ASGI way (as the app did before)."""

    async def answer(send: Callable[..., Any]) -> None:
        sent = [*headers, (b"x-request-id", request_id)]
        if status not in (204, 304):
            sent.append((b"content-length", b"%d" % len(body)))
        if close:
            sent.append((b"connection", b"close"))
        await send({"type": "http.response.start", "status": status, "headers": sent})
        await send({"type": "http.response.body", "body": b"" if status in (204, 304) else body})

    return answer


def at_once(
    status: int, headers: list[tuple[bytes, bytes]], body: bytes, request_id: bytes, close: bool
) -> tuple[Answer, list[bool]]:
    took: list[bool] = []

    async def answer(send: Callable[..., Any]) -> None:
        took.append(write_answer(send, status, list(headers), body, request_id, close))
        if not took[-1]:
            await by_send(status, headers, body, request_id, close)(send)

    return answer, took


CASES = {
    "ok": (200, [(b"content-type", b"text/plain"), (b"x-tierfaas-route", b"local-warm")], b"hi"),
    "function status and headers": (418, [(b"X-Teapot", b"short and stout")], b"tea"),
    "no content": (204, [(b"etag", b'"1"')], b"dropped"),
    "not modified": (304, [], b""),
    "empty body": (200, [], b""),
    "large body": (200, [(b"content-type", b"application/octet-stream")], b"x" * 200_000),
}


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("close", [False, True], ids=["keep-alive", "draining"])
def test_an_answer_at_once_is_what_the_cycles_send_writes(case: str, close: bool) -> None:
    status, headers, body = CASES[case]
    expected, sent_transport, sent_protocol = serve(by_send(status, headers, body, b"r1", close))
    answer, took = at_once(status, headers, body, b"r1", close)
    written, transport, protocol = serve(answer)
    assert took == [True]
    assert written == expected
    assert written.startswith(b"HTTP/1.1 %d " % status)
    assert (transport.closed, protocol.cycle.keep_alive) == (
        sent_transport.closed,
        sent_protocol.cycle.keep_alive,
    )
    assert transport.closed is close
    assert protocol.cycle.response_complete
    assert protocol.server_state.total_requests == 1


def test_a_client_that_asks_to_close_gets_connection_close_either_way() -> None:
    request = REQUEST.replace(b"Host: x\r\n", b"Host: x\r\nConnection: close\r\n")
    expected, _, _ = serve(by_send(200, [], b"hi", b"r1", False), request)
    answer, took = at_once(200, [], b"hi", b"r1", False)
    written, transport, _ = serve(answer, request)
    assert took == [True] and written == expected and transport.closed
    assert b"connection: close\r\n" in written


@pytest.mark.parametrize(
    "header",
    [
        (b"x-bad", b"line\r\nbreak"),  # uvicorn refuses it: the app's send raises, 500
        (b"bad name", b"v"),
        (b"content-length", b"3"),  # frames the answer: the cycle's send decides
        (b"Transfer-Encoding", b"chunked"),
        (b"connection", b"close"),
    ],
)
def test_headers_the_cycles_send_must_judge_go_its_way(header: tuple[bytes, bytes]) -> None:
    protocol, transport, _ = connection(by_send(200, [], b"", b"r1", False))
    protocol.data_received(REQUEST)
    cycle = protocol.cycle
    assert not write_answer(cycle.send, 200, [header], b"abc", b"r1", False)
    assert transport.writes == [] and not cycle.response_started


def test_a_watched_send_is_not_bypassed() -> None:
    protocol, transport, _ = connection(by_send(200, [], b"", b"r1", False))
    protocol.data_received(REQUEST)
    cycle = protocol.cycle

    async def watched(message: Any) -> None:  # as tracing wraps the app's send
        await cycle.send(message)

    assert not write_answer(watched, 200, [], b"abc", b"r1", False)
    assert transport.writes == []


def test_an_idle_connection_closes_once_the_keep_alive_timeout_passed() -> None:
    protocol, transport, loop = connection(by_send(200, [], b"hi", b"r1", False))
    protocol.data_received(REQUEST)
    loop.run_tasks()
    assert transport.writes and not transport.closed
    loop.now += KEEP_ALIVE_S - 1
    protocol.check_deadlines(loop.now)
    assert not transport.closed
    protocol.data_received(REQUEST)  # a new request: idle no more, counted from its answer
    loop.run_tasks()
    loop.now += KEEP_ALIVE_S - 1
    protocol.check_deadlines(loop.now)
    assert not transport.closed
    loop.now += 2
    protocol.check_deadlines(loop.now)
    assert transport.closed


def test_a_connection_waiting_for_its_answer_is_not_idle() -> None:
    protocol, transport, loop = connection(by_send(200, [], b"hi", b"r1", False))
    protocol.data_received(REQUEST)  # its task never runs: the call is in flight
    loop.now += 10 * KEEP_ALIVE_S
    protocol.check_deadlines(loop.now)
    assert not transport.closed
