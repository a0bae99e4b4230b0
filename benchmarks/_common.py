"""Shared helpers for the benchmark scripts in this directory.

- processes: ``Processes`` starts servers in their own process groups (on 127.0.0.x, with free
  ports) and kills every group it started on exit, error, Ctrl-C or SIGTERM;
- HTTP: ``wait_http`` polls a URL until it answers 200, ``KeepAliveClient`` is a raw-socket
  HTTP/1.1 keep-alive client whose own cost per request is a few microseconds (http.client
  adds ~100 µs, httpx far more: see shared/reference/loopback-limits.md);
- load: ``run_wrk`` runs wrk with a Lua script and parses its report into ``WrkResult``;
- numbers: ``percentile``, ``summarize`` (min/p50/p90/p95/p99/max/mean), ``median``;
- output: ``machine_info``, ``write_results`` (benchmarks/results/NAME.json, gitignored),
  ``print_table`` (rich when installed, plain text otherwise) and ``markdown_table``;
- a bare ASGI ``echo_app`` to serve as the HTTP baseline, run with ``echo_command``.

Each benchmark script is one process that owns everything it starts: run them one at a time,
since these machines have 2 shared cores and every extra process is noise.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import math
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator, MutableMapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

from tierfaas.procs import spawn_in_session, stop_group

BENCHMARKS_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCHMARKS_DIR.parent
RESULTS_DIR = BENCHMARKS_DIR / "results"

# -- numbers ---------------------------------------------------------------------------------


def percentile(values: Sequence[float], pct: float) -> float:
    """The ``pct``-th percentile (0-100) with linear interpolation between closest ranks."""
    if not values:
        return math.nan
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    rank = (len(ordered) - 1) * pct / 100.0
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else math.nan


def summarize(values: Sequence[float], scale: float = 1.0) -> dict[str, float]:
    """n, min, p50, p90, p95, p99, max and mean of ``values`` multiplied by ``scale``
    (e.g. 1e3 to turn seconds into milliseconds)."""
    scaled = [v * scale for v in values]
    if not scaled:
        return {"n": 0}
    return {
        "n": len(scaled),
        "min": min(scaled),
        "p50": percentile(scaled, 50),
        "p90": percentile(scaled, 90),
        "p95": percentile(scaled, 95),
        "p99": percentile(scaled, 99),
        "max": max(scaled),
        "mean": statistics.fmean(scaled),
    }


def ratio(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator else math.nan


# -- processes -------------------------------------------------------------------------------


@dataclass
class Managed:
    name: str
    process: subprocess.Popen[bytes]
    log_path: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def log_tail(self, lines: int = 20) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


@dataclass
class ClusterNode:
    """One node process of a benchmark's cluster: where it serves, and its process."""

    host: str
    port: int
    managed: Managed

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"


class Processes(contextlib.AbstractContextManager["Processes"]):
    """Starts processes each in its own session (process group) and, on exit, stops every
    group it started: SIGTERM, then SIGKILL after ``grace_s``. SIGTERM sent to the benchmark
    becomes ``SystemExit`` while inside the ``with`` block, so cleanup runs then too."""

    def __init__(self, grace_s: float = 5.0) -> None:
        self.grace_s = grace_s
        self.started: list[Managed] = []
        self.log_dir = Path(tempfile.mkdtemp(prefix="tierfaas-bench-"))
        self._old_sigterm: Any = None

    def __enter__(self) -> Processes:
        def on_sigterm(signum: int, frame: FrameType | None) -> None:
            raise SystemExit(128 + signum)

        self._old_sigterm = signal.signal(signal.SIGTERM, on_sigterm)
        return self

    def __exit__(self, *exc_info: object) -> None:
        try:
            self.stop_all()
        finally:
            signal.signal(signal.SIGTERM, self._old_sigterm)
            shutil.rmtree(self.log_dir, ignore_errors=True)

    def start(
        self, name: str, argv: Sequence[str], env: MutableMapping[str, str] | None = None
    ) -> Managed:
        log_path = self.log_dir / f"{name}.log"
        with open(log_path, "wb") as log:
            # SIGKILL should the benchmark itself be killed (even with -9).
            process = spawn_in_session(
                argv,
                parent_death_signal=signal.SIGKILL,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=dict(os.environ if env is None else env),
                cwd=REPO_ROOT,
            )
        managed = Managed(name, process, log_path)
        self.started.append(managed)
        return managed

    def stop(self, managed: Managed) -> int | None:
        """Stops ``managed``'s process group; returns the process's exit code."""
        code = stop_group(managed.process, self.grace_s)
        if managed in self.started:
            self.started.remove(managed)
        return code

    def stop_all(self) -> None:
        for managed in reversed(list(self.started)):
            with contextlib.suppress(Exception):
                self.stop(managed)


