"""The release's build step with real processes: make builds an artifact, a failing build
stops the release with its last lines, a hanging one is killed with its whole process group,
builds of one directory take turns, and a node does not start (or, following a registry, does
not get ready) on a release that does not build."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import subprocess
import threading
import time
from pathlib import Path

import pytest

from tierfaas.deploy.build import (
    LOCK_NAME,
    LOG_BURST_LINES,
    LOG_LINES_PER_S,
    prepare_release,
    prepare_release_async,
    run_build,
)
from tierfaas.deploy.registry import DirectoryRegistry
from tierfaas.errors import BuildFailed, ManifestError
from tierfaas.manifest import Release, load_release
from tierfaas.procs import alive
from tierfaas.testing.nodes import NodeProcess, free_port, http_get, run_cli

HANDLER = """
from pathlib import Path


def hello(body: bytes) -> str:
    return Path("artifact.txt").read_text()
"""

MAKEFILE = """artifact.txt: source.txt
\techo compiling source.txt
\tcp source.txt artifact.txt
"""


def make_release(
    folder: Path,
    build: str = '["make"]',
    *,
    functions: str = '[functions.hello]\nhandler = "handlers:hello"\n',
    makefile: str = MAKEFILE,
) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "tierfaas.toml").write_text(
        f'[release]\nname = "built"\nversion = "1.0.0"\nbuild = {build}\n\n{functions}'
    )
    (folder / "handlers.py").write_text(HANDLER)
    (folder / "Makefile").write_text(makefile)
    (folder / "source.txt").write_text("built by make\n")
    return folder


def wait_gone(pid: int, timeout_s: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not alive(pid, None):
            return True
        time.sleep(0.05)
    return False


def test_make_builds_the_artifact_and_its_output_goes_to_the_log(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    release = load_release(make_release(tmp_path / "r"))
    with caplog.at_level(logging.INFO, logger="tierfaas.build"):
        prepare_release(release, timeout_s=60)
    assert (release.root / "artifact.txt").read_text() == "built by make\n"
    lines = [r.getMessage() for r in caplog.records if r.name == "tierfaas.build"]
    assert "built 1.0.0: compiling source.txt" in lines, lines
    assert (release.root / LOCK_NAME).exists()


def test_the_build_sees_a_scrubbed_environment_and_no_stdin(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TIERFAAS_CLUSTER_KEY", "secret")
    monkeypatch.setenv("SOME_TOKEN", "secret")
    build = '["sh", "-c", "env > env.txt; cat > stdin.txt"]'
    release = load_release(make_release(tmp_path / "r", build))
    run_build(release, timeout_s=60)
    names = {line.split("=", 1)[0] for line in (release.root / "env.txt").read_text().split()}
    assert "PATH" in names and "TIERFAAS_CLUSTER_KEY" not in names and "SOME_TOKEN" not in names
    assert (release.root / "stdin.txt").read_text() == ""


def test_a_failing_build_raises_with_its_status_and_last_lines(tmp_path: Path) -> None:
    makefile = "all:\n\t@for i in $$(seq 1 50); do echo output line $$i; done\n\t@exit 3\n"
    release = load_release(make_release(tmp_path / "r", makefile=makefile))
    with pytest.raises(BuildFailed) as caught:
        run_build(release, timeout_s=60)
    error = caught.value
    assert error.status == "exit 2"  # make's own status when a recipe fails
    assert "output line 50" in "\n".join(error.tail) and "output line 20" not in error.tail
    assert len(error.tail) == 20
    assert "output line 50" in str(error) and "exit 2" in str(error)
    assert "output line 50" in error.summary()


def test_a_build_program_that_does_not_exist_fails_to_start(tmp_path: Path) -> None:
    release = load_release(make_release(tmp_path / "r", '["no-such-build-tool-xyz"]'))
    with pytest.raises(BuildFailed, match="cannot start 'no-such-build-tool-xyz'"):
        run_build(release, timeout_s=60)


def test_a_hanging_build_is_killed_with_its_process_group_at_its_timeout(tmp_path: Path) -> None:
    # The build forks a grandchild that would outlive a kill of the leader alone.
    build = '["sh", "-c", "sleep 300 & echo $! > child.pid; echo started; sleep 300"]'
    release = load_release(make_release(tmp_path / "r", build))
    began = time.monotonic()
    with pytest.raises(BuildFailed) as caught:
        run_build(release, timeout_s=1.0)
    took = time.monotonic() - began
    assert caught.value.status == "timed out after 1 s"
    assert caught.value.tail == ("started",)
    assert took < 10, took
    child = int((release.root / "child.pid").read_text())
    assert wait_gone(child), f"the build's grandchild {child} outlived it"


def test_a_cancelled_build_is_killed_with_its_process_group(tmp_path: Path) -> None:
    build = '["sh", "-c", "sleep 300 & echo $! > child.pid; sleep 300"]'
    release = load_release(make_release(tmp_path / "r", build))

    async def cancel_it() -> None:
        task = asyncio.ensure_future(prepare_release_async(release, timeout_s=60))
        deadline = time.monotonic() + 10
        while not (release.root / "child.pid").exists():
            assert time.monotonic() < deadline
            await asyncio.sleep(0.02)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(cancel_it())
    child = int((release.root / "child.pid").read_text())
    assert wait_gone(child), f"the build's grandchild {child} outlived its cancel"


def test_the_leader_exiting_ends_what_it_left_running(tmp_path: Path) -> None:
    # A build that exits at once but leaves a process holding its output pipe open.
    build = '["sh", "-c", "sleep 300 & echo $! > child.pid; echo done"]'
    release = load_release(make_release(tmp_path / "r", build))
    began = time.monotonic()
    run_build(release, timeout_s=60)
    assert time.monotonic() - began < 10
    assert wait_gone(int((release.root / "child.pid").read_text()))


def test_two_builds_of_one_directory_take_turns(tmp_path: Path) -> None:
    build = '["sh", "-c", "echo start >> turns.txt; sleep 0.5; echo end >> turns.txt"]'
    folder = make_release(tmp_path / "r", build)
    releases: list[Release] = [load_release(folder), load_release(folder)]
    failures: list[BaseException] = []

    def build_one(release: Release) -> None:
        try:
            run_build(release, timeout_s=60)
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=build_one, args=(r,)) for r in releases]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert failures == []
    assert (folder / "turns.txt").read_text().split() == ["start", "end", "start", "end"]


def test_a_missing_exec_program_after_the_build_names_the_function(tmp_path: Path) -> None:
    functions = '[functions.native]\nruntime = "exec"\ncommand = ["./hello"]\nprotocol = "stdio"\n'
    release = load_release(make_release(tmp_path / "r", functions=functions))
    with pytest.raises(ManifestError) as caught:
        prepare_release(release, timeout_s=60)
    assert caught.value.field == "functions.native.command"
    assert "after the release's build step" in str(caught.value)


def test_an_exec_program_the_build_makes_is_found(tmp_path: Path) -> None:
    functions = '[functions.native]\nruntime = "exec"\ncommand = ["./hello"]\nprotocol = "stdio"\n'
    makefile = "hello:\n\tprintf '#!/bin/sh\\nexit 0\\n' > hello\n\tchmod +x hello\n"
    release = load_release(make_release(tmp_path / "r", functions=functions, makefile=makefile))
    prepare_release(release, timeout_s=60)
    assert os.access(release.root / "hello", os.X_OK)


def test_a_node_builds_its_release_before_it_serves(tmp_path: Path) -> None:
    folder = make_release(tmp_path / "r")
    node = NodeProcess(folder, extra_args=["--isolation", "process"], log_path=tmp_path / "n.log")
    with node.start(timeout=60):
        status, body = http_get(f"{node.url}/function/hello", timeout=30)
        assert (status, body) == (200, b"built by make\n"), node.log_tail()
    assert "built 1.0.0: compiling source.txt" in node.log_tail(20000)


def start_refused(folder: Path) -> subprocess.CompletedProcess[str]:
    """``tierfaas node`` on ``folder``, which must exit 2 (its release does not load)."""
    port = free_port("127.0.0.1")
    result = run_cli(
        "node", "--release", str(folder), "--http", f"127.0.0.1:{port}",
        "--isolation", "process", timeout=60,
    )  # fmt: skip
    assert result.returncode == 2, result.stdout + result.stderr
    return result


def test_a_node_with_a_broken_build_does_not_start(tmp_path: Path) -> None:
    makefile = "all:\n\t@echo the compiler says no\n\t@false\n"
    result = start_refused(make_release(tmp_path / "r", makefile=makefile))
    assert "build ['make'] failed (exit 2)" in result.stderr
    assert "the compiler says no" in result.stderr


def test_a_node_with_a_missing_exec_program_does_not_start(tmp_path: Path) -> None:
    functions = '[functions.native]\nruntime = "exec"\ncommand = ["./hello"]\nprotocol = "stdio"\n'
    result = start_refused(make_release(tmp_path / "r", functions=functions))
    assert "functions.native.command" in result.stderr


def test_a_node_following_a_registry_with_a_broken_build_starts_fatally_not_ready(
    tmp_path: Path,
) -> None:
    makefile = "all:\n\t@echo error: undefined reference to main\n\t@exit 1\n"
    registry = DirectoryRegistry(tmp_path / "registry")
    registry.publish(make_release(tmp_path / "r", makefile=makefile))
    node = NodeProcess(
        tmp_path / "unused",
        extra_args=["--registry", str(registry.root), "--isolation", "process"],
        log_path=tmp_path / "n.log",
    )
    with node.start(timeout=60):
        status, body = http_get(f"{node.url}/readyz")
        answer = json.loads(body)
        assert status == 503 and answer["fatal"] is True, (status, answer, node.log_tail())
        assert answer["reason"].startswith("release built 1.0.0: build failed (exit 2)"), answer
        assert "error: undefined reference to main" in answer["reason"]


def test_a_node_following_a_registry_builds_its_version_before_it_serves(tmp_path: Path) -> None:
    registry = DirectoryRegistry(tmp_path / "registry")
    registry.publish(make_release(tmp_path / "r"))
    node = NodeProcess(
        tmp_path / "unused",
        extra_args=["--registry", str(registry.root), "--isolation", "process"],
        log_path=tmp_path / "n.log",
    )
    with node.start(timeout=60):
        status, body = http_get(f"{node.url}/function/hello", timeout=30)
        assert (status, body) == (200, b"built by make\n"), node.log_tail()
        deadline = time.monotonic() + 30  # the import check runs in the background
        while http_get(f"{node.url}/readyz")[0] != 200:
            assert time.monotonic() < deadline, node.log_tail()
            time.sleep(0.1)
    assert (registry.release_dir("1.0.0") / "artifact.txt").exists()


def test_a_runaway_build_cannot_flood_the_log(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    build = '["sh", "-c", "seq 1 200000; exit 1"]'
    release = load_release(make_release(tmp_path / "r", build))
    began = time.monotonic()
    with caplog.at_level(logging.INFO, logger="tierfaas.build"), pytest.raises(BuildFailed) as e:
        run_build(release, timeout_s=60)
    took = time.monotonic() - began
    records = [r for r in caplog.records if r.name == "tierfaas.build"]
    # the burst, the rate over the run, a summary a second, and the lines about the build
    assert len(records) <= LOG_BURST_LINES + (LOG_LINES_PER_S + 1) * took + 10, len(records)
    assert any("lines of build output not logged" in r.getMessage() for r in records)
    assert e.value.tail[-1] == "200000"  # the tail keeps the real last lines
