"""The node's side of the sandbox, pure: the environment its zygote (and so every instance)
starts with, and how the node finds an instance among its cgroup's processes (the NSpid line
of /proc/<pid>/status)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tierfaas.runtime.instance import _innermost_pid
from tierfaas.runtime.zygote_client import zygote_environment

NODE_ENV = {
    "PATH": "/opt/py/bin:/usr/bin",
    "LANG": "C.UTF-8",
    "LANGUAGE": "en",
    "LC_ALL": "C.UTF-8",
    "LC_CTYPE": "C.UTF-8",
    "TZ": "UTC",
    "PYTHONPATH": "/srv/lib",
    "PYTHONHASHSEED": "0",
    "HOME": "/root",
    "USER": "root",
    "TIERFAAS_CLUSTER_KEY": "c2VjcmV0",
    "TIERFAAS_ADMIN_TOKEN": "token",
    "AWS_SECRET_ACCESS_KEY": "aws-secret",
    "HTTPS_PROXY": "http://user:password@proxy:3128",
    "SSH_AUTH_SOCK": "/run/user/0/ssh",
    "MALLOC_ARENA_MAX": "8",
}


def test_a_sandboxed_zygote_keeps_only_what_programs_need_to_run() -> None:
    assert zygote_environment(NODE_ENV, sandboxed=True) == {
        "PATH": "/opt/py/bin:/usr/bin",
        "LANG": "C.UTF-8",
        "LANGUAGE": "en",
        "LC_ALL": "C.UTF-8",
        "LC_CTYPE": "C.UTF-8",
        "TZ": "UTC",
        "PYTHONPATH": "/srv/lib",
        "PYTHONHASHSEED": "0",
        "HOME": "/tmp",  # the node's home is not in the sandbox; its private /tmp is
        "MALLOC_ARENA_MAX": "2",
    }


def test_a_sandboxed_zygote_gets_a_path_when_the_node_has_none() -> None:
    env = zygote_environment({"AWS_SECRET_ACCESS_KEY": "x"}, sandboxed=True)
    assert env == {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": "/tmp", "MALLOC_ARENA_MAX": "2"}


@pytest.mark.parametrize("name", ["TIERFAAS_CLUSTER_KEY", "TIERFAAS_ADMIN_TOKEN", "TIERFAAS_X"])
def test_no_tierfaas_setting_reaches_the_zygote_in_either_mode(name: str) -> None:
    for sandboxed in (True, False):
        assert name not in zygote_environment({**NODE_ENV, name: "v"}, sandboxed=sandboxed)


def test_process_isolation_keeps_everything_but_the_nodes_own_settings() -> None:
    env = zygote_environment(NODE_ENV, sandboxed=False)
    expected = {k: v for k, v in NODE_ENV.items() if not k.startswith("TIERFAAS_")}
    assert env == expected  # the node's MALLOC_ARENA_MAX too: it was set on purpose


def test_process_isolation_bounds_malloc_arenas_when_the_node_does_not() -> None:
    assert zygote_environment({"HOME": "/root"}, sandboxed=False) == {
        "HOME": "/root",
        "MALLOC_ARENA_MAX": "2",
    }


def test_the_callers_environment_is_not_changed() -> None:
    node = dict(NODE_ENV)
    zygote_environment(node, sandboxed=True)
    zygote_environment(node, sandboxed=False)
    assert node == NODE_ENV


# -- which process is the instance -------------------------------------------------------------

# /proc/<pid>/status of an instance as the node sees it: host pid, pid in the release's
# namespace, pid in its own (2: the instance; 1 is its reaper). NStgid and NSpgid come either
# side of NSpid and must not be taken for it.
INSTANCE_STATUS = """\
Name:\tpython3
Umask:\t0022
State:\tS (sleeping)
Tgid:\t48213
Ngid:\t0
Pid:\t48213
PPid:\t48190
NStgid:\t48213\t14\t2
NSpid:\t48213\t14\t2
NSpgid:\t48190\t12\t1
NSsid:\t48190\t12\t1
Uid:\t200002\t200002\t200002\t200002
"""


def test_the_innermost_pid_is_the_last_field_of_nspid() -> None:
    assert _innermost_pid(INSTANCE_STATUS) == 2
    reaper = INSTANCE_STATUS.replace("NSpid:\t48213\t14\t2", "NSpid:\t48212\t13\t1")
    assert _innermost_pid(reaper) == 1


def test_a_process_in_the_nodes_own_namespace_has_one_pid() -> None:
    assert _innermost_pid("Name:\tx\nNSpid:\t48213\nNSpgid:\t2\n") == 48213


@pytest.mark.parametrize(
    "status",
    [
        "",  # the process is gone: nothing was read
        "Name:\tx\nPid:\t2\nNSpgid:\t2\n",  # a kernel before 4.1 has no NSpid line
        "Name:\tx\nNSpid:\n",
        "Name:\tx\nNSpid:\t48213\t?\n",
    ],
)
def test_no_nspid_field_gives_no_pid(status: str) -> None:
    assert _innermost_pid(status) is None


def test_this_process_reads_as_its_own_pid() -> None:
    # os.getpid() is the pid in the caller's own (innermost) namespace, wherever it runs.
    assert _innermost_pid(Path("/proc/self/status").read_text()) == os.getpid()
