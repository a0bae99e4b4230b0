"""Callbacks: when an async call ends, its result is POSTed to the caller's ``X-Callback-Url``.

The owner of a call hands the finished call's JSON to ``CallbackSender.send``; the sender
delivers it with retries and reports the outcome once (``on_done``), so the call's record can
show whether its callback arrived. Guarantees and limits:

- *Bounded*: at most ``max_pending`` deliveries are held (queued, in flight or waiting for a
  retry) and at most ``max_in_flight`` run at once; one over the bound is not sent at all
  and reported ``failed`` with 0 attempts, so a dead receiver can't grow the node's memory.
- *Retried*: a connection error, a timeout (``timeout_s`` per attempt, the connect and the
  whole answer included) or a non-2xx answer is tried again after an exponential backoff with
  full jitter (``RetryPolicy.ceiling_s``), ``retries`` times at most. Redirects are not
  followed (a 3xx is a failed attempt): a redirect could point anywhere.
- *Checked at delivery*: the target's host is resolved for every attempt and the connection
  goes to a resolved address the allow list accepts (``AllowList.allows_address``), so a name
  whose DNS answer turned internal after the call was accepted (rebinding) is refused then;
  a refusal is final (``failed``, counted ``refused``).
- *At least once*: a receiver may get a callback twice (an answer lost after it was
  processed is retried); it tells repeats by ``X-Call-Id``. Deliveries still held when the
  sender closes are dropped without ``on_done``: the call's record still says its callback
  is pending, which is what the owner re-sends from after a restart.

The HTTP exchange is an injected ``Post``; production uses ``HttpPost`` (aiohttp, already a
dependency), and unit tests a fake on a FakeClock.
"""

from __future__ import annotations

import asyncio
import logging
import random
import socket
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field

import aiohttp
from prometheus_client import CollectorRegistry, Counter
from yarl import URL

from tierfaas.calls.allow import (
    DEFAULT_CALLBACK_ALLOW,
    AllowList,
    CallbackTarget,
    check_callback_url,
    parse_callback_url,
)
from tierfaas.calls.retry import RetryPolicy
from tierfaas.clock import Scheduler, Timer
from tierfaas.errors import BadCallback

__all__ = [
    "DEFAULT_CALLBACK_ALLOW",
    "OUTCOMES",
    "AllowList",
    "CallbackRefused",
    "CallbackSender",
    "HttpPost",
    "Post",
    "check_callback_url",
]

log = logging.getLogger(__name__)

OUTCOMES = ("delivered", "failed", "refused", "dropped")
"""Labels of ``tierfaas_callbacks_total``: delivered (a 2xx), failed (every attempt failed),
refused (the target is not allowed, at delivery), dropped (over ``max_pending``)."""

Post = Callable[[CallbackTarget, Mapping[str, str], bytes, float], Awaitable[int]]
"""Sends one POST of ``body`` with ``headers`` to ``target`` within ``timeout_s`` and returns
the answer's status. Raises ``CallbackRefused`` when the target resolves to no allowed
address, ``TimeoutError``, ``OSError`` or ``aiohttp.ClientError`` when no answer came."""


class CallbackRefused(Exception):
    """At delivery, the target resolved to no address the allow list accepts."""


@dataclass(eq=False, slots=True)
class _Delivery:
    target: CallbackTarget
    headers: dict[str, str]
    payload: bytes
    on_done: Callable[[str, int], None]
    attempts: int = 0
    last_error: str = field(default="")


