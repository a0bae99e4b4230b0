"""Builds one node from its config; every part gets what it needs when it is made.

A standalone node is a runtime, a router that runs every call here, and the HTTP app.

A clustered node (``--gossip``) adds its ``ClusterParts``, built in the order their needs
allow: membership; the ClusterManager actor, this node's one view of the members; the control
plane, which asks the actor (its member view, its roles, the runs it reports gone); the runtime,
whose events reach the metrics and the control plane; the router, whose candidates and homes
come from the control plane and which drops its routes to any run the actor reports gone; the
HTTP app; and, when the node follows a registry, the rollout controller.

Nothing starts here (``lifecycle`` starts and stops the parts, in order). A setting that
cannot work fails now with its field's name, before any socket opens.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from tierfaas import errors
from tierfaas.calls.api import CallsApi
from tierfaas.calls.callbacks import AllowList, CallbackSender, check_callback_url
from tierfaas.calls.local_run import LocalFirst
from tierfaas.calls.logstore import CallLog
from tierfaas.calls.metrics import CallMetrics
from tierfaas.calls.model import Request
from tierfaas.calls.peers import RemotePeers
from tierfaas.calls.schedules import (
    SCHEDULE_TICK_HEADER,
    ScheduleTicker,
    crons_of,
    idempotency_key,
)
from tierfaas.calls.service import CallService, CallSettings
from tierfaas.clock import Clock, LoopScheduler, monotonic
from tierfaas.cluster.manager import ClusterManager
from tierfaas.config import NodeConfig
from tierfaas.control.placement import Wanted
from tierfaas.control.plane import ControlPlane
from tierfaas.funclogs.store import LogSettings, LogStore
from tierfaas.http.app import NodeApp
from tierfaas.http.metrics import Metrics
from tierfaas.keys import derive, load_key
from tierfaas.manifest import Release, load_release
from tierfaas.membership.base import Membership
from tierfaas.membership.meta import KEY_GENERATION
from tierfaas.node.readiness import Readiness
from tierfaas.routing.cache import RouteCache
from tierfaas.routing.router import NEGATIVE_TTL_S, Router, RoutingMetrics
from tierfaas.runtime import Runtime
from tierfaas.secrets.delivery import SecretsDelivery, open_delivery
from tierfaas.supervision import Supervisor

if TYPE_CHECKING:
    from tierfaas.deploy.controller import RolloutController
    from tierfaas.deploy.provider import Provider

# Forwarded requests are signed with a sub-key of the cluster key. A keyless cluster may only
# run on loopback (see config), where a fixed development key is enough.
LOOPBACK_KEY = b"tierfaas-loopback-development-key"


@dataclass(frozen=True, slots=True)
class ClusterParts:
    """What ``--gossip`` adds to a node: all of it, or (a standalone node) none."""

    membership: Membership
    manager: ClusterManager
    control: ControlPlane
    rollout: RolloutController | None
    """The rollout controller, when the node follows a registry (``--registry``)."""


@dataclass(frozen=True, slots=True)
class NodeParts:
    """Everything one node is made of, wired and not started."""

    config: NodeConfig
    release: Release
    metrics: Metrics
    supervisor: Supervisor
    """Runs the node's background tasks: restarts a crashed one, counts it in /metrics, and
    makes /readyz fail while one crash-loops."""
    readiness: Readiness
    runtime: Runtime
    router: Router
    app: NodeApp
    cluster: ClusterParts | None
    calls: CallService | None = None
    """The asynchronous calls: their store (opened when the node starts), dispatcher and
    routes."""
    schedules: ScheduleTicker | None = None
    """Fires the release's cron schedules as async calls while this node is the master (a
    standalone node always is); None when no function has a schedule."""
    secrets: SecretsDelivery | None = None
    """The node's private copy of the secrets its functions list, kept current by polling the
    registry; None when no function lists one."""


def compose(
    config: NodeConfig, release: Release | None = None, clock: Clock = monotonic
) -> NodeParts:
    """The parts of the node ``config`` describes, serving ``release`` (default: the one in
    ``config.release_dir``), every timer of the runtime, router and control plane on ``clock``.
    Raises ``errors.ConfigError`` for a setting that cannot work."""
    release = release or load_release(config.release_dir)
    metrics = Metrics()
    # A provider that cannot work (no API access, a broken state folder) stops the node at
    # start with its reason, not after it joined.
    provider = _provider(config) if config.registry is not None else None
    key = load_key(config.key_file) if config.gossip else None
    rpc = config.rpc_address
    if rpc is not None and key is None and not rpc.is_loopback:
        raise errors.ConfigError("rpc", f"{rpc} is not loopback and no cluster key is set")
    # Every listed secret exists and opens, or the release does not load (naming them).
    secrets = open_delivery(config, release)
    try:
        if config.gossip is None:
            return _standalone(config, release, metrics, clock, secrets)
        return _clustered(config, release, metrics, key, provider, clock, secrets)
    except BaseException:
        if secrets is not None:
            secrets.close()
        raise


def _logs(config: NodeConfig, release: Release) -> LogStore:
    """The functions' logs of this node, in memory and under ``state_dir/logs``."""
    settings = LogSettings(config.logs_lines, config.logs_file_bytes, config.logs_files)
    directory = config.state_dir / "logs"
    return LogStore(config.node_name, release.functions, settings, directory)


