"""``tierfaas load`` against a real node: it sends what it says, counts errors, and exits 1
when nothing succeeds (127.0.14.x)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tierfaas.testing.nodes import NodeProcess

pytestmark = pytest.mark.e2e

TESTREL = Path(__file__).parent.parent / "fixtures" / "testrel"


def load(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tierfaas.cli", "load", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={"COLUMNS": "200", "NO_COLOR": "1", "PATH": "/usr/bin:/bin"},
    )


def row(output: str, label: str) -> str:
    (line,) = [line for line in output.splitlines() if label in line]
    return line.replace("│", " ").split(label, 1)[1].strip()


def test_load_counts_every_request_and_every_error(tmp_path: Path) -> None:
    node = NodeProcess(TESTREL, host="127.0.14.2", log_path=tmp_path / "node.log").start()
    try:
        ok = load("--url", node.url, "--rps", "50", "--duration", "2", "--functions", "echo")
        assert ok.returncode == 0, ok.stdout + ok.stderr
        assert row(ok.stdout, "requests sent") == "100"
        assert row(ok.stdout, "ok (200)") == "100"
        assert row(ok.stdout, "errors") == "0"
        # Half of the calls go to a function that does not exist: 404s, counted as errors.
        mixed = load(
            "--url", node.url, "--rps", "20", "--duration", "1", "--functions", "echo,nosuch"
        )  # fmt: skip
        assert mixed.returncode == 0, mixed.stdout
        assert row(mixed.stdout, "ok (200)") == "10"
        assert row(mixed.stdout, "errors") == "10"
        assert "404" in mixed.stdout
    finally:
        node.stop()
    down = load("--url", node.url, "--rps", "10", "--duration", "0.5", "--functions", "echo")
    assert down.returncode == 1  # nothing answered: a failing exit code for scripts