def process_tree(pid: int) -> list[int]:
    """``pid`` and all its live descendants (Linux /proc)."""
    found: list[int] = []
    todo = [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        with contextlib.suppress(OSError):
            for task in os.listdir(f"/proc/{current}/task"):
                with (
                    contextlib.suppress(OSError),
                    open(f"/proc/{current}/task/{task}/children") as children,
                ):
                    todo.extend(int(x) for x in children.read().split())
    return found


def cpu_seconds(pids: Sequence[int]) -> float:
    """User plus system CPU seconds consumed so far by the live processes ``pids``."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError, ValueError, IndexError):
            with open(f"/proc/{pid}/stat") as stat:
                fields = stat.read().rpartition(")")[2].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15)
    return total / tick


def tree_cpu_seconds(pid: int) -> float:
    """CPU seconds of ``pid`` and its live descendants (a node: its zygote and instances).
    Processes that exited are not counted: sample around a window in which none exit."""
    return cpu_seconds(process_tree(pid))


# -- HTTP ------------------------------------------------------------------------------------


def build_request(
    method: str,
    host: str,
    port: int,
    path: str,
    body: bytes = b"",
    headers: Sequence[tuple[str, str]] = (),
) -> bytes:
    """One raw HTTP/1.1 keep-alive request."""
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}:{port}"]
    lines += [f"{key}: {value}" for key, value in headers]
    if body or method in ("POST", "PUT"):
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


class KeepAliveClient:
    """A blocking HTTP/1.1 client on one keep-alive TCP connection; responses must carry
    Content-Length (uvicorn's do). For latency loops at one request in flight."""

    def __init__(self, host: str, port: int, timeout_s: float = 10.0) -> None:
        self.sock = socket.create_connection((host, port), timeout=timeout_s)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buffer = b""

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> KeepAliveClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def request(self, raw: bytes) -> tuple[int, bytes]:
        """Sends a request built by ``build_request``; returns (status, body)."""
        self.sock.sendall(raw)
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end >= 0:
                break
            self._recv()
        head = self.buffer[:end]
        rest = self.buffer[end + 4 :]
        status = int(head[9:12])
        match = re.search(rb"(?im)^content-length:\s*(\d+)\s*$", head)
        if match is None:
            raise RuntimeError(f"response without Content-Length: {head[:200]!r}")
        length = int(match.group(1))
        self.buffer = rest
        while len(self.buffer) < length:
            self._recv()
        body, self.buffer = self.buffer[:length], self.buffer[length:]
        return status, body

    def _recv(self) -> None:
        data = self.sock.recv(65536)
        if not data:
            raise ConnectionError("the server closed the connection")
        self.buffer += data


def http_get(host: str, port: int, path: str, timeout_s: float = 2.0) -> int:
    """The status of one GET on a new connection."""
    with KeepAliveClient(host, port, timeout_s) as client:
        status, _ = client.request(build_request("GET", host, port, path))
        return status


def wait_http(
    host: str,
    port: int,
    path: str = "/healthz",
    timeout_s: float = 30.0,
    process: Managed | None = None,
) -> float:
    """Polls ``path`` until it answers 200; returns the seconds waited. Raises RuntimeError
    (with the process's log tail) if ``process`` exits first or the time runs out."""
    began = time.perf_counter()
    deadline = began + timeout_s
    last_error = ""
    while time.perf_counter() < deadline:
        if process is not None and process.process.poll() is not None:
            raise RuntimeError(
                f"{process.name} exited with {process.process.returncode} before answering "
                f"http://{host}:{port}{path}:\n{process.log_tail()}"
            )
        try:
            if http_get(host, port, path) == 200:
                return time.perf_counter() - began
        except (OSError, RuntimeError, ValueError) as exc:
            last_error = str(exc)
        time.sleep(0.05)
    tail = process.log_tail() if process is not None else ""
    raise RuntimeError(
        f"http://{host}:{port}{path} not ready in {timeout_s:g} s: {last_error}\n{tail}"
    )


# -- wrk -------------------------------------------------------------------------------------


@dataclass
class WrkResult:
    requests_per_s: float
    requests: int
    duration_s: float
    connections: int
    threads: int
    latency_ms: dict[str, float] = field(default_factory=dict)  # avg, stdev, max, p50..p99
    non_2xx: int = 0
    socket_errors: dict[str, int] = field(default_factory=dict)

    @property
    def errors(self) -> int:
        return self.non_2xx + sum(self.socket_errors.values())

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "errors": self.errors}


def post_lua(body: bytes, content_type: str = "text/plain") -> str:
    """A wrk script that POSTs ``body`` (ASCII) on every request."""
    text = body.decode("ascii")
    return (
        'wrk.method = "POST"\n'
        f"wrk.body = {json.dumps(text)}\n"
        f'wrk.headers["Content-Type"] = {json.dumps(content_type)}\n'
    )


def require_wrk() -> str:
    path = shutil.which("wrk")
    if path is None:
        raise SystemExit("wrk is not installed: apt-get install -y wrk")
    return path


_UNIT_MS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}


