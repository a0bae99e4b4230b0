"""``tierfaas up`` / ``tierfaas down``: a whole local cluster in one command.

The supervisor (this module, one process):

1. checks the front-door port is free (a busy port is a one-line error, exit 2), makes the
   state dir (mode 700) and a fresh cluster key in it (``cluster.key``, mode 600), handed to
   the nodes in ``TIERFAAS_CLUSTER_KEY`` (never on a command line);
2. starts N ``tierfaas node`` processes, one per loopback address (127.0.0.101, .102, ... by
   default), each in its own session, the ``local`` gossip preset and every node the same
   seed list; their output goes to ``STATE_DIR/logs/``;
3. starts the front door on 127.0.0.1:PORT: the built-in L4 round-robin proxy
   (:mod:`tierfaas.frontdoor`, in this process) or Debian's nginx with the config of
   :mod:`tierfaas.lbconfig` (``--lb nginx``);
4. waits until every node is ready (``/readyz``) and all agree on a master (``/v1/cluster``),
   writes ``STATE_DIR/cluster.json`` (pids, addresses, key path) and prints a welcome;
5. on SIGINT (Ctrl-C) or SIGTERM (``tierfaas down``): SIGTERM to every node (each leaves the
   cluster and drains), waits for them (SIGKILL to a node's session past the drain timeout),
   then stops the front door, and removes the state file. Nothing is left behind.

``--detach`` starts the same supervisor in a new session with its output in
``STATE_DIR/up.log``, waits until it reports the cluster ready, and returns.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from tierfaas.deploy.local import LocalProvider, LocalSettings, NodeRecord
from tierfaas.deploy.provider import ProviderError
from tierfaas.deploy.registry import DirectoryRegistry
from tierfaas.frontdoor import FrontDoor, bind_listener, http_get
from tierfaas.keys import generate_key
from tierfaas.manifest import Release
from tierfaas.procs import alive, killpg, start_time

STATE_FILE = "cluster.json"
KEY_FILE = "cluster.key"
DEFAULT_FIRST_HOST = "127.0.0.101"
NGINX = "/usr/sbin/nginx"
_PR_SET_PDEATHSIG = 1


class UpError(Exception):
    """A failure to report as one line (no traceback) with exit ``code``."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


def default_state_dir() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "tierfaas"


@dataclass
class UpOptions:
    release: Path
    nodes: int = 5
    port: int = 8080
    host: str = "127.0.0.1"
    lb: str = "builtin"
    state_dir: Path = field(default_factory=default_state_dir)
    first_host: str = DEFAULT_FIRST_HOST
    ready_timeout_s: float = 60.0
    drain_timeout_s: float = 30.0
    nginx: str = NGINX
    log_level: str = "info"
    registry: Path | None = None  # None: a registry of its own in the state folder
    registry_poll_s: float = 2.0
    canaries: int = 2

    def validate(self) -> None:
        if not 1 <= self.nodes <= 64:
            raise UpError("--nodes must be between 1 and 64", 2)
        if self.lb not in ("builtin", "nginx"):
            raise UpError(f"--lb must be builtin or nginx, not {self.lb!r}", 2)
        if not 0 < self.port < 65536:
            raise UpError(f"--port {self.port} is not a TCP port", 2)
        node_hosts(self.first_host, self.nodes)


# -- helpers ----------------------------------------------------------------------------------


def node_hosts(first: str, count: int) -> list[str]:
    """``count`` consecutive IPv4 loopback addresses from ``first`` (127.0.0.101, .102, ...)."""
    parts = first.split(".")
    if len(parts) != 4 or parts[0] != "127" or not all(p.isdigit() for p in parts):
        raise UpError(f"--first-host {first!r} is not a 127.x.y.z loopback address", 2)
    last = int(parts[3])
    if last < 1 or last + count - 1 > 254:
        raise UpError(f"{count} nodes from {first} run past .254: pick a lower --first-host", 2)
    return [f"{parts[0]}.{parts[1]}.{parts[2]}.{last + i}" for i in range(count)]


def _free(host: str, port: int, kind: int) -> bool:
    with socket.socket(socket.AF_INET, kind) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def pick_cluster_port(hosts: list[str], tries: int = 200) -> int:
    """A port G with G (TCP and UDP: gossip), G+1 (gRPC) and G+2 (query lane) free on every
    host, so that every node can use the same numbers on its own address."""
    rng = random.Random()
    for _ in range(tries):
        # Below Linux's ephemeral range (32768-60999 by default): a client socket bound to
        # 0.0.0.0 on an ephemeral port would otherwise take a node's port away from it.
        port = rng.randrange(20000, 32700)
        if all(
            _free(h, port, socket.SOCK_DGRAM)
            and all(_free(h, port + i, socket.SOCK_STREAM) for i in range(3))
            for h in hosts
        ):
            return port
    raise UpError("found no free ports for gossip and RPC on the node addresses")


