"""The prepared instance: a sandboxed runtime keeps one instance forked ahead, settled in its
cgroup, and the next cold start of any function becomes it, with that function's uid and
limits; when it is gone, a cold start forks one as before. Needs root and writable cgroups."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tierfaas.config import NodeConfig
from tierfaas.manifest import load_release
from tierfaas.runtime import Runtime
from tierfaas.runtime.spawner import ZygoteSpawner
from tierfaas.sandbox.cgroups import Layout, detect

if os.geteuid() != 0:
    pytest.skip("needs root: maps a uid range", allow_module_level=True)
if not isinstance(detect(), Layout):
    pytest.skip(f"needs writable cgroups; this host: {detect()}", allow_module_level=True)

MANIFEST = """\
[release]
name = "prepared"
version = "1.0.0"

[functions.a_small]
handler = "fns:who"
memory_mb = 32
pids = 8

[functions.b_large]
handler = "fns:who"
memory_mb = 96
"""

HANDLERS = """\
import json, os

def who(body):
    return json.dumps({"uid": os.getuid(), "pid": os.getpid()})
"""


@pytest.fixture
def release_dir(tmp_path: Path) -> Path:
    tmp_path.chmod(0o755)  # the functions' uids read it
    (tmp_path / "tierfaas.toml").write_text(MANIFEST)
    (tmp_path / "fns.py").write_text(HANDLERS)
    return tmp_path


@pytest.fixture
async def runtime(release_dir: Path) -> AsyncIterator[Runtime]:
    tmp_path = release_dir
    release = load_release(tmp_path)
    rt = Runtime(release, NodeConfig(release_dir=tmp_path))
    await rt.start()
    try:
        yield rt
    finally:
        await rt.close()


async def prepared_of(rt: Runtime) -> tuple[int, object]:
    spawner = rt.spawner
    assert isinstance(spawner, ZygoteSpawner)
    for _ in range(250):
        if spawner.prepared is not None:
            return spawner.prepared
        await asyncio.sleep(0.02)
    raise AssertionError("no prepared instance within 5 s")


def limit_of(cgroup: object, name: str) -> str:
    for path in cgroup.join_files():  # type: ignore[attr-defined]
        candidate = path.parent / name
        if candidate.exists():
            return candidate.read_text().strip()
    raise AssertionError(f"no {name} in the cgroup")


async def test_a_cold_start_takes_the_prepared_instance_with_its_functions_limits(
    runtime: Runtime,
) -> None:
    number, cgroup = await prepared_of(runtime)
    # Until it has a function, it holds the release's largest limits.
    assert limit_of(cgroup, "memory.limit_in_bytes") == str(96 * 1024 * 1024)
    answer = await runtime.invoke("a_small", b"", request_id="r1")
    assert json.loads(answer.body) == {"uid": 1, "pid": 2}
    (instance,) = runtime.pools["a_small"].instances
    assert instance.id == number and instance.cgroup is cgroup
    assert limit_of(cgroup, "memory.limit_in_bytes") == str(32 * 1024 * 1024)
    assert limit_of(cgroup, "pids.max") == "8"
    # And the next one is prepared for whichever function starts next.
    following, _ = await prepared_of(runtime)
    assert following != number
    answer = await runtime.invoke("b_large", b"", request_id="r2")
    assert json.loads(answer.body)["uid"] == 2


async def test_a_prepared_instance_that_died_is_replaced_by_a_fresh_fork(
    runtime: Runtime,
) -> None:
    _, cgroup = await prepared_of(runtime)
    cgroup.kill()  # type: ignore[attr-defined]
    answer = await runtime.invoke("b_large", b"", request_id="r1")
    assert json.loads(answer.body) == {"uid": 2, "pid": 2}
