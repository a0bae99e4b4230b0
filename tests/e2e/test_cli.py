"""The command line as a user types it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tierfaas.testing.nodes import NodeProcess, http_get

pytestmark = pytest.mark.e2e

DEMO = Path(__file__).parent.parent.parent / "examples" / "demo"


def tierfaas(
    *args: str, stdin: bytes = b"", env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "tierfaas.cli", *args],
        input=stdin,
        capture_output=True,
        timeout=60,
        check=False,
        env=env,
    )


def test_help_documents_commands_and_defaults() -> None:
    top = tierfaas("--help").stdout.decode()
    assert "node" in top and "invoke" in top
    node_help = tierfaas("node", "--help").stdout.decode()
    for option in ("--release", "--http", "--max-body-bytes", "--drain-timeout-s"):
        assert option in node_help
    assert "127.0.0.1:8080" in node_help and "6291456" in node_help


def test_bad_config_fails_with_the_field_name() -> None:
    result = tierfaas("node", "--release", str(DEMO), "--http", "127.0.0.1:http")
    assert result.returncode == 2
    assert b"'http'" in result.stderr and b"Traceback" not in result.stderr
    result = tierfaas("node", "--release", "/nonexistent")
    assert result.returncode == 2 and b"release_dir" in result.stderr


def test_busy_port_is_a_clear_error() -> None:
    with NodeProcess(DEMO, host="127.0.0.5") as node:
        result = tierfaas("node", "--release", str(DEMO), "--http", f"127.0.0.5:{node.port}")
    assert result.returncode == 2
    assert b"cannot listen on" in result.stderr and b"Traceback" not in result.stderr


def test_broken_manifest_names_file_and_field(tmp_path: Path) -> None:
    (tmp_path / "tierfaas.toml").write_text('[release]\nname = "x"\n')
    result = tierfaas("node", "--release", str(tmp_path))
    assert result.returncode == 2
    assert b"tierfaas.toml: release.version: missing" in result.stderr


def test_invoke_prints_the_answer_and_fails_on_errors() -> None:
    with NodeProcess(DEMO, host="127.0.0.5") as node:
        ok = tierfaas("invoke", "hello", "--data", "world", "--url", node.url)
        assert (ok.returncode, ok.stdout) == (0, b"Hello, world!\n")
        piped = tierfaas("invoke", "hello", "--data", "-", "--url", node.url, stdin=b"pipe")
        assert piped.stdout == b"Hello, pipe!\n"
        boom = tierfaas("invoke", "boom", "--url", node.url)
        assert boom.returncode == 1 and b"500 ValueError" in boom.stderr
    gone = tierfaas("invoke", "hello", "--url", node.url)
    assert gone.returncode == 1 and b"cannot reach" in gone.stderr


def _without_isolation_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "TIERFAAS_ISOLATION"}


def test_a_host_that_cannot_sandbox_refuses_to_start(tmp_path: Path) -> None:
    """Issue #16: no writable cgroup (an empty folder as --cgroup-root) and the node, asked
    to sandbox by default, exits 2 before it binds anything, naming what is missing and how to
    accept plain processes."""
    empty = tmp_path / "no-cgroups"
    empty.mkdir()
    argv = ["node", "--release", str(DEMO), "--http", "127.0.0.5:0", "--cgroup-root", str(empty)]
    # A node that does not refuse serves until killed: the timeout fails the test.
    result = tierfaas(*argv, env=_without_isolation_env())
    stderr = " ".join(result.stderr.decode(errors="replace").split())
    assert result.returncode == 2, stderr
    assert stderr.startswith("error: this host cannot sandbox functions: no writable cgroup (")
    assert "--isolation process (TIERFAAS_ISOLATION=process)" in stderr
    assert "Traceback" not in stderr


def test_process_isolation_accepted_explicitly_serves_on_the_same_host(tmp_path: Path) -> None:
    """What the refusal above offers: with --isolation process the same host serves, and the
    function list and ``tierfaas status`` say how its functions run."""
    empty = tmp_path / "no-cgroups"
    empty.mkdir()
    args = ["--isolation", "process", "--cgroup-root", str(empty)]
    with NodeProcess(DEMO, host="127.0.0.5", extra_args=args) as n:
        ok = tierfaas("invoke", "hello", "--data", "world", "--url", n.url)
        assert (ok.returncode, ok.stdout) == (0, b"Hello, world!\n")
        status, body = http_get(f"{n.url}/v1/functions")
        shown = tierfaas("status", "--url", n.url, env={**os.environ, "COLUMNS": "200"})
        as_json = json.loads(tierfaas("status", "--url", n.url, "--json").stdout)
    assert status == 200
    assert {f["isolation"] for f in json.loads(body)["functions"]} == {"process"}
    assert shown.returncode == 0
    hello = next(line for line in shown.stdout.decode().splitlines() if " hello " in line)
    assert "process (unsandboxed)" in hello
    assert {f["isolation"] for f in as_json["functions"]["functions"]} == {"process"}
