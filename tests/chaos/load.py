"""The chaos suite's client: a steady, bounded load that records every request it sends.

It plays a load balancer with health checks in front of the nodes: requests go round-robin
to the nodes in ``live`` (the scenario removes a node just before killing it and adds it back
once it answers ``/readyz``), and a request whose connection could not even be opened is sent
to the next node (nothing was sent, so that is always safe, as nginx's ``proxy_next_upstream
error`` does). Nothing else is retried: a POST that reached a node is never sent twice.

Every request carries its own ``X-Request-Id`` so the answer, the node that served it and the
ledger the function writes (tests/chaos/fixtures/chaosrel) can be joined up afterwards.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import threading
import time
from dataclasses import dataclass, field

import aiohttp

# What a typed error body looks like (tierfaas.errors): {"error", "message", "request_id"}.
_TYPED_KEYS = {"error", "message"}


@dataclass
class Outcome:
    """One request, from the client's side. Times are ``time.monotonic()``."""

    rid: str
    function: str
    target: str  # the node it was sent to (its name)
    sent: float
    done: float
    status: int  # 0: no HTTP answer at all
    code: str  # "" for 2xx; the typed error's code; else why it failed (exception name)
    message: str = ""
    served_by: str | None = None
    connect_retries: int = 0

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    @property
    def typed(self) -> bool:
        return self.status >= 400 and not self.code.startswith("untyped_")

    @property
    def failed(self) -> bool:
        return not self.ok and not self.typed


def _parse_error(status: int, body: bytes) -> tuple[str, str]:
    try:
        data = json.loads(body)
    except ValueError:
        return f"untyped_{status}", body[:200].decode(errors="replace")
    if isinstance(data, dict) and set(data) >= _TYPED_KEYS:
        return str(data["error"]), str(data["message"])[:300]
    return f"untyped_{status}", body[:200].decode(errors="replace")


@dataclass
class Load:
    """About ``rate`` requests/s over ``workers`` keep-alive connections, each a closed loop
    with a pacing sleep, the ``functions`` in turn. Runs in its own thread and event loop;
    stops on ``stop()`` or by itself after ``max_s`` seconds (a bound, never the plan)."""

    nodes: dict[str, str]  # name -> base URL of every node the client may ever use
    functions: tuple[str, ...] = ("alpha", "beta", "gamma", "delta")
    rate: float = 160.0
    workers: int = 16
    max_s: float = 900.0
    timeout_s: float = 15.0
    body: bytes = b"0.05"  # how long each call sleeps in its handler
    prefix: str = "c"
    outcomes: list[Outcome] = field(default_factory=list)
    live: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _in_flight: dict[str, tuple[str, float]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.live:
            self.live = list(self.nodes)

    # -- control, from the scenario's thread ------------------------------------------------

    def start(self) -> Load:
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(self.timeout_s + 10)
            assert not self._thread.is_alive(), "the load did not stop"

    def remove(self, name: str) -> None:
        """Stop sending new requests to ``name`` (the health check saw it go)."""
        with self._lock:
            self.live = [n for n in self.live if n != name]

    def add(self, name: str, url: str) -> None:
        with self._lock:
            self.nodes[name] = url
            if name not in self.live:
                self.live = [*self.live, name]

    def in_flight_on(self, name: str) -> list[str]:
        """Request ids sent to ``name`` and not answered yet."""
        with self._lock:
            return [rid for rid, (node, _) in self._in_flight.items() if node == name]

    def count(self) -> int:
        return len(self.outcomes)

    # -- the loop -----------------------------------------------------------------------------

    async def _run(self) -> None:
        connector = aiohttp.TCPConnector(limit=self.workers * 4, limit_per_host=self.workers)
        timeout = aiohttp.ClientTimeout(total=self.timeout_s)
        seq = itertools.count()
        turn = itertools.count()
        ends = time.monotonic() + self.max_s
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

            async def worker() -> None:
                period = self.workers / self.rate
                while not self._stop.is_set() and time.monotonic() < ends:
                    began = time.monotonic()
                    n = next(seq)
                    function = self.functions[n % len(self.functions)]
                    await self._one(session, f"{self.prefix}{n:07d}", function, turn)
                    await asyncio.sleep(max(0.0, period - (time.monotonic() - began)))

            await asyncio.gather(*(worker() for _ in range(self.workers)))

    async def _one(
        self,
        session: aiohttp.ClientSession,
        rid: str,
        function: str,
        turn: itertools.count[int],
    ) -> None:
        retries = 0
        sent = time.monotonic()
        while True:
            # The pick and the in-flight note are one step under the lock, so once remove()
            # returns, every call on that node is in in_flight_on() and no new one goes there.
            with self._lock:
                live = self.live
                if live:
                    target = live[next(turn) % len(live)]
                    sent = time.monotonic()  # of this attempt: the one that reached a node
                    self._in_flight[rid] = (target, sent)
            if not live:
                await asyncio.sleep(0.05)
                if time.monotonic() - sent > self.timeout_s:
                    self._record(Outcome(rid, function, "", sent, time.monotonic(), 0, "no_node"))
                    return
                continue
            url = f"{self.nodes[target]}/function/{function}"
            try:
                async with session.post(url, data=self.body, headers={"x-request-id": rid}) as r:
                    answer = await r.read()
                    status = r.status
                    served_by = r.headers.get("x-tierfaas-served-by")
            except aiohttp.ClientConnectorError:
                # Never connected: nothing was sent. Another node, as a load balancer would.
                retries += 1
                with self._lock:
                    self._in_flight.pop(rid, None)
                if retries <= 2 * len(self.nodes):
                    continue
                self._record(
                    Outcome(rid, function, target, sent, time.monotonic(), 0, "connect", "",
                            None, retries)
                )  # fmt: skip
                return
            except (aiohttp.ClientError, TimeoutError) as exc:
                self._record(
                    Outcome(rid, function, target, sent, time.monotonic(), 0,
                            type(exc).__name__, str(exc)[:200], None, retries)
                )  # fmt: skip
                return
            if 200 <= status < 300:
                code, message = "", ""
            else:
                code, message = _parse_error(status, answer)
            self._record(
                Outcome(rid, function, target, sent, time.monotonic(), status, code, message,
                        served_by, retries)
            )  # fmt: skip
            return

    def _record(self, outcome: Outcome) -> None:
        with self._lock:
            self._in_flight.pop(outcome.rid, None)
            self.outcomes.append(outcome)
