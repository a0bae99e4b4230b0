"""The router fails closed on hop headers: a request that claims to be a forward and cannot
prove it is refused (403 ``hop_refused``) and neither runs nor is routed; a proven one runs
within the time its sender had left. Two routers on one fake clock, wired by an in-memory
peer pool: no sockets, no wall clock."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable

import pytest
from prometheus_client import CollectorRegistry

from tierfaas import errors
from tierfaas.cluster.state import NodeEndpoint
from tierfaas.config import Address
from tierfaas.http.asgi import error_body, error_headers
from tierfaas.routing import forwarding as fw
from tierfaas.routing.cache import RouteCache
from tierfaas.routing.peers import PeerResponse
from tierfaas.routing.router import Reply, Router, RoutingMetrics, handler_headers
from tierfaas.runtime.events import InstanceStarted
from tierfaas.testing import FakeClock, RuntimeHarness, fake_release

KEY = b"k" * 32
RELEASE = fake_release({"f": {"memory_mb": 64, "timeout_s": 10.0}})
B_ADDRESS = Address("10.0.0.2", 8080)


def router(rt: RuntimeHarness, name: str, lookups: list[str] | None = None) -> Router:
    async def lookup(function: str) -> list[NodeEndpoint]:
        if lookups is not None:
            lookups.append(function)
        return [NodeEndpoint("b", 1, B_ADDRESS, None)]

    return Router(
        rt.runtime,
        self_name=name,
        key=KEY,
        cache=RouteCache(rt.clock),
        metrics=RoutingMetrics(CollectorRegistry()),
        lookup=lookup,
        clock=rt.clock,
    )


def raw(headers: dict[str, str]) -> list[tuple[bytes, bytes]]:
    return [(k.encode(), v.encode()) for k, v in headers.items()]


def handle(
    target: Router, clock: FakeClock, headers: dict[str, str], request_id: str = "req1"
) -> Awaitable[Reply]:
    return target.handle(
        "f", b"", request_id=request_id, method="POST", query="", headers=raw(headers),
        started=clock(),
    )  # fmt: skip


class MemoryPeers:
    """A ``PeerPool`` that hands each request to the target node's router, answering as the
    node's HTTP layer would."""

    def __init__(self, routers: dict[str, Router], clock: FakeClock) -> None:
        self.routers = routers
        self.clock = clock
        self.sent: list[dict[str, str]] = []

    async def request(
        self, address: str, method: str, target: str, headers: dict[str, str], body: bytes,
        **timeouts: float,
    ) -> PeerResponse:  # fmt: skip
        self.sent.append(headers)
        node = self.routers[address]
        request_id = headers["x-request-id"]
        try:
            reply = await node.handle(
                target.removeprefix("/function/"), body, request_id=request_id, method=method,
                query="", headers=raw(headers), started=self.clock(),
            )  # fmt: skip
        except errors.HttpError as exc:
            answer = {k.decode(): v.decode() for k, v in error_headers(exc, request_id)}
            return PeerResponse(exc.status, answer, str(error_body(exc, request_id)).encode())
        return PeerResponse(reply.status, {k.decode(): v.decode() for k, v in reply.headers}, b"")

    async def close(self) -> None:
        pass


async def warm(rt: RuntimeHarness) -> None:
    call = rt.call("f", b"")
    await rt.run_for(1.0)
    assert call.result().cold


async def refused(call: Awaitable[Reply]) -> errors.HopRefused:
    with pytest.raises(errors.HopRefused) as info:
        await call
    assert info.value.status == 403 and info.value.code == "hop_refused"
    return info.value


def count(target: Router, reason: str) -> float:
    value: float = target.metrics.hop_refusals.labels(reason)._value.get()
    return value


async def test_hop_headers_that_do_not_check_out_are_refused_and_nothing_runs() -> None:
    async with RuntimeHarness(RELEASE) as rt:
        lookups: list[str] = []
        b = router(rt, "b", lookups)
        signer = fw.Signer(KEY)
        signer.learn("b", b.verifier.token)
        good = signer.sign("b", "req1", "f", fw.next_hop(fw.Hop(), "a", 5.0, start=True))
        assert isinstance(b.verifier.check("req1", "f", good), fw.Hop)  # used up: replayed now
        cases = {
            "unsigned": {fw.HOPS: "1", fw.PATH: "a"},
            "malformed": {fw.HOPS: "1", fw.PATH: "a", fw.SIGNATURE: "1700000000.000:" + "0" * 64},
            "forged": {**good, fw.PATH: "x"},
            # Signed with the key, but for no token of b's (another node's, or expired).
            "stale": fw.Signer(KEY).sign("b", "req1", "f", fw.next_hop(fw.Hop(), "a", 5.0)),
            "replayed": good,
        }
        for reason, headers in cases.items():
            error = await refused(handle(b, rt.clock, headers))
            assert error.reason == reason, (reason, error.message)
            assert error.token == b.verifier.token
            assert count(b, reason) == 1
        await rt.run_for(5.0)
        # Not run (no instance started, although start was allowed) and not routed either.
        assert not [e for e in rt.events if isinstance(e, InstanceStarted)]
        assert lookups == []
        # An ordinary call (no hop header) is routed as before.
        b.peers = None  # nowhere to forward: it runs here
        reply = asyncio.ensure_future(handle(b, rt.clock, {"user-agent": "curl"}, "req2"))
        await rt.run_for(1.0)
        assert reply.result().status == 200
        assert lookups == ["f"]


