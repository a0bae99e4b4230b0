"""Sandboxed instances from the inside: a runtime with ``isolation = "sandbox"`` runs a small
release of probing handlers in real, sandboxed processes, and each test asserts what a handler
can and cannot see or do (pids, uids, the node's secrets, the release, /tmp, the network).

The release lives under /tmp, as a pytest tmp_path does: each instance's private /tmp must
carry it over. Needs root (to map a uid range) and writable cgroups."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import math
import os
import socket
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from tierfaas import procs
from tierfaas.config import NodeConfig
from tierfaas.manifest import load_release
from tierfaas.runtime import InstanceStarted, Runtime, RuntimeEvent
from tierfaas.sandbox.cgroups import Layout, detect

if os.geteuid() != 0:
    pytest.skip(
        "needs root: maps a uid range into the release's namespace", allow_module_level=True
    )
if not isinstance(detect(), Layout):
    pytest.skip(f"needs writable cgroups; this host: {detect()}", allow_module_level=True)

UID_BASE = 200000  # NodeConfig's default sandbox_uid_base
SECRET = "the-cluster-key"
TOKEN = "the-admin-token"

MANIFEST = """\
[release]
name = "sandboxed"
version = "1.0.0"

[defaults]
timeout_s = 10
memory_mb = 128

# Sorted, the names give the uids: a_probe 1, b_connect 2, c_offline 3, d_tmp 4, e_fill 5.
[functions.a_probe]
handler = "probes:probe"

[functions.b_connect]
handler = "probes:connect"

[functions.c_offline]      # network = "none", set by the test (see runtime())
handler = "probes:connect"

[functions.d_tmp]
handler = "probes:tmp"

