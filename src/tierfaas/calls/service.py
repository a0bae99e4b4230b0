"""``CallService``: one node's asynchronous calls, from the accept to the recorded outcome.

Theory of operation.

- **Accept** (``accept``): the call is refused before anything is kept when this node's queue
  is full (429) or it drains (503). A keyed call (Idempotency-Key) is accepted by its home
  (``replication.keyed_homes``), to which any other node forwards it; the home answers a key
  it already holds with the first call's id. The call is then written to this node's store
  and sent to its holder (``replication.holders``) *at the same time*; the answer waits for
  both commits. A holder that fails is replaced by the next choice (with a new id, naming
  it), at most ``copy_tries`` times; then nothing is kept and the answer is 503. A
  standalone node keeps its one copy.
- **Run** (``Dispatcher`` -> ``_execute``): the call goes through the router (so it runs
  where its function is warm, or starts here) with ``X-Call-Id`` and ``X-Call-Attempt``.
  2xx: ``succeeded``; 4xx: ``failed``; 5xx (timeouts and node failures included): retried
  after the ``RetryPolicy``'s backoff, ``dead`` after the last attempt. The node's own "no
  room now" answers (429 overloaded or busy, 503 draining) did not run the call: it waits
  ``retry_after_s`` and is tried again without counting an attempt.
- **Record**: a final state is written once (``update(unless_final=True)``); then the holder
  is told (``CallOutcomes``, batched, off the critical path) and the callback, if any, sent.
- **Takeover**: when the origin's run is reported dead or left, the holder runs its
  unfinished copies as its own (``takeover.orphans``). At start, a node with unfinished calls
  in its store asks their holders which they took over (``claim_back``) before it runs them.
- **Reads**: a call's record is its origin's, else its holder's: ``get`` asks them in that
  order when this node does not own the call.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol

from tierfaas import errors
from tierfaas.calls import ids, takeover
from tierfaas.calls.dispatcher import Dispatcher, share_limit
from tierfaas.calls.errors import Conflict, NoSecondCopy, QueueFull
from tierfaas.calls.metrics import CallMetrics
from tierfaas.calls.model import Call, Failure, Request, Result, State, view
from tierfaas.calls.replication import holders, keyed_homes
from tierfaas.calls.retry import RetryPolicy
from tierfaas.calls.store import CallStore, StoreClosed
from tierfaas.clock import Clock, Scheduler, monotonic
from tierfaas.manifest import FunctionSpec

log = logging.getLogger("tierfaas.calls")

Header = tuple[bytes, bytes]
OUTCOME_TRIES = 5
OUTCOME_RETRY_S = 1.0
TRIM_EVERY_S = 60.0
CLAIM_WAIT_S = 10.0
"""How long a restarted node waits for a holder to appear in its view before it runs the
calls that holder might have taken over (at least once: they may then run twice)."""


class Reply(Protocol):
    status: int
    body: bytes
    headers: list[tuple[bytes, bytes]]


class RunCall(Protocol):
    """``Router.handle``: runs or forwards one call."""

    def __call__(
        self,
        name: str,
        body: bytes,
        *,
        request_id: str,
        method: str,
        query: str,
        headers: Sequence[Header],
        started: float,
        path: str = "/",
        call: tuple[str, int] | None = None,
    ) -> Awaitable[Reply]: ...


class Peers(Protocol):
    """The other nodes, as the calls need them (``peers.GrpcPeers``; a fake in tests)."""

    def members(self) -> list[str]:
        """The live, unsuspected members that serve calls, this node included."""
        ...

    def newer_run(self, name: str, epoch: int) -> bool:
        """Whether a run of ``name`` newer than ``epoch`` is live."""
        ...

    def epoch(self) -> int:
        """This node's own run."""
        ...

    async def copy(self, node: str, call: Call) -> None: ...

    async def outcome(self, node: str, call: Call) -> None: ...

    async def claim(self, node: str, origin: str, epoch: int, call_ids: list[str]) -> list[str]: ...

    async def accept(self, node: str, call: Call) -> tuple[str, bool]: ...

    async def get(self, node: str, call_id: str, retry: bool) -> dict[str, Any] | None: ...

    async def listed(
        self, node: str, state: str | None, function: str | None, limit: int
    ) -> list[dict[str, Any]]: ...


