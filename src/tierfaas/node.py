"""One tierfaas node: composes the runtime, the HTTP server and (with ``--gossip``) cluster
membership with the ClusterManager actor, and owns their lifecycle.

Shutdown (SIGTERM or SIGINT), in this order: stop accepting connections (load balancers and
peers move on to other nodes; /readyz says 503) and tell the cluster this node is leaving
(gossip *leave*, so peers see it gone within milliseconds instead of declaring it dead
seconds later); serve the calls in flight and those still arriving on open connections,
each answer closing its connection, until ``drain_quiet_s`` passes without one (at most
``drain_timeout_s``); stop the HTTP server, every instance and the zygote; exit 0.
A second SIGINT skips the wait. A node whose name another live node already holds exits 3.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import stat
import time
from collections.abc import Generator
from pathlib import Path
from typing import TYPE_CHECKING

import uvicorn

from tierfaas import errors
from tierfaas.cluster.manager import ClusterManager
from tierfaas.config import NodeConfig
from tierfaas.control.plane import ControlPlane
from tierfaas.http.app import NodeApp
from tierfaas.http.metrics import Metrics
from tierfaas.http.protocol import bounded_protocol
from tierfaas.keys import derive, load_key
from tierfaas.manifest import Release, load_release
from tierfaas.membership.base import Membership
from tierfaas.membership.meta import KEY_GENERATION
from tierfaas.routing.cache import RouteCache
from tierfaas.routing.router import Router, RoutingMetrics
from tierfaas.runtime import Runtime

if TYPE_CHECKING:
    from tierfaas.deploy.controller import RolloutController
    from tierfaas.deploy.provider import Provider

EXIT_NAME_CONFLICT = 3

log = logging.getLogger(__name__)


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling: the node decides when to stop."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


def bind_tcp(address: str, port: int, field: str) -> socket.socket:
    """Binds a listening socket now, so a busy port is a clear error before anything starts."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((address, port))
    except OSError as exc:
        sock.close()
        raise errors.ConfigError(
            field, f"cannot listen on {address}:{port}: {exc.strerror}"
        ) from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def bind_unix(path: Path, field: str) -> socket.socket:
    """Binds a listening Unix socket (mode 600: only this user's load balancer may connect).
    A socket file left by a node that died is replaced; one a live node answers on is not."""
    if path.exists() or path.is_symlink():
        if not stat.S_ISSOCK(path.lstat().st_mode):
            raise errors.ConfigError(field, f"{path} exists and is not a socket")
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(str(path))
        except OSError:
            path.unlink()  # nobody listens: left over from a node that died
        else:
            raise errors.ConfigError(field, f"another process listens on {path}")
        finally:
            probe.close()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old_umask = os.umask(0o177)
    try:
        sock.bind(str(path))
    except OSError as exc:
        sock.close()
        raise errors.ConfigError(field, f"cannot listen on {path}: {exc.strerror}") from None
    finally:
        os.umask(old_umask)
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


