"""``CallService``: one node's asynchronous calls, from the accept to the recorded outcome.

Theory of operation.

- **Accept** (``accept``): the call is refused before anything is kept when this node's queue
  is full (429) or it drains (503). A keyed call (Idempotency-Key) is accepted by its home
  (``replication.keyed_homes``), to which any other node forwards it; the home answers a key
  it already holds with the first call's id. The call is then written to this node's store
  and sent to its holder (``replication.holders``) *at the same time*; the answer waits for
  both commits. The common accept (no key) does this in groups: the accepts of one turn of
  the loop share one insert and one copy frame per holder (``_keep_turn``). A holder that
  fails is replaced by the next choice (with a new id, naming it; the failed copy is
  withdrawn), at most ``copy_tries`` times; then nothing is kept and the answer is 503. A
  standalone node keeps its one copy. An accept never depends on its caller's task: a
  caller that goes away mid-accept leaves nothing half done.
- **Run** (``Dispatcher`` -> ``_runner``): the call goes through the router (so it runs
  where its function is warm, or starts here) with ``X-Call-Id`` and ``X-Call-Attempt``.
  2xx: ``succeeded``; 4xx: ``failed``; 5xx (timeouts and node failures included): retried
  after the ``RetryPolicy``'s backoff, ``dead`` after the last attempt. The node's own "no
  room now" answers (429 overloaded or busy, 503 draining) did not run the call: it waits
  ``retry_after_s`` and is tried again without counting an attempt.
- **Record**: a final state is written once (``update(unless_final=True)``); then the holder
  is told (on the calls lane, batched, off the critical path) and the callback, if any, sent.
- **Takeover** (``holding.Holding``): when the origin's run is reported dead or left, the
  holder runs its unfinished copies as its own (``takeover.orphans``). At start, a node with
  unfinished calls in its store asks their holders which they took over (``claim_back``)
  before it runs them. A draining node lets its running calls end and their holders hear so
  before it leaves (``finish_running``), so the holders take over only the queued ones.
- **Reads**: a call's record is its origin's, else its holder's: ``get`` asks them in that
  order when this node does not own the call.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import sqlite3
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from tierfaas import errors
from tierfaas.calls import ids
from tierfaas.calls.dispatcher import Dispatcher, share_limit
from tierfaas.calls.errors import Conflict, NoSecondCopy, QueueFull
from tierfaas.calls.holding import Holding
from tierfaas.calls.logstore import Store
from tierfaas.calls.metrics import CallMetrics
from tierfaas.calls.model import Call, Failure, Request, Result, State, ended, view
from tierfaas.calls.ports import CallbackSink, Header, Peers, Reply, RunCall
from tierfaas.calls.replication import holders, keyed_homes
from tierfaas.calls.retry import RetryPolicy
from tierfaas.calls.store import StoreClosed
from tierfaas.clock import Clock, Scheduler, monotonic
from tierfaas.manifest import FunctionSpec
from tierfaas.tracing.calls import traced_attempt
from tierfaas.tracing.spans import Tracer

log = logging.getLogger("tierfaas.calls")

OUTCOME_TRIES = 5
OUTCOME_RETRY_S = 1.0
OUTCOME_GROUP = 256  # outcomes told to a holder together (a lane frame holds up to 512)
TRIM_EVERY_S = 60.0
_OUTCOME_OF = {"succeeded": "ok", "failed": "client_error"}  # else "error" (the metric's label)


@dataclass(frozen=True, slots=True)
class CallSettings:
    queue_max: int = 10_000
    share: float = 0.5
    idempotency_window_s: float = 86400.0
    retry_base_s: float = 1.0
    retry_cap_s: float = 300.0
    retry_after_s: float = 1.0
    copy_tries: int = 3


_Pending = tuple[Call, list[str], "asyncio.Future[Accepted]"]
"""An accept waiting for its turn's writes: the call, its holders to try, its answer."""


@dataclass(frozen=True, slots=True)
class Accepted:
    call_id: str
    replay: bool = False


