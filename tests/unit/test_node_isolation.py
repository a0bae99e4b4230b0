"""A node asked to sandbox its functions on a host that cannot refuses to start: before
anything is built, with the reason on stderr, exit code 2 and no traceback; ``tierfaas up``
says the same before it starts any node. The host is faked (``tierfaas.sandbox.probe``);
nothing is forked or bound."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from tierfaas import cli
from tierfaas.cli import app
from tierfaas.config import NodeConfig
from tierfaas.errors import SandboxUnavailable
from tierfaas.node import lifecycle
from tierfaas.sandbox import probe
from tierfaas.up import UpError, UpOptions
from tierfaas.up.options import check_host_isolation

TESTREL = Path(__file__).parent.parent / "fixtures" / "testrel"
CANNOT = probe.HostFacts(
    is_root=False,
    user_namespaces=False,
    cgroups="no cgroup file system at /nowhere",
    userns_reason="user namespaces are disabled (/proc/sys/user/max_user_namespaces is 0)",
)


def host(facts: probe.HostFacts, asked: list[tuple[str, Path]]) -> object:
    """``check_isolation`` on a host with ``facts``, recording what it was asked."""

    def check(isolation: str, cgroup_root: Path) -> None:
        asked.append((isolation, cgroup_root))
        probe.check_isolation(isolation, cgroup_root, lambda root: facts)

    return check


class NotBuilt:
    def __init__(self, *args: object) -> None:
        raise AssertionError("a refused node must not be built")


def test_a_node_that_cannot_sandbox_is_refused_before_it_is_built(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    asked: list[tuple[str, Path]] = []
    monkeypatch.setattr(lifecycle, "check_isolation", host(CANNOT, asked))
    monkeypatch.setattr(lifecycle, "Node", NotBuilt)
    config = NodeConfig(release_dir=TESTREL, cgroup_root=Path("/nowhere"))
    with pytest.raises(SandboxUnavailable) as refused:
        lifecycle.run_node(config)
    assert asked == [("sandbox", Path("/nowhere"))]
    assert "no writable cgroup (no cgroup file system at /nowhere)" in refused.value.message


def test_process_isolation_is_not_refused_on_the_same_host(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    asked: list[tuple[str, Path]] = []
    monkeypatch.setattr(lifecycle, "check_isolation", host(CANNOT, asked))

    class Built(Exception):
        pass

    def build(config: NodeConfig) -> None:
        raise Built  # the node would be built and started here

    monkeypatch.setattr(lifecycle, "Node", build)
    with pytest.raises(Built):
        lifecycle.run_node(NodeConfig(release_dir=TESTREL, isolation="process"))
    assert asked == [("process", Path("/sys/fs/cgroup"))]


def test_the_cli_prints_the_refusal_and_exits_2_without_a_traceback(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(lifecycle, "check_isolation", host(CANNOT, []))
    monkeypatch.setattr(lifecycle, "Node", NotBuilt)
    monkeypatch.delenv("TIERFAAS_ISOLATION", raising=False)
    monkeypatch.setattr(cli, "setup_logging", lambda level: None)  # no handler left behind
    result = CliRunner().invoke(app, ["node", "--release", str(TESTREL)])
    assert result.exit_code == 2
    output = " ".join(result.output.split())  # rich wraps long lines
    assert output.startswith("error: this host cannot sandbox functions: no writable cgroup")
    assert "--isolation process (TIERFAAS_ISOLATION=process)" in output
    assert "Traceback" not in output
    assert not isinstance(result.exception, SandboxUnavailable)  # handled, not raised


# -- tierfaas up: the same refusal, said once before any node starts ---------------------------


def test_up_refuses_a_host_that_cannot_sandbox_with_exit_code_2() -> None:
    def check(isolation: str, cgroup_root: Path) -> None:
        probe.check_isolation(isolation, cgroup_root, lambda root: CANNOT)

    with pytest.raises(UpError) as refused:
        check_host_isolation("sandbox", check)
    assert refused.value.code == 2
    assert str(refused.value).startswith("this host cannot sandbox functions: ")
    check_host_isolation("process", check)  # accepted explicitly: no refusal


def test_up_takes_only_the_isolations_a_node_takes(tmp_path: Path) -> None:
    UpOptions(release=TESTREL, state_dir=tmp_path, isolation="process").validate()
    with pytest.raises(UpError) as refused:
        UpOptions(release=TESTREL, state_dir=tmp_path, isolation="vm").validate()
    assert refused.value.code == 2
    assert "--isolation must be sandbox or process" in str(refused.value)