def _standalone(
    config: NodeConfig,
    release: Release,
    metrics: Metrics,
    clock: Clock,
    secrets: SecretsDelivery | None = None,
) -> NodeParts:
    supervisor = Supervisor(metrics.registry, clock=clock)
    readiness = Readiness(check_release=config.registry is not None, tasks=supervisor)
    logs = _logs(config, release)
    runtime = Runtime(
        release,
        config,
        listeners=[metrics.on_runtime_event],
        scheduler=LoopScheduler(clock),
        output_sinks=[logs.sink],
        secrets=secrets,
    )
    metrics.watch_keep_alive(runtime.keep_alive)
    metrics.watch_memory(runtime.memory_report)
    router = Router.standalone(runtime, config.node_name, clock)
    app = NodeApp(
        runtime,
        config,
        metrics,
        config.node_name,
        not_ready_reason=readiness.reason,
        cluster_view=_standalone_view(config, release),
        router=router,
        not_ready_fatal=readiness.fatal,
        clock=clock,
    )
    app.logs = logs
    metrics.watch_output(runtime.output_budgets(), logs)
    calls = _calls(config, release, metrics, router, None, clock)
    app.calls = _calls_api(config, release, calls, metrics)
    _tracing(config, release, metrics, app, clock)
    return NodeParts(
        config, release, metrics, supervisor, readiness, runtime, router, app, None, calls,
        _schedules(release, calls, clock), secrets,
    )  # fmt: skip


