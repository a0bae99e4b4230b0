"""The asynchronous calls' test release and HTTP client, shared by tests/e2e/test_async_calls.py
and tests/chaos/test_async_crash.py (issue 20).

``write_release(root, ledger)`` writes a release into a test's tmp dir whose functions append
one JSON line per run to the ``ledger`` file: ``{"call_id", "attempt", "node", "token",
"tick"}`` (the node's ``ASYNC_NODE`` environment names where it ran), before doing anything
else, so a run cut short by a crash still counts as a run. What a call does is in its body,
a JSON object (every key optional):

- ``token``: copied into the ledger line, so calls whose 202 never arrived can be joined up;
- ``sleep``: seconds to sleep before answering;
- ``fail_until``: raise (a 500 answer) while the attempt number is at most this;
- ``fail_while_missing``: raise while this file does not exist (a fault fixed by the test).

``http`` is an exec function (a Python HTTP server, protocol http) answering ``POST
/status/NNN`` with status NNN, and recording the ``X-Call-Id`` and ``X-Call-Attempt`` headers
it saw: a Python handler can only answer 2xx or 500, and a 4xx answer must fail a call with
no retry.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import sys
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from email.message import Message
from pathlib import Path
from typing import Any

from tierfaas.testing.cluster import LocalCluster, agreement
from tierfaas.testing.nodes import NodeProcess
from tierfaas.testing.wait import eventually

FNS = """\
import asyncio
import json
import os
import time

_LEDGER = os.environ["ASYNC_LEDGER"]
_NODE = os.environ.get("ASYNC_NODE", "")


def _header(ctx, name):
    return {k.lower(): v for k, v in ctx.headers.items()}.get(name)


def _record(ctx, token):
    line = {
        "call_id": getattr(ctx, "call_id", None),
        "attempt": getattr(ctx, "attempt", None),
        "node": _NODE,
        "token": token,
        "tick": _header(ctx, "x-schedule-tick"),
        "t": time.time(),
    }
    fd = os.open(_LEDGER, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (json.dumps(line) + "\\n").encode())
    finally:
        os.close(fd)
    return line


async def work(body, ctx):
    try:
        asked = json.loads(body) if body else {}
    except ValueError:
        asked = {}
    if not isinstance(asked, dict):
        asked = {}
    line = _record(ctx, asked.get("token"))
    if asked.get("sleep"):
        await asyncio.sleep(float(asked["sleep"]))
    attempt = line["attempt"] or 0
    if "fail_until" in asked and attempt <= int(asked["fail_until"]):
        raise RuntimeError(f"failing attempt {attempt} on purpose")
    missing = asked.get("fail_while_missing")
    if missing and not os.path.exists(missing):
        raise RuntimeError(f"{missing} does not exist yet")
    return {
        **line,
        "method": ctx.method,
        "path": ctx.path,
        "query": ctx.query,
        "custom": _header(ctx, "x-custom"),
        "seen_call_id_header": _header(ctx, "x-call-id"),
        "seen_attempt_header": _header(ctx, "x-call-attempt"),
        "body_len": len(body),
    }
"""

HTTPFN = """\
import json
import os
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

_LEDGER = os.environ["ASYNC_LEDGER"]
_NODE = os.environ.get("ASYNC_NODE", "")


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self):
        length = int(self.headers.get("content-length") or 0)
        self.rfile.read(length)
        line = {
            "call_id": self.headers.get("x-call-id"),
            "attempt": int(self.headers.get("x-call-attempt") or 0),
            "node": _NODE,
            "token": None,
            "tick": None,
            "path": self.path,
        }
        fd = os.open(_LEDGER, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, (json.dumps(line) + "\\n").encode())
        finally:
            os.close(fd)
        status = 200
        parts = self.path.split("?")[0].strip("/").split("/")
        if len(parts) >= 2 and parts[-2] == "status" and parts[-1].isdigit():
            status = int(parts[-1])
        out = json.dumps(line).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    do_GET = do_POST

    def log_message(self, *args):
        pass


ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), Handler).serve_forever()
"""


API_KEY = "async-test-key-0123456789"
API_KEY_DIGEST = hashlib.sha256(API_KEY.encode()).hexdigest()


def manifest(ledger: Path, *, schedule: str | None = "* * * * *") -> str:
    env = f"env = {{ ASYNC_LEDGER = {json.dumps(str(ledger))} }}"
    tick = f'schedule = "{schedule}"' if schedule else ""
    return f"""
