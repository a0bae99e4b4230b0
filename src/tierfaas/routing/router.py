"""The router: each invocation runs here, or is forwarded once to a node where it is warm.

Theory of operation. A request from outside (no hop header) is routed with the pure
``decide``: warm and free here wins; else a warm candidate from the route cache (on a miss,
from the lookup: the replica, or this node's own table on a master or replica); else run
here, cold if need be (which adds capacity; the runtime's FunctionWarm event registers it).

A forwarded request (any hop header) is verified first (``forwarding``): one whose hop
headers do not check out is refused with 403 ``hop_refused``, neither run nor routed. A
verified one runs here only on a warm instance with a free slot; if
there is none the node answers with ``X-Tierfaas-Reject: not_warm|busy`` *without starting
anything*, and the sender drops or demotes that route and tries the next candidate, then
itself. The sender retries only in two cases where the target certainly did not run the call:
the connection could not be opened, or the target rejected it. Any failure after the request
was sent answers 502 ``forward_failed``: the call may have run, and must never run twice.

Time spent routing counts against the deadline, which travels signed with the request as
the time left, counted again from its arrival on the receiver's own clock.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

from tierfaas import errors
from tierfaas.clock import Clock, monotonic
from tierfaas.cluster.state import NodeEndpoint
from tierfaas.config import Address
from tierfaas.routing import forwarding as fw
from tierfaas.routing.cache import RouteCache
from tierfaas.routing.decision import Candidate, Forward, LocalState, Refresh, decide
from tierfaas.routing.hot import HotTracker
from tierfaas.routing.peers import PeerFailed, PeerPool, PeerResponse, PeerUnreachable
from tierfaas.runtime import Invocation, PendingCall, PoolView, Runtime
from tierfaas.tracing import record
from tierfaas.tracing.spans import CURRENT

log = logging.getLogger(__name__)

Lookup = Callable[[str], Awaitable[Sequence[NodeEndpoint]]]
# The function's home (rendezvous hashing over live nodes with an HTTP address).
Homes = Callable[[str], NodeEndpoint | None]

# Request headers never passed on to another node (hop-by-hop, or ours to set).
_DROP = frozenset({"connection", "keep-alive", "transfer-encoding", "host", "content-length"})
# Response headers of the node that ran the call that are not relayed: hop-by-hop ones, the
# ones this node sets itself, and the hop token and refusal meant for this node alone. The
# rest (the content type, Retry-After, the route headers, an http function's own) are.
_NOT_RELAYED = frozenset(
    {b"connection", b"keep-alive", b"transfer-encoding", b"content-length", b"date",
     b"server", b"x-request-id", fw.TOKEN.encode(), fw.REJECT.encode()}
)  # fmt: skip
# How long "warm nowhere else" is trusted. Short: such an answer comes mostly while a function
# is first starting on several nodes at once, and each node's registration reaches the
# replicas within a round trip (the master flushes a write after a quiet window at once), so
# asking again soon finds the node already starting it instead of starting another here. A
# lookup costs ~75 µs on the query lane.
NEGATIVE_TTL_S = 0.05
# Longest a forward waits for a new connection to the target. Between nodes a connect takes
# well under a millisecond (the kernel answers the SYN even when the node is busy); one that
# hangs means the target is cut off or gone, and since nothing was sent, the call goes to the
# next candidate or runs here. Without it a connect into a partition waited out the whole
# function timeout and then answered 502 as if the call might have run.
CONNECT_TIMEOUT_S = 1.0
# How long a node whose connect timed out gets no forwards, for any function. It is as long
# as the pool keeps an idle connection (keepalive_timeout below): connections opened before
# the node was cut off look usable but lead nowhere, and a call sent on one can only end in
# 502 forward_failed; once the quarantine ends, none is left and a new connect fails fast.
UNREACHABLE_S = 10.0
# How long past the call's deadline a sender still waits for the target's answer. The target
# enforces the deadline itself (it answers 504 at it), so the slack only covers the network:
# on a lossy link TCP's retransmission backoff can hold an answer for seconds, and giving up
# on it would answer 502 "may have run" for a call that ran fine (at 30 % packet loss,
# backoffs of several seconds are common).
ANSWER_SLACK_S = 5.0
_SERVED_BY, _ROUTE, _START, _LOAD = (
    fw.SERVED_BY.encode(), fw.ROUTE.encode(), b"x-tierfaas-start", fw.LOAD.encode()
)  # fmt: skip
_ROUTES = {r: r.encode() for r in ("local-warm", "local-cold", "forwarded-warm", "forwarded-cold")}
_FORWARDED_WARM = _ROUTES["forwarded-warm"]
_LOCAL_COLD, _LOCAL_WARM = "local-cold", "local-warm"
_HOP_HEADERS = frozenset(h.encode() for h in fw.INTERNAL)
_FROM_OUTSIDE = fw.Hop()
# Request headers a handler never sees: hop-by-hop ones, and the hop headers between nodes.
NOT_FOR_HANDLERS = frozenset(
    {b"connection", b"keep-alive", b"transfer-encoding", b"host"}
    | {h.encode() for h in fw.INTERNAL}
)
# An async call's id and attempt (issue 20) reach the handler from its node only: a request
# from outside that sends them has them removed (a forwarded one, signed by a node, keeps them).
CALL_ID, CALL_ATTEMPT = "x-call-id", "x-call-attempt"
_NOT_FROM_OUTSIDE = NOT_FOR_HANDLERS | {CALL_ID.encode(), CALL_ATTEMPT.encode()}

Header = tuple[bytes, bytes]
RawHeaders = Iterable[Header]


def _header_dict(headers: RawHeaders) -> dict[str, str]:
    return {key.decode("latin-1"): value.decode("latin-1") for key, value in headers}


def handler_headers(
    headers: RawHeaders, dropped: frozenset[bytes] = _NOT_FROM_OUTSIDE
) -> dict[str, str]:
    """The request headers a handler sees (not hop-by-hop nor internal ones, nor, from
    outside, an async call's); a repeated one is joined into one value, as HTTP allows
    (RFC 9110 5.3; cookies with "; ")."""
    seen: dict[str, str] = {}
    for key, value in headers:
        if key in dropped:
            continue
        name, text = key.decode("latin-1"), value.decode("latin-1")
        if name in seen:
            text = seen[name] + ("; " if name == "cookie" else ", ") + text
        seen[name] = text
    return seen


@dataclass
class Reply:
    status: int
    body: bytes
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    cold: bool = False


class RouteCounts(Collector):
    """``tierfaas_routes_total``: invocations by route kind, exposed as a prometheus_client
    Counter would be (with ``_created``). Counted in plain numbers, as every call counts one
    (a Counter's ``inc`` takes a lock); ``inc`` and ``collect`` run on the node's event loop."""

    def __init__(self) -> None:
        self.counts: dict[str, list[float]] = {}  # route -> [count, created (Unix seconds)]

    def inc(self, route: str) -> None:
        count = self.counts.get(route)
        if count is None:
            count = self.counts[route] = [0, time.time()]
        count[0] += 1

    def collect(self) -> Iterator[Metric]:
        routes = CounterMetricFamily(
            "tierfaas_routes", "Invocations by route kind", labels=["route"]
        )
        for route, (count, created) in list(self.counts.items()):
            routes.add_metric([route], count, created=created)
        yield routes


class RoutingMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.routes = RouteCounts()
        registry.register(self.routes)
        self.cache = Counter(
            "tierfaas_route_cache", "Route cache lookups", ["result"], registry=registry
        )
        self.lookups = Histogram(
            "tierfaas_route_lookup_seconds",
            "Time to ask the replica (or the local table) where a function is warm",
            buckets=(0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5),
            registry=registry,
        )
        self.lookup_failures = Counter(
            "tierfaas_route_lookup_failures", "Lookups that failed", registry=registry
        )
        self.forwards = Counter(
            "tierfaas_forwards",
            "Invocations this node forwarded, by outcome (ok, unreachable, failed, rejected_*)",
            ["outcome"],
            registry=registry,
        )
        self.hot_starts = Counter(
            "tierfaas_hot_starts",
            "Instances started here because this node forwarded their function often "
            "(--hot-forwards-per-s)",
            registry=registry,
        )
        # The receiving side, kept apart from ``forwards`` so a node's sent and received
        # rejects are never added up; ``hops`` is the trusted hop count the request came with.
        self.forwarded_in = Counter(
            "tierfaas_forwarded_in",
            "Forwarded invocations this node received, by hop count and outcome "
            "(served, not_warm, busy)",
            ["hops", "outcome"],
            registry=registry,
        )
        self.hop_refusals = Counter(
            "tierfaas_hop_refusals",
            "Requests refused because their hop headers did not check out, by reason "
            "(unsigned, malformed, forged, stale, replayed)",
            ["reason"],
            registry=registry,
        )
        self.cache_refreshes = Counter(
            "tierfaas_route_cache_refreshes",
            "Lookups made past a cached route because a start here would evict (--cluster-cache)",
            registry=registry,
        )
        # The children counted on every call, looked up once (labels() locks and hashes).
        self.cache_hit = self.cache.labels("hit")
        self.forward_ok = self.forwards.labels("ok")
        self.served_forwarded_once = self.forwarded_in.labels("1", "served")


class Router:
    def __init__(
        self,
        runtime: Runtime,
        *,
        self_name: str,
        key: bytes,
        cache: RouteCache,
        metrics: RoutingMetrics,
        lookup: Lookup | None = None,
        homes: Homes | None = None,
        hop_limit: int = 1,
        hot_forwards_per_s: float = 0.0,
        clock: Clock = monotonic,
        cluster_cache: bool = False,
    ) -> None:
        """``lookup`` gives a function's candidates (None: a standalone node, every call runs
        here); ``homes`` its home, where it starts while it is warm nowhere (None: where the
        call arrived). ``cluster_cache``: before a start here that would evict, ask the table
        again rather than trust a cached route (``decision.Refresh``)."""
        self.runtime = runtime
        self.self_name = self_name
        self.key = key
        # Signs this node's forwards; checks the hop headers of the requests it receives.
        self.signer = fw.Signer(key)
        self.verifier = fw.Verifier(key, clock)
        self.cache = cache
        self.metrics = metrics
        self.lookup = lookup
        self.hop_limit = hop_limit
        # The functions this node forwards often get an instance here (0: never).
        self.clock = clock
        self.hot = HotTracker(clock, hot_forwards_per_s) if hot_forwards_per_s else None
        self.cluster_cache = cluster_cache
        self.endpoints: dict[str, Address] = {}
        # The function's home (rendezvous hashing over live nodes with an HTTP address), where
        # a function warm nowhere is started; None in a standalone node.
        self.homes = homes
        self.forwarded = 0  # calls this node sent on and got answered (for the dashboard)
        self.peers: PeerPool | None = None
        self.unreachable: dict[str, float] = {}  # node -> until (monotonic): no forwards
        self._served_by = self_name.encode()
        self._header_cache: dict[tuple[str, bool, bytes | None], tuple[Header, ...]] = {}

    @classmethod
    def standalone(cls, runtime: Runtime, self_name: str, clock: Clock = monotonic) -> Router:
        """A router with no cluster: every call runs on this node."""
        return cls(
            runtime,
            self_name=self_name,
            key=b"",
            cache=RouteCache(clock),
            metrics=RoutingMetrics(CollectorRegistry()),
            clock=clock,
        )

    async def start(self) -> None:
        # Keep-alive pools to the other nodes; idle connections are closed well before the
        # nodes' own 30 s keep-alive timeout, so a pooled connection is never found dead.
        self.peers = PeerPool(idle_timeout_s=UNREACHABLE_S)

    async def close(self) -> None:
        if self.peers is not None:
            await self.peers.close()

    def forget_node(self, name: str) -> None:
        """Gossip says ``name`` is dead, left or suspect: drop every cached route to it (a
        suspect comes back through the next lookup once it is alive again)."""
        self.cache.drop_node(name)
        self.endpoints.pop(name, None)
        self.signer.forget(name)

    def warm_elsewhere(self, function: str) -> bool:
        """Whether ``function`` is warm on another node as far as the route cache knows (no
        lookup: the eviction order asks this for every idle instance it ranks)."""
        return bool(self.cache.peek(function))

    # -- one request -----------------------------------------------------------------------

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
    ) -> Reply:
        """Runs or forwards one call. Raises ``errors.HttpError`` for errors answered here.
        ``headers`` are the request's, as ASGI gives them; ``path``: what followed
        ``/function/NAME`` in its URL, undecoded ("/" when nothing did); ``call``: the id and
        attempt of the async call this is (the handler sees them as X-Call-Id and
        X-Call-Attempt)."""
        pool = self.runtime.pool(name)  # 404 before anything else
        for key, _ in headers:
            if key in _HOP_HEADERS:
                # A forward: verified (or refused, 403), then run here or refused back
                # unstarted; never routed again.
                incoming = self._verify(name, request_id, headers)
                return await self._run_forwarded(
                    name, body, request_id, method, query,
                    handler_headers(headers, NOT_FOR_HANDLERS), started, incoming, path,
                )  # fmt: skip
        if call is not None:
            headers = [*headers, (CALL_ID.encode(), call[0].encode()),
                       (CALL_ATTEMPT.encode(), b"%d" % call[1])]  # fmt: skip
        dropped = _NOT_FROM_OUTSIDE if call is None else NOT_FOR_HANDLERS
        if self.lookup is not None and self.hop_limit > 0:
            user_headers = handler_headers(headers, dropped)
            reply = await self._route(
                pool, name, body, request_id, method, query, user_headers, started,
                _FROM_OUTSIDE, path,
            )  # fmt: skip
            if reply is not None:
                return reply
        # Run here (the fast path of a standalone node). The handler's headers are built only
        # if it takes a context to see them in.
        result = await self.runtime.invoke(
            name, body, request_id=request_id, method=method, path=path, query=query,
            headers=handler_headers(headers, dropped) if pool.takes_context else None,
            started=started,
        )  # fmt: skip
        return self._local_reply(result)

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
    ) -> PendingCall | None:
        """``handle``'s call from outside sent at once, with no task, when ``name`` has a free
        slot here: rule 1 runs it here whatever a lookup would say (``LocalState``), so none is
        made. ``finish_now`` takes its answer once its future is done. None, and nothing
        changes, when no slot is free, or for a forwarded call (``handle`` verifies those).
        Raises ``errors.HttpError`` as ``handle`` does."""
        pool = self.runtime.pool(name)  # 404 before anything else
        for key, _ in headers:
            if key in _HOP_HEADERS:
                return None
        return self.runtime.call_now(
            name, body, request_id=request_id, method=method, path=path, query=query,
            headers=handler_headers(headers) if pool.takes_context else None, started=started,
        )  # fmt: skip

    def finish_now(self, name: str, started: float, request_id: str, call: PendingCall) -> Reply:
        """The reply to ``call_now``'s call, whose future is done: what ``handle`` returns or
        raises for a call run here."""
        return self._local_reply(self.runtime.finish_now(name, started, request_id, call))

    def _local_reply(self, result: Invocation) -> Reply:
        cold = result.cold
        self._count_route(_LOCAL_COLD if cold else _LOCAL_WARM)
        reply_headers = self._headers(result.content_type, cold)
        if result.headers:
            reply_headers += result.headers
        return Reply(result.status, result.body, reply_headers, cold)

    async def _route(
        self,
        pool: PoolView,
        name: str,
        body: bytes,
        request_id: str,
        method: str,
        query: str,
        user_headers: dict[str, str],
        started: float,
        incoming: fw.Hop,
        path: str = "/",
    ) -> Reply | None:
        """Forwards the call while this node has no free slot and a warm node may; None when
        it is to run here."""
        tried = self._quarantined()
        candidates: tuple[Candidate, ...] | None = None
        fresh = False  # the candidates come from a lookup made for this call
        while True:
            warm, free = pool.free_slots()
            evicts = self.cluster_cache and not warm and self.runtime.start_would_evict(name)
            local = LocalState(warm, free, pool.slot_due_s() if warm else math.inf, evicts)
            if local.runs_here_now:
                return None
            if candidates is None:
                fresh = fresh or self.cache.peek(name) is None  # a miss: a lookup follows
                candidates = await self._candidates(name, refresh=fresh)
            decision = decide(
                local,
                candidates,
                self_name=self.self_name,
                hops=incoming.hops,
                hop_limit=self.hop_limit,
                path=incoming.path,
                tried=tried,
                home=self._home(name),
                fresh=fresh,
            )
            if isinstance(decision, Refresh):
                self.metrics.cache_refreshes.inc()
                candidates, fresh = None, True
                continue
            if not isinstance(decision, Forward):
                return None
            reply = await self._forward(
                decision.node,
                name,
                body,
                request_id,
                method,
                query,
                user_headers,
                started,
                pool.timeout_s,
                incoming,
                decision.start,
                path,
            )
            if reply is not None:
                self._count_route("forwarded-home" if decision.start else "forwarded-warm")
                return reply
            tried.add(decision.node)

    def _verify(self, name: str, request_id: str, headers: RawHeaders) -> fw.Hop:
        """The verified hop state of a request that carries hop headers; raises
        ``errors.HopRefused`` (403) when they do not check out: the request must then neither
        run nor be routed as if it came from outside."""
        checked = self.verifier.check(request_id, name, _header_dict(headers))
        if isinstance(checked, fw.Hop):
            return checked
        self.metrics.hop_refusals.labels(checked.reason).inc()
        log.info("request %s to %s: hop headers refused (%s)", request_id, name, checked.reason)
        raise errors.HopRefused(checked.message, reason=checked.reason, token=self.verifier.token)

    def _count_forward(self, name: str, load: float) -> None:
        """One more call of ``name`` forwarded from here (``load``: its target's busy share);
        when the hot tracker says so, an instance starts here in the background (the runtime
        declines without memory to spare, and never evicts)."""
        if self.hot is not None and self.hot.forwarded(name, load) and self.runtime.prewarm(name):
            self.metrics.hot_starts.inc()
            log.info("%s: forwarded often from here, starting an instance here", name)

    def _quarantined(self) -> set[str]:
        """The nodes whose connect timed out lately (see ``UNREACHABLE_S``)."""
        if not self.unreachable:
            return set()
        now = self.clock()
        for node in [n for n, until in self.unreachable.items() if until <= now]:
            del self.unreachable[node]
        return set(self.unreachable)

    def _home(self, name: str) -> str | None:
        if self.homes is None:
            return None
        home = self.homes(name)
        return None if home is None else home.name

    def _count_route(self, route: str) -> None:
        self.metrics.routes.inc(route)

    async def _run_forwarded(
        self,
        name: str,
        body: bytes,
        request_id: str,
        method: str,
        query: str,
        headers: dict[str, str],
        started: float,
        incoming: fw.Hop,
        path: str = "/",
    ) -> Reply:
        # The time the sender had left, counted from the arrival here, on this node's clock.
        remaining = incoming.remaining_s
        deadline = None if remaining is None else started + remaining
        token = (fw.TOKEN.encode(), self.verifier.token.encode())
        try:
            # The function's home may start it (when it has room); others run warm only.
            if incoming.start and not self.runtime.pool(name).can_take():
                raise errors.Busy(f"{name!r} has no room for another instance here")
            result = await self.runtime.invoke(
                name, body, request_id=request_id, method=method, path=path, query=query,
                headers=headers, started=started, deadline=deadline,
                warm_only=not incoming.start,
            )  # fmt: skip
        except (errors.NotWarm, errors.Busy) as exc:
            self.metrics.forwarded_in.labels(str(incoming.hops), exc.code).inc()
            load = f"{self.runtime.pool(name).load():.3f}".encode()
            reject = [(fw.REJECT.encode(), exc.code.encode()), (fw.LOAD.encode(), load), token]
            body_json = f'{{"error":"{exc.code}","message":"{exc.message}"}}'.encode()
            return Reply(exc.status, body_json, [(b"content-type", b"application/json"), *reject])
        self._count_route("served-forwarded")
        if incoming.hops == 1:
            self.metrics.served_forwarded_once.inc()
        else:
            self.metrics.forwarded_in.labels(str(incoming.hops), "served").inc()
        route = _ROUTES["forwarded-cold"] if result.cold else _FORWARDED_WARM
        reply_headers = self._headers(result.content_type, result.cold, route)
        # The sender keeps our load (the busy share of our slots over the last second) for
        # its next two-choices pick.
        reply_headers.append((_LOAD, f"{self.runtime.pool(name).recent_load():.3f}".encode()))
        reply_headers.append(token)
        if result.headers:
            reply_headers += result.headers
        return Reply(result.status, result.body, reply_headers, result.cold)

    def _headers(
        self, content_type: str, cold: bool, route: bytes | None = None
    ) -> list[tuple[bytes, bytes]]:
        """The response headers of a call run here (a new list: the caller appends to it)."""
        key = (content_type, cold, route)
        cached = self._header_cache.get(key)
        if cached is None:
            if route is None:
                route = _ROUTES["local-cold" if cold else "local-warm"]
            cached = (
                (b"content-type", content_type.encode()),
                (_SERVED_BY, self._served_by),
                (_ROUTE, route),
                (_START, b"cold" if cold else b"warm"),
            )
            if len(self._header_cache) < 64:  # content types are few; don't grow unbounded
                self._header_cache[key] = cached
        return list(cached)

    # -- candidates ------------------------------------------------------------------------

    async def _candidates(self, name: str, refresh: bool = False) -> tuple[Candidate, ...]:
        """The cached candidates, or (on a miss, or with ``refresh``) the lookup's."""
        cached = None if refresh else self.cache.get(name)
        if cached is not None:
            self.metrics.cache_hit.inc()
            return cached
        self.metrics.cache.labels("miss").inc()
        assert self.lookup is not None
        began = time.perf_counter()
        try:
            found = await self.lookup(name)
        except Exception as exc:  # the table is soft state: a failed lookup means run here
            self.metrics.lookup_failures.inc()
            log.debug("route lookup for %s failed: %s", name, exc)
            return ()
        self.metrics.lookups.observe(time.perf_counter() - began)
        candidates = []
        for endpoint in found:
            if endpoint.name == self.self_name or endpoint.http is None:
                continue
            self.endpoints[endpoint.name] = endpoint.http
            candidates.append(Candidate(endpoint.name))
        result = tuple(candidates)
        self.cache.put(name, result, None if result else NEGATIVE_TTL_S)
        return result

    # -- forwarding ------------------------------------------------------------------------

    async def _send(
        self,
        node: str,
        address: Address,
        name: str,
        method: str,
        target: str,
        out: dict[str, str],
        body: bytes,
        remaining: float,
        incoming: fw.Hop,
        start: bool,
    ) -> PeerResponse:
        """Sends one signed forward to ``node`` and keeps the hop token it answers with."""
        if remaining <= 0:
            raise errors.FunctionTimeout(f"{name!r} ran out of time while being routed")
        assert self.peers is not None
        hop = fw.next_hop(incoming, self.self_name, remaining, start)
        signed = {**out, **self.signer.sign(node, out["x-request-id"], name, hop)}
        trace = CURRENT.get()
        if trace is not None:  # tracing: the forward is a span, the target's spans its children
            span_id, context = trace.outgoing()
            signed.update(context)
            began = self.clock()
        try:
            response = await self.peers.request(
                str(address), method, target, signed, body,
                connect_timeout_s=min(CONNECT_TIMEOUT_S, remaining),
                timeout_s=remaining + ANSWER_SLACK_S,
            )  # fmt: skip
        except (PeerUnreachable, PeerFailed) as exc:
            if trace is not None:
                record.forwarded(
                    trace, span_id, began, self.clock(), node=node, address=str(address),
                    method=method, status=None, error=exc,
                )  # fmt: skip
            raise
        if trace is not None:
            record.forwarded(
                trace, span_id, began, self.clock(), node=node, address=str(address),
                method=method, status=response.status, reject=response.headers.get(fw.REJECT),
            )  # fmt: skip
        self.signer.learn(node, response.headers.get(fw.TOKEN))
        return response

    async def _forward(
        self,
        node: str,
        name: str,
        body: bytes,
        request_id: str,
        method: str,
        query: str,
        headers: dict[str, str],
        started: float,
        timeout_s: float,
        incoming: fw.Hop,
        start: bool = False,
        path: str = "/",
    ) -> Reply | None:
        """The target's answer, or None if it certainly did not run the call."""
        address = self.endpoints.get(node)
        if address is None and self.homes is not None:
            home = self.homes(name)
            if home is not None and home.name == node:
                address = home.http
        if address is None or self.peers is None:
            return None
        subpath = "" if path == "/" else path
        target = f"/function/{name}{subpath}" + (f"?{query}" if query else "")
        out = {k: v for k, v in headers.items() if k not in _DROP}
        out["x-request-id"] = request_id
        try:
            response = await self._send(
                node, address, name, method, target, out, body,
                timeout_s - (self.clock() - started), incoming, start,
            )  # fmt: skip
            if response.headers.get(fw.REJECT) == fw.STALE:
                # Our token for the node was missing or outdated, and nothing ran: the answer
                # holds its current one, which the retry is signed with.
                self.metrics.forwards.labels(f"rejected_{fw.STALE}").inc()
                response = await self._send(
                    node, address, name, method, target, out, body,
                    timeout_s - (self.clock() - started), incoming, start,
                )  # fmt: skip
        except PeerUnreachable as exc:
            # Never connected: the target certainly did not run it. Drop it and go on.
            self.metrics.forwards.labels("unreachable").inc()
            if exc.timed_out:
                # It hangs rather than refuses: cut off. Its pooled connections are no better.
                self.unreachable[node] = self.clock() + UNREACHABLE_S
            log.info("forward of %s to %s failed to connect: %s", name, node, exc)
            self.cache.drop(name, node)
            return None
        except PeerFailed as exc:
            self.metrics.forwards.labels("failed").inc()
            log.info("forward of %s to %s failed: %s", name, node, exc)
            raise errors.ForwardFailed(
                f"node {node} failed while running {name!r} ({exc}); "
                "the call may have run there, so it was not retried"
            ) from None
        status, answer, reply_headers = response.status, response.body, response.headers
        reject = reply_headers.get(fw.REJECT)
        if reject is not None:
            self.metrics.forwards.labels(f"rejected_{reject}").inc()
            if reject == "busy":
                self.cache.note_load(name, node, 1.0)
            elif reject in (fw.STALE, fw.REFUSED):
                # The node refused our hop signature (twice stale, or a key it does not
                # share): nothing ran there, and its routes are not at fault.
                log.warning(
                    "%s refused the hop headers of a forward of %s (%s)", node, name, reject
                )
            else:
                self.cache.drop(name, node)
            return None
        self.metrics.forward_ok.inc()
        self.forwarded += 1
        try:
            load = float(reply_headers.get(fw.LOAD, "0.5"))
        except ValueError:
            load = 0.5
        if not 0.0 <= load <= 1.0:  # also NaN
            load = 0.5
        self.cache.note_load(name, node, load)
        if self.hot is not None:
            self._count_forward(name, load)
        relayed = [(key, value) for key, value in response.header_list() if key not in _NOT_RELAYED]
        return Reply(status, answer, relayed)
