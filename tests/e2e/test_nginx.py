"""Debian's nginx in front of a 3-node cluster, configured by ``tierfaas lb-config nginx``.

Installs nothing: skipped when /usr/sbin/nginx is missing (``.ci/run`` installs it).
Addresses: nodes on 127.0.1.40-42 and 127.0.1.50-52, nginx on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import stat
import subprocess
import sys
import tempfile
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from tierfaas.procs import kill_group, killpg, spawn_in_session
from tierfaas.testing.cluster import LocalCluster
from tierfaas.testing.nodes import free_port, http_get
from tierfaas.testing.wait import eventually
from tierfaas.up.nginx_config import STREAM_MODULE

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(
        not os.access("/usr/sbin/nginx", os.X_OK),
        reason="Debian's nginx is not installed (/usr/sbin/nginx; .ci/run apt-get installs it)",
    ),
]

DEMO = Path(__file__).parent.parent.parent / "examples" / "demo"
NGINX = "/usr/sbin/nginx"


def is_running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except OSError:
        return False


async def hammer(url: str, count: int, concurrency: int) -> tuple[Counter[int], Counter[str]]:
    statuses: Counter[int] = Counter()
    served: Counter[str] = Counter()
    gate = asyncio.Semaphore(concurrency)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:

        async def one(i: int) -> None:
            async with gate, session.post(url, data=f"n{i}".encode()) as response:
                body = await response.read()
                statuses[response.status] += 1
                # The node that served it, and whether it received it (local) or another node
                # received and forwarded it: two or more pairs mean nginx spread the calls.
                by = response.headers.get("X-Tierfaas-Served-By", "?")
                route = response.headers.get("X-Tierfaas-Route", "?").split("-")[0]
                served[f"{by}/{route}"] += 1
                assert response.status != 200 or body == f"Hello, n{i}!\n".encode()

        await asyncio.gather(*(one(i) for i in range(count)))
    return statuses, served


@pytest.mark.parametrize("mode", ["stream", "http"])
def test_500_requests_through_nginx_with_zero_errors(tmp_path: Path, mode: str) -> None:
    if mode == "stream" and not os.path.exists(STREAM_MODULE):
        pytest.skip(f"{STREAM_MODULE} is missing (apt-get install libnginx-mod-stream)")
    prefix = tmp_path / "nginx"
    prefix.mkdir()
    port = free_port()
    cluster = LocalCluster(DEMO, 3, first_host=40, subnet="127.0.1", log_dir=tmp_path)
    nginx: subprocess.Popen[bytes] | None = None
    try:
        cluster.start()
        for node in cluster.nodes:
            eventually(lambda node=node: http_get(f"{node.url}/readyz")[0] == 200, 20)
        nodes = ",".join(f"{n.host}:{n.port}" for n in cluster.nodes)
        lb_config = [
            sys.executable, "-m", "tierfaas.cli", "lb-config", "nginx", "--nodes", nodes,
            "--listen", f"127.0.0.1:{port}", "--prefix", str(prefix), "--mode", mode,
        ]  # fmt: skip
        config = subprocess.run(lb_config, capture_output=True, text=True, timeout=30, check=True)
        conf = prefix / "nginx.conf"
        conf.write_text(config.stdout)
        nginx = spawn_in_session(
            [NGINX, "-c", str(conf), "-p", str(prefix), "-e", str(prefix / "error.log")],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        eventually(lambda: http_get(f"http://127.0.0.1:{port}/healthz")[0] == 200, 10)

        statuses, served = asyncio.run(hammer(f"http://127.0.0.1:{port}/function/hello", 500, 16))
        assert statuses == Counter({200: 500}), statuses
        assert len(served) >= 2, served  # nginx spread the calls over the nodes
        view = json.loads(http_get(f"http://127.0.0.1:{port}/v1/cluster")[1])
        assert len(view["members"]) == 3

        nginx.send_signal(signal.SIGQUIT)  # graceful stop
        assert nginx.wait(10) == 0
        with pytest.raises(OSError):
            http_get(f"http://127.0.0.1:{port}/healthz", timeout=1)
    finally:
        if nginx is not None:
            kill_group(nginx)
        cluster.close()


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A state folder with a short path: each node's Unix socket path must fit in sun_path
    (108 bytes), and pytest's tmp_path can be longer (then the local provider serves nginx
    over TCP, by design, and this test would not see the sockets it checks)."""
    with tempfile.TemporaryDirectory(prefix="tf-nginx-") as folder:
        yield Path(folder)


def test_up_with_lb_nginx_starts_and_stops_it(short_dir: Path) -> None:
    state_dir = short_dir / "state"
    port = free_port()
    up = [
        sys.executable, "-m", "tierfaas.cli", "up", "--nodes", "3", "--detach", "--lb", "nginx",
        "--release", str(DEMO), "--state-dir", str(state_dir), "--port", str(port),
        "--first-host", "127.0.1.50",
    ]  # fmt: skip
    pids: list[int] = []
    try:
        result = subprocess.run(up, capture_output=True, text=True, timeout=90, check=False)
        assert result.returncode == 0, result.stdout + result.stderr
        state = json.loads((state_dir / "cluster.json").read_text())
        nginx_pid = int(state["nginx"]["pid"])
        pids = [int(state["supervisor"]["pid"]), nginx_pid, *(n["pid"] for n in state["nodes"])]
        # nginx reaches the nodes on this machine through their Unix sockets (mode 600)
        conf = (state_dir / "nginx" / "nginx.conf").read_text()
        sockets = sorted((state_dir / "provider" / "sockets").glob("*.sock"))
        assert len(sockets) == 3, sockets
        for sock in sockets:
            assert f"server unix:{sock} " in conf, conf
            assert stat.S_IMODE(sock.stat().st_mode) == 0o600
        statuses, _ = asyncio.run(hammer(f"http://127.0.0.1:{port}/function/hello", 100, 8))
        assert statuses == Counter({200: 100}), statuses
        down = subprocess.run(
            [sys.executable, "-m", "tierfaas.cli", "down", "--state-dir", str(state_dir)],
            capture_output=True, text=True, timeout=90, check=False,
        )  # fmt: skip
        assert down.returncode == 0, down.stdout + down.stderr
        assert "nginx" in down.stdout
        assert [pid for pid in pids if is_running(pid)] == []
        assert [s for s in sockets if s.exists()] == []  # each node removed its socket
    finally:
        for pid in pids:
            killpg(pid, signal.SIGKILL)