def _clustered(
    config: NodeConfig,
    release: Release,
    metrics: Metrics,
    key: bytes | None,
    provider: Provider | None,
    clock: Clock,
    secrets: SecretsDelivery | None = None,
) -> NodeParts:
    from tierfaas.membership.kinship_adapter import GossipSettings, KinshipMembership

    assert config.gossip is not None and config.rpc_address is not None  # --gossip sets both
    name = config.node_name
    presets = {"lan": GossipSettings.lan, "large": GossipSettings.large}
    preset = presets.get(config.gossip_preset, GossipSettings.local)
    supervisor = Supervisor(metrics.registry, clock=clock)
    membership = KinshipMembership(
        preset(
            bind=config.gossip,
            seeds=config.join,
            key=key,
            max_members=config.gossip_max_members,
        ),
        name=name,
        version=release.version,
        http=config.http,
        rpc=config.rpc_address,
        generation=config.generation,
        supervisor=supervisor,
    )
    manager = ClusterManager(
        membership,
        registry=metrics.registry,
        replicas=config.replica_policy,  # type: ignore[arg-type]
        supervisor=supervisor,
    )
    # The rollout controller drives the control plane (the handover), and the control plane
    # quiets the controller when this node takes a handover: the controller is made last and
    # ``take_generation`` finds it here by then (it runs only once the node has started).
    rollout: RolloutController | None = None
    generation = config.generation

    async def take_generation(taken: int) -> None:
        """Takes rollout generation ``taken`` (after a handover): gossiped at once, it makes
        this node the master on every node (``tierfaas.topology.rank_key``)."""
        nonlocal generation
        if rollout is not None:
            # The old master still writes the status once (the handover's record).
            rollout.quiet_until = time.monotonic() + 1.0
        generation = max(generation, taken)
        await membership.update_meta(**{KEY_GENERATION: str(generation)})

    control = ControlPlane(
        manager,
        name=name,
        rpc=config.rpc_address,
        lane=config.lane_address,
        key=key,
        window_s=config.batch_window_s,
        clock=clock,
        on_generation=take_generation,
        supervisor=supervisor,
        registry=metrics.registry,
    )
    logs = _logs(config, release)
    runtime = Runtime(
        release,
        config,
        listeners=[metrics.on_runtime_event, control.on_runtime_event],
        scheduler=LoopScheduler(clock),
        output_sinks=[logs.sink],
        secrets=secrets,
    )
    metrics.watch_keep_alive(runtime.keep_alive)
    metrics.watch_memory(runtime.memory_report)
    # min_instances: the master places them (if this node is master), every node keeps its pins.
    control.wanted = {
        name: Wanted(spec.min_instances, spec.max_instances)
        for name, spec in release.functions.items()
        if spec.min_instances
    }
    control.release_version = release.version
    control.pin = runtime.pin
    # A function's idle history travels with the control plane (control/histories.py).
    router = Router(
        runtime,
        self_name=name,
        key=derive(key or LOOPBACK_KEY, "forward"),
        cache=RouteCache(
            clock, config.route_cache_size, config.route_cache_ttl_s, empty_ttl_s=NEGATIVE_TTL_S
        ),
        metrics=RoutingMetrics(metrics.registry),
        lookup=control.lookup,
        homes=control.home if config.cold_starts == "home" else None,
        hop_limit=config.hop_limit,
        hot_forwards_per_s=config.hot_forwards_per_s,
        clock=clock,
        cluster_cache=config.cluster_cache,
    )

    def warm_elsewhere(function: str) -> bool:
        """What the route cache, or this node's own table, knows is warm on another node (no
        network)."""
        return router.warm_elsewhere(function) or control.warm_elsewhere(function)

    if config.cluster_cache:
        # Evict duplicates first.
        runtime.budget.warm_elsewhere = warm_elsewhere
    # A function's idle history travels with the control plane (control/histories.py).
    control.writes.on_history = runtime.adopt_history
    runtime.share_histories(warm_elsewhere, lambda: control.writes.master_keeps_histories)
    # No forwards to a run that is suspect, dead or gone (a suspect's routes come back through
    # the next lookup once it is alive again).
    manager.watch_runs(lambda gone: router.forget_node(gone.name))
    readiness = Readiness(
        check_release=config.registry is not None, membership=membership, tasks=supervisor
    )
    app = NodeApp(
        runtime,
        config,
        metrics,
        name,
        not_ready_reason=readiness.reason,
        cluster_view=manager.snapshot,
        router=router,
        not_ready_fatal=readiness.fatal,
        routes_view=control.routes_view,
        clock=clock,
    )
    app.logs = logs
    metrics.watch_output(runtime.output_budgets(), logs)
    if provider is not None:
        rollout = _rollout_controller(
            config, release, provider, manager, control, membership, supervisor, clock
        )
        control.registry_term = rollout.registry_term  # handovers are fenced by its terms too
    cluster = ClusterParts(membership, manager, control, rollout)
    peers = RemotePeers(
        name=name,
        view=lambda: manager.view,
        epoch=lambda: manager.local.epoch,
        channels=control.channels,
        key=key,
    )
    calls = _calls(config, release, metrics, router, peers, clock)
    app.calls = _calls_api(config, release, calls, metrics)
    _tracing(config, release, metrics, app, clock)
    control.server.calls = calls  # the holder's side: copies, outcomes, claims, reads
    # A dead or departed origin's calls are taken over by the holders of their copies.
    manager.watch_runs(lambda gone: calls.on_run_gone(gone.name, gone.epoch, gone.down))
    return NodeParts(
        config, release, metrics, supervisor, readiness, runtime, router, app, cluster, calls,
        _schedules(release, calls, clock), secrets,
    )  # fmt: skip


def _schedules(release: Release, calls: CallService, clock: Clock) -> ScheduleTicker | None:
    """The ticker of the release's schedules: each tick is an async call keyed by its time,
    so a tick fired twice (by two masters across a failover) runs once."""
    if not crons_of(release.functions):
        return None

    def fire(function: str, tick: float) -> Awaitable[object]:
        header = (SCHEDULE_TICK_HEADER.lower(), str(int(tick)))
        request = Request(b"", headers=(header,))
        return calls.accept(function, request, idem_key=idempotency_key(function, tick))

    return ScheduleTicker(fire, time.time, LoopScheduler(clock))