[release]
name = "asyncrel"
version = "1.0.0"

[defaults]
timeout_s = 10
memory_mb = 128
keep_alive_s = 600

# The workhorse: records every run, sleeps or fails when its body asks. max_retries 2 (the
# default: three attempts).
[functions.work]
handler = "fns:work"
concurrency = 16
max_instances = 2
{env}

# Never retried: max_retries 0.
[functions.once]
handler = "fns:work"
max_retries = 0
{env}

# A 1 s timeout (504), retried once.
[functions.slow]
handler = "fns:work"
timeout_s = 1
max_retries = 1
{env}

# Four slots on one instance: at most two async calls run at once (--async-share 0.5).
[functions.sleeper]
handler = "fns:work"
concurrency = 4
max_instances = 1
{env}

# Warm only where a test first calls it synchronously (to run calls on the other node).
[functions.remote]
handler = "fns:work"
{env}

# Needs an API key: API_KEY (its SHA-256 below).
[functions.locked]
handler = "fns:work"
api_keys = ["sha256:{API_KEY_DIGEST}"]
{env}

# Fired by the master's schedule.
[functions.tick]
handler = "fns:work"
{tick}
{env}

# An http exec function answering the status its path names.
[functions.http]
runtime = "exec"
command = [{json.dumps(sys.executable)}, "httpfn.py"]
protocol = "http"
concurrency = 8
{env}
"""


def write_release(root: Path, ledger: Path, *, schedule: str | None = "* * * * *") -> Path:
    """The test release in ``root`` (created), its functions appending to ``ledger``."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "tierfaas.toml").write_text(manifest(ledger, schedule=schedule))
    (root / "fns.py").write_text(FNS)
    (root / "httpfn.py").write_text(HTTPFN)
    return root


# -- the ledger --------------------------------------------------------------------------------


def read_ledger(path: Path) -> list[dict[str, Any]]:
    """Every run the functions recorded, in the order they started (a torn last line, from a
    process killed while writing it, is skipped)."""
    if not path.exists():
        return []
    runs = []
    for line in path.read_text().splitlines():
        try:
            runs.append(json.loads(line))
        except ValueError:
            continue
    return runs


def runs_of_call(path: Path, call_id: str) -> list[dict[str, Any]]:
    """The runs of one call, in the order they started."""
    return [r for r in read_ledger(path) if r["call_id"] == call_id]


def runs_by_call(path: Path) -> Counter[str]:
    """call id -> how many times it started running."""
    return Counter(str(r["call_id"]) for r in read_ledger(path) if r.get("call_id"))


# -- HTTP ----------------------------------------------------------------------------------


@dataclass
class Reply:
    status: int
    headers: Message
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def code(self) -> str:
        """The typed error's code ("" when the body is not a typed error)."""
        try:
            data = self.json()
        except ValueError:
            return ""
        return str(data.get("error", "")) if isinstance(data, dict) else ""


def request(
    method: str,
    url: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    timeout: float = 10.0,
) -> Reply:
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as response:
            return Reply(response.status, response.headers, response.read())
    except urllib.error.HTTPError as exc:
        return Reply(exc.code, exc.headers, exc.read())


def post_async(
    base: str,
    function: str,
    asked: dict[str, Any] | bytes | None = None,
    headers: dict[str, str] | None = None,
    subpath: str = "",
    *,
    retries_503: int = 2,
) -> Reply:
    """``POST /async-function/FUNCTION[SUBPATH]`` with ``asked`` as its JSON body. A 503
    ``unavailable`` (no second copy: nothing was kept) is sent again after its Retry-After
    (at most 1 s), ``retries_503`` times, as a client should: on a loaded machine a copy
    can miss its deadline."""
    body = asked if isinstance(asked, bytes) else json.dumps(asked or {}).encode()
    url = f"{base}/async-function/{function}{subpath}"
    for _ in range(retries_503):
        reply = request("POST", url, body, headers)
        if reply.status != 503 or reply.code != "unavailable":
            return reply
        time.sleep(min(1.0, float(reply.headers.get("Retry-After") or 1)))
    return request("POST", url, body, headers)


def get_call(base: str, call_id: str) -> Reply:
    return request("GET", f"{base}/v1/calls/{call_id}")


