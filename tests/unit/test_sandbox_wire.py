"""What the node sends its zygote about the sandbox: the release's plan (``ReleaseSandbox``, in
the ZYGOTE_SETUP frame) and each instance's box (the SPAWN frame's ``sandbox``, read by the
zygote as ``InstanceSandbox(**box)``), through msgpack as on the socket. The spawner is built
and asked for frames, never started: no zygote, no process."""

from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgpack
import pytest

from tierfaas.config import NodeConfig
from tierfaas.errors import ConfigError
from tierfaas.manifest import load_release
from tierfaas.runtime.spawner import ZygoteSpawner
from tierfaas.sandbox.enter import InstanceSandbox, ReleaseSandbox
from tierfaas.sandbox.filesystem import Bind, Mask, Symlink
from tierfaas.testing.clock import FakeClock

ROOT = os.geteuid() == 0
DEMO_NAMES = ["boom", "hello", "sha256", "sleep", "slowinit"]  # sorted: the order of their uids


def through_msgpack(data: Any) -> Any:
    return msgpack.unpackb(msgpack.packb(data))


@pytest.mark.parametrize("privileged", [True, False])
def test_a_release_plan_with_every_kind_of_operation_survives_the_wire(privileged: bool) -> None:
    plan = ReleaseSandbox(
        uid_map="0 200000 65536\n",
        privileged=privileged,
        ops=[
            Symlink("/bin", "usr/bin"),
            Bind("/usr", True),
            Bind("/etc/hosts", False),
            Mask("/srv/rel/state", True),
            Mask("/srv/rel/cluster.key", False),
        ],
        hostname="my-release",
        secrets_dir="/dev/shm/tierfaas-secrets-1-abc",
    )
    assert ReleaseSandbox.from_wire(through_msgpack(plan.to_wire())) == plan


def test_an_empty_plan_survives_the_wire() -> None:
    plan = ReleaseSandbox("0 1000 1\n", False)
    assert ReleaseSandbox.from_wire(through_msgpack(plan.to_wire())) == plan


# -- the spawner's frames --------------------------------------------------------------------


@pytest.fixture
def demo_in_tmp(demo: Path) -> Iterator[Path]:
    """The demo release copied under /tmp (the instance's private /tmp must carry it over)."""
    with tempfile.TemporaryDirectory(dir="/tmp") as parent:
        yield Path(shutil.copytree(demo, Path(parent) / "demo")).resolve()


def spawner_of(release_dir: Path, **settings: Any) -> ZygoteSpawner:
    config = NodeConfig(release_dir=release_dir, **settings)
    return ZygoteSpawner(load_release(release_dir), config, FakeClock())


def box_of(spawner: ZygoteSpawner, name: str) -> InstanceSandbox:
    """The instance's box as the zygote reads it from the SPAWN frame."""
    frame = through_msgpack(spawner.frame(spawner.release.functions[name]))
    return InstanceSandbox(**frame["sandbox"])


def test_each_function_gets_its_own_uid_in_the_frame(demo: Path) -> None:
    spawner = spawner_of(demo, isolation="sandbox")
    uids = {name: box_of(spawner, name).uid for name in DEMO_NAMES}
    if ROOT:  # one uid each, from 1 (0 is the zygote), in the order of the sorted names
        assert uids == {name: i + 1 for i, name in enumerate(DEMO_NAMES)}
    else:  # only the node's own uid can be mapped: 0 inside for everyone
        assert set(uids.values()) == {0}


def test_the_frame_carries_network_tmp_size_and_a_valid_hostname(demo_in_tmp: Path) -> None:
    with (demo_in_tmp / "tierfaas.toml").open("a") as manifest:
        manifest.write('\n[functions.no_net]\nhandler = "handlers:hello"\n')
    spawner = spawner_of(demo_in_tmp, isolation="sandbox", sandbox_tmp_mb=8)
    offline = dataclasses.replace(spawner.release.functions["no_net"], network="none")
    frame = through_msgpack(spawner.frame(offline, cgroup_fds=2))
    box = InstanceSandbox(**frame["sandbox"])
    assert (box.network, box.tmp_mb, box.hostname) == ("none", 8, "no-net")
    assert frame["cgroup_fds"] == 2
    assert box_of(spawner, "hello").network == "host"