def free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def check_port_free(host: str, port: int) -> None:
    try:
        bind_listener(host, port).close()
    except OSError as exc:
        raise UpError(
            f"cannot listen on {host}:{port}: {exc.strerror or exc}; "
            "is a cluster already up? Stop it or pick another --port",
            2,
        ) from None


_PR_SET_CHILD_SUBREAPER = 36


def _become_subreaper() -> None:
    """Linux: nodes whose launcher exits (a master at the end of a rollout) become children
    of this supervisor, which reaps them, instead of init's."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    except (OSError, AttributeError):  # pragma: no cover - non-Linux
        pass


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """A node gets SIGTERM (and drains) if its supervisor is killed, even with -9."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):
        pass


def write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)


def read_state(state_dir: Path) -> dict[str, Any] | None:
    try:
        data: dict[str, Any] = json.loads((state_dir / STATE_FILE).read_text())
    except (OSError, ValueError):
        return None
    return data


def running_supervisor(state_dir: Path) -> int | None:
    """The pid of a supervisor still running from ``state_dir``, if any."""
    state = read_state(state_dir)
    if state is None:
        return None
    pid = int(state.get("supervisor", {}).get("pid", 0))
    started = state.get("supervisor", {}).get("start_time")
    return pid if pid and alive(pid, started) else None


def welcome(state: dict[str, Any]) -> str:
    url = state["url"]
    lb = "nginx" if state["lb"] == "nginx" else "built-in round-robin"
    stop = f"tierfaas down --state-dir {state['state_dir']}" if state.get("detached") else "Ctrl-C"
    fn = state.get("try_function", "hello")
    lines = [
        f"[bold green]tierfaas is up[/]: {len(state['nodes'])} nodes serving "
        f"{state['release']}, front door ({lb}) on [bold]{url}[/]",
        "",
        f"  try it     curl -d 'world' {url}/function/{fn}",
        f"  dashboard  {url}/",
        f"  status     tierfaas status --url {url}",
        f"  load       tierfaas load --url {url} --rps 200 --duration 30",
        f"  logs       {state['state_dir']}/logs/",
        f"  stop       {stop}",
    ]
    return "\n".join(lines)


# -- the supervisor ---------------------------------------------------------------------------


def log_tail(path: Path | str, chars: int = 2000) -> str:
    try:
        return Path(path).read_text(errors="replace")[-chars:]
    except OSError:
        return ""


def nginx_backends(records: Iterable[NodeRecord]) -> list[str]:
    """The nginx upstream servers for the serving nodes: each one's Unix socket when it has
    one (nginx runs on the same machine, and a Unix socket costs it less CPU per request than
    a second loopback TCP connection: docs/benchmarks.md), else its ``HOST:PORT``."""
    return [
        f"unix:{r.http_unix}" if r.http_unix else r.http for r in records if r.phase == "running"
    ]