class CallbackSender:
    """Delivers callbacks with retries, bounded, on the injected scheduler (see the module)."""

    def __init__(
        self,
        allow: AllowList,
        *,
        retries: int,
        base_s: float,
        cap_s: float,
        scheduler: Scheduler,
        timeout_s: float = 5.0,
        max_pending: int = 10_000,
        max_in_flight: int = 32,
        post: Post | None = None,
        draw: Callable[[], float] = random.random,
        registry: CollectorRegistry | None = None,
    ) -> None:
        self._allow = allow
        self._policy = RetryPolicy(max_retries=retries, base_s=base_s, cap_s=cap_s)
        self._scheduler = scheduler
        self._timeout_s = timeout_s
        self._max_pending = max_pending
        self._max_in_flight = max_in_flight
        self._own_post = post is None
        self._post: Post = HttpPost(allow) if post is None else post
        self._draw = draw
        self._ready: deque[_Delivery] = deque()
        self._waiting: dict[_Delivery, Timer] = {}
        self._running: set[asyncio.Task[None]] = set()
        self._pending = 0
        self._closed = False
        self.counts = dict.fromkeys(OUTCOMES, 0)
        """Final outcomes so far, by label (what ``tierfaas_callbacks_total`` shows)."""
        self._counter = (
            None
            if registry is None
            else Counter(
                "tierfaas_callbacks",
                "Callbacks of async calls, by final outcome (delivered, failed, refused, dropped)",
                ["outcome"],
                registry=registry,
            )
        )

    @property
    def pending(self) -> int:
        """Deliveries held: queued, in flight or waiting for a retry."""
        return self._pending

    def send(
        self,
        url: str,
        call_id: str,
        state: str,
        payload: bytes,
        on_done: Callable[[str, int], None],
    ) -> None:
        """Queues one delivery of ``payload`` (the call's JSON) to ``url`` with headers
        ``X-Call-Id`` and ``X-Call-State``; ``on_done(outcome, attempts)`` is called once,
        later (never from within ``send``), with outcome ``"delivered"`` or ``"failed"``.
        Call it on the event loop's thread."""
        if self._closed:
            raise RuntimeError("the callback sender is closed")
        try:
            target = parse_callback_url(url, self._allow)
        except BadCallback as exc:  # the list changed since the call was accepted
            log.warning("callback of %s refused: %s", call_id, exc.message)
            self._report_soon(on_done, "refused", 0)
            return
        if self._pending >= self._max_pending:
            log.warning("callback of %s dropped: %d deliveries pending", call_id, self._pending)
            self._report_soon(on_done, "dropped", 0)
            return
        headers = {
            "content-type": "application/json",
            "user-agent": "tierfaas-callback",
            "x-call-id": call_id,
            "x-call-state": state,
        }
        self._pending += 1
        self._ready.append(_Delivery(target, headers, payload, on_done))
        self._pump()

    async def close(self) -> None:
        """Stops: deliveries still held are dropped without ``on_done`` (see the module)."""
        self._closed = True
        for timer in self._waiting.values():
            timer.cancel()
        self._waiting.clear()
        self._ready.clear()
        running = list(self._running)
        for task in running:
            task.cancel()
        await asyncio.gather(*running, return_exceptions=True)
        if self._own_post and isinstance(self._post, HttpPost):
            await self._post.close()

    # -- the deliveries -------------------------------------------------------------------

    def _pump(self) -> None:
        while self._ready and len(self._running) < self._max_in_flight and not self._closed:
            delivery = self._ready.popleft()
            task = asyncio.get_running_loop().create_task(self._attempt(delivery))
            self._running.add(task)
            task.add_done_callback(self._running.discard)

    async def _attempt(self, delivery: _Delivery) -> None:
        delivery.attempts += 1
        headers = {**delivery.headers, "x-callback-attempt": str(delivery.attempts)}
        try:
            status = await self._post(delivery.target, headers, delivery.payload, self._timeout_s)
        except CallbackRefused as exc:
            delivery.last_error = str(exc)
            self._finish(delivery, "refused")
            return
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a failed attempt, whatever the cause
            delivery.last_error = f"{type(exc).__name__}: {exc}".rstrip(": ")
        else:
            if 200 <= status <= 299:
                self._finish(delivery, "delivered")
                return
            delivery.last_error = f"HTTP {status}"
        finally:
            # This attempt's slot is free from here: the next queued delivery may start.
            self._running.discard(asyncio.current_task())
            self._pump()
        if delivery.attempts >= self._policy.max_attempts:
            self._finish(delivery, "failed")
            return
        delay = self._draw() * self._policy.ceiling_s(delivery.attempts)
        self._waiting[delivery] = self._scheduler.call_later(delay, lambda: self._retry(delivery))

    def _retry(self, delivery: _Delivery) -> None:
        if self._waiting.pop(delivery, None) is None or self._closed:
            return
        self._ready.append(delivery)
        self._pump()

    def _finish(self, delivery: _Delivery, outcome: str) -> None:
        self._pending -= 1
        if outcome != "delivered":
            log.warning(
                "callback of %s to %s %s after %d attempts: %s",
                delivery.headers["x-call-id"],
                delivery.target.url,
                outcome,
                delivery.attempts,
                delivery.last_error,
            )
        self._count(outcome)
        _call(
            delivery.on_done, "delivered" if outcome == "delivered" else "failed", delivery.attempts
        )

    def _report_soon(
        self, on_done: Callable[[str, int], None], outcome: str, attempts: int
    ) -> None:
        self._count(outcome)
        asyncio.get_running_loop().call_soon(_call, on_done, "failed", attempts)

    def _count(self, outcome: str) -> None:
        self.counts[outcome] += 1
        if self._counter is not None:
            self._counter.labels(outcome).inc()


def _call(on_done: Callable[[str, int], None], outcome: str, attempts: int) -> None:
    try:
        on_done(outcome, attempts)
    except Exception:
        log.exception("the callback outcome handler raised")


class HttpPost:
    """The production ``Post``: resolves the target, keeps the addresses the allow list
    accepts, and connects to the first of them (so the checked address is the one used)
    with aiohttp, ``Host`` and TLS server name being the URL's host. No proxy from the
    environment, no redirects, no cookies."""

    def __init__(self, allow: AllowList) -> None:
        self._allow = allow
        self._session: aiohttp.ClientSession | None = None

    async def __call__(
        self, target: CallbackTarget, headers: Mapping[str, str], body: bytes, timeout_s: float
    ) -> int:
        async with asyncio.timeout(timeout_s):
            address = await self._address(target)
            default_port = 443 if target.scheme == "https" else 80
            host_header = target.host if ":" not in target.host else f"[{target.host}]"
            if target.port != default_port:
                host_header += f":{target.port}"
            path, _, query = target.target.partition("?")
            url = URL.build(
                scheme=target.scheme,
                host=address,
                port=target.port,
                path=path,
                query_string=query,
                encoded=True,
            )
            tls_name = target.host if target.scheme == "https" and not target.is_address else None
            async with self._client().post(
                url,
                data=body,
                headers={**headers, "host": host_header},
                allow_redirects=False,
                server_hostname=tls_name,
            ) as response:
                return response.status

    async def _address(self, target: CallbackTarget) -> str:
        if target.is_address:
            addresses = [target.host]
        else:
            infos = await asyncio.get_running_loop().getaddrinfo(
                target.host, target.port, type=socket.SOCK_STREAM
            )
            addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
        allowed = self._allow.allowed_addresses(target.host, addresses)
        if not allowed:
            raise CallbackRefused(
                f"{target.host} resolves to {', '.join(addresses) or 'nothing'}; "
                "no address the callback allow list accepts"
            )
        return allowed[0]

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=64, use_dns_cache=False),
                trust_env=False,
                cookie_jar=aiohttp.DummyCookieJar(),
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
