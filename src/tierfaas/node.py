"""One tierfaas node: composes the runtime and the HTTP server, and owns their lifecycle.

Shutdown (SIGTERM or SIGINT), in this order: stop taking invocations (503 with Retry-After,
/readyz 503), let the calls in flight finish within ``drain_timeout_s``, stop the HTTP server,
stop every instance and the zygote, exit 0. A second SIGINT skips the wait.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
import time
from collections.abc import Generator

import uvicorn

from tierfaas import errors
from tierfaas.config import NodeConfig
from tierfaas.http.app import NodeApp
from tierfaas.http.metrics import Metrics
from tierfaas.manifest import Release, load_release
from tierfaas.runtime import Runtime

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


class Node:
    def __init__(self, config: NodeConfig, release: Release | None = None) -> None:
        self.config = config
        self.release = release or load_release(config.release_dir)
        self.name = config.name or f"{config.http.host}-{config.http.port}"
        self.metrics = Metrics()
        self.runtime = Runtime(self.release, config, listeners=[self.metrics.on_runtime_event])
        self.app = NodeApp(self.runtime, config, self.metrics, self.name)
        self.server: _Server | None = None
        self.stopping: asyncio.Task[None] | None = None

    async def run(self) -> None:
        """Serves until SIGTERM/SIGINT, then drains and returns."""
        sock = bind_tcp(self.config.http.host, self.config.http.port, "http")
        self.server = _Server(
            uvicorn.Config(
                self.app,
                http="httptools",
                loop="none",
                lifespan="off",
                access_log=False,
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
        log.info(
            "node %s serving release %s %s on http://%s (%d functions)",
            self.name,
            self.release.name,
            self.release.version,
            self.config.http,
            len(self.release.functions),
        )
        try:
            await self.server.serve(sockets=[sock])
        finally:
            await self.runtime.close()
            sock.close()
            log.info("node %s stopped", self.name)

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
        self.app.draining = True
        self.metrics.draining.set(1)
        deadline = time.monotonic() + self.config.drain_timeout_s
        while self.app.in_flight and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        if self.app.in_flight:
            log.warning("drain timeout: %d calls still in flight are cut", self.app.in_flight)
        if self.server is not None:
            self.server.should_exit = True


def run_node(config: NodeConfig) -> None:
    """Runs a node on uvloop until it is told to stop."""
    import uvloop

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(Node(config).run())
