"""``LocalFirst``: an async call's run goes straight to this node's pool when its function
has a free slot here, else through the router; the handler sees the same context."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tierfaas.calls.local_run import LocalFirst, context_headers
from tierfaas.runtime.runtime import Invocation


@dataclass
class FakePool:
    free: int
    takes_context: bool = True

    def free_slots(self) -> tuple[int, int]:
        return (1 if self.free else 0), self.free


@dataclass
class FakeRuntime:
    pool_: FakePool
    invoked: list[dict[str, Any]] = field(default_factory=list)

    def pool(self, name: str) -> FakePool:
        return self.pool_

    async def invoke(self, name: str, body: bytes, **kw: Any) -> Invocation:
        self.invoked.append({"name": name, "body": body, **kw})
        return Invocation(b"ran", "text/plain", False, 200, [(b"x-out", b"1")])


class FakeRoutes:
    def __init__(self) -> None:
        self.counted: list[str] = []

    def inc(self, route: str) -> None:
        self.counted.append(route)


class FakeRouter:
    def __init__(self) -> None:
        self.handled: list[str] = []
        self.metrics = type("M", (), {"routes": FakeRoutes()})()

    async def handle(self, name: str, body: bytes, **kw: Any) -> str:
        self.handled.append(name)
        return "routed"


HEADERS = [(b"content-type", b"text/plain"), (b"cookie", b"a=1"), (b"cookie", b"b=2"),
           (b"host", b"x")]  # fmt: skip


def _run(free: int, takes_context: bool = True) -> tuple[FakeRuntime, FakeRouter, Any]:
    runtime, router = FakeRuntime(FakePool(free, takes_context)), FakeRouter()
    local = LocalFirst(router, runtime)  # type: ignore[arg-type]
    reply = local("f", b"x", request_id="r", method="POST", query="q=1", headers=HEADERS,
                  started=5.0, path="/p", call=("a~b~0123456789abcdef", 2))  # fmt: skip
    return runtime, router, reply


async def test_a_free_slot_here_runs_the_call_here_without_the_router() -> None:
    runtime, router, reply = _run(free=1)
    answer = await reply
    assert router.handled == [] and router.metrics.routes.counted == ["local-warm"]
    assert (answer.status, answer.body) == (200, b"ran")
    assert answer.headers == [(b"content-type", b"text/plain"), (b"x-out", b"1")]
    (invoked,) = runtime.invoked
    assert invoked["query"] == "q=1" and invoked["path"] == "/p" and invoked["started"] == 5.0
    assert invoked["headers"] == {
        "content-type": "text/plain", "cookie": "a=1; b=2",
        "x-call-id": "a~b~0123456789abcdef", "x-call-attempt": "2",
    }  # fmt: skip


async def test_no_free_slot_here_goes_through_the_router() -> None:
    runtime, router, reply = _run(free=0)
    assert await reply == "routed"
    assert router.handled == ["f"] and runtime.invoked == []


async def test_a_handler_without_a_context_gets_no_headers() -> None:
    runtime, _, reply = _run(free=2, takes_context=False)
    await reply
    assert runtime.invoked[0]["headers"] is None


def test_context_headers_without_a_call() -> None:
    assert context_headers([(b"x-a", b"1"), (b"x-a", b"2")], None) == {"x-a": "1, 2"}
