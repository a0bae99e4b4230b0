"""Debian's nginx as the front door of ``tierfaas up --lb nginx``: its config, start, reload
and stop.

nginx runs from ``STATE_DIR/nginx`` (pid file, error log, temp files) with the whole config of
:mod:`tierfaas.up.nginx_config`, in a session of its own. When the nodes change (a rollout
replaces them all, a draining node leaves), the config is rewritten and nginx reloaded with
SIGHUP: old workers finish their connections. It stops with SIGQUIT (requests in flight
finish), then SIGKILL to its group past a timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Literal

from tierfaas.deploy.local import NodeRecord
from tierfaas.procs import killpg, spawn_in_session
from tierfaas.up.frontdoor import http_get
from tierfaas.up.nginx_config import STREAM_MODULE, nginx_config
from tierfaas.up.state import UpError

NGINX = "/usr/sbin/nginx"


def nginx_backends(records: Iterable[NodeRecord]) -> list[str]:
    """The nginx upstream servers for the serving nodes: each one's Unix socket when it has
    one (nginx runs on the same machine, and a Unix socket costs it less CPU per request than
    a second loopback TCP connection: docs/benchmarks.md), else its ``HOST:PORT``."""
    return [
        f"unix:{r.http_unix}" if r.http_unix else r.http for r in records if r.phase == "running"
    ]


class NginxProcess:
    """One nginx listening on ``host:port`` in front of the nodes, run from ``prefix``."""

    def __init__(self, binary: str, prefix: Path, host: str, port: int, log_path: Path) -> None:
        self.binary = binary
        self.prefix = prefix
        self.host = host
        self.port = port
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    @property
    def returncode(self) -> int | None:
        """nginx's exit code once it has exited (reaped here), else None."""
        return None if self.process is None else self.process.poll()

    def write_config(self, records: Iterable[NodeRecord]) -> None:
        # L4 when Debian's stream module is there: the nodes route requests themselves, and
        # on 2 cores L4 keeps more of the nodes' direct req/s than L7 (docs/benchmarks.md).
        mode: Literal["stream", "http"] = "stream" if os.path.exists(STREAM_MODULE) else "http"
        user = None
        if os.geteuid() == 0:
            import pwd

            user = pwd.getpwuid(0).pw_name
        (self.prefix / "nginx.conf").write_text(
            nginx_config(
                nginx_backends(records),
                listen=f"{self.host}:{self.port}",
                prefix=self.prefix,
                user=user,
                mode=mode,
            )
        )

    async def start(self, records: Iterable[NodeRecord], timeout_s: float = 10.0) -> None:
        """Starts nginx in front of ``records`` and returns once it answers ``/healthz``;
        ``UpError`` with its log's tail if it exits or stays silent for ``timeout_s``."""
        shutil.rmtree(self.prefix, ignore_errors=True)
        self.prefix.mkdir(mode=0o700)
        self.write_config(records)
        argv = [
            self.binary,
            "-c", str(self.prefix / "nginx.conf"),
            "-p", str(self.prefix),
            "-e", str(self.prefix / "error.log"),
        ]  # fmt: skip
        with open(self.log_path, "ab") as log_file:
            self.process = spawn_in_session(
                argv, stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + timeout_s
        while True:
            code = self.returncode
            if code is not None:
                tail = ""
                with contextlib.suppress(OSError):
                    tail = (self.prefix / "error.log").read_text()[-1500:]
                tail += self.log_path.read_text(errors="replace")[-1500:]
                raise UpError(f"nginx exited with {code}:\n{tail}")
            with contextlib.suppress(OSError, TimeoutError):
                status, _ = await http_get(self.host, self.port, "/healthz")
                if status == 200:
                    return
            if time.monotonic() > deadline:
                raise UpError(f"nginx did not answer within {timeout_s:g} s")
            await asyncio.sleep(0.05)

    def reload(self, records: Iterable[NodeRecord]) -> None:
        """Points nginx at ``records``: a graceful reload, old workers finish."""
        if self.returncode is None and self.process is not None:
            self.write_config(records)
            self.process.send_signal(signal.SIGHUP)

    async def stop(self) -> None:
        """SIGQUIT (requests in flight finish), up to 10 s, then SIGKILL to its group."""
        process, self.process = self.process, None
        if process is None:
            return
        if process.poll() is None:
            process.send_signal(signal.SIGQUIT)
        await _wait(process, 10.0)
        killpg(process.pid, signal.SIGKILL)
        await _wait(process, 5.0)


async def _wait(process: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while process.poll() is None and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