def _duration_ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m|h)", text)
    if match is None:
        raise ValueError(f"not a wrk duration: {text!r}")
    return float(match.group(1)) * _UNIT_MS[match.group(2)]


def parse_wrk(output: str, connections: int, threads: int) -> WrkResult:
    """Parses wrk's report (run with --latency)."""
    rps = re.search(r"Requests/sec:\s+([\d.]+)", output)
    total = re.search(r"(\d+) requests in ([\d.]+)(us|ms|s|m)", output)
    if rps is None or total is None:
        raise ValueError(f"cannot parse wrk output:\n{output}")
    latency: dict[str, float] = {}
    row = re.search(r"Latency\s+(\S+)\s+(\S+)\s+(\S+)", output)
    if row is not None:
        for key, value in zip(("avg", "stdev", "max"), row.groups(), strict=True):
            with contextlib.suppress(ValueError):
                latency[key] = _duration_ms(value)
    for pct, value in re.findall(r"^\s+(50|75|90|99)%\s+(\S+)\s*$", output, re.M):
        latency[f"p{pct}"] = _duration_ms(value)
    non_2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output)
    socket_errors: dict[str, int] = {}
    errors = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output
    )
    if errors is not None:
        socket_errors = dict(
            zip(("connect", "read", "write", "timeout"), map(int, errors.groups()), strict=True)
        )
    return WrkResult(
        requests_per_s=float(rps.group(1)),
        requests=int(total.group(1)),
        duration_s=_duration_ms(total.group(2) + total.group(3)) / 1e3,
        connections=connections,
        threads=threads,
        latency_ms=latency,
        non_2xx=int(non_2xx.group(1)) if non_2xx else 0,
        socket_errors=socket_errors,
    )


def run_wrk(
    url: str,
    *,
    duration_s: float,
    connections: int = 64,
    threads: int = 2,
    lua: str | None = None,
    timeout_s: float = 5.0,
) -> WrkResult:
    """Runs wrk against ``url`` and returns its parsed report."""
    wrk = require_wrk()
    with tempfile.TemporaryDirectory(prefix="tierfaas-wrk-") as tmp:
        argv = [
            wrk,
            f"-t{threads}",
            f"-c{connections}",
            f"-d{max(1, round(duration_s))}s",
            f"--timeout={timeout_s:g}s",
            "--latency",
        ]
        if lua is not None:
            script = Path(tmp) / "script.lua"
            script.write_text(lua)
            argv += ["-s", str(script)]
        argv.append(url)
        done = subprocess.run(
            argv, capture_output=True, text=True, timeout=duration_s + 30, check=False
        )
    if done.returncode != 0:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stderr or done.stdout}")
    return parse_wrk(done.stdout, connections, threads)


