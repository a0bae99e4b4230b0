"""``LocalProvider``: nodes as processes on this machine, each on its own loopback address.

What ``tierfaas up`` uses, and what its master uses to roll the cluster. Its state lives in a
folder (``--provider-state``, ``tierfaas up`` makes one), so whichever node is master, even
one that took over in the middle of a rollout, sees the same nodes::

    provider.json      how to start a node: registry, key file, cluster port, seeds, ...
    nodes/<name>.json  one record per node: address, version, generation, pid, phase
    hosts              the next free address index (addresses are never reused, so a new
                       node never inherits a departed node's name)
    term               the newest master's term a launch or terminate carried
    logs/<name>.log    each node's output

Every change happens under an exclusive ``flock`` on ``lock``, and a launch or terminate
whose term is older than ``term`` is refused there (``FencedError``): a master cut off by a
partition cannot stop the nodes a newer master deploys. A node is listed while its
process lives (pid and start time must match the record, so a reused pid is not mistaken
for it); records of processes that are gone are removed when nodes are listed.
Nodes start in their own session and do not die with the node that launched them: a master
that terminates itself at the end of a rollout must leave the new nodes running.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import ipaddress
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tierfaas.deploy.provider import ProvidedNode, ProviderError
from tierfaas.deploy.term import Term, TermRecord
from tierfaas.procs import alive, free_port, spawn_in_session, start_time

SETTINGS_FILE = "provider.json"


@dataclass
class LocalSettings:
    """How the local provider starts a node; written once by ``tierfaas up``."""

    registry: str
    key_file: str
    cluster_port: int  # gossip on it, gRPC on +1, query lane on +2, on every node's address
    first_host: str  # the first node address; later ones count up from it
    seeds: list[str]
    gossip_preset: str = "local"
    drain_timeout_s: float = 30.0
    log_level: str = "info"
    # Each node also serves HTTP on sockets/<host>.sock, for a load balancer on this machine
    # (nginx): a Unix socket costs it less CPU per request than a second loopback TCP hop.
    unix_sockets: bool = False
    python: str = field(default_factory=lambda: sys.executable)
    extra_args: list[str] = field(default_factory=list)
    # Nodes on a network of their own (one network namespace each, as the chaos suite runs
    # them): the addresses to hand out in order instead of counting up on loopback, a command
    # put before each node's argv with "{host}" replaced by its address (``ip netns exec``
    # through a script, a container runtime), and the HTTP port every node serves on (a free
    # port cannot be looked up from here for an address this machine does not hold).
    hosts: list[str] = field(default_factory=list)
    launch_prefix: list[str] = field(default_factory=list)
    http_port: int = 0  # 0: a free port on the node's loopback address


@dataclass
class NodeRecord:
    name: str
    host: str
    http: str
    version: str
    generation: int
    pid: int
    start_time: int | None
    phase: str  # "running" | "draining"
    launched_at: float  # Unix s
    log: str
    http_unix: str | None = None  # its Unix socket (LocalSettings.unix_sockets), if any


class LocalProvider:
    kind = "local"

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self.nodes_dir = state_dir / "nodes"
        self.logs_dir = state_dir / "logs"
        self._children: dict[int, subprocess.Popen[bytes]] = {}

    # -- settings ------------------------------------------------------------------------------

    @classmethod
    def create(cls, state_dir: Path, settings: LocalSettings) -> LocalProvider:
        """A fresh provider folder (an existing one's node records are dropped)."""
        provider = cls(state_dir)
        state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        provider.nodes_dir.mkdir(exist_ok=True)
        provider.logs_dir.mkdir(exist_ok=True)
        with provider._locked():
            for record in provider.nodes_dir.glob("*.json"):
                record.unlink()
            (state_dir / "stopping").unlink(missing_ok=True)
            _write_json(state_dir / SETTINGS_FILE, asdict(settings))
            (state_dir / "hosts").write_text("0\n")
        return provider

    def settings(self) -> LocalSettings:
        try:
            data = json.loads((self.state_dir / SETTINGS_FILE).read_text())
            return LocalSettings(**data)
        except (OSError, ValueError, TypeError) as exc:
            raise ProviderError(
                f"{self.state_dir / SETTINGS_FILE} is missing or damaged ({exc}); "
                "the local provider's folder is made by 'tierfaas up'"
            ) from None

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        with open(self.state_dir / "lock", "a+") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _next_host(self, settings: LocalSettings) -> str:
        counter = self.state_dir / "hosts"
        try:
            index = int(counter.read_text().strip() or 0)
        except (OSError, ValueError):
            index = 0
        if settings.hosts:
            if index >= len(settings.hosts):
                raise ProviderError(f"all {len(settings.hosts)} addresses of hosts are used")
            counter.write_text(f"{index + 1}\n")
            return settings.hosts[index]
        first = int(ipaddress.IPv4Address(settings.first_host))
        for _ in range(4096):
            candidate = ipaddress.IPv4Address(first + index)
            index += 1
            if candidate.packed[3] in (0, 255):
                continue  # .0 and .255 look like network/broadcast addresses to people
            if candidate not in ipaddress.IPv4Network("127.0.0.0/8"):
                break
            counter.write_text(f"{index}\n")
            return str(candidate)
        raise ProviderError(f"no loopback addresses left after {settings.first_host}")

    # -- Provider --------------------------------------------------------------------------------

    async def launch(
        self, version: str, generation: int, count: int, *, term: Term | None = None
    ) -> list[str]:
        return await asyncio.to_thread(self.launch_now, version, generation, count, term=term)

    def launch_now(
        self,
        version: str,
        generation: int,
        count: int,
        *,
        die_with_launcher: bool = False,
        term: Term | None = None,
    ) -> list[str]:
        """``launch`` without the event loop. ``tierfaas up`` starts its first nodes so, with
        ``die_with_launcher``: they get SIGTERM should the supervisor be killed."""
        settings = self.settings()
        names = []
        with self._locked():
            if (self.state_dir / "stopping").exists():
                raise ProviderError("the cluster is stopping: no new nodes")
            TermRecord(self.state_dir / "term").check(term, f"launching {count} node(s)")
            seeds = [
                f"{r.host}:{settings.cluster_port}"
                for r in self._live_records()
                if r.phase == "running"
            ][:3] or settings.seeds  # the first nodes may all be gone after a rollout
            for _ in range(count):
                host = self._next_host(settings)
                record = self._start(settings, host, version, generation, seeds, die_with_launcher)
                _write_json(self.nodes_dir / f"{record.name}.json", asdict(record))
                names.append(record.name)
                time.sleep(0.02)  # distinct start times: rank follows launch order
        return names

    def stop_launching(self) -> None:
        """From now on ``launch`` refuses (the whole cluster is being stopped)."""
        (self.state_dir / "stopping").touch()

    def _start(
        self,
        settings: LocalSettings,
        host: str,
        version: str,
        generation: int,
        seeds: list[str],
        die_with_launcher: bool,
    ) -> NodeRecord:
        port = settings.cluster_port
        name = f"{host}-{port}"
        http_port = settings.http_port or free_port(host)
        log_path = self.logs_dir / f"{name}.log"
        unix = self.state_dir / "sockets" / f"{host}.sock"
        # sun_path holds 107 bytes: a deep state folder gets TCP only (nginx then uses that)
        use_unix = settings.unix_sockets and len(bytes(unix)) <= 107
        prefix = [part.replace("{host}", host) for part in settings.launch_prefix]
        argv = [
            *prefix,
            settings.python, "-m", "tierfaas.cli", "node",
            "--registry", settings.registry,
            "--release-version", version,
            "--generation", str(generation),
            "--provider", "local",
            "--provider-state", str(self.state_dir),
            "--key-file", settings.key_file,
            "--name", name,
            "--http", f"{host}:{http_port}",
            "--gossip", f"{host}:{port}",
            "--rpc", f"{host}:{port + 1}",
            "--join", ",".join(seeds),
            "--gossip-preset", settings.gossip_preset,
            "--drain-timeout-s", f"{settings.drain_timeout_s:g}",
            "--log-level", settings.log_level,
            # Its async calls' store: a node that comes back with this name claims them.
            "--data-dir", str(self.nodes_dir / name),
            *(["--http-unix", str(unix)] if use_unix else []),
            *settings.extra_args,
        ]  # fmt: skip
        if use_unix:
            unix.parent.mkdir(mode=0o700, exist_ok=True)
        env = {k: v for k, v in os.environ.items() if k != "TIERFAAS_CLUSTER_KEY"}
        try:
            with open(log_path, "ab") as log_file:
                # In a session of its own: it outlives the master that launched it.
                process = spawn_in_session(
                    argv,
                    parent_death_signal=signal.SIGTERM if die_with_launcher else None,
                    stdin=subprocess.DEVNULL,
                    stdout=log_file,
                    stderr=subprocess.STDOUT,
                    env=env,
                )
        except OSError as exc:
            raise ProviderError(f"cannot start a node process: {exc}") from None
        self._children[process.pid] = process
        return NodeRecord(
            name=name,
            host=host,
            http=f"{host}:{http_port}",
            version=version,
            generation=generation,
            pid=process.pid,
            start_time=start_time(process.pid),
            phase="running",
            launched_at=time.time(),
            log=str(log_path),
            http_unix=str(unix) if use_unix else None,
        )

    async def terminate(self, name: str, *, term: Term | None = None) -> None:
        await asyncio.to_thread(self.terminate_now, name, term=term)

    def terminate_now(self, name: str, *, term: Term | None = None) -> None:
        path = self.nodes_dir / f"{name}.json"
        with self._locked():
            TermRecord(self.state_dir / "term").check(term, f"terminating {name}")
            record = _read_record(path)
            if record is None:
                return
            record.phase = "draining"
            _write_json(path, asdict(record))
        if alive(record.pid, record.start_time):
            with contextlib.suppress(ProcessLookupError):
                os.kill(record.pid, signal.SIGTERM)

    async def nodes(self) -> list[ProvidedNode]:
        return [
            ProvidedNode(r.name, r.version, r.generation, r.phase, r.http, r.launched_at)  # type: ignore[arg-type]
            for r in await asyncio.to_thread(self.records)
        ]

    def records(self) -> list[NodeRecord]:
        """Records of the nodes alive now; the others' records are removed."""
        for pid, child in list(self._children.items()):
            if child.poll() is not None:  # reap what this process launched
                del self._children[pid]
        with self._locked():
            return self._live_records()

    def _live_records(self) -> list[NodeRecord]:
        live: list[NodeRecord] = []
        for path in sorted(self.nodes_dir.glob("*.json")):
            record = _read_record(path)
            if record is not None and alive(record.pid, record.start_time):
                live.append(record)
            else:
                path.unlink(missing_ok=True)
        return sorted(live, key=lambda r: r.launched_at)

    async def close(self) -> None:
        return None


def _read_record(path: Path) -> NodeRecord | None:
    try:
        return NodeRecord(**json.loads(path.read_text()))
    except (OSError, ValueError, TypeError):
        return None


def _write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=1) + "\n")
    os.replace(tmp, path)
