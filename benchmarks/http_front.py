"""The node's HTTP front alone, in process: what uvicorn's httptools protocol with the node's
bounds (``http/protocol.py``) costs per request, with no socket and no function.

    .venv/bin/python benchmarks/http_front.py            # 3 rounds of 64,000 requests (~5 s)
    .venv/bin/python benchmarks/http_front.py --quick    # 3 rounds of 6,400 (< 1 s)
    .venv/bin/python benchmarks/http_front.py --requests N --rounds R

64 connections of the node's protocol class on fake transports; each loop pass feeds every
connection the runtime benchmark's ``POST /function/hello-node`` (5-byte body), answered two
ways in turn: as the node answers an invocation (a ``FunctionCall`` and its task), and through
uvicorn's ASGI cycle (an app that reads the body and answers through ``write_answer``), as
the node does with tracing on. Printed: CPU per request (``time.process_time``): parsing, the
request's cycle and its task, the answer's bytes, the keep-alive bookkeeping. A change to the
protocol shows here to a fraction of a microsecond, where a node under wrk varies by ±15 %
between rounds on a loaded machine.
Compare the best round of several runs, alternating the trees compared (``PYTHONPATH=SRC``).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from typing import Any

import uvloop
from uvicorn.config import Config
from uvicorn.server import ServerState

from tierfaas.config import NodeConfig
from tierfaas.http.protocol import FunctionCall, bounded_protocol, write_answer
from tierfaas.testing.transport import FakeTransport

CONNECTIONS = 64
PATHS = {
    "asgi": "through uvicorn's ASGI cycle (tracing on)",
    "call": "as a FunctionCall (the node's way)",
}
REQUEST = (
    b"POST /function/hello-node HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nContent-Length: 5\r\n"
    b"Content-Type: text/plain\r\n\r\nworld"
)
HEADERS = [
    (b"content-type", b"text/plain; charset=utf-8"),
    (b"x-tierfaas-served-by", b"node-1"),
    (b"x-tierfaas-route", b"local-warm"),
    (b"x-tierfaas-start", b"warm"),
]


async def app(scope: Any, receive: Any, send: Any) -> None:
    await receive()
    write_answer(send, 200, list(HEADERS), b"Hello, world!\n", b"0123456789abcdef", False)


async def serve(call: FunctionCall) -> None:
    """As the node's ``NodeApp.serve_call`` answers a call, without the routing."""
    call.answer(200, list(HEADERS), b"Hello, world!\n", b"0123456789abcdef", False)


def fake_connections(
    asgi_app: Any, protocol_class: type[Any], count: int
) -> list[tuple[Any, FakeTransport]]:
    """``count`` connections of ``protocol_class`` serving ``asgi_app`` on fake transports,
    on the running loop, with uvicorn configured as the node configures it
    (node/lifecycle.py): no proxy headers, no access log."""
    config = Config(
        asgi_app, http=protocol_class, ws="none", lifespan="off", access_log=False,
        proxy_headers=False, server_header=False, log_level="warning",
    )  # fmt: skip
    state = ServerState()
    loop = asyncio.get_running_loop()
    connections = []
    for _ in range(count):
        protocol, transport = protocol_class(config, state, {}, loop), FakeTransport(keep=False)
        protocol.connection_made(transport)
        connections.append((protocol, transport))
    return connections


async def measure(requests: int, rounds: int, path: str) -> list[float]:
    protocol_class = bounded_protocol(
        NodeConfig(), lambda reason: None, serve if path == "call" else None
    )
    connections = fake_connections(app, protocol_class, CONNECTIONS)
    return await cpu_per_request(connections, REQUEST, requests, rounds)


async def cpu_per_request(
    connections: list[tuple[Any, FakeTransport]], request: bytes, requests: int, rounds: int
) -> list[float]:
    """Feeds every connection ``request`` once per loop pass, and lets the loop run the calls'
    tasks or callbacks and their answers before the next pass: the CPU µs per request
    (``time.process_time``) of each round of ``requests``. Raises RuntimeError if a request
    got no answer."""
    passes = max(1, requests // len(connections))
    results = []
    for number in range(rounds):
        began = time.process_time()
        for _ in range(passes):
            for protocol, _ in connections:
                protocol.data_received(request)
            for _ in range(4):
                await asyncio.sleep(0)
        spent = time.process_time() - began
        if any(t.count != (number + 1) * passes for _, t in connections):
            raise RuntimeError("a request got no answer")
        results.append(spent / (passes * len(connections)) * 1e6)
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=64_000, help="per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="6,400 requests per round")
    args = parser.parse_args()
    if args.requests < 1 or args.rounds < 1:
        parser.error("--requests and --rounds take a positive number")
    requests = 6_400 if args.quick else args.requests
    for path in ("asgi", "call"):
        for number, us in enumerate(uvloop.run(measure(requests, args.rounds, path)), 1):
            print(f"{PATHS[path]}, round {number}: {us:.2f} µs of CPU per request")
    return 0


if __name__ == "__main__":
    sys.exit(main())