def judge(
    status: int, attempt: int, policy: RetryPolicy, draw: float
) -> tuple[State, float | None]:
    """What attempt ``attempt`` (1-based) ending with HTTP ``status`` makes of its call:
    ``("queued", delay_s)`` to try again after the policy's backoff (a 5xx, attempts left),
    else its final state: ``succeeded`` (2xx), ``dead`` (a 5xx on the last attempt) or
    ``failed`` (any other answer: the caller's fault, the same on every attempt)."""
    if 200 <= status < 300:
        return "succeeded", None
    if status < 500:
        return "failed", None
    delay = policy.delay_s(attempt, status, draw)
    return ("dead", None) if delay is None else ("queued", delay)


def _status(reply: Reply) -> int:
    return reply.status


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
        store: Store,
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
        self.tracer: Tracer | None = None
        """Set by the node with ``--otlp-endpoint``: each attempt is a span of its call's
        trace (``tracing.calls``)."""
        self.dispatcher = Dispatcher(self._start, self._limit, scheduler, wall)
        self.dispatcher.paused = True  # until ``start``: nothing runs before the store is read
        self.draining = False
        self.unfinished = 0
        """Own calls queued or running (the queue that ``queue_max`` bounds)."""
        self.holding = Holding(
            node=node, store=store, peers=peers, wall=wall, clock=clock, adopt=self._adopt
        )  # fmt: skip
        self._keys_in_flight: dict[tuple[str, str], asyncio.Task[Accepted]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._outcomes: set[asyncio.Future[Any]] = set()
        """Final records on their way to the store, and outcomes on their way to holders."""
        self._finals: list[Call] = []  # ended during this turn of the loop
        self._turn: list[_Pending] = []  # accepted during this turn of the loop
        self._ready: deque[Call] = deque()  # started by the dispatcher, not yet running
        self._takers = 0  # runners that look at ``_ready`` again before they end
        self._running: dict[str, Call] = {}
        """The own calls running now, as their records would say (the store keeps them
        ``queued`` until their attempt is judged: see ``_attempt``)."""
        self._limits = {
            name: share_limit(spec.max_instances, spec.concurrency, settings.share)
            for name, spec in functions.items()
        }
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
        holders first which of them they took over while this node was away (those calls
        alone wait for the answers: calls accepted meanwhile run at once)."""
        own = self.load()
        self._spawn(self._trim_loop())
        if self.callbacks is not None:
            self._resend_callbacks()
        if self.peers is not None:
            self._spawn(self.holding.adopt_orphans())
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
            dropped = await self.holding.claim_back(own)
            self.unfinished -= len(dropped)
        except Exception:
            log.exception("claiming calls back failed: running them all (at least once)")
            dropped = set()
        self._queue([c for c in own if c.call_id not in dropped])

    async def stop(self) -> None:
        self.dispatcher.close()
        for task in list(self._tasks):
            task.cancel()
        for told in list(self._outcomes):
            told.cancel()  # a retry still due finds it done and stops
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.callbacks is not None:
            await self.callbacks.close()
        if self.peers is not None:
            await self.peers.close()

    async def finish_running(self, timeout_s: float) -> None:
        """The drain of a clustered node, before it leaves: no new call starts (the caller
        paused the dispatcher); waits, at most ``timeout_s``, for the calls running here to
        end and their outcomes to reach their holders. Then its leave makes the holders take
        over only the calls still queued: none runs twice because of the drain."""
        deadline = self.clock() + timeout_s
        while self.dispatcher.running_total and self.clock() < deadline:
            await asyncio.sleep(0.02)
        # A final record, once written, starts its outcome: wait until neither is left.
        while (self._outcomes or self._finals) and self.clock() < deadline:
            if not self._outcomes:
                await asyncio.sleep(0)
                continue
            await asyncio.wait(
                set(self._outcomes),
                timeout=max(0.0, deadline - self.clock()),
                return_when=asyncio.FIRST_COMPLETED,
            )

    def _resend_callbacks(self) -> None:
        """The callbacks of finished calls still pending when the node last stopped."""
        for call in self.store.pending_callbacks():
            self._send_callback(call)

    def _spawn(self, work: Awaitable[Any]) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._forget)  # one callback: each is a wake-up of the loop
        return task

    def _forget(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled():
            task.exception()  # an accept whose caller went away has no reader

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
        return self._limits.get(function, 1)

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
        if self.peers is None:
            return await asyncio.shield(
                self._accepting(function, request, None, callback_url, members, None)
            )
        return await self._accept_unkeyed(function, request, callback_url, members)

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
            return Accepted((await asyncio.shield(first)).call_id, replay=True)
        since = self.wall() - self.settings.idempotency_window_s
        kept = self.store.find_keyed(function, key, since)
        if kept is not None:
            return Accepted(kept.call_id, replay=True)
        candidates = [n for n in ranked if n != self.node]
        task = self._accepting(function, request, key, callback_url, ranked, candidates)
        self._keys_in_flight[(function, key)] = task
        task.add_done_callback(lambda _: self._keys_in_flight.pop((function, key), None))
        return await asyncio.shield(task)

    def _accept_unkeyed(
        self, function: str, request: Request, callback_url: str | None, members: list[str]
    ) -> asyncio.Future[Accepted]:
        """The common accept (no key, a cluster), on futures and callbacks rather than a task
        of its own: the call joins this turn of the loop's accepts (``_keep_turn``), which
        are written here in one transaction and sent to each holder in one frame, and are
        answered together once both are committed. The call is queued then whether or not
        its caller still waits (the returned future is never what keeps it going)."""
        assert self.peers is not None
        self._reserve()
        random_part = ids.new_random()
        candidates = holders(random_part, self.node, members)
        loop = asyncio.get_running_loop()
        answer: asyncio.Future[Accepted] = loop.create_future()
        if not candidates:
            self._accept_failed(function, answer, NoSecondCopy(
                "no other node took the call's second copy (no live peer)",
                retry_after_s=self.settings.retry_after_s,
            ))  # fmt: skip
            return answer
        call = self._new_call(candidates[0], function, request, None, callback_url,
                              self.wall(), random_part)  # fmt: skip
        self._turn.append((call, candidates, answer))
        if len(self._turn) == 1:
            loop.call_soon(self._keep_turn)  # after every accept of this turn
        return answer

    def _keep_turn(self) -> None:
        """This turn's accepts: one insert here and one copy frame per holder, both started
        at once; each holder's group is answered when its copy and the insert committed.
        One write, one frame and one wake-up per group rather than per call (per call they
        were most of what an accept cost the loop beyond a sync call, profiled)."""
        assert self.peers is not None
        turn, self._turn = self._turn, []
        try:
            local = self.store.insert([call for call, _, _ in turn])
        except StoreClosed as exc:
            for call, _, answer in turn:
                self._accept_failed(call.function, answer, exc)
            return
        groups: dict[str, list[_Pending]] = {}
        for pending in turn:
            groups.setdefault(pending[1][0], []).append(pending)
        for holder, group in groups.items():
            try:
                copy = self.peers.copy(holder, [call for call, _, _ in group])
            except Exception as exc:  # a bug on the way: as a failed copy (the next holder)
                log.exception("sending the copies of %d calls to %s failed", len(group), holder)
                copy = asyncio.get_running_loop().create_future()
                copy.set_exception(exc)
            self._await_both(local, copy, group)

    def _await_both(
        self, local: asyncio.Future[int], copy: asyncio.Future[None], group: list[_Pending]
    ) -> None:
        """Once ``local`` (the turn's insert) and ``copy`` (this holder group's) are both
        done: the group's calls are queued and answered, or, if either failed, each goes on
        alone in ``_accept_again`` (the next holders, or a 503)."""
        waiting = 2

        def settled(_: asyncio.Future[Any]) -> None:
            nonlocal waiting
            waiting -= 1
            if waiting:
                return
            if _ok(local) and _ok(copy):
                accepted = self.metrics.accepted
                queue = self.dispatcher.add
                for call, _holders, answer in group:
                    accepted(call.function)
                    queue(call)
                    if not answer.done():
                        answer.set_result(Accepted(call.call_id))
                return
            for call, holders_, answer in group:
                self._spawn(self._accept_again(call, local, copy, holders_, answer))

        local.add_done_callback(settled)
        copy.add_done_callback(settled)

    async def _accept_again(
        self,
        call: Call,
        local: asyncio.Future[int],
        copy: asyncio.Future[None],
        candidates: list[str],
        answer: asyncio.Future[Accepted],
    ) -> None:
        """The first try of ``_accept_unkeyed`` failed: undone, then the next holders."""
        holder = candidates[0]
        request, function, callback_url = call.request, call.function, call.callback_url
        try:
            if not _ok(local):  # this node's store failed
                raise local.exception() or StoreClosed("the insert was cancelled")
            error = None if copy.cancelled() else copy.exception()
            log.info("holder %s did not take the copy of a call: %s", holder, error)
            await self.store.delete([call.call_id])
            self._withdraw(holder, call)
            rest = candidates[1 : self.settings.copy_tries]
            members = [self.node, *rest]
            if not rest:
                raise NoSecondCopy(
                    f"no other node took the call's second copy ({error})",
                    retry_after_s=self.settings.retry_after_s,
                )
            kept = await self._keep(function, request, None, callback_url, members, rest)
        except BaseException as exc:
            self._accept_failed(function, answer, exc)
            if not isinstance(exc, Exception):
                raise
            return
        self._queue_accepted(kept)
        if not answer.done():
            answer.set_result(Accepted(kept.call_id))

    def _reserve(self) -> None:
        """One more unfinished call (before anything is kept: the bound is never passed),
        or ``QueueFull``."""
        if self.unfinished >= self.settings.queue_max:
            raise QueueFull(
                f"this node holds {self.unfinished} unfinished async calls, its limit",
                retry_after_s=self.settings.retry_after_s,
            )
        self.unfinished += 1

    def _accept_failed(
        self, function: str, answer: asyncio.Future[Accepted], exc: BaseException
    ) -> None:
        """Nothing was kept: the reservation goes, and the caller hears why (a failure of
        this node's store as a 503)."""
        self.unfinished -= 1
        if isinstance(exc, (sqlite3.Error, StoreClosed)):
            log.error("the call store could not keep a call of %s: %s", function, exc)
            exc = errors.ClusterError(
                f"this node could not keep the call ({exc}); try another node",
                retry_after_s=self.settings.retry_after_s,
            )
        if not answer.done():
            answer.set_exception(exc)

    def _queue_accepted(self, call: Call) -> None:
        self.metrics.accepted(call.function)
        self.dispatcher.add(call)

    def _accepting(
        self,
        function: str,
        request: Request,
        key: str | None,
        callback_url: str | None,
        members: list[str],
        candidates: list[str] | None,
    ) -> asyncio.Task[Accepted]:
        """The accept as a task of its own, which the caller awaits shielded: a caller
        cancelled mid-accept (its client, or the node that forwarded a keyed accept, went
        away) must not leave a call kept here and on its holder but never queued."""
        work = self._accept(function, request, key, callback_url, members, candidates)
        task: asyncio.Task[Accepted] = self._spawn(work)
        return task

    async def _accept(
        self,
        function: str,
        request: Request,
        key: str | None,
        callback_url: str | None,
        members: list[str],
        candidates: list[str] | None,
    ) -> Accepted:
        self._reserve()
        try:
            call = await self._keep(function, request, key, callback_url, members, candidates)
        except (sqlite3.Error, StoreClosed) as exc:
            # This node's store failed (a full disk, an I/O error): a 503, nothing was kept
            # here (a copy the holder took is run only if this node dies).
            self.unfinished -= 1
            log.error("the call store could not keep a call of %s: %s", function, exc)
            raise errors.ClusterError(
                f"this node could not keep the call ({exc}); try another node",
                retry_after_s=self.settings.retry_after_s,
            ) from None
        except BaseException:
            self.unfinished -= 1
            raise
        self._queue_accepted(call)
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
            candidates = holders(ids.new_random(), self.node, members)
        last_error: Exception | None = None
        for holder in candidates[: self.settings.copy_tries]:
            call = self._new_call(holder, function, request, key, callback_url, now)
            local = self.store.insert([call])
            try:
                await self.peers.copy(holder, [call])
            except Exception as exc:
                last_error = exc
                log.info("holder %s did not take the copy of a call: %s", holder, exc)
                await asyncio.gather(local, return_exceptions=True)
                await self.store.delete([call.call_id])
                self._withdraw(holder, call)
                continue
            await local
            return call
        raise NoSecondCopy(
            "no other node took the call's second copy"
            + (f" ({last_error})" if last_error else " (no live peer)"),
            retry_after_s=self.settings.retry_after_s,
        )

    def _withdraw(self, holder: str, call: Call) -> None:
        """A copy that failed may still have reached ``holder`` (an answer lost, a timeout
        after its commit): marked final there, it is never taken over, so the call the
        client retries under another id cannot run twice. Best effort, off the path."""
        assert self.peers is not None
        failure = Failure(503, "not_accepted", "its second copy failed; it was never accepted")
        withdrawn = replace(call, state="failed", finished_at=self.wall(), failure=failure)
        self._spawn(self.peers.outcomes(holder, [withdrawn]))

    def _new_call(
        self,
        holder: str,
        function: str,
        request: Request,
        key: str | None,
        callback_url: str | None,
        now: float,
        random_part: str | None = None,
    ) -> Call:
        call_id = ids.new_id(self.node, holder, random_part=random_part)
        pending = "pending" if callback_url else None
        # Positional: keywords cost a fresh call's construction a third more.
        return Call(call_id, function, now, request, "own", "queued", 0, now, None, self.node,
                    key, callback_url, pending, 0, None, None)  # fmt: skip

    # -- run -----------------------------------------------------------------------------------

    def _start(self, call: Call) -> None:
        """The dispatcher's start: ``call`` runs on a runner task (a new one only when no
        runner is about to look for a ready call)."""
        self._ready.append(call)
        if len(self._ready) > self._takers:
            self._takers += 1
            self._spawn(self._runner())

    async def _runner(self) -> None:
        """Runs ready calls one after another while there are any. A call that the end of
        another lets start (the dispatcher starts it from ``finished``) runs on the same
        task: no task per run (its creation, the registry of tasks and its done callback
        were a tenth of what a run cost the loop beyond a sync call's, profiled). While it
        runs a call the runner is not a *taker*: ``_start`` then needs another runner."""
        ready = self._ready
        while ready:
            call = ready.popleft()
            self._takers -= 1
            recording = False
            try:
                recording = await self._attempt(call)
            except Exception:
                log.exception("call %s: recording its attempt failed", call.call_id)
            finally:
                if not recording:  # else it reads ``running`` until its final record is kept
                    self._running.pop(call.call_id, None)
                self._takers += 1  # before ``finished``, which may start the next call
                self.dispatcher.finished(call.function)
        self._takers -= 1

    async def _attempt(self, call: Call) -> bool:
        """Runs one attempt and judges it; True when its final record is on its way to the
        store (``_record_finals``)."""
        attempt = call.attempts + 1
        running = ended(call, attempt, "running", None, call.result, call.failure, call.due_at)
        # Not written: ``running`` lives in memory only (``_running``; reads overlay it). A
        # write would buy nothing after a crash, where a running call is queued and run
        # again anyway (at least once), and it was a fifth of the call's store writes. The
        # kept record says ``queued`` with the attempts judged so far, so a call cut by a
        # crash runs again under the same attempt number: a cut attempt, like a deferred
        # one, was never judged and uses none of the call's retries.
        self._running[call.call_id] = running
        request = call.request
        headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in request.headers]
        result: Result | None = None
        failure: Failure | None = None
        try:
            if self.tracer is None:  # the one check tracing costs when it is off
                reply = await self._run(call, attempt, headers)
            else:
                reply = await traced_attempt(
                    self.tracer,
                    headers,
                    call.function,
                    call.call_id,
                    attempt,
                    lambda: self._run(call, attempt, headers),
                    _status,
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
            return False
        except errors.HttpError as exc:
            status = exc.status
            failure = Failure(status, exc.code, exc.message)
        except Exception as exc:  # a bug on the way: the call is retried like a 500
            log.exception("call %s: attempt %d failed", call.call_id, attempt)
            status = 500
            failure = Failure(500, "internal_error", str(exc) or type(exc).__name__)
        return self._settle(running, status, result, failure)

    def _run(self, call: Call, attempt: int, headers: list[Header]) -> Awaitable[Reply]:
        request = call.request
        return self.run(
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

    def _settle(
        self, running: Call, status: int, result: Result | None, failure: Failure | None
    ) -> bool:
        now = self.wall()
        if 200 <= status < 300:  # ``judge``'s first case, without its jitter's draw
            state: State = "succeeded"
            delay = None
        else:
            policy = self._policies.get(running.function, RetryPolicy())
            state, delay = judge(status, running.attempts, policy, self.draw())
        if delay is not None:
            self.metrics.attempt(running.function, "retry")
            again = ended(running, running.attempts, "queued", None, result, failure, now + delay)
            self._write(again, unless_final=True)
            self.dispatcher.add(again)
            return False
        self.metrics.attempt(running.function, _OUTCOME_OF.get(state, "error"))
        final = ended(running, running.attempts, state, now, result, failure, running.due_at)
        self._finals.append(final)
        if len(self._finals) == 1:
            asyncio.get_running_loop().call_soon(self._record_finals)
        return True

    def _record_finals(self) -> None:
        """The final records of the calls that ended during one turn of the loop, in one
        write (a write, its future and its wake-up per call were a good part of what the
        run of an async call cost the loop beyond a sync call's)."""
        finals, self._finals = self._finals, []
        try:
            written = self.store.update_many(finals, unless_final=True)
        except StoreClosed:
            return  # stopping: they are queued in the store and run again at the next start
        self._outcomes.add(written)
        written.add_done_callback(lambda _: self._finals_recorded(finals, written))

    def _finals_recorded(self, finals: list[Call], written: asyncio.Future[list[bool]]) -> None:
        self._outcomes.discard(written)
        for final in finals:
            self._running.pop(final.call_id, None)
        if written.cancelled():
            return  # the service stopped
        if not _ok(written):
            error = written.exception()
            log.error("recording %d final calls failed: %s", len(finals), error)
            return
        told: dict[str, list[Call]] = {}
        finished = self.metrics.finished
        node, tell = self.node, self.peers is not None
        for final, changed in zip(finals, written.result(), strict=True):
            if not changed:
                continue  # it was final already (recorded once)
            self.unfinished -= 1
            finished(final.function, final.state)
            if tell:  # ``_holder_to_tell``, written out for the path every call takes
                origin, holder, _ = final.call_id.split("~", 2)
                if origin == node and holder != node:
                    told.setdefault(holder, []).append(final)
            if final.callback_url is not None:
                self._send_callback(final)
        for holder, calls in told.items():
            self._tell_holder(holder, calls)

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

    def _holder_to_tell(self, call: Call) -> str | None:
        """The holder of the copy of ``call`` if this node is its origin (a taken-over call
        has no other copy to tell)."""
        origin, holder = ids.nodes(call.call_id)
        if self.peers is None or origin != self.node or holder == self.node:
            return None
        return holder

    def _tell_holder(self, holder: str, calls: list[Call]) -> None:
        """Tells ``holder`` how ``calls`` stand, in groups of at most ``OUTCOME_GROUP``."""
        loop = asyncio.get_running_loop()
        for start in range(0, len(calls), OUTCOME_GROUP):
            told: asyncio.Future[None] = loop.create_future()
            self._outcomes.add(told)
            told.add_done_callback(self._outcomes.discard)
            self._send_outcomes(holder, calls[start : start + OUTCOME_GROUP], told, OUTCOME_TRIES)

    def _send_outcomes(
        self, holder: str, calls: list[Call], told: asyncio.Future[None], tries: int
    ) -> None:
        """One try at telling ``holder``; ``told`` resolves when one succeeded or the last
        failed. Callbacks and a timer, not a task (a task was a tenth of what an outcome
        cost the origin's loop, profiled)."""
        assert self.peers is not None
        if told.done():  # the service stopped
            return
        if tries == 0:
            log.info("the outcomes of %d calls did not reach their holder %s", len(calls), holder)
            told.set_result(None)
            return
        loop = asyncio.get_running_loop()
        if holder not in self.peers.members():
            loop.call_later(OUTCOME_RETRY_S, self._send_outcomes, holder, calls, told, tries - 1)
            return

        def sent(future: asyncio.Future[None]) -> None:
            if told.done():
                return
            if future.cancelled() or future.exception() is not None:
                log.debug("outcomes of %d calls to %s failed: %r", len(calls), holder,
                          None if future.cancelled() else future.exception())  # fmt: skip
                loop.call_later(
                    OUTCOME_RETRY_S, self._send_outcomes, holder, calls, told, tries - 1
                )
            else:
                told.set_result(None)

        self.peers.outcomes(holder, calls).add_done_callback(sent)

    # -- the holder's side (``holding.Holding``) -----------------------------------------------

    def take_copies(self, origin: str, calls: Sequence[Call]) -> Awaitable[int]:
        return self.holding.take_copies(origin, calls)

    def take_outcomes(self, origin: str, calls: Sequence[Call]) -> Awaitable[int]:
        return self.holding.take_outcomes(origin, calls)

    async def claim(self, origin: str, epoch: int, call_ids: Sequence[str]) -> list[str]:
        return await self.holding.claim(origin, epoch, call_ids)

    async def take_over(self, origin: str, epoch: int) -> int:
        return await self.holding.take_over(origin, epoch)

    def on_run_gone(self, name: str, epoch: int, down: bool) -> None:
        """The ClusterManager's run watcher (``RunGone``): a dead or departed origin's
        calls are taken over; a suspect keeps them."""
        if down and name != self.node:
            self._spawn(self.holding.take_over(name, epoch))

    def _adopt(self, call: Call) -> None:
        self.unfinished += 1
        self.dispatcher.add(call)

    # -- reads and the operator's retry --------------------------------------------------------

    async def get(self, call_id: str, *, retry: bool = False) -> dict[str, Any]:
        """The call's record (its origin's, else its holder's); with ``retry``, a dead or
        failed call queued again. Raises ``NotFound`` (404: no node that keeps it knows it),
        ``ClusterError`` (503: a live node that may keep it did not answer), ``Conflict``
        (409) or a ``ValueError`` for a malformed id."""
        parsed = ids.parse(call_id)
        kept = self._overlay(self.store.get(call_id))
        if kept is not None and kept.role == "own":
            return await self._retry(kept) if retry else view(kept)
        unanswered: list[str] = []
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
                log.info("asking %s for %s failed: %s", node, call_id, exc)
                unanswered.append(node)
                continue
            if found is not None:
                return found
        if unanswered:
            raise errors.ClusterError(
                f"{', '.join(unanswered)} did not answer for {call_id[:160]!r}; try again",
                retry_after_s=self.settings.retry_after_s,
            )
        raise errors.NotFound(f"no call {call_id[:160]!r} (unknown, or expired)")

    async def get_here(self, call_id: str, retry: bool) -> dict[str, Any] | None:
        """What this node alone keeps of ``call_id`` (for a peer's ``GetCall``)."""
        kept = self._overlay(self.store.get(call_id))
        if kept is None:
            return None
        if retry:
            if kept.role != "own":
                return None
            return await self._retry(kept)
        return view(kept)

    async def _retry(self, call: Call) -> dict[str, Any]:
        if call.state not in ("dead", "failed"):
            raise Conflict(f"the call is {call.state}; only a dead or failed call is retried")
        again = replace(
            call, state="queued", attempts=0, due_at=self.wall(), finished_at=None,
            result=None, failure=None,
            callback_state="pending" if call.callback_url else None, callback_attempts=0,
        )  # fmt: skip
        await self.store.update(again)  # committed before the answer: a GET then sees it
        self.unfinished += 1
        self.dispatcher.add(again)
        holder = self._holder_to_tell(again)
        if holder is not None:
            self._tell_holder(holder, [again])
        return view(again)

    def _overlay(self, kept: Call | None) -> Call | None:
        """``kept`` as its record stands: ``running`` (and its attempt) while it runs here."""
        if kept is None or kept.role != "own" or kept.state != "queued":
            return kept
        running = self._running.get(kept.call_id)
        if running is None:
            return kept
        return replace(kept, state="running", attempts=running.attempts)

    def listed(
        self, state: str | None = None, function: str | None = None, limit: int = 100
    ) -> list[dict[str, Any]]:
        """This node's own calls, newest first (running ones from memory, see ``_attempt``)."""
        if state == "running":
            running = [c for c in self._running.values() if function in (None, c.function)]
            running.sort(key=lambda c: c.accepted_at, reverse=True)
            return [view(c) for c in running[:limit]]
        # A running call is ``queued`` in the store: ask for enough to drop those.
        extra = len(self._running) if state == "queued" else 0
        kept = self.store.listed(state=state, function=function, limit=limit + extra)
        calls = [self._overlay(c) for c in kept]
        return [view(c) for c in calls if c is not None and state in (None, c.state)][:limit]

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


def _ok(future: asyncio.Future[Any]) -> bool:
    return not future.cancelled() and future.exception() is None


def _log_failure(future: asyncio.Future[Any]) -> None:
    if not future.cancelled() and future.exception() is not None:
        log.error("a call store write failed: %s", future.exception())
