"""One tierfaas node's lifecycle: starts the parts ``compose`` built, serves, and stops them.

Start, in this order: check that the host can isolate functions as asked (``run_node``: a
node asked to sandbox them on a host that cannot refuses to start, before anything is built),
run the release's build step and check its exec programs (``tierfaas.deploy.build``, off the
event loop, before anything of the node is reachable, so no call meets a release not yet
built; a failure stops the node with the build's last lines, except on a node that follows a
registry: it starts all the same, fatally not ready with the build's last lines as the reason,
so a rollout sees why and stops at its canaries), bind the HTTP listeners (a busy port fails
before anything starts), the runtime (its zygote), then for a clustered node the
ClusterManager actor, membership (the join), the control plane, the router's peer
connections and the rollout controller; freeze the heap built so far (``gc.freeze``); serve.

Shutdown (SIGTERM or SIGINT), in this order: stop accepting connections (load balancers and
peers move on to other nodes; /readyz says 503), refuse new async calls and start no queued
one, let the async calls running here end and their holders hear so (a clustered node), and
tell the cluster this node is leaving
(gossip *leave*, so peers see it gone within milliseconds instead of declaring it dead
seconds later); serve the calls in flight and those still arriving on open connections,
each answer closing its connection, until ``drain_quiet_s`` passes without one (at most
``drain_timeout_s``); stop the HTTP server, every instance and the zygote, then the cluster
parts in the reverse order of their start; exit 0.
A second SIGINT skips the wait. A node whose name another live node already holds exits 3.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import math
import signal
import time
from collections.abc import Generator

import uvicorn

from tierfaas import native
from tierfaas.calls.schedules import ScheduleTicker, crons_of
from tierfaas.cluster.state import RoleChange
from tierfaas.config import NodeConfig
from tierfaas.deploy.build import prepare_release_async
from tierfaas.errors import BuildFailed, ManifestError
from tierfaas.http.protocol import bounded_protocol
from tierfaas.manifest import Release
from tierfaas.node.compose import ClusterParts, NodeParts, compose
from tierfaas.node.sockets import bind_http, close_http
from tierfaas.sandbox.probe import check_isolation

EXIT_NAME_CONFLICT = 3

log = logging.getLogger("tierfaas.node")
# The collector's young-generation threshold while a node serves (Python's default: 700).
GC_YOUNG_THRESHOLD = 7000


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling: the node decides when to stop."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


def _server(parts: NodeParts) -> _Server:
    return _Server(
        uvicorn.Config(
            parts.app,
            # httptools, with bounds on slow and oversized requests (http/protocol.py)
            # Invocations skip uvicorn's ASGI cycle, unless tracing watches the ASGI messages.
            # uvicorn calls what it is given here with the protocol's arguments: a factory
            # does (typed as a class only).
            http=bounded_protocol(  # type: ignore[arg-type]
                parts.config,
                parts.metrics.http_rejected_by,
                parts.app.serve_call if parts.app.tracer is None else None,
            ),
            ws="none",  # no websockets: an Upgrade request is served as plain HTTP
            loop="none",
            lifespan="off",
            access_log=False,
            proxy_headers=False,
            server_header=False,
            log_level="warning",
            timeout_keep_alive=30,
            timeout_graceful_shutdown=5,
            h11_max_incomplete_event_size=64 * 1024,
        )
    )


class Node:
    """One node: its parts (``tierfaas.node.compose``) and their lifecycle. ``await run()``
    serves until SIGTERM/SIGINT, then drains and returns the process exit code."""

    def __init__(self, config: NodeConfig, release: Release | None = None) -> None:
        self.parts = compose(config, release)
        self.config = config
        self.name = config.node_name
        self.server = _server(self.parts)
        self.stopping: asyncio.Task[None] | None = None
        self.exit_code = 0

    async def run(self) -> int:
        """Serves until SIGTERM/SIGINT, then drains and returns."""
        try:
            return await self._run()
        finally:  # however it ends, no decrypted secret outlives the node (idempotent)
            if self.parts.secrets is not None:
                await asyncio.to_thread(self.parts.secrets.close)

    async def _run(self) -> int:
        parts = self.parts
        if not await self._prepare_release():
            return self.exit_code
        sockets = bind_http(self.config)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.request_stop, sig)
        await parts.runtime.start()
        watches: list[asyncio.Task[None]] = []
        # One-shot jobs: a crash is logged, counted, and leaves the node not ready.
        spawn = parts.supervisor.spawn
        if not parts.readiness.checked:
            root = parts.release.root
            watches.append(
                spawn("release-check", lambda: parts.readiness.check_release(root), restart=False)
            )
        if parts.secrets is not None:
            # New versions of its functions' secrets, polled off the loop on the node's clock.
            secrets_watch = spawn("secrets", parts.secrets.follow)
            watches.append(secrets_watch)
        if parts.cluster is None:
            # A node alone is the whole cluster: it keeps each function's min_instances itself
            # (up to max_instances), for good; in a cluster the master places them.
            wanted = {n: s.min_instances for n, s in parts.release.functions.items()}
            parts.runtime.pin({n: count for n, count in wanted.items() if count}, math.inf)
        if parts.calls is not None:
            # The async calls' store, before the cluster: a holder's copies can arrive as
            # soon as this node is seen.
            await asyncio.to_thread(parts.calls.store.open)
        if parts.cluster is not None:
            await self._start_cluster(parts.cluster)
            cluster = parts.cluster
            watches.append(
                spawn("name-conflict", lambda: self._exit_on_name_conflict(cluster), restart=False)
            )
        if parts.calls is not None:
            # Its unfinished calls run (a clustered node first claims them back from their
            # holders, which may have taken them over while it was away).
            await parts.calls.start(claim=parts.cluster is not None)
        if parts.schedules is not None:
            self._follow_schedules(parts.schedules)
        log.info(
            "node %s serving release %s %s on http://%s (%d functions, isolation %s, call path %s)",
            self.name,
            parts.release.name,
            parts.release.version,
            self.config.http,
            len(parts.release.functions),
            self.config.isolation,
            native.STATE.describe(),
        )
        # What exists now (modules, the release, the parts) lives as long as the node: frozen,
        # out of the collector's sight, so a full collection walks only what serving made. In
        # a side run under wrk (4 x 5 s per function) this halved the GC time per call (an
        # http exec function: 3.9 -> 2.0 µs; stdio: 2.8 -> 1.5 µs) and cut each full
        # collection's pause from 44-88 ms to 2-10 ms.
        gc.freeze()
        # A young collection walks the objects of every call in flight (64 calls: thousands of
        # frames, futures, dicts), nearly all alive, so at the default threshold (700
        # allocations) it walks them again every few calls; at GC_YOUNG_THRESHOLD it does so
        # a tenth as often. Cyclic garbage waits at most that many allocations longer.
        threshold = gc.get_threshold()
        gc.set_threshold(max(threshold[0], GC_YOUNG_THRESHOLD), *threshold[1:])
        try:
            await self.server.serve(sockets=sockets)
        finally:
            gc.unfreeze()  # a node run in a test's process leaves that process as it was
            gc.set_threshold(*threshold)
            if parts.schedules is not None:
                parts.schedules.stop()
            if parts.calls is not None:
                await parts.calls.stop()
            await parts.runtime.close()
            if parts.secrets is not None:  # no instance is left to read them
                secrets_watch.cancel()
                await asyncio.to_thread(parts.secrets.close)
            if parts.app.logs is not None:  # after the instances' last lines
                parts.app.logs.close()
            if parts.app.span_exporter is not None:  # the last calls' spans, within its timeout
                await parts.app.span_exporter.close()
            close_http(self.config, sockets)
            for task in watches:
                task.cancel()
            if parts.cluster is not None:
                await self._stop_cluster(parts.cluster)
            if parts.calls is not None:
                await asyncio.to_thread(parts.calls.store.close)
            log.info("node %s stopped", self.name)
        return self.exit_code

    def _follow_schedules(self, ticker: ScheduleTicker) -> None:
        """The schedules tick on the master alone: a standalone node at once, a clustered
        node while the ClusterManager says it is the master."""
        crons = crons_of(self.parts.release.functions)
        cluster = self.parts.cluster
        if cluster is None:
            ticker.start(crons)
            return

        async def follow(change: RoleChange) -> None:
            if change.new == "master" and not self.draining:
                if not ticker.running:
                    log.info("this node is master: it fires the schedules of %d functions",
                             len(crons))  # fmt: skip
                ticker.start(crons)
            else:
                ticker.stop()

        cluster.manager.subscribe_roles(follow)

    @property
    def draining(self) -> bool:
        return self.stopping is not None

    async def _prepare_release(self) -> bool:
        """Builds the release and checks its exec programs before anything starts; False when
        SIGTERM/SIGINT came first (the build is killed). A failure raises ``BuildFailed`` or
        ``ManifestError``, except on a node that follows a registry, which keeps it as its
        readiness problem (and skips the import check)."""
        loop = asyncio.get_running_loop()
        build = asyncio.ensure_future(
            prepare_release_async(self.parts.release, timeout_s=self.config.build_timeout_s)
        )
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, build.cancel)
        try:
            await build
        except asyncio.CancelledError:
            if not build.cancelled():
                raise
            log.info("node %s stopped while building its release", self.name)
            return False
        except (BuildFailed, ManifestError) as exc:
            if self.parts.readiness.checked:  # no release check: the node does not start
                raise
            reason = exc.summary() if isinstance(exc, BuildFailed) else str(exc)
            self.parts.readiness.fail(reason)
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)
        return True

    async def _start_cluster(self, cluster: ClusterParts) -> None:
        await cluster.manager.start()  # subscribes to membership events before the join
        await cluster.membership.start()
        await cluster.control.start()
        await self.parts.router.start()
        if cluster.rollout is not None:
            cluster.rollout.start()

    async def _stop_cluster(self, cluster: ClusterParts) -> None:
        if cluster.rollout is not None:
            await cluster.rollout.stop()
        await self.parts.router.close()
        await cluster.control.stop()
        await cluster.manager.stop()
        await cluster.membership.close()

    async def _exit_on_name_conflict(self, cluster: ClusterParts) -> None:
        await cluster.manager.name_conflict.wait()
        log.error(
            "another live node is named %r: exiting; give this node its own --name", self.name
        )
        self.exit_code = EXIT_NAME_CONFLICT
        self.request_stop()

    def request_stop(self, sig: int = signal.SIGTERM) -> None:
        if self.stopping is None:
            log.info(
                "%s: draining (up to %g s)", signal.Signals(sig).name, self.config.drain_timeout_s
            )
            self.stopping = asyncio.get_running_loop().create_task(self._drain_and_stop())
        elif sig == signal.SIGINT:
            log.warning("second SIGINT: stopping without waiting for calls in flight")
            self.server.should_exit = True
            self.server.force_exit = True

    async def _drain_and_stop(self) -> None:
        """SPEC 7.4. Stop taking connections (load balancers and peers move on at once),
        leave the gossip, finish the calls in flight and serve those still arriving on open
        connections (each answer closes its connection), then exit once quiet. A drain that
        fails is logged and the node stops anyway: nobody awaits this task, and a node told
        to stop must not go on serving because its goodbye raised."""
        try:
            await self._drain()
        except Exception:
            log.exception("draining failed: stopping now")
        finally:
            self.server.should_exit = True

    async def _drain(self) -> None:
        app = self.parts.app
        app.draining = True
        if self.parts.schedules is not None:
            self.parts.schedules.stop()  # the next master catches up on the ticks
        calls = self.parts.calls
        if calls is not None:
            # Async calls: new ones are refused (503, the client goes elsewhere), queued ones
            # wait here for the holders, which take them over once this node's leave is seen.
            calls.draining = True
            calls.dispatcher.paused = True
        self.parts.metrics.draining.set(1)
        for listener in getattr(self.server, "servers", []):
            listener.close()
        deadline = time.monotonic() + self.config.drain_timeout_s
        if self.parts.cluster is not None:
            if calls is not None:
                # The async calls running here end, and their holders hear so, before the
                # leave: a holder takes over only what is still queued, so the drain runs
                # nothing twice. Peers still see this node alive meanwhile (and it serves).
                await calls.finish_running(self.config.drain_timeout_s)
            # Then leave: peers stop sending work here within milliseconds.
            await self.parts.cluster.membership.leave(timeout=2.0)
        quiet = self.config.drain_quiet_s
        while time.monotonic() < deadline and (
            app.in_flight
            or time.monotonic() - app.last_call < quiet
            or (calls is not None and calls.dispatcher.running_total)
        ):
            await asyncio.sleep(0.02)
        if app.in_flight:
            log.warning("drain timeout: %d calls still in flight are cut", app.in_flight)


def run_node(config: NodeConfig) -> int:
    """Runs a node on uvloop until it is told to stop; returns the process exit code.
    Raises ``SandboxUnavailable``, before anything is built or started, when the config asks
    for the sandbox on a host that cannot give it (``tierfaas.sandbox.probe``)."""
    import uvloop

    check_isolation(config.isolation, config.cgroup_root)
    node = Node(config)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(node.run())
