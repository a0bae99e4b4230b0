"""A cluster of real node processes on loopback, for end-to-end tests and benchmarks.

Each node gets its own 127.0.0.x address (HTTP, gossip and RPC ports on it), the ``local``
gossip preset by default, and every node the same seed list. ``close()`` kills every process.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from tierfaas.procs import free_port, free_port_run
from tierfaas.testing.nodes import NodeProcess, http_get
from tierfaas.testing.wait import eventually


class LocalCluster:
    def __init__(
        self,
        release: Path | str,
        size: int,
        *,
        first_host: int = 20,
        subnet: str = "127.0.0",
        preset: str = "local",
        seeds: int = 2,
        extra_args: Sequence[str] = (),
        log_dir: Path | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        self.release = Path(release)
        self.preset = preset
        self.extra_args = list(extra_args)
        self.log_dir = log_dir
        self.env = env
        self.hosts = [f"{subnet}.{first_host + i}" for i in range(size)]
        # Gossip here, the control plane and the lane on the two ports after it.
        self.gossip_port = free_port_run(self.hosts, 3)
        self.seeds = [f"{host}:{self.gossip_port}" for host in self.hosts[:seeds]]
        self.nodes: list[NodeProcess] = []
        self._next = size

    def node_args(self, host: str, join: Sequence[str] | None = None) -> list[str]:
        return [
            "--gossip", f"{host}:{self.gossip_port}",
            "--rpc", f"{host}:{self.gossip_port + 1}",
            "--join", ",".join(self.seeds if join is None else join),
            "--gossip-preset", self.preset,
            *self.extra_args,
        ]  # fmt: skip

    def make_node(
        self, host: str, extra: Sequence[str] = (), env: dict[str, str] | None = None
    ) -> NodeProcess:
        log = self.log_dir / f"{host}.log" if self.log_dir else None
        return NodeProcess(
            self.release,
            host=host,
            port=free_port(host),
            extra_args=[*self.node_args(host), *extra],
            log_path=log,
            env={**(self.env or {}), **(env or {})},
        )

    def start(self, stagger_s: float = 0.05) -> LocalCluster:
        """Starts every node (oldest first, so rank follows the list) and waits for health."""
        for host in self.hosts:
            node = self.make_node(host).start(wait=False)
            self.nodes.append(node)
            time.sleep(stagger_s)
        for node in self.nodes:
            node.wait_healthy()
        return self

    def wait_ready(self, timeout_s: float = 30.0) -> None:
        """Waits until every node sees all of them alive and answers /readyz 200."""
        size = len(self.nodes)
        eventually(
            lambda: all(
                sum(m["state"] == "alive" for m in self.view(n)["members"]) == size
                for n in self.nodes
            ),
            timeout_s,
        )
        for node in self.nodes:
            url = f"{node.url}/readyz"
            eventually(lambda url=url: http_get(url)[0] == 200, timeout_s)  # type: ignore[misc]

    def add_node(self, extra: Sequence[str] = (), env: dict[str, str] | None = None) -> NodeProcess:
        host = (
            f"{self.hosts[0].rsplit('.', 1)[0]}.{int(self.hosts[0].rsplit('.', 1)[1]) + self._next}"
        )
        self._next += 1
        node = self.make_node(host, extra, env).start()
        self.nodes.append(node)
        return node

    def name_of(self, node: NodeProcess) -> str:
        return f"{node.host}-{self.gossip_port}"

    @staticmethod
    def view(node: NodeProcess) -> dict[str, Any]:
        status, body = http_get(f"{node.url}/v1/cluster")
        if status != 200:
            raise RuntimeError(f"{node.url}/v1/cluster answered {status}")
        view: dict[str, Any] = json.loads(body)
        return view

    def alive_nodes(self) -> list[NodeProcess]:
        return [n for n in self.nodes if n.process is not None and n.process.poll() is None]

    def close(self) -> None:
        for node in self.nodes:
            node.discard()

    def __enter__(self) -> LocalCluster:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def agreement(view: dict[str, Any]) -> tuple[Any, ...]:
    """What every node must agree on: the master, the replicas, each worker's replica."""
    members = view["members"]
    replicas = tuple(m["name"] for m in members if m["role"] == "replica")
    assignment = tuple(sorted((m["name"], m["replica"]) for m in members if m["role"] == "worker"))
    return (view["master"], replicas, assignment, len(members))