[functions.e_fill]
handler = "probes:fill"
"""

PROBES = '''\
import errno
import json
import os
import socket


def attempt(action):
    """What the action returned, or the errno name of the OSError it raised."""
    try:
        return action()
    except OSError as exc:
        return errno.errorcode.get(exc.errno, str(exc.errno))


def read(path):
    with open(path) as file:
        return file.read()


def write(path):
    with open(path, "w") as file:
        file.write("x")
    return "written"


def probe(body):
    asked = json.loads(body)
    node = asked["node_pid"]
    return {
        "pid": os.getpid(),
        "uid": [os.getuid(), os.geteuid(), os.getgid(), os.getegid()],
        "proc": sorted(int(name) for name in os.listdir("/proc") if name.isdigit()),
        "hostname": socket.gethostname(),
        "cwd": os.getcwd(),
        "signal_node": attempt(lambda: os.kill(node, 0)),
        "node_environ": attempt(lambda: read(f"/proc/{node}/environ")),
        "shadow": os.path.exists("/etc/shadow"),
        "registry": attempt(lambda: os.listdir(asked["registry"])),
        "secrets_dir": attempt(lambda: os.listdir("secrets")),
        "key": attempt(lambda: read("secrets/cluster.key")),
        "key_link": attempt(lambda: read("key-link")),
        "token": attempt(lambda: read("token.txt")),
        "token_link": attempt(lambda: read("token-link")),
        "write_release": attempt(lambda: write("scratch/new-file")),
        "write_tmp": attempt(lambda: write("/tmp/probe")),
    }


def connect(body):
    def dial():
        socket.create_connection(("127.0.0.1", int(body)), timeout=2).close()
        return "connected"

    return {"connect": attempt(dial)}


def tmp(body):
    marker = "/tmp/" + body.decode()
    seen = os.path.exists(marker)
    with open(marker, "w") as file:
        file.write("mine")
    return {"seen": seen, "pid": os.getpid()}


def fill(body):
    """Writes up to 100 MiB into a file under the directory named by the body."""
    chunk = b"x" * (1 << 20)
    written = 0
    try:
        with open(os.path.join(body.decode(), "fill"), "wb") as file:
            while written < 100 << 20:
                written += file.write(chunk)
                file.flush()
    except OSError as exc:
        return {"written": written, "error": errno.errorcode.get(exc.errno, str(exc.errno))}
    return {"written": written, "error": None}
'''


@pytest.fixture
def release_dir() -> Iterator[Path]:
    """The release, with the node's secrets planted in and next to it: a state directory
    (provider_state) holding the key, the key file named through a link into it, an admin
    token named through a link, a registry outside; and a scratch directory anyone may write
    (so that only the read-only mount can refuse a write)."""
    with tempfile.TemporaryDirectory(dir="/tmp", prefix="tierfaas-sandbox-") as parent:
        root = Path(parent).resolve() / "release"
        root.mkdir()
        (root / "tierfaas.toml").write_text(MANIFEST)
        (root / "probes.py").write_text(PROBES)
        (root / "secrets").mkdir(mode=0o755)
        (root / "secrets" / "cluster.key").write_text(SECRET)
        (root / "key-link").symlink_to("secrets/cluster.key")
        (root / "token.txt").write_text(TOKEN)
        (root / "token-link").symlink_to("token.txt")
        (root / "scratch").mkdir()
        (root / "scratch").chmod(0o777)
        (Path(parent) / "registry").mkdir()
        (Path(parent) / "registry" / "desired").write_text("1.0.0")
        yield root


class Sandboxed:
    def __init__(self, runtime: Runtime, events: list[RuntimeEvent], root: Path) -> None:
        self.runtime = runtime
        self.events = events
        self.root = root
        self.n = 0

    async def call(self, name: str, body: bytes) -> Any:
        self.n += 1
        result = await self.runtime.invoke(name, body, request_id=f"req-{self.n}")
        return json.loads(result.body)

    def host_pids(self, name: str) -> list[int]:
        return [e.pid for e in self.events if isinstance(e, InstanceStarted) and e.function == name]


@pytest.fixture
async def sandboxed(release_dir: Path) -> AsyncIterator[Sandboxed]:
    release = load_release(release_dir)
    offline = dataclasses.replace(release.functions["c_offline"], network="none")
    release = dataclasses.replace(release, functions={**release.functions, "c_offline": offline})
    config = NodeConfig(
        release_dir=release_dir,
        isolation="sandbox",
        sandbox_uid_base=UID_BASE,
        sandbox_tmp_mb=8,
        key_file=release_dir / "key-link",
        admin_token_file=release_dir / "token-link",
        provider_state=release_dir / "secrets",
        registry=release_dir.parent / "registry",
    )
    events: list[RuntimeEvent] = []
    runtime = Runtime(release, config, listeners=[events.append])
    await runtime.start()
    harness = Sandboxed(runtime, events, release_dir)
    try:
        yield harness
    finally:
        await runtime.close()
    for pid in [e.pid for e in events if isinstance(e, InstanceStarted)]:
        assert await gone(pid), f"instance process {pid} outlived the runtime"


def alive(pid: int) -> bool:
    return procs.alive(pid, None)  # running, and not a zombie


async def gone(pid: int, within_s: float = 3.0) -> bool:
    deadline = time.monotonic() + within_s
    while alive(pid):
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.02)
    return True


async def test_an_instance_sees_only_its_own_processes_as_its_functions_uid(
    sandboxed: Sandboxed,
) -> None:
    await sandboxed.call("b_connect", b"1")  # a neighbour instance, of another function
    seen = await sandboxed.call("a_probe", json.dumps(probe_args(sandboxed)).encode())
    assert seen["pid"] == 2  # pid 1 is its namespace's reaper
    assert seen["proc"] == [1, 2]  # not the node, not the zygote, not another instance
    assert seen["uid"] == [1, 1, 1, 1]  # a_probe sorts first: uid 1 (0 is the zygote)
    assert seen["hostname"] == "a-probe"
    assert seen["signal_node"] == "ESRCH"
    assert seen["node_environ"] == "ENOENT"
    # The node found the instance (not its reaper) among its cgroup's processes: on the host
    # it is pid 2 of its namespace, running as the range's uid 1.
    [host_pid] = sandboxed.host_pids("a_probe")
    assert status_of(host_pid)["NSpid"][-1] == "2"
    assert status_of(host_pid)["Uid"] == [str(UID_BASE + 1)] * 4


def status_of(pid: int) -> dict[str, list[str]]:
    """/proc/<pid>/status as seen from the host: field name -> its values."""
    with open(f"/proc/{pid}/status") as status:
        lines = [line.split(":", 1) for line in status.read().splitlines()]
    return {name: value.split() for name, value in lines}


def probe_args(sandboxed: Sandboxed) -> dict[str, Any]:
    return {"node_pid": os.getpid(), "registry": str(sandboxed.root.parent / "registry")}


async def test_the_nodes_secrets_are_absent_or_masked_and_the_release_is_read_only(
    sandboxed: Sandboxed,
) -> None:
    seen = await sandboxed.call("a_probe", json.dumps(probe_args(sandboxed)).encode())
    assert seen["cwd"] == str(sandboxed.root)  # the release, at its own path under /tmp
    assert seen["shadow"] is False
    assert seen["registry"] == "ENOENT"  # outside every bind: not in the root at all
    # Inside the release: the state directory is an empty, inaccessible mount; the key file,
    # named by a link into it, unreadable; the token, named by a link, an empty file.
    assert (seen["secrets_dir"], seen["key"], seen["key_link"]) == ("EACCES",) * 3
    assert (seen["token"], seen["token_link"]) == ("", "")
    assert seen["write_release"] == "EROFS"  # though the directory's mode lets anyone write
    assert seen["write_tmp"] == "written"
    assert os.listdir(sandboxed.root / "scratch") == []


async def test_tmp_is_private_to_each_instance(sandboxed: Sandboxed) -> None:
    marker = f"tierfaas-marker-{os.getpid()}"
    first = await sandboxed.call("d_tmp", marker.encode())
    again = await sandboxed.call("d_tmp", marker.encode())
    assert (first["seen"], again["seen"]) == (False, True)  # kept for the instance's life
    assert marker not in os.listdir("/tmp")  # never on the host's /tmp
    assert sandboxed.runtime.pools["d_tmp"].reap_idle(math.inf) == 1
    fresh = await sandboxed.call("d_tmp", marker.encode())
    assert len(sandboxed.host_pids("d_tmp")) == 2  # a new instance...
    assert fresh["seen"] is False  # ...with a /tmp of its own


@pytest.mark.parametrize("directory", ["/tmp", "/dev/shm"])
async def test_tmp_and_shm_hold_at_most_sandbox_tmp_mb(
    sandboxed: Sandboxed, directory: str
) -> None:
    filled = await sandboxed.call("e_fill", directory.encode())
    assert filled["error"] == "ENOSPC"
    assert filled["written"] <= 8 << 20


async def test_a_function_without_network_cannot_reach_the_hosts_loopback(
    sandboxed: Sandboxed,
) -> None:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = str(listener.getsockname()[1]).encode()
        assert await sandboxed.call("b_connect", port) == {"connect": "connected"}  # "host"
        offline = await sandboxed.call("c_offline", port)
        assert offline == {"connect": "ENETUNREACH"}  # its own network: loopback down


def test_the_release_is_under_tmp_as_the_private_tmp_must_carry_over(release_dir: Path) -> None:
    # What makes the tests above exercise InstanceSandbox.tmp_binds.
    assert str(release_dir).startswith("/tmp/")
