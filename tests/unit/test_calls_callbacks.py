"""CallbackSender on a FakeClock: retries with backoff, bounds, refusals, outcomes, metrics."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

import pytest
from prometheus_client import CollectorRegistry

from tierfaas.calls.allow import DEFAULT_CALLBACK_ALLOW, AllowList, CallbackTarget
from tierfaas.calls.callbacks import CallbackRefused, CallbackSender
from tierfaas.testing import FakeClock
from tierfaas.testing.clock import settle

ALLOW = AllowList.parse(DEFAULT_CALLBACK_ALLOW)
URL = "http://127.0.0.1:9000/done"


class Receiver:
    """A fake Post: answers each attempt with the next of ``script`` (a status, or an
    exception to raise), and records when each came (on the fake clock)."""

    def __init__(self, clock: FakeClock, *script: int | Exception, hang: bool = False) -> None:
        self.clock = clock
        self.script = list(script)
        self.hang = hang
        self.seen: list[tuple[float, str, dict[str, str], bytes]] = []
        self.release = asyncio.Event()

    async def __call__(
        self, target: CallbackTarget, headers: Mapping[str, str], body: bytes, timeout_s: float
    ) -> int:
        self.seen.append((self.clock(), target.url, dict(headers), body))
        if self.hang:
            await self.release.wait()
        answer = self.script.pop(0) if self.script else 200
        if isinstance(answer, Exception):
            raise answer
        return answer


def sender(
    clock: FakeClock, post: Receiver, *, retries: int = 5, draw: float = 0.5, **kwargs: object
) -> CallbackSender:
    return CallbackSender(
        ALLOW,
        retries=retries,
        base_s=1.0,
        cap_s=300.0,
        scheduler=clock,
        post=post,
        draw=lambda: draw,
        **kwargs,  # type: ignore[arg-type]
    )


class Outcomes(list[tuple[str, int]]):
    def __call__(self, outcome: str, attempts: int) -> None:
        self.append((outcome, attempts))


async def test_a_2xx_delivers_at_once_with_the_call_headers() -> None:
    clock = FakeClock()
    post = Receiver(clock, 204)
    done = Outcomes()
    sender(clock, post).send(URL, "a~b~0123", "succeeded", b'{"x":1}', done)
    await settle()
    assert done == [("delivered", 1)]
    _, url, headers, body = post.seen[0]
    assert (url, body) == (URL, b'{"x":1}')
    assert headers["x-call-id"] == "a~b~0123"
    assert headers["x-call-state"] == "succeeded"
    assert headers["x-callback-attempt"] == "1"
    assert headers["content-type"] == "application/json"


async def test_failures_are_retried_with_doubling_jittered_delays() -> None:
    clock = FakeClock(start=0.0)
    post = Receiver(clock, 500, OSError("refused"), TimeoutError(), 404, 200)
    done = Outcomes()
    sender(clock, post, draw=0.5).send(URL, "c", "failed", b"{}", done)
    await clock.run_for(100)
    # draw 0.5 of ceilings 1, 2, 4, 8 s: waits of 0.5, 1, 2, 4 s.
    assert [seen[0] for seen in post.seen] == [0.0, 0.5, 1.5, 3.5, 7.5]
    assert [seen[2]["x-callback-attempt"] for seen in post.seen] == ["1", "2", "3", "4", "5"]
    assert done == [("delivered", 5)]


async def test_after_the_last_retry_the_delivery_failed() -> None:
    clock = FakeClock(start=0.0)
    post = Receiver(clock, *([503] * 10))
    done = Outcomes()
    cb = sender(clock, post, retries=2)
    cb.send(URL, "c", "dead", b"{}", done)
    await clock.run_for(100)
    assert len(post.seen) == 3
    assert done == [("failed", 3)]
    assert cb.pending == 0
    assert cb.counts["failed"] == 1


async def test_no_retries_means_one_attempt() -> None:
    clock = FakeClock()
    post = Receiver(clock, 500)
    done = Outcomes()
    sender(clock, post, retries=0).send(URL, "c", "dead", b"{}", done)
    await clock.run_for(10)
    assert done == [("failed", 1)]


async def test_a_redirect_is_a_failed_attempt() -> None:
    clock = FakeClock()
    post = Receiver(clock, 302, 302)
    done = Outcomes()
    sender(clock, post, retries=1).send(URL, "c", "succeeded", b"{}", done)
    await clock.run_for(10)
    assert done == [("failed", 2)]


async def test_a_refusal_at_delivery_is_final() -> None:
    clock = FakeClock()
    post = Receiver(clock, CallbackRefused("resolves to 169.254.169.254"))
    done = Outcomes()
    cb = sender(clock, post)
    cb.send(URL, "c", "succeeded", b"{}", done)
    await clock.run_for(100)
    assert done == [("failed", 1)]
    assert len(post.seen) == 1
    assert cb.counts["refused"] == 1


async def test_a_target_no_longer_allowed_is_not_sent() -> None:
    clock = FakeClock()
    post = Receiver(clock)
    done = Outcomes()
    cb = sender(clock, post)
    cb.send("http://10.0.0.1/x", "c", "succeeded", b"{}", done)
    assert done == []  # never from within send
    await settle()
    assert done == [("failed", 0)]
    assert post.seen == []
    assert cb.counts["refused"] == 1


async def test_over_max_pending_a_delivery_is_dropped() -> None:
    clock = FakeClock()
    post = Receiver(clock, hang=True)
    done = Outcomes()
    cb = sender(clock, post, max_pending=3, max_in_flight=2)
    for number in range(5):
        cb.send(URL, f"c{number}", "succeeded", b"{}", done)
    await settle()
    assert cb.pending == 3
    assert len(post.seen) == 2  # two in flight, one queued behind them
    assert done == [("failed", 0), ("failed", 0)]
    assert cb.counts["dropped"] == 2
    post.release.set()
    await settle()
    assert sorted(done[2:]) == [("delivered", 1)] * 3
    assert cb.pending == 0


async def test_at_most_max_in_flight_at_once() -> None:
    clock = FakeClock()
    post = Receiver(clock, hang=True)
    cb = sender(clock, post, max_in_flight=4)
    done = Outcomes()
    for number in range(10):
        cb.send(URL, f"c{number}", "succeeded", b"{}", done)
    await settle()
    assert len(post.seen) == 4
    post.release.set()
    await settle()
    assert len(post.seen) == 10 and len(done) == 10


async def test_close_drops_what_is_held_without_reporting() -> None:
    clock = FakeClock()
    post = Receiver(clock, 500, 500)
    done = Outcomes()
    cb = sender(clock, post)
    cb.send(URL, "c", "succeeded", b"{}", done)
    await settle()
    assert clock.pending() == 1  # the retry's timer
    await cb.close()
    assert clock.pending() == 0
    await clock.run_for(1000)
    assert done == [] and len(post.seen) == 1
    with pytest.raises(RuntimeError, match="closed"):
        cb.send(URL, "d", "succeeded", b"{}", done)


async def test_close_cancels_an_attempt_in_flight() -> None:
    clock = FakeClock()
    post = Receiver(clock, hang=True)
    cb = sender(clock, post)
    done = Outcomes()
    cb.send(URL, "c", "succeeded", b"{}", done)
    await settle()
    await cb.close()
    assert done == []


async def test_an_outcome_handler_that_raises_does_not_stop_the_sender() -> None:
    clock = FakeClock()
    post = Receiver(clock)
    done = Outcomes()

    def broken(outcome: str, attempts: int) -> None:
        raise RuntimeError("bug")

    cb = sender(clock, post)
    cb.send(URL, "a", "succeeded", b"{}", broken)
    cb.send(URL, "b", "succeeded", b"{}", done)
    await settle()
    assert done == [("delivered", 1)]


async def test_the_outcomes_are_counted_in_the_registry() -> None:
    clock = FakeClock()
    registry = CollectorRegistry()
    post = Receiver(clock, 200, 500)
    cb = sender(clock, post, retries=0, registry=registry)
    done = Outcomes()
    cb.send(URL, "a", "succeeded", b"{}", done)
    cb.send(URL, "b", "succeeded", b"{}", done)
    await settle()

    def count(outcome: str) -> float | None:
        return registry.get_sample_value("tierfaas_callbacks_total", {"outcome": outcome})

    assert (count("delivered"), count("failed")) == (1.0, 1.0)