async def test_a_forward_fetches_the_targets_token_once_then_is_served_there() -> None:
    clock = FakeClock()
    async with (
        RuntimeHarness(RELEASE, clock=clock) as rt_a,
        RuntimeHarness(RELEASE, clock=clock) as rt_b,
    ):
        a, b = router(rt_a, "a"), router(rt_b, "b")
        peers = MemoryPeers({str(B_ADDRESS): b}, clock)
        a.peers = peers  # type: ignore[assignment]
        await warm(rt_b)

        async def call(request_id: str) -> Reply:
            task = asyncio.ensure_future(handle(a, clock, {}, request_id))
            await rt_a.run_for(0.5)
            return task.result()

        first = await call("req1")
        assert first.status == 200
        headers = dict(first.headers)
        assert headers[fw.SERVED_BY.encode()] == b"b"
        assert headers[fw.ROUTE.encode()] == b"forwarded-warm"
        assert fw.TOKEN.encode() not in headers  # between nodes only: not relayed
        # The first forward knew no token: refused stale (nothing ran), retried with it.
        assert [h[fw.SIGNATURE].split(":")[0] for h in peers.sent] == ["", b.verifier.token]
        assert a.metrics.forwards.labels("rejected_hop_stale")._value.get() == 1
        assert count(b, "stale") == 1
        # From then on every answer keeps a's token current: no more round trips, also
        # across b's token changes, as long as calls keep coming.
        for i in range(10):
            clock.advance(fw.ROTATE_S / 3)
            assert (await call(f"req-{i}")).status == 200
        assert a.metrics.forwards.labels("rejected_hop_stale")._value.get() == 1
        assert len(peers.sent) == 12
        assert fw.DEADLINE not in peers.sent[-1]
        assert 9.0 < int(peers.sent[-1][fw.REMAINING]) / 1000 <= 10.0
        # Silent for longer than a token lives: one more round trip, and served.
        clock.advance(3 * fw.ROTATE_S)
        assert (await call("req-late")).status == 200
        assert a.metrics.forwards.labels("rejected_hop_stale")._value.get() == 2


async def test_the_deadline_is_the_time_left_counted_on_the_receivers_clock() -> None:
    async with RuntimeHarness(RELEASE) as rt:
        await warm(rt)
        b = router(rt, "b")
        signer = fw.Signer(KEY)
        signer.learn("b", b.verifier.token)
        headers = signer.sign("b", "req1", "f", fw.next_hop(fw.Hop(), "a", remaining_s=0.5))
        started = rt.clock()
        task = asyncio.ensure_future(
            b.handle(
                "f",
                b"3",
                request_id="req1",
                method="POST",
                query="",
                headers=raw(headers),
                started=started,
            )
        )
        await rt.run_for(0.4)
        assert not task.done()
        await rt.run_for(0.2)
        with pytest.raises(errors.FunctionTimeout):
            task.result()  # at 0.5 s of b's clock, not the function's 10 s


def test_repeated_request_headers_are_joined_not_lost() -> None:
    raw = [
        (b"accept", b"a"),
        (b"cookie", b"x=1"),
        (b"accept", b"b"),
        (b"cookie", b"y=2"),
        (b"connection", b"keep-alive"),
        (b"x-tierfaas-hops", b"1"),
    ]
    assert handler_headers(raw) == {"accept": "a, b", "cookie": "x=1; y=2"}


def test_an_async_calls_headers_come_from_its_node_only() -> None:
    """X-Call-Id and X-Call-Attempt sent from outside are removed (a sync call cannot pose as
    an async one); a forward, signed by a node, keeps them."""
    from tierfaas.routing.router import NOT_FOR_HANDLERS

    sent = [(b"x-call-id", b"forged"), (b"x-call-attempt", b"7"), (b"x-custom", b"1")]
    assert handler_headers(sent) == {"x-custom": "1"}
    assert handler_headers(sent, NOT_FOR_HANDLERS) == {
        "x-call-id": "forged",
        "x-call-attempt": "7",
        "x-custom": "1",
    }
