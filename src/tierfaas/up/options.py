"""What ``tierfaas up`` starts: its options and where the nodes listen.

Every node gets its own loopback address (127.0.0.101, .102, ... by default) and the same
gossip/RPC/query-lane port numbers on it, picked below Linux's ephemeral range so that no
client socket takes them first. Each check fails as one line with exit code 2, before any
process starts; so does a host that cannot sandbox the nodes' functions (``--isolation``).
"""

from __future__ import annotations

import random
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from tierfaas.config import NodeConfig
from tierfaas.errors import SandboxUnavailable
from tierfaas.procs import port_is_free
from tierfaas.sandbox.probe import check_isolation
from tierfaas.up.frontdoor import bind_listener
from tierfaas.up.nginx import NGINX
from tierfaas.up.state import UpError, default_state_dir

DEFAULT_FIRST_HOST = "127.0.0.101"


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
    # The nodes' settings: their defaults are the nodes' own.
    drain_timeout_s: float = NodeConfig.default_of("drain_timeout_s")
    nginx: str = NGINX
    log_level: str = NodeConfig.default_of("log_level")
    registry: Path | None = None  # None: a registry of its own in the state folder
    registry_poll_s: float = NodeConfig.default_of("registry_poll_s")
    canaries: int = NodeConfig.default_of("canaries")
    isolation: str = NodeConfig.default_of("isolation")

    def validate(self) -> None:
        if not 1 <= self.nodes <= 64:
            raise UpError("--nodes must be between 1 and 64", 2)
        if self.lb not in ("builtin", "nginx"):
            raise UpError(f"--lb must be builtin or nginx, not {self.lb!r}", 2)
        if not 0 < self.port < 65536:
            raise UpError(f"--port {self.port} is not a TCP port", 2)
        if self.isolation not in ("sandbox", "process"):
            raise UpError(f"--isolation must be sandbox or process, not {self.isolation!r}", 2)
        node_hosts(self.first_host, self.nodes)


def check_host_isolation(
    isolation: str, check: Callable[[str, Path], None] = check_isolation
) -> None:
    """``UpError`` (exit 2) when the nodes are to sandbox functions on a host that cannot: the
    same refusal each node would make, said once before any process starts."""
    try:
        check(isolation, NodeConfig.default_of("cgroup_root"))
    except SandboxUnavailable as exc:
        raise UpError(exc.message, 2) from None


def node_hosts(first: str, count: int) -> list[str]:
    """``count`` consecutive IPv4 loopback addresses from ``first`` (127.0.0.101, .102, ...)."""
    parts = first.split(".")
    if len(parts) != 4 or parts[0] != "127" or not all(p.isdigit() for p in parts):
        raise UpError(f"--first-host {first!r} is not a 127.x.y.z loopback address", 2)
    last = int(parts[3])
    if last < 1 or last + count - 1 > 254:
        raise UpError(f"{count} nodes from {first} run past .254: pick a lower --first-host", 2)
    return [f"{parts[0]}.{parts[1]}.{parts[2]}.{last + i}" for i in range(count)]


def pick_cluster_port(hosts: list[str], tries: int = 200) -> int:
    """A port G with G (TCP and UDP: gossip), G+1 (gRPC) and G+2 (query lane) free on every
    host, so that every node can use the same numbers on its own address."""
    rng = random.Random()
    for _ in range(tries):
        # Below Linux's ephemeral range (32768-60999 by default): a client socket bound to
        # 0.0.0.0 on an ephemeral port would otherwise take a node's port away from it.
        port = rng.randrange(20000, 32700)
        if all(
            port_is_free(h, port, socket.SOCK_DGRAM)
            and all(port_is_free(h, port + i) for i in range(3))
            for h in hosts
        ):
            return port
    raise UpError("found no free ports for gossip and RPC on the node addresses")


def listen_on(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port``, or ``UpError`` (exit 2) saying the port is busy."""
    try:
        return bind_listener(host, port)
    except OSError as exc:
        raise UpError(
            f"cannot listen on {host}:{port}: {exc.strerror or exc}; "
            "is a cluster already up? Stop it or pick another --port",
            2,
        ) from None


def check_port_free(host: str, port: int) -> None:
    """``UpError`` (exit 2) unless ``host:port`` is free to listen on."""
    listen_on(host, port).close()