def test_the_release_is_carried_over_exactly_when_it_lives_under_tmp(demo: Path) -> None:
    """examples/demo: outside /tmp in a checkout elsewhere, inside it in a clone under /tmp."""
    box = box_of(spawner_of(demo, isolation="sandbox"), "hello")
    release = str(demo.resolve())
    assert (release in box.tmp_binds) == release.startswith("/tmp/")
    assert all(path.startswith("/tmp/") for path in box.tmp_binds)


def test_a_release_under_tmp_is_carried_into_each_instances_private_tmp(demo_in_tmp: Path) -> None:
    spawner = spawner_of(demo_in_tmp, isolation="sandbox")
    box = box_of(spawner, "hello")
    assert str(demo_in_tmp) in box.tmp_binds
    assert all(path.startswith("/tmp/") for path in box.tmp_binds)
    # Only bound paths are carried over, each as the zygote bound it.
    plan = ReleaseSandbox.from_wire(through_msgpack(spawner.zygote.setup["sandbox"]))
    binds = {op.path for op in plan.ops if isinstance(op, Bind)}
    assert set(box.tmp_binds) <= binds


def test_the_zygote_setup_carries_the_plan_of_the_release(demo: Path) -> None:
    spawner = spawner_of(demo, isolation="sandbox", key_file=demo / "handlers.py")
    setup = through_msgpack(spawner.zygote.setup)
    assert (setup["root"], setup["preload"]) == (str(demo.resolve()), [])
    plan = ReleaseSandbox.from_wire(setup["sandbox"])
    assert spawner.identities is not None
    assert plan.uid_map == spawner.identities.uid_map
    assert plan.privileged == ROOT
    assert plan.hostname == "demo"
    assert Bind(str(demo.resolve()), True) in plan.ops
    assert Mask(str(demo.resolve() / "handlers.py"), False) in plan.ops  # the "key file"


def test_process_isolation_sends_no_sandbox(demo: Path) -> None:
    spawner = spawner_of(demo, isolation="process")
    assert spawner.zygote.setup["sandbox"] is None
    assert spawner.frame(spawner.release.functions["hello"])["sandbox"] is None


@pytest.mark.skipif(not ROOT, reason="a node that is not root maps one uid: no range to check")
def test_a_uid_range_too_small_for_the_release_refuses_the_sandbox(demo: Path) -> None:
    with pytest.raises(ConfigError, match="--sandbox-uid-count"):
        spawner_of(demo, isolation="sandbox", sandbox_uid_count=5)  # 5 functions + the zygote
    spawner_of(demo, isolation="sandbox", sandbox_uid_count=6)


def test_process_isolation_does_not_depend_on_the_sandbox_uid_range(demo: Path) -> None:
    spawner = spawner_of(demo, isolation="process", sandbox_uid_count=2)
    assert spawner.frame(spawner.release.functions["hello"])["sandbox"] is None


def test_an_exec_function_s_frame_names_its_program_and_port(tmp_path: Path) -> None:
    (tmp_path / "tierfaas.toml").write_text(
        '[release]\nname = "x"\nversion = "1"\n\n'
        '[functions.web]\nruntime = "exec"\ncommand = ["node", "web.js"]\nprotocol = "http"\n'
        'env = { A = "1" }\n\n'
        '[functions.py]\nhandler = "h:f"\n'
    )
    (tmp_path / "h.py").write_text("def f(body):\n    return body\n")
    spawner = spawner_of(tmp_path, isolation="process")
    web = through_msgpack(spawner.frame(spawner.release.functions["web"], port=4321))
    assert web["exec"] == {"argv": ["node", "web.js"], "protocol": "http"}
    assert web["handler"] is None
    # PORT, and http_port for functions written for OpenFaaS's templates; the function's own.
    assert web["env"] == {"A": "1", "TIERFAAS_FUNCTION": "web", "PORT": "4321",
                          "http_port": "4321"}  # fmt: skip
    python = through_msgpack(spawner.frame(spawner.release.functions["py"]))
    assert python["exec"] is None and "PORT" not in python["env"]