class Node:
    def __init__(self, config: NodeConfig, release: Release | None = None) -> None:
        self.config = config
        self.release = release or load_release(config.release_dir)
        self.name = config.node_name
        self.metrics = Metrics()
        self.runtime = Runtime(self.release, config, listeners=[self.metrics.on_runtime_event])
        self.app = NodeApp(
            self.runtime,
            config,
            self.metrics,
            self.name,
            not_ready_reason=self._not_ready_reason,
            cluster_view=self._cluster_view,
        )
        self.server: _Server | None = None
        self.stopping: asyncio.Task[None] | None = None
        self.exit_code = 0
        self.membership: Membership | None = None
        self.cluster: ClusterManager | None = None
        self.control: ControlPlane | None = None
        self._conflict_watch: asyncio.Task[None] | None = None
        self.router: Router | None = None
        self.rollout: RolloutController | None = None
        self.generation = config.generation
        # A node that follows a registry checks that its release imports before it says it
        # is ready: a rollout to a broken release must stop at its canaries.
        self.release_problem: str | None = None
        self.release_checked = config.registry is None
        self._preflight: asyncio.Task[None] | None = None
        # Built before any socket opens: a provider that cannot work (no API access, a broken
        # state folder) stops the node at start with its reason, not after it joined.
        self.provider = self._provider() if config.registry is not None else None
        self.app.not_ready_fatal = lambda: self.release_problem is not None
        self.key = load_key(config.key_file) if config.gossip else None
        self._gossip_settings = self._gossip() if config.gossip else None
        rpc = config.rpc_address
        if rpc is not None and self.key is None and not rpc.is_loopback:
            raise errors.ConfigError("rpc", f"{rpc} is not loopback and no cluster key is set")

    def _gossip(self) -> object:
        """Validated gossip settings (a ConfigError now beats a failure after binding)."""
        from tierfaas.membership.kinship_adapter import GossipSettings

        config = self.config
        assert config.gossip is not None
        preset = GossipSettings.lan if config.gossip_preset == "lan" else GossipSettings.local
        return preset(bind=config.gossip, seeds=config.join, key=self.key)

    async def _start_cluster(self) -> None:
        from tierfaas.membership.kinship_adapter import GossipSettings, KinshipMembership

        assert isinstance(self._gossip_settings, GossipSettings)
        self.membership = KinshipMembership(
            self._gossip_settings,
            name=self.name,
            version=self.release.version,
            http=self.config.http,
            rpc=self.config.rpc_address,
            generation=self.config.generation,
        )
        self.cluster = ClusterManager(
            self.membership,
            registry=self.metrics.registry,
            replicas=self.config.replica_policy,  # type: ignore[arg-type]
        )
        await self.cluster.start()
        await self.membership.start()
        await self._start_control_plane()
        conflict = self.cluster.name_conflict

        async def exit_on_name_conflict() -> None:
            await conflict.wait()
            log.error(
                "another live node is named %r: exiting; give this node its own --name", self.name
            )
            self.exit_code = EXIT_NAME_CONFLICT
            self.request_stop()

        self._conflict_watch = asyncio.get_running_loop().create_task(exit_on_name_conflict())

    async def _start_control_plane(self) -> None:
        assert self.membership is not None and self.cluster is not None
        rpc = self.config.rpc_address
        assert rpc is not None
        config = self.config
        # Forwarded requests are signed with a sub-key of the cluster key. A keyless cluster
        # may only run on loopback (see config), where a fixed development key is enough.
        forward_key = derive(self.key or b"tierfaas-loopback-development-key", "forward")
        self.router = Router(
            self.runtime,
            self_name=self.name,
            key=forward_key,
            cache=RouteCache(time.monotonic, config.route_cache_size, config.route_cache_ttl_s),
            metrics=RoutingMetrics(self.metrics.registry),
            hop_limit=config.hop_limit,
            hot_forwards_per_s=config.hot_forwards_per_s,
        )
        self.control = ControlPlane(
            self.membership,
            name=self.name,
            rpc=rpc,
            lane=config.lane_address,
            key=self.key,
            warm_functions=self._warm_functions,
            on_node_gone=self.router.forget_node,
            window_s=config.batch_window_s,
            on_generation=self._publish_generation,
        )
        self.router.lookup = self.control.lookup
        if config.cold_starts == "home":
            self.router.homes = self.control.home
        await self.control.start()
        await self.router.start()
        self.runtime.listeners.append(self.control.writes.on_event)
        self.app.router = self.router
        self.app.routes_view = self.control.routes_view
        self.cluster.subscribe_roles(self.control.on_role_change)
        if self.provider is not None:
            self.rollout = self._rollout_controller()
            self.rollout.start()

    def _rollout_controller(self) -> RolloutController:
        from tierfaas.deploy.controller import RolloutController
        from tierfaas.deploy.registry import DirectoryRegistry

        config = self.config
        assert config.registry is not None and self.cluster is not None
        assert self.control is not None and self.membership is not None
        assert self.provider is not None
        return RolloutController(
            name=self.name,
            version=self.release.version,
            registry=DirectoryRegistry(config.registry),
            provider=self.provider,
            cluster=self.cluster,
            control=self.control,
            membership=self.membership,
            poll_s=config.registry_poll_s,
            canaries=config.canaries,
            canary_timeout_s=config.canary_timeout_s,
        )

    def _provider(self) -> Provider:
        from tierfaas.deploy.provider import NoProvider

        if self.config.provider == "none":
            return NoProvider()
        if self.config.provider == "local":
            from tierfaas.deploy.local import LocalProvider

            assert self.config.provider_state is not None
            local = LocalProvider(self.config.provider_state)
            local.settings()  # raises ProviderError for a missing or damaged folder
            return local
        from tierfaas.deploy.kubernetes import KubernetesProvider

        return KubernetesProvider.from_environment()

    async def _publish_generation(self, generation: int) -> None:
        """Takes rollout ``generation`` (after a handover): gossiped at once, it makes this
        node the master on every node (``tierfaas.topology.rank_key``)."""
        assert self.membership is not None
        if self.rollout is not None:
            self.rollout.quiet_until = time.monotonic() + 1.0
        self.generation = max(self.generation, generation)
        await self.membership.update_meta(**{KEY_GENERATION: str(self.generation)})

    async def _check_release(self) -> None:
        from tierfaas.deploy.preflight import run_preflight

        self.release_problem = await run_preflight(self.release.root)
        self.release_checked = True
        if self.release_problem:
            log.error("this node cannot serve its release: %s", self.release_problem)

    def _warm_functions(self) -> list[str]:
        return [name for name, pool in self.runtime.pools.items() if pool.registered]

    def _not_ready_reason(self) -> str | None:
        if self.release_problem is not None:
            return self.release_problem
        if not self.release_checked:
            return "checking that the release imports"
        if self.membership is not None and not self.membership.joined:
            return f"not joined to the cluster: {self.membership.join_reason}"
        return None

    async def _cluster_view(self) -> dict[str, object]:
        if self.cluster is not None:
            return await self.cluster.snapshot()
        http = str(self.config.http)
        me = {
            "name": self.name, "role": "master", "replica": None, "http": http, "rpc": None,
            "version": self.release.version, "state": "alive", "epoch": 0,
        }  # fmt: skip
        return {"self": self.name, "master": self.name, "standalone": True, "members": [me]}

    async def run(self) -> int:
        """Serves until SIGTERM/SIGINT, then drains and returns."""
        sockets = [bind_tcp(self.config.http.host, self.config.http.port, "http")]
        unix_path = self.config.http_unix
        if unix_path is not None:
            try:
                sockets.append(bind_unix(unix_path, "http_unix"))
            except errors.ConfigError:
                sockets[0].close()
                raise
        self.server = _Server(
            uvicorn.Config(
                self.app,
                # httptools, with bounds on slow and oversized requests (http/protocol.py)
                http=bounded_protocol(self.config, self.metrics.http_rejected_by),
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
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.request_stop, sig)
        await self.runtime.start()
        if not self.release_checked:
            self._preflight = loop.create_task(self._check_release())
        if self._gossip_settings is not None:
            await self._start_cluster()
        log.info(
            "node %s serving release %s %s on http://%s (%d functions)",
            self.name,
            self.release.name,
            self.release.version,
            self.config.http,
            len(self.release.functions),
        )
        try:
            await self.server.serve(sockets=sockets)
        finally:
            await self.runtime.close()
            for sock in sockets:
                sock.close()
            if unix_path is not None:
                with contextlib.suppress(FileNotFoundError):
                    unix_path.unlink()
            if self._conflict_watch is not None:
                self._conflict_watch.cancel()
            if self._preflight is not None:
                self._preflight.cancel()
            if self.rollout is not None:
                await self.rollout.stop()
            if self.router is not None:
                await self.router.close()
            if self.control is not None:
                await self.control.stop()
            if self.cluster is not None:
                await self.cluster.stop()
            if self.membership is not None:
                await self.membership.close()
            log.info("node %s stopped", self.name)
        return self.exit_code

    def request_stop(self, sig: int = signal.SIGTERM) -> None:
        if self.stopping is None:
            log.info(
                "%s: draining (up to %g s)", signal.Signals(sig).name, self.config.drain_timeout_s
            )
            self.stopping = asyncio.get_running_loop().create_task(self._drain_and_stop())
        elif sig == signal.SIGINT and self.server is not None:
            log.warning("second SIGINT: stopping without waiting for calls in flight")
            self.server.should_exit = True
            self.server.force_exit = True

    async def _drain_and_stop(self) -> None:
        """SPEC 7.4. Stop taking connections (load balancers and peers move on at once),
        leave the gossip, finish the calls in flight and serve those still arriving on open
        connections (each answer closes its connection), then exit once quiet."""
        self.app.draining = True
        self.metrics.draining.set(1)
        if self.server is not None:
            for listener in getattr(self.server, "servers", []):
                listener.close()
        if self.membership is not None:
            # Leave first: peers stop sending work here within milliseconds.
            await self.membership.leave(timeout=2.0)
        deadline = time.monotonic() + self.config.drain_timeout_s
        quiet = self.config.drain_quiet_s
        while time.monotonic() < deadline and (
            self.app.in_flight or time.monotonic() - self.app.last_call < quiet
        ):
            await asyncio.sleep(0.02)
        if self.app.in_flight:
            log.warning("drain timeout: %d calls still in flight are cut", self.app.in_flight)
        if self.server is not None:
            self.server.should_exit = True


def run_node(config: NodeConfig) -> int:
    """Runs a node on uvloop until it is told to stop; returns the process exit code."""
    import uvloop

    node = Node(config)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(node.run())
