"""``HttpInstance`` against a small HTTP/1.1 server of the test's own on loopback, standing in
for an http exec function's program: what the node sends for a call (method, target, headers,
body), what it takes from the answer (status, headers, body), and what it does when the
server misbehaves.

How the instance is built without a process: ``HttpInstance(…, zygote=None, port=…)`` with
the production ``LoopScheduler``, and ``connection_made`` given a fake transport in place of
the socket to the instance process (which, for an http function, only tells when the process
ends). Its pid stays 0, so stopping it signals nothing; closing the fake transport calls
``connection_lost`` soon after, as a socket's close does. Everything else is the real code:
its probe of the port, its pool of kept-alive connections, the exchanges and their checks.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, cast

import pytest

from tests.integration.test_peer_pool import both_loops
from tierfaas import errors
from tierfaas.clock import LoopScheduler
from tierfaas.manifest import ExecCommand, FunctionSpec
from tierfaas.runtime.exec_instance import CRASH_GRACE_S, HttpInstance
from tierfaas.runtime.instance import Result
from tierfaas.runtime.zygote_client import ZygoteClient

WAIT_S = 10.0  # a bound on every wait: generous for a loaded machine, reached only by a bug


@dataclass
class Request:
    line: bytes
    headers: list[tuple[bytes, bytes]]  # as sent, names lower-cased
    body: bytes
    connection: int  # which connection of the server it came on (0, 1, ...)

    def header_names(self) -> list[bytes]:
        return [name for name, _ in self.headers]

    def header(self, name: bytes) -> bytes | None:
        values = [value for key, value in self.headers if key == name]
        assert len(values) <= 1, values
        return values[0] if values else None


# What the server does with a request: the bytes of its answer, or None to close the
# connection without a byte.
Answer = Callable[[Request], Awaitable[bytes | None]]


def respond(status: int, body: bytes = b"", headers: bytes = b"") -> bytes:
    return b"HTTP/1.1 %d X\r\n%scontent-length: %d\r\n\r\n%s" % (
        status, headers, len(body), body,
    )  # fmt: skip


async def ok(request: Request) -> bytes:
    return respond(200, b"ok", b"content-type: text/plain\r\n")


@dataclass
class Server:
    """A keep-alive HTTP/1.1 server: every request it read, and how many connections."""

    answer: Answer
    requests: list[Request] = field(default_factory=list)
    connections: int = 0
    port: int = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        number = self.connections
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                line, *lines = head[:-4].split(b"\r\n")
                headers = []
                for text in lines:
                    name, _, value = text.partition(b":")
                    headers.append((name.strip().lower(), value.strip()))
                length = int(dict(headers).get(b"content-length", b"0"))
                request = Request(line, headers, await reader.readexactly(length), number)
                self.requests.append(request)
                answer = await self.answer(request)
                if answer is None:
                    return
                writer.write(answer)
                await writer.drain()
                if b"\r\nconnection: close\r\n" in answer.lower():
                    return  # it reads nothing after that answer (RFC 9112 9.6)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()


class Transport:
    """Stands in for the socket to the instance process (see the module's docstring)."""

    def __init__(self, protocol: asyncio.Protocol) -> None:
        self.protocol = protocol
        self.closed = False

    def write(self, data: bytes) -> None:
        raise AssertionError("nothing is written to an http instance's process socket")

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            asyncio.get_running_loop().call_soon(self.protocol.connection_lost, None)


def spec(**settings: Any) -> FunctionSpec:
    ready_path = settings.pop("ready_path", None)
    pipeline = settings.pop("pipeline", 1)
    return FunctionSpec(
        name="h",
        handler=None,
        command=ExecCommand(("./h",), "http", ready_path, pipeline=pipeline),
        **{"concurrency": 4, "timeout_s": 5.0, **settings},
    )


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@contextlib.asynccontextmanager
async def instance_of(
    answer: Answer, *, max_body: int = 1 << 20, ready: bool = True, **settings: Any
) -> AsyncIterator[tuple[HttpInstance, Server]]:
    """A server running ``answer`` and an instance of it, ready (unless ``ready`` is false);
    both stopped after."""
    server = Server(answer)
    listener = await asyncio.start_server(server.handle, "127.0.0.1", 0)
    server.port = listener.sockets[0].getsockname()[1]
    instance = HttpInstance(
        1, spec(**settings), cast(ZygoteClient, None), LoopScheduler(), server.port
    )
    instance.max_body = max_body
    instance.connection_made(cast(Any, Transport(instance)))
    try:
        if ready:
            async with asyncio.timeout(WAIT_S):
                await asyncio.shield(instance.ready)
        yield instance, server
    finally:
        if not instance.dead:
            instance.kill("test over")
        async with asyncio.timeout(WAIT_S):
            await asyncio.shield(instance.closed)
            while instance.tasks:
                await asyncio.gather(*instance.tasks, return_exceptions=True)
            for _ in range(3):
                await asyncio.sleep(0)  # the pool's close
        listener.close()
        await listener.wait_closed()


async def call(instance: HttpInstance, context: dict[str, Any], body: bytes = b"") -> Result:
    async with asyncio.timeout(WAIT_S):
        return await instance.call(body, context, instance.spec.timeout_s)


# -- what the function receives -----------------------------------------------------------


@both_loops
async def test_the_method_subpath_query_and_body_reach_the_function() -> None:
    async with instance_of(ok) as (instance, server):
        context = {"method": "PATCH", "path": "/a/b%20c/", "query": "x=1&y=%2F", "headers": {}}
        result = await call(instance, context, b"the body")
        assert result == Result(b"ok", "text/plain", 200, [])
        request = server.requests[-1]
        assert request.line == b"PATCH /a/b%20c/?x=1&y=%2F HTTP/1.1"
        assert request.body == b"the body"
        assert request.header(b"content-length") == b"8"


@both_loops
async def test_without_method_path_or_query_a_call_is_a_post_to_slash() -> None:
    async with instance_of(ok) as (instance, server):
        await call(instance, {})
        assert server.requests[-1].line == b"POST / HTTP/1.1"
        await call(instance, {"method": "GET", "path": "/x", "query": ""})
        assert server.requests[-1].line == b"GET /x HTTP/1.1"  # no "?" for an empty query


@both_loops
async def test_the_callers_headers_reach_it_but_hop_by_hop_and_tierfaas_ones() -> None:
    dropped = {
        "host": "evil.example", "content-length": "999", "connection": "close",
        "keep-alive": "timeout=1", "transfer-encoding": "chunked", "te": "trailers",
        "trailer": "x-t", "upgrade": "h2c", "expect": "100-continue",
        "proxy-connection": "close", "x-tierfaas-hop": "forged", "x-tierfaas-reject": "1",
        "x-request-id": "forged-id",
    }  # fmt: skip
    kept = {"accept": "text/plain", "cookie": "a=1; b=2", "x-custom": "v w", "user-agent": "c"}
    async with instance_of(ok) as (instance, server):
        context = {"headers": {**dropped, **kept}, "request_id": "req-42.a_b"}
        await call(instance, context, b"abc")
        request = server.requests[-1]
        names = request.header_names()
        for name in dropped:
            if name not in ("host", "content-length", "x-request-id"):
                assert name.encode() not in names, name
        for name, value in kept.items():
            assert request.header(name.encode()) == value.encode()
        # The node's own: where it sent it, the real length, the call's request id.
        assert request.header(b"host") == b"127.0.0.1:%d" % server.port
        assert request.header(b"content-length") == b"3"
        assert request.header(b"x-request-id") == b"req-42.a_b"
        assert request.body == b"abc"


@both_loops
async def test_without_a_request_id_none_is_sent() -> None:
    async with instance_of(ok) as (instance, server):
        await call(instance, {"headers": {"x-request-id": "forged"}})
        assert server.requests[-1].header(b"x-request-id") is None


# -- what the caller gets -----------------------------------------------------------------


@both_loops
async def test_the_answers_headers_reach_the_caller_but_hop_by_hop_and_tierfaas_ones() -> None:
    async def answer(request: Request) -> bytes:
        return respond(
            201, b"<p>hi</p>",
            b"Content-Type: text/html; charset=utf-8\r\nSet-Cookie: a=1\r\n"
            b"X-Tierfaas-Reject: not_warm\r\nDate: Mon, 01 Jan 2024 00:00:00 GMT\r\n"
            b"Server: node\r\nConnection: keep-alive\r\nKeep-Alive: timeout=5\r\n"
            b"X-Custom: yes\r\nX-TIERFAAS-NODE: forged\r\nset-cookie: b=2; Path=/\r\n"
            b"X-Request-Id: theirs\r\nLocation: /next\r\n",
        )  # fmt: skip

    async with instance_of(answer) as (instance, _):
        result = await call(instance, {})
        assert result.status == 201
        assert result.body == b"<p>hi</p>"
        assert result.content_type == "text/html; charset=utf-8"
        assert result.headers == [
            (b"set-cookie", b"a=1"),
            (b"x-custom", b"yes"),
            (b"set-cookie", b"b=2; Path=/"),
            (b"location", b"/next"),
        ]


@both_loops
async def test_a_chunked_answer_is_read_whole_and_its_encoding_not_relayed() -> None:
    async def answer(request: Request) -> bytes:
        return b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"

    async with instance_of(answer) as (instance, _):
        result = await call(instance, {})
        assert (result.body, result.headers) == (b"abc", [])
        assert result.content_type == "application/octet-stream"  # none given


@pytest.mark.parametrize("status", [200, 204, 302, 404, 418, 500, 503])
@both_loops
async def test_the_status_is_passed_through(status: int) -> None:
    async def answer(request: Request) -> bytes:
        return respond(status)

    async with instance_of(answer) as (instance, _):
        result = await call(instance, {})
        assert (result.status, result.body) == (status, b"")
        assert not instance.dead


@both_loops
async def test_interim_answers_are_passed_over_for_the_final_one() -> None:
    async def answer(request: Request) -> bytes:
        interim = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nlink: </a>\r\n\r\n"
        return interim + respond(201, b"made", b"x-final: 1\r\n")

    async with instance_of(answer) as (instance, server):
        for _ in range(2):  # and the connection serves the next call
            result = await call(instance, {})
            assert (result.status, result.body, result.headers) == (
                201,
                b"made",
                [(b"x-final", b"1")],
            )
        assert not instance.dead and server.connections == 1


@both_loops
async def test_calls_in_flight_use_their_own_connections_and_may_end_in_any_order() -> None:
    fast_done = asyncio.Event()

    async def answer(request: Request) -> bytes:
        if request.line.startswith(b"POST /slow"):
            await fast_done.wait()
        return respond(200, request.line.split(b" ")[1])

    async with instance_of(answer) as (instance, server):
        slow = instance.call(b"", {"path": "/slow"}, 5.0)
        fast = instance.call(b"", {"path": "/fast"}, 5.0)
        assert (await call_result(fast)).body == b"/fast"
        assert not slow.done()
        fast_done.set()
        assert (await call_result(slow)).body == b"/slow"
        assert len({request.connection for request in server.requests}) == 2
        for _ in range(3):  # then reused: no new connection per call
            await call(instance, {})
        assert server.connections == 2


async def call_result(future: asyncio.Future[Result]) -> Result:
    async with asyncio.timeout(WAIT_S):
        return await future


@both_loops
async def test_a_call_on_a_warm_connection_takes_no_task() -> None:
    """The per-call path is callbacks only: a task per call cost the node a third of its CPU
    per call of an http function."""
    release = asyncio.Event()

    async def answer(request: Request) -> bytes:
        await release.wait()
        return respond(200, b"ok")

    async with instance_of(answer) as (instance, server):
        pending = instance.call(b"", {}, 5.0)  # on the probe's connection, kept warm
        async with asyncio.timeout(WAIT_S):
            while not server.requests:
                await asyncio.sleep(0.005)
        assert instance.tasks == set() and not pending.done()
        release.set()
        assert (await call_result(pending)).body == b"ok"
        assert server.connections == 1


# -- pipelined (pipeline > 1) ----------------------------------------------------------------


def echo_after(gate: asyncio.Event) -> Answer:
    """Answers each request with its path, once ``gate`` is set."""

    async def answer(request: Request) -> bytes:
        await gate.wait()
        return respond(200, request.line.split(b" ")[1])

    return answer


async def burst(instance: HttpInstance, paths: list[str], gate: asyncio.Event) -> list[bytes]:
    """Calls ``paths`` in one pass of the loop; their answers once ``gate`` opens."""
    pending = [instance.call(b"", {"path": path}, 5.0) for path in paths]
    await asyncio.sleep(0.05)  # every request is out, the server holds the answers
    gate.set()
    return [(await call_result(future)).body for future in pending]


@both_loops
async def test_pipelined_calls_share_few_connections_and_each_gets_its_own_answer() -> None:
    gate = asyncio.Event()
    async with instance_of(echo_after(gate), pipeline=4, concurrency=8) as (instance, server):
        assert instance.max_connections == 2
        paths = [f"/{n}" for n in range(8)]
        # The first burst opens connections while they are needed (the others are opening),
        # and those over two close once they are idle.
        assert await burst(instance, paths, gate) == [path.encode() for path in paths]
        opened = server.connections
        gate.clear()
        before = len(server.requests)
        assert await burst(instance, paths, gate) == [path.encode() for path in paths]
        assert server.connections == opened  # no new connection
        carried = [request.connection for request in server.requests[before:]]
        assert len(set(carried)) == 2 and all(carried.count(c) == 4 for c in set(carried))
        assert not instance.dead and instance.calls == {}


@both_loops
async def test_calls_behind_an_answer_that_closes_the_connection_go_again_on_a_new_one() -> None:
    async def answer(request: Request) -> bytes:
        path = request.line.split(b" ")[1]
        if path == b"/first":
            await asyncio.sleep(0.05)  # the others are pipelined behind it meanwhile
            return respond(200, path, b"connection: close\r\n")
        return respond(200, path)

    async with instance_of(answer, pipeline=4, concurrency=4) as (instance, server):
        pending = [instance.call(b"", {"path": p}, 5.0) for p in ("/first", "/a", "/b")]
        bodies = [(await call_result(future)).body for future in pending]
        assert bodies == [b"/first", b"/a", b"/b"]
        lines = [(request.line, request.connection) for request in server.requests]
        assert lines[0] == (b"POST /first HTTP/1.1", 0)  # the probe's connection
        assert all(connection > 0 for _, connection in lines[1:])  # each read once, elsewhere
        assert sorted(line for line, _ in lines[1:]) == [b"POST /a HTTP/1.1", b"POST /b HTTP/1.1"]
        assert not instance.dead


@both_loops
async def test_calls_behind_an_answer_over_the_limit_fail_and_the_instance_lives_on() -> None:
    async def answer(request: Request) -> bytes:
        path = request.line.split(b" ")[1]
        if path == b"/big":
            await asyncio.sleep(0.05)  # the others are pipelined behind it meanwhile
            return respond(200, b"x" * 2000)
        return respond(200, path)

    settings: dict[str, Any] = {"pipeline": 4, "concurrency": 4, "max_body": 1000}
    async with instance_of(answer, **settings) as (instance, server):
        pending = [instance.call(b"", {"path": p}, 5.0) for p in ("/big", "/a", "/b")]
        with pytest.raises(errors.ResponseTooLarge, match="over the limit of 1000 bytes"):
            await call_result(pending[0])
        for behind in pending[1:]:
            with pytest.raises(errors.ResponseTooLarge, match="before this call's"):
                await call_result(behind)
        assert {request.connection for request in server.requests} == {0}  # one connection
        assert not instance.dead and instance.calls == {}
        assert (await call(instance, {"path": "/after"})).body == b"/after"


@both_loops
async def test_one_call_per_connection_without_pipeline() -> None:
    gate = asyncio.Event()
    async with instance_of(echo_after(gate), concurrency=4) as (instance, server):
        assert instance.max_connections == 4
        assert await burst(instance, ["/0", "/1", "/2", "/3"], gate) == [
            b"/0", b"/1", b"/2", b"/3"
        ]  # fmt: skip
        assert sorted(request.connection for request in server.requests) == [0, 1, 2, 3]


@both_loops
async def test_a_connection_closed_before_its_request_left_gives_way_to_a_new_one() -> None:
    """The requests of one pass of the event loop leave at its end: a connection that closes
    in between carried nothing, and the call goes on a new one."""
    async with instance_of(ok) as (instance, server):
        pending = instance.call(b"", {}, 5.0)  # takes the probe's connection
        [taken] = instance.connections
        taken.close()
        assert (await call_result(pending)).body == b"ok"
        assert [request.connection for request in server.requests] == [1]
        assert not instance.dead


@both_loops
async def test_repeated_headers_reach_the_caller_in_order() -> None:
    async def answer(request: Request) -> bytes:
        return respond(200, b"", b"Vary: a\r\nLink: <1>\r\nVary: b\r\nlink: <2>\r\n")

    async with instance_of(answer) as (instance, _):
        result = await call(instance, {})
        assert result.headers == [
            (b"vary", b"a"), (b"link", b"<1>"), (b"vary", b"b"), (b"link", b"<2>"),
        ]  # fmt: skip


@both_loops
async def test_an_answer_without_length_ends_at_the_close_and_is_whole() -> None:
    async def answer(request: Request) -> None:
        return None  # the handler below writes it

    holder: list[asyncio.StreamWriter] = []

    class Closing(Server):
        async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            number = self.connections
            self.connections += 1
            if number == 0:  # the probe's: accepted, then closed unused
                writer.close()
                return
            await reader.readuntil(b"\r\n\r\n")
            holder.append(writer)
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n\r\nall of it")
            await writer.drain()
            writer.close()

    server = Closing(answer)
    listener = await asyncio.start_server(server.handle, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    instance = HttpInstance(1, spec(), cast(ZygoteClient, None), LoopScheduler(), port)
    instance.connection_made(cast(Any, Transport(instance)))
    try:
        async with asyncio.timeout(WAIT_S):
            await asyncio.shield(instance.ready)
        result = await call(instance, {})
        assert (result.status, result.body, result.content_type) == (
            200,
            b"all of it",
            "text/plain",
        )
        assert not instance.dead
    finally:
        instance.kill("test over")
        async with asyncio.timeout(WAIT_S):
            await asyncio.gather(*instance.tasks, return_exceptions=True)
        listener.close()
        await listener.wait_closed()


@both_loops
async def test_a_connection_idle_too_long_is_not_reused() -> None:
    async with instance_of(ok) as (instance, server):
        instance.idle_connection_s = 0.05
        await call(instance, {})
        await call(instance, {})
        assert server.connections == 1  # the probe's, reused at once
        await asyncio.sleep(0.1)
        await call(instance, {})
        assert server.connections == 2
        assert [request.connection for request in server.requests] == [0, 0, 1]


# -- a server that misbehaves -------------------------------------------------------------


@both_loops
async def test_an_answer_over_max_body_is_refused_and_the_instance_lives_on() -> None:
    async def answer(request: Request) -> bytes:
        size = 2000 if request.line.startswith(b"POST /big") else 10
        return respond(200, b"x" * size)

    async with instance_of(answer, max_body=1000) as (instance, _):
        with pytest.raises(errors.ResponseTooLarge, match="over the limit of 1000 bytes"):
            await call(instance, {"path": "/big"})
        assert not instance.dead and instance.death_reason == ""
        assert (await call(instance, {})).body == b"x" * 10
        assert instance.calls == {}


@pytest.mark.parametrize(
    "garbage",
    [
        b"SMTP ready\r\n\r\n",
        b"HTTP/1.1 2000 OK\r\n\r\n",
        b"HTTP/1.1 200 OK\r\ncontent-length: x\r\n\r\n",
        b"HTTP/1.1 101 Switching Protocols\r\n\r\n",
        b"HTTP/1.1 101 Switching Protocols\r\nconnection: upgrade\r\nupgrade: x\r\n\r\n",
    ],
)
@both_loops
async def test_a_garbage_answer_stops_the_instance_with_a_protocol_error(garbage: bytes) -> None:
    async def answer(request: Request) -> bytes:
        return garbage

    async with instance_of(answer) as (instance, _):
        with pytest.raises(errors.ProtocolError, match="broke the protocol"):
            await call(instance, {})
        assert instance.dead and instance.death_reason == "protocol_error"
        assert "unreadable answer" in instance.protocol_detail


@both_loops
async def test_an_answer_with_over_100_headers_breaks_the_protocol() -> None:
    async def answer(request: Request) -> bytes:
        many = b"".join(b"x-h%d: v\r\n" % n for n in range(101))
        return respond(200, b"", many)

    async with instance_of(answer) as (instance, _):
        with pytest.raises(errors.ProtocolError):
            await call(instance, {})
        assert instance.death_reason == "protocol_error"
        assert "over 100 headers" in instance.protocol_detail


@both_loops
async def test_a_server_that_closed_an_idle_connection_gets_the_call_on_a_new_one() -> None:
    async def answer(request: Request) -> bytes | None:
        # The connection the probe opened (0) is closed as its first request arrives, as a
        # server closing an idle keep-alive connection at that moment does.
        return None if request.connection == 0 else respond(200, b"fresh")

    async with instance_of(answer) as (instance, server):
        assert (await call(instance, {})).body == b"fresh"
        assert not instance.dead
        assert [request.connection for request in server.requests] == [0, 1]


@both_loops
async def test_a_server_that_closes_every_connection_unanswered_breaks_the_protocol() -> None:
    async def answer(request: Request) -> None:
        return None

    async with instance_of(answer) as (instance, server):
        with pytest.raises(errors.ProtocolError):
            await call(instance, {})
        assert instance.death_reason == "protocol_error"
        assert "closed" in instance.protocol_detail
        assert len(server.requests) == 2  # the stale connection's, and one retry


@both_loops
async def test_a_server_whose_process_dies_under_a_call_is_a_crash() -> None:
    holder: list[HttpInstance] = []

    async def answer(request: Request) -> None:
        transport = holder[0].transport
        assert transport is not None
        # The process ends: its server's connections close first, its socket a moment later
        # (well within CRASH_GRACE_S; this timer is due before the grace's, however loaded).
        asyncio.get_running_loop().call_later(0.02, transport.close)

    assert CRASH_GRACE_S >= 0.05
    async with instance_of(answer) as (instance, _):
        holder.append(instance)
        with pytest.raises(errors.InstanceCrashed) as caught:
            await call(instance, {"path": "/first"})
        assert not isinstance(caught.value, errors.ProtocolError)
        assert instance.dead and instance.death_reason == ""


@both_loops
async def test_an_answer_past_the_timeout_stops_the_instance() -> None:
    never = asyncio.Event()

    async def answer(request: Request) -> bytes:
        await never.wait()
        return respond(200)

    async with instance_of(answer, timeout_s=0.2) as (instance, _):
        with pytest.raises(errors.FunctionTimeout):
            await call(instance, {})
        assert instance.dead and instance.death_reason == "timeout"
        never.set()


# -- readiness ----------------------------------------------------------------------------


@both_loops
async def test_ready_once_the_port_accepts_even_when_it_listens_late() -> None:
    port = free_port()
    server = Server(ok)
    instance = HttpInstance(1, spec(), cast(ZygoteClient, None), LoopScheduler(), port)
    instance.connection_made(cast(Any, Transport(instance)))
    listener = None
    try:
        await asyncio.sleep(0.1)  # the probe tries the closed port meanwhile
        assert not instance.ready.done()
        listener = await asyncio.start_server(server.handle, "127.0.0.1", port)
        async with asyncio.timeout(WAIT_S):
            await asyncio.shield(instance.ready)
        assert server.requests == []  # a connection, no request
    finally:
        instance.kill("test over")
        async with asyncio.timeout(WAIT_S):
            await asyncio.gather(*instance.tasks, return_exceptions=True)
        if listener is not None:
            listener.close()
            await listener.wait_closed()


@both_loops
async def test_with_a_ready_path_ready_once_it_answers_200() -> None:
    healthy = asyncio.Event()

    async def answer(request: Request) -> bytes:
        if request.line.startswith(b"GET /healthz"):
            return respond(200 if healthy.is_set() else 503)
        return respond(200, b"served")

    async with instance_of(answer, ready=False, ready_path="/healthz?deep=1") as (instance, srv):
        async with asyncio.timeout(WAIT_S):
            while len(srv.requests) < 3:
                await asyncio.sleep(0.01)
        assert not instance.ready.done()
        healthy.set()
        async with asyncio.timeout(WAIT_S):
            await asyncio.shield(instance.ready)
        probe = srv.requests[0]
        assert probe.line == b"GET /healthz?deep=1 HTTP/1.1"
        assert probe.header(b"user-agent") == b"tierfaas"
        assert (await call(instance, {})).body == b"served"