def call_state(base: str, call_id: str) -> dict[str, Any]:
    """The call's record as ``base`` answers it; RuntimeError unless 200."""
    reply = get_call(base, call_id)
    if reply.status != 200:
        raise RuntimeError(f"GET /v1/calls/{call_id} on {base}: {reply.status} {reply.body!r}")
    record: dict[str, Any] = reply.json()
    return record


def result_json(record: dict[str, Any]) -> Any:
    """The function's answer in a call's record, decoded from its JSON text."""
    return json.loads(record["result"]["body"])


# -- a cluster of nodes serving it ---------------------------------------------------------------


class AsyncCluster:
    """Real nodes on ``subnet`` serving the release at ``rel``, each with its own data dir
    (``tmp/data/HOST``, kept across a restart) and ``ASYNC_NODE`` (its host, which the ledger
    records); every node is a seed, so a restarted node finds the others. ``close()`` kills
    every process it started."""

    def __init__(
        self,
        rel: Path,
        tmp: Path,
        size: int,
        *,
        subnet: str,
        args: Sequence[str],
        env: dict[str, str] | None = None,
        first_host: int = 10,
        preset: str = "local",
    ) -> None:
        self.tmp = tmp
        self.lc = LocalCluster(
            rel,
            size,
            subnet=subnet,
            first_host=first_host,
            seeds=size,
            log_dir=tmp,
            env=env,
            preset=preset,
        )
        self.lc.extra_args = list(args)
        self.every: list[NodeProcess] = []

    @property
    def nodes(self) -> list[NodeProcess]:
        return self.lc.nodes

    def _make(self, host: str, port: int | None = None) -> NodeProcess:
        data = self.tmp / "data" / host
        node = self.lc.make_node(host, ["--data-dir", str(data)], {"ASYNC_NODE": host})
        if port is not None:
            node.port = port
        self.every.append(node)
        return node

    def start(self, timeout: float = 30.0) -> AsyncCluster:
        for host in self.lc.hosts:
            self.lc.nodes.append(self._make(host).start(wait=False))
            time.sleep(0.05)  # oldest first: the first is the master
        for node in self.lc.nodes:
            node.wait_healthy(timeout)
        self.wait_agreed(self.lc.nodes, timeout)
        return self

    def name(self, node: NodeProcess) -> str:
        return self.lc.name_of(node)

    def by_name(self, name: str) -> NodeProcess:
        return next(n for n in self.lc.nodes if self.name(n) == name)

    def wait_agreed(self, nodes: Sequence[NodeProcess], timeout: float) -> tuple[Any, ...]:
        """Until every node of ``nodes`` sees exactly ``nodes`` and they agree on the roles."""

        def agreed() -> tuple[Any, ...] | None:
            names = {self.name(n) for n in nodes}
            seen = set()
            for node in nodes:
                view = LocalCluster.view(node)
                if {m["name"] for m in view["members"]} != names:
                    return None
                seen.add(agreement(view))
            return next(iter(seen)) if len(seen) == 1 else None

        found = eventually(agreed, timeout, 0.1, what="the nodes to agree on the cluster")
        assert found is not None
        return found

    def master(self) -> NodeProcess:
        return self.by_name(LocalCluster.view(self.lc.nodes[0])["master"])

    def kill(self, node: NodeProcess) -> float:
        """kill -9 of the node process alone, as a crash is (its zygote and instances die
        with it by their parent-death signal); returns when it was reaped (monotonic)."""
        assert node.process is not None
        os.kill(node.pid, signal.SIGKILL)
        node.process.wait(10)
        gone = time.monotonic()
        node.kill()  # anything left in its session
        return gone

    def restart(self, node: NodeProcess, timeout: float = 30.0) -> NodeProcess:
        """The same node (address, port, name, data dir) started again, once healthy."""
        index = self.lc.nodes.index(node)
        again = self._make(node.host, node.port).start(wait=False)
        self.lc.nodes[index] = again
        again.wait_healthy(timeout)
        return again

    def close(self) -> None:
        for node in self.every:
            node.kill()


def tick_seconds(value: Any) -> int | None:
    """A run's ``X-Schedule-Tick`` as Unix seconds (integer or ISO 8601 text), else None."""
    if value in (None, ""):
        return None
    try:
        return int(float(value))
    except (TypeError, ValueError):
        pass
    try:
        return int(datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp())
    except ValueError:
        return None