# -- the HTTP baseline -----------------------------------------------------------------------


async def echo_app(
    scope: MutableMapping[str, Any],
    receive: Callable[[], Awaitable[MutableMapping[str, Any]]],
    send: Callable[[MutableMapping[str, Any]], Awaitable[None]],
) -> None:
    """A bare ASGI app answering every HTTP request with its own body: the floor an ASGI
    server puts under any app it serves."""
    if scope["type"] != "http":
        return
    chunks = []
    more = True
    while more:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
        chunks.append(message.get("body", b""))
        more = message.get("more_body", False)
    body = b"".join(chunks)
    headers = [(b"content-type", b"text/plain"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def echo_command(host: str, port: int) -> list[str]:
    """Serves ``echo_app`` with uvicorn, httptools and uvloop, configured like the node's server
    (no access log, no lifespan, 30 s keep-alive)."""
    return [
        sys.executable,
        "-m",
        "uvicorn",
        "_common:echo_app",
        "--app-dir",
        str(BENCHMARKS_DIR),
        "--host",
        host,
        "--port",
        str(port),
        "--http",
        "httptools",
        "--loop",
        "uvloop",
        "--lifespan",
        "off",
        "--no-access-log",
        "--log-level",
        "warning",
        "--timeout-keep-alive",
        "30",
    ]


# -- output ----------------------------------------------------------------------------------


def machine_info() -> dict[str, Any]:
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - non-Linux
        usable = os.cpu_count() or 0
    try:
        load = list(os.getloadavg())
    except OSError:  # pragma: no cover
        load = []
    return {
        "nproc": usable,
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "loadavg_at_start": load,
    }


def now_iso() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def git_commit() -> str | None:
    try:
        done = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except OSError:
        return None
    return done.stdout.strip() or None


def write_results(name: str, data: dict[str, Any]) -> Path:
    """Writes benchmarks/results/NAME.json (NaN becomes null) and returns its path."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{name}.json"
    path.write_text(json.dumps(_finite(data), indent=2, sort_keys=False) + "\n")
    return path


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def print_table(title: str, columns: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    """Prints a table with rich if it is installed, else as aligned plain text."""
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:
        print(_plain_table(title, columns, rows))
        return
    table = Table(title=title, title_justify="left")
    for index, column in enumerate(columns):
        table.add_column(column, justify="left" if index == 0 else "right")
    for row in rows:
        table.add_row(*row)
    # Wide enough for every cell on one line, so that logs and docs get the same table.
    needed = sum(max(len(str(r[i])) for r in [columns, *rows]) + 3 for i in range(len(columns)))
    Console(width=max(needed + 1, shutil.get_terminal_size().columns)).print(table)


def _plain_table(title: str, columns: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(str(r[i])) for r in [columns, *rows]) for i in range(len(columns))]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(
            str(c).ljust(w) if i == 0 else str(c).rjust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        )

    return "\n".join(
        [title, line(columns), "  ".join("-" * w for w in widths)] + [line(r) for r in rows]
    )


def markdown_table(columns: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    head = "| " + " | ".join(columns) + " |"
    rule = "|" + "|".join("---" if i == 0 else "---:" for i in range(len(columns))) + "|"
    return "\n".join([head, rule] + ["| " + " | ".join(row) + " |" for row in rows])


def show_table(
    title: str,
    columns: Sequence[str],
    rows: Sequence[Sequence[str]],
    *,
    notes: Sequence[str] = (),
    markdown: bool = False,
) -> None:
    """A benchmark's result table (``print_table``), its notes, and the same table as markdown
    when asked (``--markdown``: for docs/benchmarks.md)."""
    print_table(title, columns, rows)
    for note in notes:
        print(f"note: {note}")
    if markdown:
        print()
        print(markdown_table(columns, rows))


@contextlib.contextmanager
def stopwatch() -> Iterator[Callable[[], float]]:
    """``with stopwatch() as elapsed: ...; elapsed()`` gives seconds since entering."""
    began = time.perf_counter()
    yield lambda: time.perf_counter() - began
