"""The supervisor of ``tierfaas up``: one process that starts, follows and stops a cluster.

1. ``prepare()``: everything that can fail with a clear message before any process starts:
   the options, a host that cannot sandbox functions (``--isolation``), the registry and its
   release, the release's build step (run once here, in the registry's folder of the
   version, so a broken build fails at once with its last lines), the front-door port,
   another supervisor on the same state folder; then the state folder (mode 700) and a
   fresh cluster key in it (``cluster.key``, mode 600; kept instead when the registry holds
   secrets, which are sealed with it), handed to the nodes in ``TIERFAAS_CLUSTER_KEY``
   (never on a command line);
2. starts N ``tierfaas node`` processes through the local provider, one per loopback
   address, each in its own session and told to get SIGTERM should this process die;
3. starts the front door: the built-in L4 proxy (:mod:`tierfaas.up.frontdoor`, in this
   process) or nginx (:mod:`tierfaas.up.nginx`, ``--lb nginx``);
4. waits until every node is ready (``/readyz``) and all agree on a master (``/v1/cluster``),
   writes the state file (:mod:`tierfaas.up.state`) and prints a welcome;
5. follows the nodes (a rollout replaces them all) and keeps the front door and the state
   file in step;
6. on SIGINT (Ctrl-C) or SIGTERM (``tierfaas down``): SIGTERM to every node (each leaves the
   cluster and drains), waits for them (SIGKILL to a node's session past the drain timeout),
   then stops the front door, and removes the state file. Nothing is left behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tierfaas.config import NodeConfig
from tierfaas.deploy.local import LocalProvider, LocalSettings, NodeRecord
from tierfaas.deploy.provider import ProviderError
from tierfaas.deploy.registry import DirectoryRegistry
from tierfaas.errors import BuildFailed, ManifestError
from tierfaas.keys import generate_key
from tierfaas.manifest import Release
from tierfaas.procs import alive, become_subreaper, killpg, start_time
from tierfaas.up.frontdoor import FrontDoor, http_get
from tierfaas.up.nginx import NginxProcess
from tierfaas.up.options import (
    UpOptions,
    check_host_isolation,
    check_port_free,
    listen_on,
    node_hosts,
    pick_cluster_port,
)
from tierfaas.up.state import (
    KEY_FILE,
    STATE_FILE,
    UpError,
    refuse_if_running,
    welcome,
    write_json_atomic,
)


def log_tail(path: Path | str, chars: int = 2000) -> str:
    try:
        return Path(path).read_text(errors="replace")[-chars:]
    except OSError:
        return ""


def _address(http: str) -> tuple[str, int]:
    host, _, port = http.rpartition(":")
    return host, int(port)


def _empty_but_secrets(root: Path) -> None:
    """Removes everything in the registry folder ``root`` but its secrets."""
    from tierfaas.secrets.store import FOLDER

    if not root.is_dir():
        return
    for entry in root.iterdir():
        if entry.name == FOLDER:
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                entry.unlink()


class Supervisor:
    def __init__(
        self,
        options: UpOptions,
        say: Callable[[str], None] = print,
        *,
        detached: bool = False,
    ) -> None:
        self.options = options
        self.say = say
        self.detached = detached
        self.state_dir = options.state_dir.resolve()
        self.logs = self.state_dir / "logs"
        self.key_path = self.state_dir / KEY_FILE
        self.provider = LocalProvider(self.state_dir / "provider")
        self.registry = DirectoryRegistry(options.registry or self.state_dir / "registry")
        self.version = ""
        self.first_names: list[str] = []  # the nodes started by this supervisor
        self.nodes: list[NodeRecord] = []  # alive now, refreshed by ``refresh()``
        self._backends: list[tuple[str, int]] = []
        self.door: FrontDoor | None = None
        self.nginx: NginxProcess | None = None
        self.stop_requested = asyncio.Event()
        self.release_label = ""
        self.try_function = "hello"
        self._listener: socket.socket | None = None

    @property
    def url(self) -> str:
        return f"http://{self.options.host}:{self.options.port}"

    # -- preparation ----------------------------------------------------------------------------

    def prepare(self) -> None:
        """Everything that can fail with a clear message before any process starts."""

        options = self.options
        options.validate()
        check_host_isolation(options.isolation)
        release = self._prepare_registry()
        self._build(release)
        self.version = release.version
        self.release_label = f"release {release.name} {release.version}"
        if "hello" not in release.functions and release.functions:
            self.try_function = sorted(release.functions)[0]
        if options.lb == "nginx" and not os.access(options.nginx, os.X_OK):
            raise UpError(
                f"--lb nginx: {options.nginx} is not installed "
                "(apt-get install nginx), or use the built-in front door",
                2,
            )
        self.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        refuse_if_running(self.state_dir)
        if options.lb == "builtin":
            self._listener = listen_on(options.host, options.port)
        else:
            check_port_free(options.host, options.port)
        self.logs.mkdir(exist_ok=True)
        if self._keeps_key():
            return
        with contextlib.suppress(FileNotFoundError):
            self.key_path.unlink()
        fd = os.open(self.key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(generate_key() + "\n")

    def _keeps_key(self) -> bool:
        """Whether the state folder's key stays: when the registry holds secrets, which are
        sealed with it ('tierfaas secret create' uses it); else every start makes a new one."""
        from tierfaas.secrets.store import SecretStore

        return self.key_path.is_file() and bool(SecretStore(self.registry.root).names())

    def _prepare_registry(self) -> Release:
        """The release the nodes start with: the registry's desired version. Without
        --registry, ``up`` keeps its own registry in the state folder, made afresh from
        --release on every start (its secrets kept); a given registry keeps its desired
        version, and gets --release published (and desired) only if it has none yet."""
        from tierfaas.deploy.registry import RegistryError

        own = self.options.registry is None
        try:
            if own:
                _empty_but_secrets(self.registry.root)
            if own or self.registry.desired() is None:
                self.registry.publish(self.options.release)
            desired = self.registry.desired()
            assert desired is not None
            return self.registry.load(desired)
        except RegistryError as exc:
            raise UpError(str(exc), 2) from None

    def _build(self, release: Release) -> None:
        """Runs the release's build step once, in its registry folder, before any node starts:
        a broken build fails here with its last lines. Each node runs it again when it loads
        the release (one at a time; an idempotent build finds nothing left to do)."""
        from tierfaas.deploy.build import prepare_release

        if release.build:
            self.say(f"building release {release.name} {release.version}: {list(release.build)}")
        try:
            prepare_release(release, timeout_s=NodeConfig.default_of("build_timeout_s"))
        except (BuildFailed, ManifestError) as exc:
            raise UpError(str(exc), 2) from None

    # -- nodes ------------------------------------------------------------------------------------

    def start_nodes(self) -> None:
        options = self.options
        hosts = node_hosts(options.first_host, options.nodes)
        cluster_port = pick_cluster_port(hosts)
        settings = LocalSettings(
            registry=str(self.registry.root.resolve()),
            key_file=str(self.key_path),
            cluster_port=cluster_port,
            first_host=options.first_host,
            seeds=[f"{h}:{cluster_port}" for h in hosts[: min(3, len(hosts))]],
            drain_timeout_s=options.drain_timeout_s,
            log_level=options.log_level,
            unix_sockets=True,  # for nginx (--lb nginx, or one started beside the cluster)
            extra_args=[
                "--registry-poll-s", f"{options.registry_poll_s:g}",
                "--canaries", str(options.canaries),
                "--isolation", options.isolation,
            ],
        )  # fmt: skip
        self.provider = LocalProvider.create(self.state_dir / "provider", settings)
        try:
            self.first_names = self.provider.launch_now(
                self.version, 0, options.nodes, die_with_launcher=True
            )
        except ProviderError as exc:
            raise UpError(str(exc)) from None
        self.refresh()

    def refresh(self) -> list[NodeRecord]:
        """The nodes alive now (a rollout adds and removes some); reaps exited children."""
        with contextlib.suppress(ChildProcessError):
            while os.waitpid(-1, os.WNOHANG)[0] > 0:  # orphans re-parented to this subreaper
                pass
        self.nodes = self.provider.records()
        return self.nodes

    def _check_nodes_alive(self) -> None:
        alive_names = {r.name for r in self.refresh()}
        for name in self.first_names:
            if name not in alive_names:
                path = self.provider.logs_dir / f"{name}.log"
                raise UpError(
                    f"node {name} exited while starting; its log ({path}) ends with:\n"
                    f"{log_tail(path)}"
                )

    async def _cluster_ready(self) -> str | None:
        """The master's name when every node is ready and all agree on it, else None."""
        masters = set()
        for node in self.nodes:
            host, port = _address(node.http)
            try:
                status, _ = await http_get(host, port, "/readyz")
                if status != 200:
                    return None
                status, body = await http_get(host, port, "/v1/cluster")
            except (OSError, TimeoutError):
                return None
            if status != 200:
                return None
            view = json.loads(body)
            if len(view.get("members", [])) != len(self.nodes) or not view.get("master"):
                return None
            masters.add(view["master"])
        return masters.pop() if len(masters) == 1 else None

    async def wait_ready(self) -> str:
        deadline = time.monotonic() + self.options.ready_timeout_s
        while True:
            self._check_nodes_alive()
            master = await self._cluster_ready()
            if master is not None:
                return master
            if time.monotonic() > deadline:
                raise UpError(
                    f"the cluster was not ready within {self.options.ready_timeout_s:g} s; "
                    f"node logs are in {self.logs}"
                )
            if self.stop_requested.is_set():
                raise UpError("interrupted while starting", 130)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stop_requested.wait(), 0.1)

    # -- the front door ---------------------------------------------------------------------------

    def _serving(self) -> list[tuple[str, int]]:
        return [_address(n.http) for n in self.nodes if n.phase == "running"]

    async def start_front_door(self) -> None:
        backends = self._serving()
        self._backends = backends
        if self.options.lb == "builtin":
            assert self._listener is not None
            self.door = await FrontDoor(backends).start(sock=self._listener)
            return
        self.nginx = NginxProcess(
            self.options.nginx,
            self.state_dir / "nginx",
            self.options.host,
            self.options.port,
            self.logs / "nginx.log",
        )
        await self.nginx.start(self.nodes)

    def sync_front_door(self) -> None:
        """Points the front door at the nodes serving now: a rollout replaces every node,
        and a draining node is dropped before it stops listening."""
        backends = self._serving()
        if not backends or backends == self._backends:
            return
        self._backends = backends
        if self.door is not None:
            self.door.set_backends(backends)
        elif self.nginx is not None:
            self.nginx.reload(self.nodes)

    async def stop_front_door(self) -> None:
        if self.door is not None:
            await self.door.close()
            self.door = None
        if self._listener is not None:
            self._listener.close()
        if self.nginx is not None:
            nginx, self.nginx = self.nginx, None
            await nginx.stop()

    # -- state ------------------------------------------------------------------------------------

    def state(self, status: str, master: str | None = None) -> dict[str, Any]:
        me = os.getpid()
        return {
            "status": status,
            "url": self.url,
            "host": self.options.host,
            "port": self.options.port,
            "lb": self.options.lb,
            "release": self.release_label,
            "try_function": self.try_function,
            "state_dir": str(self.state_dir),
            "key_file": str(self.key_path),
            "detached": self.detached,
            "master": master,
            "supervisor": {"pid": me, "start_time": start_time(me)},
            "nginx": (
                {"pid": self.nginx.pid, "start_time": start_time(self.nginx.pid)}
                if self.nginx is not None
                else None
            ),
            "registry": str(self.registry.root),
            "provider_state": str(self.provider.state_dir),
            "nodes": [
                {
                    "name": n.name,
                    "http": n.http,
                    "version": n.version,
                    "pid": n.pid,
                    "start_time": n.start_time,
                    "log": n.log,
                }
                for n in self.nodes
            ],
        }

    # -- the whole run ----------------------------------------------------------------------------

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self.stop_requested.set)
        # Nodes whose launcher exits (a master at the end of a rollout) become this
        # process's children, reaped by refresh(), instead of init's.
        become_subreaper()
        state_path = self.state_dir / STATE_FILE
        try:
            self.start_nodes()
            write_json_atomic(state_path, self.state("starting"))
            await self.start_front_door()
            write_json_atomic(state_path, self.state("starting"))
            self.say(
                f"starting {len(self.first_names)} nodes ({self.release_label}); waiting until "
                "they are ready and agree on a master"
            )
            master = await self.wait_ready()
            if self.door is not None:
                # Its periodic checks may still remember nodes answering 503 while they
                # started (joining, checking their release): ask again before saying ready.
                await self.door.check_all()
            state = self.state("ready", master)
            write_json_atomic(state_path, state)
            self.say(welcome(state))
            await self.supervise(master)
            return 0
        finally:
            await self.stop()
            with contextlib.suppress(FileNotFoundError):
                state_path.unlink()

    async def supervise(self, master: str | None = None) -> None:
        """Until asked to stop: follows the nodes (a rollout replaces them all), keeps the
        front door and the state file in step, and reaps what exits."""
        state_path = self.state_dir / STATE_FILE
        known = {n.name for n in self.nodes}
        while not self.stop_requested.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stop_requested.wait(), 0.25)
            records = self.refresh()
            names = {n.name for n in records}
            if names != known:
                for name in sorted(known - names):
                    self.say(f"node {name} is gone")
                for record in records:
                    if record.name not in known:
                        self.say(f"node {record.name} started ({record.version})")
                known = names
                write_json_atomic(state_path, self.state("ready", master))
            self.sync_front_door()
            if self.nginx is not None and self.nginx.returncode is not None:
                self.say(f"[red]nginx exited with {self.nginx.returncode}[/]: stopping")
                self.stop_requested.set()

    async def stop(self) -> None:
        """SIGTERM to every node (they leave and drain), then the front door."""
        self.provider.stop_launching()  # a master mid-rollout must not start new nodes now
        running = self.refresh()
        if running:
            self.say(f"stopping: {len(running)} nodes leave the cluster and drain...")
        for node in running:
            self.provider.terminate_now(node.name)
        grace = self.options.drain_timeout_s + 10.0
        deadline = time.monotonic() + grace
        while self.refresh() and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        for node in running:
            if alive(node.pid, node.start_time):
                self.say(f"[yellow]node {node.name} did not stop in {grace:g} s: killed[/]")
            # The node's session: its zygote and instances, should any have outlived it.
            killpg(node.pid, signal.SIGKILL)
        self.refresh()
        await self.stop_front_door()
        if running:
            self.say("stopped: every node and the front door are gone")


def run_up(options: UpOptions, say: Callable[[str], None], *, detached: bool = False) -> int:
    """Runs a cluster in the foreground until Ctrl-C or SIGTERM; returns the exit code."""
    import uvloop

    supervisor = Supervisor(options, say, detached=detached)
    supervisor.prepare()
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(supervisor.run())


def say_to(console: Any) -> Callable[[str], None]:
    def say(text: str) -> None:
        console.print(text, highlight=False, soft_wrap=True)

    return say


__all__ = ["Supervisor", "run_up", "say_to"]
