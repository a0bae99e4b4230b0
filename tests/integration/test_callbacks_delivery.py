"""Callbacks delivered over real loopback HTTP: a receiver that fails half its answers, one
that hangs, and a host name whose address the allow list refuses at delivery."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator

from aiohttp import web

from tierfaas.calls.allow import AllowList, parse_callback_url
from tierfaas.calls.callbacks import CallbackSender, HttpPost
from tierfaas.clock import LoopScheduler

CALLS = 40


@contextlib.asynccontextmanager
async def receiver(handler: web.Handler) -> AsyncIterator[int]:
    """An aiohttp server on 127.0.0.1; yields its port."""
    app = web.Application()
    app.router.add_post("/{tail:.*}", handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield runner.addresses[0][1]
    finally:
        await runner.cleanup()


def sender(allow: str, *, retries: int, timeout_s: float = 5.0) -> CallbackSender:
    return CallbackSender(
        AllowList.parse(allow),
        retries=retries,
        base_s=0.01,
        cap_s=0.05,
        scheduler=LoopScheduler(),
        timeout_s=timeout_s,
    )


async def wait_for(done: dict[str, tuple[str, int]], count: int, seconds: float) -> None:
    async with asyncio.timeout(seconds):
        while len(done) < count:
            await asyncio.sleep(0.01)


async def test_every_callback_arrives_through_a_receiver_failing_half_its_answers() -> None:
    answered = 0
    failed = 0
    tries: dict[str, int] = {}
    received: dict[str, list[dict[str, object]]] = {}
    hosts: set[str] = set()

    async def flaky(request: web.Request) -> web.Response:
        # Half of the answers fail: each call's first try (of an assorted kind), so the
        # count is exact however the concurrent attempts interleave.
        nonlocal answered, failed
        answered += 1
        hosts.add(request.headers["Host"])
        call_id = request.headers["X-Call-Id"]
        tries[call_id] = tries.get(call_id, 0) + 1
        if tries[call_id] == 1:
            failed += 1
            if failed % 3 == 0 and request.transport is not None:
                request.transport.close()  # no answer at all
            return web.Response(status=(500, 503, 404, 429)[failed % 4])
        body = await request.json()
        assert request.headers["X-Call-Id"] == body["call_id"]
        assert request.headers["X-Call-State"] == body["state"]
        received.setdefault(body["call_id"], []).append(body)
        return web.Response(status=204)

    async with receiver(flaky) as port:
        cb = sender("127.0.0.0/8,localhost", retries=5)
        done: dict[str, tuple[str, int]] = {}
        for number in range(CALLS):
            call_id = f"a~b~{number:016x}"
            payload = json.dumps({"call_id": call_id, "state": "succeeded", "result": None})

            def record(outcome: str, attempts: int, call_id: str = call_id) -> None:
                done[call_id] = (outcome, attempts)

            url = f"http://localhost:{port}/hooks/done?x=1"
            cb.send(url, call_id, "succeeded", payload.encode(), record)
        await wait_for(done, CALLS, 30.0)
        await cb.close()
    assert {outcome for outcome, _ in done.values()} == {"delivered"}
    assert sorted(received) == sorted(done)
    assert all(len(bodies) == 1 for bodies in received.values())
    assert answered == sum(attempts for _, attempts in done.values()) == 2 * CALLS
    assert failed == CALLS
    assert hosts == {f"localhost:{port}"}  # Host names the URL's host, not the address


async def test_a_receiver_that_never_answers_times_out_each_attempt() -> None:
    attempts = 0
    gate = asyncio.Event()

    async def hang(request: web.Request) -> web.Response:
        nonlocal attempts
        attempts += 1
        await gate.wait()
        return web.Response(status=204)

    async with receiver(hang) as port:
        cb = sender("127.0.0.1", retries=2, timeout_s=0.2)
        done: dict[str, tuple[str, int]] = {}
        cb.send(
            f"http://127.0.0.1:{port}/",
            "c",
            "dead",
            b"{}",
            lambda outcome, n: done.setdefault("c", (outcome, n)),
        )
        await wait_for(done, 1, 20.0)
        await cb.close()
        gate.set()
    assert done == {"c": ("failed", 3)}
    assert attempts == 3


async def test_a_name_resolving_to_a_refused_address_is_never_called() -> None:
    calls = 0

    async def count(request: web.Request) -> web.Response:
        nonlocal calls
        calls += 1
        return web.Response(status=204)

    async with receiver(count) as port:
        # "*" allows any host name, but only public addresses: localhost is 127.0.0.1.
        cb = sender("*", retries=3)
        done: dict[str, tuple[str, int]] = {}
        cb.send(
            f"http://localhost:{port}/",
            "c",
            "succeeded",
            b"{}",
            lambda outcome, n: done.setdefault("c", (outcome, n)),
        )
        await wait_for(done, 1, 10.0)
        await cb.close()
    assert done == {"c": ("failed", 1)}
    assert calls == 0


async def test_http_post_connects_to_an_allowed_address_of_the_name() -> None:
    async def ok(request: web.Request) -> web.Response:
        return web.Response(status=201)

    async with receiver(ok) as port:
        post = HttpPost(AllowList.parse("127.0.0.1,localhost"))
        target = parse_callback_url(f"http://localhost:{port}/x", AllowList.parse("localhost"))
        try:
            assert await post(target, {}, b"{}", 5.0) == 201
        finally:
            await post.close()