def _address(http: str) -> tuple[str, int]:
    host, _, port = http.rpartition(":")
    return host, int(port)


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
        self.nginx: subprocess.Popen[bytes] | None = None
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
        release = self._prepare_registry()
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
        pid = running_supervisor(self.state_dir)
        if pid is not None and pid != os.getpid():
            raise UpError(
                f"a cluster is already running from {self.state_dir} (supervisor pid {pid}); "
                f"stop it with: tierfaas down --state-dir {self.state_dir}",
                2,
            )
        if options.lb == "builtin":
            try:
                self._listener = bind_listener(options.host, options.port)
            except OSError as exc:
                raise UpError(
                    f"cannot listen on {options.host}:{options.port}: {exc.strerror or exc}; "
                    "is a cluster already up? Stop it or pick another --port",
                    2,
                ) from None
        else:
            check_port_free(options.host, options.port)
        self.logs.mkdir(exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            self.key_path.unlink()
        fd = os.open(self.key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(generate_key() + "\n")

    def _prepare_registry(self) -> Release:
        """The release the nodes start with: the registry's desired version. Without
        --registry, ``up`` keeps its own registry in the state folder, made afresh from
        --release on every start; a given registry keeps its desired version, and gets
        --release published (and desired) only if it has none yet."""
        from tierfaas.deploy.registry import RegistryError

        own = self.options.registry is None
        try:
            if own:
                shutil.rmtree(self.registry.root, ignore_errors=True)
            if own or self.registry.desired() is None:
                self.registry.publish(self.options.release)
            desired = self.registry.desired()
            assert desired is not None
            return self.registry.load(desired)
        except RegistryError as exc:
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
        prefix = self.state_dir / "nginx"
        shutil.rmtree(prefix, ignore_errors=True)
        prefix.mkdir(mode=0o700)
        self._write_nginx_config()
        conf = prefix / "nginx.conf"
        with open(self.logs / "nginx.log", "ab") as log_file:
            self.nginx = subprocess.Popen(
                [
                    self.options.nginx,
                    "-c",
                    str(conf),
                    "-p",
                    str(prefix),
                    "-e",
                    str(prefix / "error.log"),
                ],
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + 10
        while True:
            if self.nginx.poll() is not None:
                tail = ""
                with contextlib.suppress(OSError):
                    tail = (prefix / "error.log").read_text()[-1500:]
                tail += (self.logs / "nginx.log").read_text(errors="replace")[-1500:]
                raise UpError(f"nginx exited with {self.nginx.returncode}:\n{tail}")
            with contextlib.suppress(OSError, TimeoutError):
                status, _ = await http_get(self.options.host, self.options.port, "/healthz")
                if status == 200:
                    return
            if time.monotonic() > deadline:
                raise UpError("nginx did not answer within 10 s")
            await asyncio.sleep(0.05)

    def _write_nginx_config(self) -> None:
        from tierfaas.lbconfig import STREAM_MODULE, nginx_config

        # L4 when Debian's stream module is there: on 2 cores it kept 85% of direct req/s
        # against 59% for L7 (docs/benchmarks.md); the nodes route requests themselves.
        mode: Literal["stream", "http"] = "stream" if os.path.exists(STREAM_MODULE) else "http"
        prefix = self.state_dir / "nginx"
        user = None
        if os.geteuid() == 0:
            import pwd

            user = pwd.getpwuid(0).pw_name
        (prefix / "nginx.conf").write_text(
            nginx_config(
                nginx_backends(self.nodes),
                listen=f"{self.options.host}:{self.options.port}",
                prefix=prefix,
                user=user,
                mode=mode,
            )
        )

    def sync_front_door(self) -> None:
        """Points the front door at the nodes serving now: a rollout replaces every node,
        and a draining node is dropped before it stops listening."""
        backends = self._serving()
        if not backends or backends == self._backends:
            return
        self._backends = backends
        if self.door is not None:
            self.door.set_backends(backends)
        elif self.nginx is not None and self.nginx.poll() is None:
            self._write_nginx_config()
            self.nginx.send_signal(signal.SIGHUP)  # graceful reload: old workers finish

    async def stop_front_door(self) -> None:
        if self.door is not None:
            await self.door.close()
            self.door = None
        if self._listener is not None:
            self._listener.close()
        if self.nginx is not None:
            nginx, self.nginx = self.nginx, None
            if nginx.poll() is None:
                nginx.send_signal(signal.SIGQUIT)  # graceful: finish requests in flight
            await self._wait(nginx, 10.0)
            killpg(nginx.pid, signal.SIGKILL)
            await self._wait(nginx, 5.0)

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
        _become_subreaper()
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
            if self.nginx is not None and self.nginx.poll() is not None:
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

    @staticmethod
    async def _wait(process: subprocess.Popen[bytes], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while process.poll() is None and time.monotonic() < deadline:
            await asyncio.sleep(0.05)


def run_up(options: UpOptions, say: Callable[[str], None], *, detached: bool = False) -> int:
    """Runs a cluster in the foreground until Ctrl-C or SIGTERM; returns the exit code."""
    import uvloop

    supervisor = Supervisor(options, say, detached=detached)
    supervisor.prepare()
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(supervisor.run())


def detach(options: UpOptions, say: Callable[[str], None]) -> int:
    """Starts the supervisor in a new session and returns once the cluster is ready."""
    options.validate()
    state_dir = options.state_dir.resolve()
    state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    pid = running_supervisor(state_dir)
    if pid is not None:
        raise UpError(
            f"a cluster is already running from {state_dir} (supervisor pid {pid}); "
            f"stop it with: tierfaas down --state-dir {state_dir}",
            2,
        )
    if options.lb == "nginx" and not os.access(options.nginx, os.X_OK):
        raise UpError(f"--lb nginx: {options.nginx} is not installed (apt-get install nginx)", 2)
    check_port_free(options.host, options.port)
    with contextlib.suppress(FileNotFoundError):
        (state_dir / STATE_FILE).unlink()
    argv = [
        sys.executable, "-m", "tierfaas.cli", "up",
        "--nodes", str(options.nodes),
        "--release", str(options.release.resolve()),
        "--port", str(options.port),
        "--host", options.host,
        "--lb", options.lb,
        "--state-dir", str(state_dir),
        "--first-host", options.first_host,
        "--ready-timeout-s", f"{options.ready_timeout_s:g}",
        "--drain-timeout-s", f"{options.drain_timeout_s:g}",
        "--log-level", options.log_level,
        "--registry-poll-s", f"{options.registry_poll_s:g}",
        "--canaries", str(options.canaries),
        *(["--registry", str(options.registry.resolve())] if options.registry else []),
        "--detached-child",
    ]  # fmt: skip
    log_path = state_dir / "up.log"
    with open(log_path, "ab") as log_file:
        child = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, "TERM": "dumb", "NO_COLOR": "1"},
        )
    deadline = time.monotonic() + options.ready_timeout_s + 15
    while time.monotonic() < deadline:
        code = child.poll()
        if code is not None:
            tail = log_path.read_text(errors="replace")[-2000:]
            raise UpError(f"the supervisor exited with {code}; {log_path} ends with:\n{tail}")
        state = read_state(state_dir)
        if (
            state is not None
            and state.get("status") == "ready"
            and state["supervisor"]["pid"] == child.pid
        ):
            say(welcome(state))
            return 0
        time.sleep(0.1)
    child.terminate()
    raise UpError(f"the cluster was not ready in time; see {log_path}")


def down(state_dir: Path, say: Callable[[str], None], timeout_s: float = 60.0) -> int:
    """Stops the cluster started from ``state_dir`` and checks every process is gone."""
    state_dir = state_dir.resolve()
    state = read_state(state_dir)
    if state is None:
        raise UpError(f"no cluster is running from {state_dir} (no {STATE_FILE})", 1)
    tracked: list[tuple[str, int, int | None]] = [
        (n["name"], int(n["pid"]), n.get("start_time")) for n in state["nodes"]
    ]
    if state.get("provider_state"):
        # Nodes a rollout started after the state file was last written.
        provider = LocalProvider(Path(state["provider_state"]))
        with contextlib.suppress(OSError):
            provider.stop_launching()
            tracked += [(r.name, r.pid, r.start_time) for r in provider.records()]
    if state.get("nginx"):
        tracked.append(("nginx", int(state["nginx"]["pid"]), state["nginx"].get("start_time")))
    sup_pid = int(state["supervisor"]["pid"])
    sup_started = state["supervisor"].get("start_time")
    if alive(sup_pid, sup_started):
        say(f"stopping the cluster (supervisor pid {sup_pid}): nodes drain, then the front door")
        os.kill(sup_pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        while alive(sup_pid, sup_started) and time.monotonic() < deadline:
            time.sleep(0.1)
        if alive(sup_pid, sup_started):
            say(f"[yellow]the supervisor did not stop in {timeout_s:g} s: killing it[/]")
            os.kill(sup_pid, signal.SIGKILL)
    else:
        say("the supervisor is gone; stopping what it left")
    left = [(name, pid) for name, pid, started in tracked if alive(pid, started)]
    for _, pid in left:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 10
    while left and time.monotonic() < deadline:
        time.sleep(0.1)
        left = [(name, pid) for name, pid, started in tracked if alive(pid, started)]
    for _, pid in left:
        killpg(pid, signal.SIGKILL)
    time.sleep(0.2 if left else 0)
    still = [name for name, pid, started in tracked if alive(pid, started)]
    with contextlib.suppress(FileNotFoundError):
        (state_dir / STATE_FILE).unlink()
    if still or alive(sup_pid, sup_started):
        raise UpError(f"still running after down: {', '.join(still) or 'the supervisor'}", 1)
    nodes = len({name for name, _, _ in tracked if name != "nginx"})
    say(f"stopped: {nodes} nodes" + (" and nginx" if state.get("nginx") else ""))
    return 0


def say_to(console: Any) -> Callable[[str], None]:
    def say(text: str) -> None:
        console.print(text, highlight=False, soft_wrap=True)

    return say


__all__ = ["UpError", "UpOptions", "default_state_dir", "detach", "down", "run_up"]
