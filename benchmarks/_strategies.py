"""A tierfaas node whose router takes its candidates from another source: the alternative
routing strategies of benchmarks/routing.py, kept out of src/.

    python benchmarks/_strategies.py --strategy hash -- <tierfaas node options>
    python benchmarks/_strategies.py --strategy redis --redis 127.0.0.245:6379 -- <options>

The node is the production ``tierfaas.node.Node`` (same CLI options, runtime, control plane,
gossip, router with its forwarding, signed hops, rejects and retries, route cache); once it
is composed, only the *table source* is replaced (before it starts):

- ``hash`` (OpenWhisk's ShardingContainerPoolBalancer idea): the candidates of a function are
  every live member in rendezvous-hash order of (function, node), so the function's home node
  comes first, and the router tries them in that order (home first, then the next one when
  the home refuses: busy or not warm) instead of its power-of-two-choices pick. Whether a
  candidate is warm is not known: a forwarded call still runs warm-only, so a home that is not
  warm yet refuses it and the entry node runs the call itself.
- ``redis``: the warm table lives in one Redis server that every node reads and writes: a
  runtime listener ``SADD``s this node to ``warm:<function>`` on FunctionWarm and ``SREM``s it
  on FunctionCold, and ``lookup`` is ``SMEMBERS`` (the external-database design tierfaas
  replaces). The candidates are picked exactly as in production (power of two choices).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import logging
import sys
from collections.abc import Sequence

import uvloop

import tierfaas.node
from tierfaas import cli
from tierfaas.cluster.state import NodeEndpoint
from tierfaas.config import NodeConfig
from tierfaas.node import Node
from tierfaas.routing import decision
from tierfaas.runtime.events import FunctionCold, FunctionWarm, RuntimeEvent

log = logging.getLogger("tierfaas.bench.strategies")


def rendezvous(function: str, names: Sequence[str]) -> list[str]:
    """``names`` from the function's home node down (highest random weight first)."""

    def weight(name: str) -> bytes:
        return hashlib.blake2b(f"{function}\0{name}".encode(), digest_size=8).digest()

    return sorted(names, key=weight, reverse=True)


def install_hash(node: Node) -> None:
    cluster, router = node.parts.cluster, node.parts.router
    assert cluster is not None, "a routing strategy needs a clustered node (--gossip)"
    manager = cluster.manager

    async def lookup(function: str) -> list[NodeEndpoint]:
        view = manager.view
        order = rendezvous(function, list(view.runs))
        return [e for e in map(view.endpoint, order) if e is not None]

    router.lookup = lookup
    # Home first, then the next: the first eligible candidate in hash order (the pure
    # ``decide`` keeps every other rule: free here first, hop limit, path, already tried).
    decision._two_choices = lambda eligible, rng: eligible[0]  # type: ignore[assignment]


def install_redis(node: Node, address: str) -> None:
    import redis.asyncio as aioredis

    cluster, router = node.parts.cluster, node.parts.router
    assert cluster is not None, "a routing strategy needs a clustered node (--gossip)"
    manager = cluster.manager
    host, _, port = address.rpartition(":")
    client = aioredis.Redis(host=host, port=int(port), max_connections=64)
    me = node.name
    pending: set[asyncio.Task[object]] = set()

    async def lookup(function: str) -> list[NodeEndpoint]:
        names = await client.smembers(f"warm:{function}")
        found = (manager.view.endpoint(n.decode()) for n in names)
        return [e for e in found if e is not None]

    async def write(event: RuntimeEvent) -> None:
        try:
            if isinstance(event, FunctionWarm):
                await client.sadd(f"warm:{event.function}", me)
            else:
                await client.srem(f"warm:{event.function}", me)
        except Exception as exc:  # soft state, as in production: a lost write is a miss
            log.warning("redis write for %s failed: %s", event, exc)

    def on_event(event: RuntimeEvent) -> None:
        if isinstance(event, FunctionWarm | FunctionCold):
            task = asyncio.get_running_loop().create_task(write(event))
            pending.add(task)
            task.add_done_callback(pending.discard)

    router.lookup = lookup
    node.parts.runtime.listeners.append(on_event)


def run_with(strategy: str, redis_address: str | None) -> None:
    """Makes ``tierfaas node`` (the CLI, unchanged) run a Node with ``strategy`` installed."""

    def run_node(config: NodeConfig) -> int:
        node = Node(config)
        if strategy == "hash":
            install_hash(node)
        else:
            assert redis_address is not None
            install_redis(node, redis_address)
        log.info("%s: routing table source is %s", node.name, strategy)
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            return runner.run(node.run())

    tierfaas.node.run_node = run_node  # the CLI imports it when the command runs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--strategy", choices=("hash", "redis"), required=True)
    parser.add_argument("--redis", help="HOST:PORT of the Redis server (strategy redis)")
    parser.add_argument("node_args", nargs=argparse.REMAINDER, help="tierfaas node options")
    args = parser.parse_args(argv)
    if args.strategy == "redis" and not args.redis:
        parser.error("--strategy redis needs --redis HOST:PORT")
    node_args = args.node_args[1:] if args.node_args[:1] == ["--"] else args.node_args
    run_with(args.strategy, args.redis)
    cli.app(["node", *node_args], prog_name="tierfaas")
    return 0


if __name__ == "__main__":
    sys.exit(main())