class CallbackSink(Protocol):
    """``callbacks.CallbackSender``'s part the service uses."""

    def send(
        self,
        url: str,
        call_id: str,
        state: str,
        payload: bytes,
        on_done: Callable[[str, int], None],
    ) -> None: ...

    async def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class CallSettings:
    queue_max: int = 10_000
    share: float = 0.5
    idempotency_window_s: float = 86400.0
    retry_base_s: float = 1.0
    retry_cap_s: float = 300.0
    retry_after_s: float = 1.0
    copy_tries: int = 3


@dataclass(frozen=True, slots=True)
class Accepted:
    call_id: str
    replay: bool = False


def _content_type(headers: Sequence[Header]) -> str:
    for key, value in headers:
        if key == b"content-type":
            return value.decode("latin-1")
    return "application/octet-stream"


class CallService:
    def __init__(
        self,
        *,
        node: str,
        store: CallStore,
        functions: Mapping[str, FunctionSpec],
        run: RunCall,
        peers: Peers | None,
        settings: CallSettings,
        scheduler: Scheduler,
        wall: Clock,
        metrics: CallMetrics,
        callbacks: CallbackSink | None = None,
        draw: Callable[[], float] = random.random,
        clock: Clock = monotonic,
    ) -> None:
        self.node = node
        self.store = store
        self.functions = functions
        self.run = run
        self.peers = peers
        self.settings = settings
        self.scheduler = scheduler
        self.wall = wall
        self.clock = clock
        self.metrics = metrics
        self.callbacks = callbacks
        self.draw = draw
        self.dispatcher = Dispatcher(self._start, self._limit, scheduler, wall)
        self.draining = False
        self.unfinished = 0
        """Own calls queued or running (the queue that ``queue_max`` bounds)."""
        self.claimed: dict[str, int] = {}
        """Origin -> the newest run that claimed its calls back from this node."""
        self._keys_in_flight: dict[tuple[str, str], asyncio.Future[str]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._policies = {
            name: RetryPolicy(spec.max_retries, settings.retry_base_s, settings.retry_cap_s)
            for name, spec in functions.items()
        }
        metrics.watch(self)

    # -- lifecycle -----------------------------------------------------------------------------

    def load(self) -> list[Call]:
        """Reads the store at start: the unfinished own calls (a running one is queued
        again: it was cut by the stop). Returns them; ``resume`` runs them."""
        own = self.store.unfinished("own")
        self.unfinished = len(own)
        return own

    async def start(self, claim: bool) -> None:
        """Loads the store and runs its calls; with ``claim`` (a clustered node) asks the
        holders first which of them they took over while this node was away."""
        own = self.load()
        self.dispatcher.paused = True
        self._spawn(self._trim_loop())
        if self.callbacks is not None:
            self._resend_callbacks()
        if claim and self.peers is not None and own:
            self._spawn(self._claim_then_run(own))
        else:
            self._queue(own)
            self.dispatcher.resume()

    def _queue(self, calls: Sequence[Call]) -> None:
        now = self.wall()
        for kept in calls:
            call = kept
            if kept.state == "running":
                call = replace(kept, state="queued", due_at=now)
                self._write(call)
            self.dispatcher.add(call)

    async def _claim_then_run(self, own: list[Call]) -> None:
        try:
            dropped = await self.claim_back(own)
        except Exception:
            log.exception("claiming calls back failed: running them all (at least once)")
            dropped = set()
        self._queue([c for c in own if c.call_id not in dropped])
        self.dispatcher.resume()

    async def claim_back(self, own: list[Call]) -> set[str]:
        """Asks each holder of ``own`` which calls it took over; drops those here. A holder
        that does not answer within ``CLAIM_WAIT_S``: its calls stay (logged)."""
        assert self.peers is not None
        peers = self.peers
        deadline = self.clock() + CLAIM_WAIT_S
        dropped: set[str] = set()
        for holder, call_ids in takeover.claims_by_holder(own, self.node).items():
            taken: list[str] | None = None
            while taken is None and self.clock() < deadline:
                if holder in peers.members():
                    try:
                        taken = await peers.claim(holder, self.node, peers.epoch(), call_ids)
                        break
                    except Exception as exc:
                        log.debug("claim from %s failed: %s", holder, exc)
                await asyncio.sleep(0.2)
            if taken is None:
                log.warning(
                    "holder %s did not answer the claim of %d calls: running them here "
                    "(it may run them too: at least once)",
                    holder,
                    len(call_ids),
                )
                continue
            asked = set(call_ids)
            gone = [call_id for call_id in taken if call_id in asked]
            if gone:
                await self.store.delete(gone)
                dropped.update(gone)
                self.unfinished -= len(gone)
                log.info(
                    "%s took over %d of this node's calls while it was away", holder, len(gone)
                )
        return dropped

    async def stop(self) -> None:
        self.dispatcher.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.callbacks is not None:
            await self.callbacks.close()

    def _resend_callbacks(self) -> None:
        """The callbacks of finished calls still pending when the node last stopped."""
        for call in self.store.pending_callbacks():
            self._send_callback(call)

    def _spawn(self, work: Awaitable[Any]) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _trim_loop(self) -> None:
        while True:
            try:
                await self.store.trim(self.wall())
            except Exception as exc:
                log.warning("trimming the call store failed: %s", exc)
            await asyncio.sleep(TRIM_EVERY_S)

    def _write(self, call: Call, *, unless_final: bool = False) -> asyncio.Future[bool]:
        """A write whose commit nobody waits for (its failure is logged)."""
        future = self.store.update(call, unless_final=unless_final)
        future.add_done_callback(_log_failure)
        return future

    # -- accept --------------------------------------------------------------------------------

    def _limit(self, function: str) -> int:
        spec = self.functions.get(function)
        if spec is None:
            return 1
        return share_limit(spec.max_instances, spec.concurrency, self.settings.share)

    async def accept(
        self,
        function: str,
        request: Request,
        *,
        idem_key: str | None = None,
        callback_url: str | None = None,
        forwarded: bool = False,
    ) -> Accepted:
        """Keeps the call durably (here and on its holder) and queues it; raises
        ``errors.HttpError`` (429, 503, ...) with nothing kept."""
        if self.draining:
            raise errors.Draining(
                "this node is draining: send the call to another node",
                retry_after_s=self.settings.retry_after_s,
            )
        members = self.peers.members() if self.peers is not None else [self.node]
        if idem_key is not None:
            ranked = keyed_homes(function, idem_key, members)
            if ranked and ranked[0] != self.node and not forwarded and self.peers is not None:
                probe = Call("", function, self.wall(), request, idem_key=idem_key,
                             callback_url=callback_url)  # fmt: skip
                try:
                    call_id, replay = await self.peers.accept(ranked[0], probe)
                except errors.HttpError:
                    raise
                except Exception as exc:
                    raise NoSecondCopy(
                        f"the home of this key ({ranked[0]}) did not answer: {exc}",
                        retry_after_s=self.settings.retry_after_s,
                    ) from None
                return Accepted(call_id, replay)
            return await self._accept_keyed(function, request, idem_key, callback_url, ranked)
        return await self._accept(function, request, None, callback_url, members, None)

    async def _accept_keyed(
        self,
        function: str,
        request: Request,
        key: str,
        callback_url: str | None,
        ranked: list[str],
    ) -> Accepted:
        first = self._keys_in_flight.get((function, key))
        if first is not None:
            return Accepted(await asyncio.shield(first), replay=True)
        since = self.wall() - self.settings.idempotency_window_s
        kept = self.store.find_keyed(function, key, since)
        if kept is not None:
            return Accepted(kept.call_id, replay=True)
        future: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._keys_in_flight[(function, key)] = future
        try:
            accepted = await self._accept(
                function, request, key, callback_url, ranked, [n for n in ranked if n != self.node]
            )
            future.set_result(accepted.call_id)
            return accepted
        except BaseException as exc:
            future.set_exception(
                exc if isinstance(exc, Exception) else errors.ClusterError("stopped")
            )
            future.exception()  # retrieved: a lone keyed accept has no waiter
            raise
        finally:
            del self._keys_in_flight[(function, key)]

    async def _accept(
        self,
        function: str,
        request: Request,
        key: str | None,
        callback_url: str | None,
        members: list[str],
        candidates: list[str] | None,
    ) -> Accepted:
        if self.unfinished >= self.settings.queue_max:
            raise QueueFull(
                f"this node holds {self.unfinished} unfinished async calls, its limit",
                retry_after_s=self.settings.retry_after_s,
            )
        self.unfinished += 1  # held while the accept is in flight: the bound is never passed
        try:
            call = await self._keep(function, request, key, callback_url, members, candidates)
        except BaseException:
            self.unfinished -= 1
            raise
        self.metrics.accepted(function)
        self.dispatcher.add(call)
        return Accepted(call.call_id)

    async def _keep(
        self,
        function: str,
        request: Request,
        key: str | None,
        callback_url: str | None,
        members: list[str],
        candidates: list[str] | None,
    ) -> Call:
        """Writes the call here and on a holder; returns it once both committed."""
        now = self.wall()
        if self.peers is None:
            call = self._new_call(self.node, function, request, key, callback_url, now)
            await self.store.insert([call])
            return call
        if candidates is None:
            random_part = ids.new_id(self.node, self.node).rsplit("~", 1)[1]
            candidates = holders(random_part, self.node, members)
        last_error: Exception | None = None
        for holder in candidates[: self.settings.copy_tries]:
            call = self._new_call(holder, function, request, key, callback_url, now)
            local = self.store.insert([call])
            try:
                await self.peers.copy(holder, call)
            except Exception as exc:
                last_error = exc
                log.info("holder %s did not take the copy of a call: %s", holder, exc)
                await asyncio.gather(local, return_exceptions=True)
                await self.store.delete([call.call_id])
                continue
            await local
            return call
        raise NoSecondCopy(
            "no other node took the call's second copy"
            + (f" ({last_error})" if last_error else " (no live peer)"),
            retry_after_s=self.settings.retry_after_s,
        )

    def _new_call(
        self,
        holder: str,
        function: str,
        request: Request,
        key: str | None,
        callback_url: str | None,
        now: float,
    ) -> Call:
        return Call(
            call_id=ids.new_id(self.node, holder),
            function=function,
            accepted_at=now,
            request=request,
            due_at=now,
            node=self.node,
            idem_key=key,
            callback_url=callback_url,
            callback_state="pending" if callback_url else None,
        )

    # -- run -----------------------------------------------------------------------------------

    def _start(self, call: Call) -> None:
        self._spawn(self._execute(call))

    async def _execute(self, call: Call) -> None:
        try:
            await self._attempt(call)
        except Exception:
            log.exception("call %s: recording its attempt failed", call.call_id)
        finally:
            self.dispatcher.finished(call.function)

    async def _attempt(self, call: Call) -> None:
        attempt = call.attempts + 1
        running = replace(call, state="running", attempts=attempt)
        self._write(running, unless_final=True)
        request = call.request
        headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in request.headers]
        result: Result | None = None
        failure: Failure | None = None
        try:
            reply = await self.run(
                call.function,
                request.body,
                request_id=ids.request_id(call.call_id, attempt),
                method="POST",
                query=request.query,
                headers=headers,
                started=self.clock(),
                path=request.path,
                call=(call.call_id, attempt),
            )
            status = reply.status
            result = Result(status, _content_type(reply.headers), reply.body)
        except (errors.Overloaded, errors.Busy, errors.Draining, errors.NotWarm) as exc:
            # The node had no room for it now: it did not run. Later, same attempt.
            self.metrics.attempt(call.function, "deferred")
            later = replace(call, due_at=self.wall() + self.settings.retry_after_s)
            log.debug("call %s deferred: %s", call.call_id, exc)
            self._write(later, unless_final=True)
            self.dispatcher.add(later)
            return
        except errors.HttpError as exc:
            status = exc.status
            failure = Failure(status, exc.code, exc.message)
        except Exception as exc:  # a bug on the way: the call is retried like a 500
            log.exception("call %s: attempt %d failed", call.call_id, attempt)
            status = 500
            failure = Failure(500, "internal_error", str(exc) or type(exc).__name__)
        await self._settle(running, status, result, failure)

    async def _settle(
        self, running: Call, status: int, result: Result | None, failure: Failure | None
    ) -> None:
        now = self.wall()
        attempt = running.attempts
        state: State
        if 200 <= status < 300:
            state, outcome = "succeeded", "ok"
        elif status < 500:
            state, outcome = "failed", "client_error"
        else:
            outcome = "error"
            delay = self._policies.get(running.function, RetryPolicy()).delay_s(
                attempt, status, self.draw()
            )
            if delay is not None:
                self.metrics.attempt(running.function, "retry")
                again = replace(running, state="queued", due_at=now + delay, result=result,
                                failure=failure)  # fmt: skip
                self._write(again, unless_final=True)
                self.dispatcher.add(again)
                return
            state = "dead"
        self.metrics.attempt(running.function, outcome)
        final = replace(running, state=state, finished_at=now, result=result, failure=failure)
        if not await self.store.update(final, unless_final=True):
            return  # it was final already (recorded once)
        self.unfinished -= 1
        self.metrics.finished(final.function, state)
        self._after_final(final)

    def _after_final(self, final: Call) -> None:
        """Tells the holder and the callback target that ``final`` ended."""
        self._tell_holder(final)
        self._send_callback(final)

    def _send_callback(self, final: Call) -> None:
        if final.callback_url is not None and self.callbacks is not None:
            payload = json.dumps(view(final)).encode()
            url = final.callback_url

            def done(outcome: str, attempts: int) -> None:
                try:
                    kept = self.store.get(final.call_id)
                    if kept is not None:
                        changed = replace(kept, callback_state=outcome, callback_attempts=attempts)
                        self._write(changed)
                except StoreClosed:
                    pass  # stopping: the record says pending, sent again at the next start

            self.callbacks.send(url, final.call_id, final.state, payload, done)

    def _tell_holder(self, call: Call) -> None:
        parsed = ids.parse(call.call_id)
        if self.peers is None or parsed.origin != self.node or parsed.holder == self.node:
            return
        self._spawn(self._send_outcome(parsed.holder, call))

    async def _send_outcome(self, holder: str, call: Call) -> None:
        assert self.peers is not None
        for _ in range(OUTCOME_TRIES):
            if holder not in self.peers.members():
                await asyncio.sleep(OUTCOME_RETRY_S)
                continue
            try:
                await self.peers.outcome(holder, call)
                return
            except Exception as exc:
                log.debug("outcome of %s to %s failed: %s", call.call_id, holder, exc)
                await asyncio.sleep(OUTCOME_RETRY_S)
        log.info("the outcome of %s did not reach its holder %s", call.call_id, holder)

    # -- the holder's side ---------------------------------------------------------------------

    async def take_copies(self, origin: str, calls: Sequence[Call]) -> int:
        """Keeps the second copies ``origin`` sent; returns how many were new."""
        copies = [replace(call, role="copy") for call in calls]
        kept: int = await self.store.insert(copies)
        return kept

    async def take_outcomes(self, origin: str, calls: Sequence[Call]) -> None:
        """Marks this node's copies as their origin recorded them (a final state once; a
        ``queued`` one is an operator's retry of a final call)."""
        for call in calls:
            kept = self.store.get(call.call_id)
            if kept is None or kept.role != "copy":
                continue
            changed = replace(
                kept,
                state=call.state,
                attempts=call.attempts,
                finished_at=call.finished_at,
                result=call.result,
                failure=call.failure,
                due_at=call.due_at,
                callback_state=call.callback_state,
                callback_attempts=call.callback_attempts,
            )
            self._write(changed, unless_final=call.state != "queued")

    async def claim(self, origin: str, epoch: int, call_ids: Sequence[str]) -> list[str]:
        """``ClaimCalls``: which of ``call_ids`` this node took over. Those it did not are
        given back: a late notice of the old run's end no longer takes them over."""
        self.claimed[origin] = max(epoch, self.claimed.get(origin, -1))
        taken = []
        for call_id in call_ids:
            kept = self.store.get(call_id)
            if kept is not None and kept.role == "own":
                taken.append(call_id)
        return taken

    async def take_over(self, origin: str, epoch: int) -> int:
        """Runs ``origin``'s unfinished copies as this node's own calls (its run ``epoch``
        is gone); returns how many."""
        if self.peers is not None and self.peers.newer_run(origin, epoch):
            return 0  # it is back: it claims its calls itself
        orphans = takeover.orphans(self.store.unfinished("copy"), origin, epoch, self.claimed)
        now = self.wall()
        for copy in orphans:
            own = replace(copy, role="own", node=self.node, state="queued", due_at=now)
            await self.store.update(own)
            self.unfinished += 1
            self.dispatcher.add(own)
        if orphans:
            log.warning(
                "took over %d calls of %s (its run %d is gone)", len(orphans), origin, epoch
            )
        return len(orphans)

    def on_run_gone(self, name: str, epoch: int, down: bool) -> None:
        """The ClusterManager's run watcher (``RunGone``): a dead or departed origin's
        calls are taken over; a suspect keeps them."""
        if down and name != self.node:
            self._spawn(self.take_over(name, epoch))

    # -- reads and the operator's retry --------------------------------------------------------

    async def get(self, call_id: str, *, retry: bool = False) -> dict[str, Any]:
        """The call's record (its origin's, else its holder's); with ``retry``, a dead or
        failed call queued again. Raises ``NotFound`` (404), ``Conflict`` (409) or a
        ``ValueError`` for a malformed id."""
        parsed = ids.parse(call_id)
        kept = self.store.get(call_id)
        if kept is not None and kept.role == "own":
            return self._retry(kept) if retry else view(kept)
        for node in (parsed.origin, parsed.holder):
            if node == self.node:
                if kept is not None:  # this node's copy: the origin did not answer
                    if retry:
                        raise Conflict("the call is held by its origin; retry it there")
                    return view(kept)
                continue
            if self.peers is None or node not in self.peers.members():
                continue
            try:
                found = await self.peers.get(node, call_id, retry)
            except errors.HttpError:
                raise
            except Exception as exc:
                log.debug("asking %s for %s failed: %s", node, call_id, exc)
                continue
            if found is not None:
                return found
        raise errors.NotFound(f"no call {call_id[:160]!r} (unknown, or expired)")

    async def get_here(self, call_id: str, retry: bool) -> dict[str, Any] | None:
        """What this node alone keeps of ``call_id`` (for a peer's ``GetCall``)."""
        kept = self.store.get(call_id)
        if kept is None:
            return None
        if retry:
            if kept.role != "own":
                return None
            return self._retry(kept)
        return view(kept)

    def _retry(self, call: Call) -> dict[str, Any]:
        if call.state not in ("dead", "failed"):
            raise Conflict(f"the call is {call.state}; only a dead or failed call is retried")
        again = replace(
            call, state="queued", attempts=0, due_at=self.wall(), finished_at=None,
            result=None, failure=None,
            callback_state="pending" if call.callback_url else None, callback_attempts=0,
        )  # fmt: skip
        self._write(again)
        self.unfinished += 1
        self.dispatcher.add(again)
        self._tell_holder(again)
        return view(again)

    def listed(
        self, state: str | None = None, function: str | None = None, limit: int = 100
    ) -> list[dict[str, Any]]:
        return [view(c) for c in self.store.listed(state=state, function=function, limit=limit)]

    async def dead_letters(
        self, function: str | None, limit: int, timeout_s: float = 2.0
    ) -> dict[str, Any]:
        """The dead calls of every live node, newest first; ``unanswered``: the nodes that
        did not answer within ``timeout_s``."""
        calls = self.listed("dead", function, limit)
        unanswered: list[str] = []
        if self.peers is not None:
            peers = self.peers
            others = [n for n in peers.members() if n != self.node]

            async def ask(node: str) -> list[dict[str, Any]]:
                return await asyncio.wait_for(
                    peers.listed(node, "dead", function, limit), timeout_s
                )

            answers = await asyncio.gather(*(ask(n) for n in others), return_exceptions=True)
            for node, answer in zip(others, answers, strict=True):
                if isinstance(answer, BaseException):
                    unanswered.append(node)
                else:
                    calls.extend(answer)
        calls.sort(key=lambda c: c["accepted_at"], reverse=True)
        return {"calls": calls[:limit], "unanswered": sorted(unanswered)}

    # -- gauges --------------------------------------------------------------------------------

    def queue_sizes(self) -> dict[str, int]:
        return {"queued": self.dispatcher.queued, "running": self.dispatcher.running_total}


def _log_failure(future: asyncio.Future[Any]) -> None:
    if not future.cancelled() and future.exception() is not None:
        log.error("a call store write failed: %s", future.exception())