def _calls(
    config: NodeConfig,
    release: Release,
    metrics: Metrics,
    router: Router,
    peers: RemotePeers | None,
    clock: Clock,
) -> CallService:
    """The node's asynchronous calls: a store in its state dir (not opened here), run
    through ``router`` (where the function is warm), copied to ``peers`` (None: standalone,
    one copy)."""
    store = CallLog(
        config.state_dir / "calls.log",
        keep_s=config.calls_keep_s,
        keep_max=config.calls_keep_max,
    )
    settings = CallSettings(
        queue_max=config.async_queue_max,
        share=config.async_share,
        idempotency_window_s=config.idempotency_window_s,
        retry_base_s=config.retry_base_s,
        retry_cap_s=config.retry_cap_s,
        retry_after_s=float(config.retry_after_s),
    )
    callbacks = CallbackSender(
        AllowList.parse(config.callback_allow),
        retries=config.callback_retries,
        base_s=config.retry_base_s,
        cap_s=config.retry_cap_s,
        scheduler=LoopScheduler(clock),
        timeout_s=config.callback_timeout_s,
        registry=metrics.registry,
        signing_key=_callback_key(config),
    )
    return CallService(
        node=config.node_name,
        store=store,
        functions=release.functions,
        run=LocalFirst(router, router.runtime),
        peers=peers,
        settings=settings,
        scheduler=LoopScheduler(time.time),
        wall=time.time,
        metrics=CallMetrics(metrics.registry),
        callbacks=callbacks,
        clock=clock,
    )


def _calls_api(
    config: NodeConfig, release: Release, calls: CallService, metrics: Metrics
) -> CallsApi:
    return CallsApi(
        calls,
        api_keys={n: spec.api_keys for n, spec in release.functions.items() if spec.api_keys},
        max_body_bytes=config.max_body_bytes,
        check_callback=functools.partial(
            check_callback_url, allow=AllowList.parse(config.callback_allow)
        ),
        on_unauthorized=metrics.unauthorized.labels("api_key").inc,
    )


def _standalone_view(
    config: NodeConfig, release: Release
) -> Callable[[], Awaitable[dict[str, Any]]]:
    """``GET /v1/cluster`` of a node without a cluster: itself, as master."""
    me = {
        "name": config.node_name, "role": "master", "replica": None, "http": str(config.http),
        "rpc": None, "version": release.version, "state": "alive", "epoch": 0,
    }  # fmt: skip

    async def view() -> dict[str, Any]:
        return {
            "self": config.node_name, "master": config.node_name, "standalone": True,
            "members": [dict(me)],
        }  # fmt: skip

    return view


def _provider(config: NodeConfig) -> Provider:
    from tierfaas.deploy.provider import NoProvider

    if config.provider == "none":
        return NoProvider()
    if config.provider == "local":
        from tierfaas.deploy.local import LocalProvider

        assert config.provider_state is not None  # config requires it for this provider
        local = LocalProvider(config.provider_state)
        local.settings()  # raises ProviderError for a missing or damaged folder
        return local
    from tierfaas.deploy.kubernetes import KubernetesProvider

    return KubernetesProvider.from_environment()


def _rollout_controller(
    config: NodeConfig,
    release: Release,
    provider: Provider,
    manager: ClusterManager,
    control: ControlPlane,
    membership: Membership,
    supervisor: Supervisor,
    clock: Clock,
) -> RolloutController:
    from tierfaas.deploy.controller import RolloutController
    from tierfaas.deploy.registry import DirectoryRegistry

    assert config.registry is not None  # a provider is made only for a registry
    return RolloutController(
        name=config.node_name,
        version=release.version,
        registry=DirectoryRegistry(config.registry),
        provider=provider,
        cluster=manager,
        control=control,
        membership=membership,
        poll_s=config.registry_poll_s,
        canaries=config.canaries,
        canary_timeout_s=config.canary_timeout_s,
        clock=clock,
        supervisor=supervisor,
    )


def _callback_key(config: NodeConfig) -> bytes | None:
    """The key that signs callbacks (``--callback-key-file``), None to send them unsigned.
    Raises ``errors.ConfigError`` for a file that cannot be read or is open to others."""
    from tierfaas.http.auth import read_secret_file

    path = config.callback_key_file
    if path is None:
        return None
    return read_secret_file("callback_key_file", path, "the callback key").encode()


def _tracing(
    config: NodeConfig, release: Release, metrics: Metrics, app: NodeApp, clock: Clock
) -> None:
    """With --otlp-endpoint, the app records each call's spans and posts them there."""
    if config.otlp_endpoint is None:
        return
    from tierfaas.tracing.compose import make

    app.tracer, app.span_exporter = make(
        config.otlp_endpoint,
        config.trace_sample,
        config.node_name,
        (release.name, release.version),
        metrics.registry,
        clock,
    )
    if app.calls is not None:  # async calls: their accepts and attempts join the traces
        app.calls.tracer = app.tracer
        app.calls.service.tracer = app.tracer
