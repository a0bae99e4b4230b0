"""Real node processes for tests and benchmarks: start on loopback, wait until healthy, stop.

Every process is started in its own session, so ``kill()`` ends the node and anything it left.
Use as a context manager (or call ``stop()``/``kill()`` in a ``finally``): nothing outlives it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import TracebackType

from tierfaas.procs import free_port, kill_group, spawn_in_session

# free_port is here too: the tests that start nodes take their ports from this module.
__all__ = [
    "NodeProcess",
    "descendants",
    "free_port",
    "http_get",
    "processes_in_session",
    "run_cli",
]


def run_cli(
    *args: str, timeout: float = 90.0, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``tierfaas ARGS...`` in a subprocess (this interpreter), its output captured as text;
    ``env``: variables set besides this process's."""
    return subprocess.run(
        [sys.executable, "-m", "tierfaas.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        stdin=subprocess.DEVNULL,
        env=None if env is None else {**os.environ, **env},
    )


def run_cli_bytes(
    *args: str, stdin: bytes | None = None, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[bytes]:
    """``run_cli`` with bytes in and out: ``stdin`` fed to the command (secret values, which
    must reach it byte for byte), its output captured as bytes."""
    return subprocess.run(
        [sys.executable, "-m", "tierfaas.cli", *args],
        input=stdin,
        capture_output=True,
        timeout=timeout,
        check=False,
        env=None if env is None else {**os.environ, **env},
    )


def http_get(url: str, timeout: float = 2.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


class NodeProcess:
    """``tierfaas node`` as a child process, its output captured in ``log_path``."""

    def __init__(
        self,
        release: Path | str,
        host: str = "127.0.0.1",
        port: int | None = None,
        extra_args: Sequence[str] = (),
        log_path: Path | str | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        self.release = Path(release)
        self.host = host
        self.port = port or free_port(host)
        self.extra_args = list(extra_args)
        self.log_path = Path(log_path) if log_path else None
        self.env = env
        self.process: subprocess.Popen[bytes] | None = None
        self._log_file: int | None = None
        # Its own state dir (the async calls' store), kept across restarts of this node and
        # removed when the context ends; a test that passes --data-dir owns its own.
        self.data_dir: Path | None = None
        if "--data-dir" not in self.extra_args:
            self.data_dir = Path(tempfile.mkdtemp(prefix="tierfaas-node-"))

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def start(self, wait: bool = True, timeout: float = 20.0) -> NodeProcess:
        args = [
            sys.executable, "-m", "tierfaas.cli", "node",
            "--release", str(self.release),
            "--http", f"{self.host}:{self.port}",
            *(["--data-dir", str(self.data_dir)] if self.data_dir is not None else []),
            *self.extra_args,
        ]  # fmt: skip
        output: int = subprocess.DEVNULL
        if self.log_path is not None:
            self._log_file = os.open(self.log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            output = self._log_file
        self.process = spawn_in_session(
            args, stdout=output, stderr=output, env={**os.environ, **(self.env or {})}
        )
        if wait:
            self.wait_healthy(timeout)
        return self

    def wait_healthy(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"node exited with {self.process.returncode}: {self.log_tail()}")
            with contextlib.suppress(OSError):
                status, _ = http_get(f"{self.url}/healthz", timeout=0.5)
                if status == 200:
                    return
            time.sleep(0.05)
        raise TimeoutError(f"node at {self.url} not healthy after {timeout} s: {self.log_tail()}")

    def log_tail(self, chars: int = 3000) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        return self.log_path.read_text(errors="replace")[-chars:]

    def signal(self, sig: int) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(sig)

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM, then wait for a clean exit; returns the exit code (kills past ``timeout``)."""
        if self.process is None:
            return 0
        self.signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            return -9
        finally:
            self._close_log()

    def kill(self) -> None:
        """SIGKILL to the node's whole session (the node, its zygote and instances)."""
        if self.process is None:
            return
        kill_group(self.process)
        self._close_log()

    def _close_log(self) -> None:
        if self._log_file is not None:
            os.close(self._log_file)
            self._log_file = None

    def __enter__(self) -> NodeProcess:
        return self.start() if self.process is None else self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.discard()

    def discard(self) -> None:
        """Kills the node and removes the state dir this object made for it."""
        self.kill()
        if self.data_dir is not None:
            shutil.rmtree(self.data_dir, ignore_errors=True)


def _processes() -> Iterator[tuple[int, str, int, int]]:
    """(pid, state, parent pid, session id) of every process, read from /proc."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        yield int(entry), fields[0], int(fields[1]), int(fields[3])


def descendants(pid: int) -> list[int]:
    """Every live process below ``pid`` (by /proc), deepest last."""
    children: dict[int, list[int]] = {}
    for child, _, parent, _ in _processes():
        children.setdefault(parent, []).append(child)
    found: list[int] = []
    queue = [pid]
    while queue:
        for child in children.get(queue.pop(), []):
            found.append(child)
            queue.append(child)
    return found


def rss_mib(pid: int) -> float:
    """The resident memory of process ``pid``, in MiB."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for {pid}")


def processes_in_session(sid: int) -> list[int]:
    """Live (non-zombie) processes whose session id is ``sid``."""
    return [pid for pid, state, _, session in _processes() if session == sid and state != "Z"]
