"""Exec functions (issue #18) in three languages, through a 2-node cluster of real nodes on
loopback: a Node.js http server, a C stdio program (compiled here with gcc), a sh stdio
script, and a Python function beside them (tests/e2e/fixtures/exec).

What each test asserts:
- each language answers right (status, body, content type) where it is warm (local-cold,
  then local-warm) and from the other node (forwarded-warm, served by the first): one instance
  in the cluster serves all three calls; with ``--cold-starts home`` (a cluster of its own),
  first calls on both nodes start one instance at the home, the other's forwarded-cold;
- an http function gets the caller's method (GET, POST, PUT, PATCH, DELETE), the path below
  /function/NAME, the query, the caller's headers (never an X-Tierfaas-* one) and body; its
  status, headers (a repeated Set-Cookie) and body reach the caller, also after a forward; the
  X-Tierfaas-* headers it sets are dropped; a 204, a chunked answer, and a ready_path (no
  call before it answers 200) work; hop headers from a client get 403 hop_refused; an HTTP/1.0
  answer ended by the close arrives, and a 204 with a body (a stdio RESULT's) keeps the
  connection usable: the caller gets no body;
- limits: 8 calls pipelined on one stdio instance (``concurrency = 8``; the program answers
  only once all 8 are in flight); ``max_instances = 1`` serves 3 calls one by one on one
  instance; ``timeout_s`` answers 504, kills the instance (stdio and http, forwarded) and the
  next call gets a new one; ``memory_mb`` stops a program that allocates past it (502
  out_of_memory under the sandbox); keep-alive reaps an idle exec instance (its process is
  gone);
- /v1/functions shows the runtime, command and protocol of each function;
- errors, typed: a missing program fails manifest validation naming the function; an
  instance that exits before READY answers 502 start_failed with the last lines of its stderr;
  an http program that never listens answers 502 start_failed after --start-timeout-s; a
  stdio program that breaks the protocol (a garbage line, a RESULT for an unknown id, a line
  over 256 bytes, status 99) and an http one that answers garbage get 502 protocol_error, and
  the next call a new instance; an answer over --max-response-bytes gets 502
  response_too_large (stdio and http); a program that dies mid-call gets 502
  instance_crashed. Errors are checked both where the instance runs and through a forward.

The nodes run with the default isolation (the sandbox, as the other e2e tests), cold starts
local (the test places each function by calling it first), --max-response-bytes 4096 and
--start-timeout-s 5. The release is copied to a temporary folder (the compiled program stays
out of git). Every node is killed with its session (instances included) at the end.

Hosts 127.0.31.1-9 are this file's.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from multidict import CIMultiDictProxy

from tierfaas.errors import ManifestError
from tierfaas.manifest import check_commands, load_release
from tierfaas.routing import forwarding as fw
from tierfaas.testing.cluster import LocalCluster, agreement
from tierfaas.testing.nodes import NodeProcess, descendants, free_port, http_get, run_cli
from tierfaas.testing.wait import eventually

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(
        shutil.which("node") is None or shutil.which("gcc") is None,
        reason="the exec tests run a Node.js server and a C program: they need node and gcc",
    ),
]

FIXTURE = Path(__file__).parent / "fixtures" / "exec"
MAX_RESPONSE_BYTES = 4096
START_TIMEOUT_S = 5.0
ARGS = [
    "--cold-starts", "local",
    "--max-response-bytes", str(MAX_RESPONSE_BYTES),
    "--start-timeout-s", str(START_TIMEOUT_S),
]  # fmt: skip
CALL_TIMEOUT_S = 30.0  # of the client: far past every function's own timeout
COOKIES = ["a=1; Path=/", "b=2; Path=/"]  # what server.js sets on every answer
_TOKEN = re.compile(rb"\(instance ([0-9]+-[0-9]+),")


# -- the release and the cluster -------------------------------------------------------------


def build_release(folder: Path) -> Path:
    """The fixture release in ``folder``, its C program compiled there (the release's own
    build step, ``[release] build``, is what examples/polyglot covers)."""
    release = folder / "exec"
    shutil.copytree(FIXTURE, release)
    # The functions' uids (the sandbox's, not root) read the release and run its program.
    folder.chmod(0o755)
    release.chmod(0o755)
    subprocess.run(
        ["gcc", "-O2", "-Wall", "-Werror", "-o", str(release / "hello"), str(release / "hello.c")],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return release


@dataclass
class Cluster:
    local: LocalCluster
    a: NodeProcess
    b: NodeProcess

    def name(self, node: NodeProcess) -> str:
        return self.local.name_of(node)

    def other(self, node: NodeProcess) -> NodeProcess:
        return self.b if node is self.a else self.a


def agreed(local: LocalCluster) -> Cluster:
    """``local``'s two nodes, once both agree on the cluster."""

    def check() -> bool:
        seen = {agreement(LocalCluster.view(n)) for n in local.nodes}
        return len(seen) == 1 and next(iter(seen))[3] == 2

    eventually(check, 10, what="both nodes agree on the cluster")
    return Cluster(local, local.nodes[0], local.nodes[1])


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    release = build_release(tmp_path_factory.mktemp("exec-release"))
    logs = tmp_path_factory.mktemp("exec-logs")
    with LocalCluster(
        release, 2, subnet="127.0.31", first_host=1, log_dir=logs, extra_args=ARGS
    ) as local:
        yield agreed(local)


# -- calls -----------------------------------------------------------------------------------


@dataclass
class Answer:
    status: int
    headers: CIMultiDictProxy[str]
    body: bytes
    seconds: float

    @property
    def route(self) -> str | None:
        return self.headers.get(fw.ROUTE)

    @property
    def served_by(self) -> str | None:
        return self.headers.get(fw.SERVED_BY)

    def json(self) -> Any:
        return json.loads(self.body)

    def error(self) -> tuple[int, str, str]:
        """(status, code, message) of an error answer."""
        detail = self.json()
        return self.status, detail["error"], detail["message"]

    def token(self) -> str:
        """The instance that answered a sh function (drawn at its start)."""
        match = _TOKEN.search(self.body)
        assert match is not None, self
        return match.group(1).decode()


@dataclass
class Call:
    node: NodeProcess
    function: str
    body: bytes = b""
    method: str = "POST"
    path: str = ""  # below /function/NAME, with its leading slash
    headers: dict[str, str] | None = None


async def _send(session: aiohttp.ClientSession, call: Call) -> Answer:
    url = f"{call.node.url}/function/{call.function}{call.path}"
    sent = time.monotonic()
    async with session.request(call.method, url, data=call.body, headers=call.headers) as answer:
        body = await answer.read()
        return Answer(answer.status, answer.headers, body, time.monotonic() - sent)


async def _all(calls: list[Call]) -> list[Answer]:
    timeout = aiohttp.ClientTimeout(total=CALL_TIMEOUT_S)
    # Each call on a connection of its own: concurrent calls must reach the node together.
    connector = aiohttp.TCPConnector(limit=0, force_close=True)
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
        return await asyncio.gather(*(_send(session, call) for call in calls))


def together(calls: list[Call]) -> list[Answer]:
    """Sends ``calls`` at once; their answers, in order."""
    return asyncio.run(_all(calls))


def call(node: NodeProcess, function: str, body: bytes = b"", **kw: Any) -> Answer:
    return together([Call(node, function, body, **kw)])[0]


# -- what the nodes say ----------------------------------------------------------------------

_SAMPLE = re.compile(r"^(\w+)(?:\{(.*)\})? (\S+)$")


def metric(node: NodeProcess, name: str, **labels: str) -> float:
    status, body = http_get(f"{node.url}/metrics")
    assert status == 200
    total = 0.0
    for line in body.decode().splitlines():
        match = _SAMPLE.match(line)
        if match is None or line.startswith("#") or match.group(1) != name:
            continue
        have = dict(re.findall(r'(\w+)="([^"]*)"', match.group(2) or ""))
        if all(have.get(k) == v for k, v in labels.items()):
            total += float(match.group(3))
    return total


def starts(cluster: Cluster, function: str) -> int:
    """Instances of ``function`` started (and ready) on both nodes, ever."""
    return int(
        sum(
            metric(n, "tierfaas_cold_start_seconds_count", function=function)
            for n in (cluster.a, cluster.b)
        )
    )


def stops(node: NodeProcess, function: str, reason: str) -> int:
    return int(metric(node, "tierfaas_instance_stops_total", function=function, reason=reason))


def functions(node: NodeProcess) -> dict[str, dict[str, Any]]:
    status, body = http_get(f"{node.url}/v1/functions")
    assert status == 200, body
    return {f["name"]: f for f in json.loads(body)["functions"]}


def holders(node: NodeProcess, function: str) -> set[str]:
    status, body = http_get(f"{node.url}/v1/routes")
    assert status == 200, body
    table = json.loads(body)
    assert table["role"] in ("master", "replica"), table["role"]  # two nodes: both hold it
    return set(table["routes"].get(function, []))


def placed(cluster: Cluster, home: NodeProcess, function: str, body: bytes = b"") -> Answer:
    """Calls ``function`` on ``home`` (a cold start there, unless a test before left it warm)
    and waits until both nodes' tables list it warm there and nowhere else: the other node
    then forwards its calls."""
    first = call(home, function, body)
    assert first.status == 200, (first, home.log_tail())
    assert first.route in ("local-cold", "local-warm"), first
    name = {cluster.name(home)}
    eventually(
        lambda: all(holders(n, function) == name for n in (cluster.a, cluster.b)),
        5,
        what=f"both route tables list {function} on {name} only",
    )
    return first


def programs(node: NodeProcess, needle: str) -> list[int]:
    """The node's descendants whose command line holds ``needle``."""
    found = []
    for pid in descendants(node.pid):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as file:
                line = file.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if needle in line:
            found.append(pid)
    return found


# -- each language, where it runs and forwarded ----------------------------------------------


def check_sh(answer: Answer, body: str) -> None:
    assert answer.headers["Content-Type"] == "text/plain; charset=utf-8"
    assert answer.body.startswith(f"hello from sh: {body} (instance ".encode()), answer


def check_c(answer: Answer, body: str) -> None:
    assert answer.headers["Content-Type"] == "text/plain"
    request = answer.headers["X-Request-Id"]
    assert answer.body == f"hello from C: {body} (request {request})".encode(), answer


def check_node(answer: Answer, body: str) -> None:
    assert answer.headers["Content-Type"] == "application/json; charset=utf-8"
    got = answer.json()
    assert (got["hello"], got["body"], got["function"]) == ("node", body, "node-hello"), got


def check_python(answer: Answer, body: str) -> None:
    assert answer.headers["Content-Type"] == "application/octet-stream"
    assert answer.body == f"hello from python: {body}".encode(), answer


@pytest.mark.parametrize(
    ("function", "check", "home_is_a"),
    [
        pytest.param("sh-hello", check_sh, True, id="sh"),
        pytest.param("c-hello", check_c, False, id="c"),
        pytest.param("node-hello", check_node, True, id="node"),
        pytest.param("py-hello", check_python, False, id="python"),
    ],
)
def test_each_language_answers_where_warm_and_forwarded(
    cluster: Cluster, function: str, check: Any, home_is_a: bool
) -> None:
    home = cluster.a if home_is_a else cluster.b
    other = cluster.other(home)
    first = placed(cluster, home, function, b"first")
    assert first.route == "local-cold"
    check(first, "first")
    forwarded = call(other, function, b"second", headers={"X-Request-Id": f"{function}-2"})
    assert forwarded.status == 200, forwarded
    assert (forwarded.route, forwarded.served_by) == ("forwarded-warm", cluster.name(home))
    assert forwarded.headers["X-Request-Id"] == f"{function}-2"  # it reached the function too
    check(forwarded, "second")
    again = call(home, function, b"third")
    assert (again.status, again.route, again.served_by) == (200, "local-warm", cluster.name(home))
    check(again, "third")
    assert starts(cluster, function) == 1  # one instance served all three
    if function == "sh-hello":
        assert first.token() == forwarded.token() == again.token()


def test_a_first_call_forwarded_to_the_home_waits_for_its_start_there(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """``--cold-starts home``: first calls on both nodes at once start one instance, at the
    function's home; the other node's call is forwarded there and waits for the start
    (forwarded-cold). A cluster of its own (the module's places functions by hand), on hosts
    127.0.31.3-4."""
    release = build_release(tmp_path_factory.mktemp("exec-home"))
    logs = tmp_path_factory.mktemp("exec-home-logs")
    args = ["--cold-starts", "home"]
    with LocalCluster(
        release, 2, subnet="127.0.31", first_host=3, log_dir=logs, extra_args=args
    ) as local:
        home = agreed(local)
        # Node.js takes tens of ms to listen: the forwarded call arrives while it starts.
        answers = together([Call(n, "node-hello", b"x") for n in local.nodes])
        assert [a.status for a in answers] == [200, 200], answers
        served = {a.served_by for a in answers}
        assert len(served) == 1, answers  # both at the home
        routes = sorted(a.route or "" for a in answers)
        assert routes == ["forwarded-cold", "local-cold"], answers
        assert starts(home, "node-hello") == 1
        for answer in answers:
            check_node(answer, "x")


# -- http: the whole request in, the whole answer out ----------------------------------------


def test_an_http_function_on_a_unix_socket_without_network_answers(cluster: Cluster) -> None:
    """node-unix: ``listen = "unix"`` and ``network = "none"``: the server listens on
    $SOCKET_PATH in its own /tmp, which the node reaches through the instance's root; local
    and forwarded calls get the whole request through, and no TCP port is opened for it."""
    first = placed(cluster, cluster.a, "node-unix", b"one")
    assert first.json()["function"] == "node-unix", first
    answer = call(cluster.b, "node-unix", b"two", method="PATCH", path="/u/v?status=201")
    assert (answer.status, answer.route) == (201, "forwarded-warm"), answer
    got = answer.json()
    assert (got["method"], got["body"]) == ("PATCH", "two"), got
    assert got["url"] == "/u/v?status=201", got
    listed = {
        f["name"]: f for f in json.loads(http_get(f"{cluster.a.url}/v1/functions")[1])["functions"]
    }
    assert listed["node-unix"]["listen"] == "unix" and listed["node-hello"]["listen"] == "port"


def test_pipelined_calls_to_node_js_each_get_their_own_answer(cluster: Cluster) -> None:
    """node-pipelined: ``pipeline = 4``, ``concurrency = 8``: Node.js's http server takes the
    requests pipelined on its two connections, and every call, local or forwarded, slow or
    not, gets its own answer."""
    placed(cluster, cluster.a, "node-pipelined", b"first")
    calls = [
        Call(
            cluster.a, "node-pipelined", f"call {n}".encode(), path="" if n % 3 else "/sleep?ms=30"
        )
        for n in range(24)
    ]
    calls += [Call(cluster.b, "node-pipelined", f"forwarded {n}".encode()) for n in range(4)]
    answers = together(calls)
    for sent, answer in zip(calls, answers, strict=True):
        assert answer.status == 200, (answer, cluster.a.log_tail())
        if sent.path:
            assert answer.body == b"woke up", answer
        else:
            got = answer.json()
            assert (got["body"], got["function"]) == (sent.body.decode(), "node-pipelined"), got
    listed = {
        f["name"]: f for f in json.loads(http_get(f"{cluster.a.url}/v1/functions")[1])["functions"]
    }
    assert listed["node-pipelined"]["pipeline"] == 4 and listed["node-unix"]["pipeline"] == 1


def test_an_http_function_gets_the_request_and_gives_its_answer(cluster: Cluster) -> None:
    home = cluster.a
    placed(cluster, home, "node-hello")
    cases = [
        (cluster.a, "GET", 201),
        (cluster.b, "POST", 404),
        (cluster.a, "PUT", 418),
        (cluster.b, "PATCH", 201),
        (cluster.b, "DELETE", 418),
    ]
    for number, (node, method, status) in enumerate(cases):
        request_id = f"http-{number}"
        target = f"/a/b?status={status}&x=1&y=two%20words"
        answer = call(
            node,
            "node-hello",
            f"body {number}".encode(),
            method=method,
            path=target,
            headers={
                "X-Request-Id": request_id,
                "X-Custom": f"custom {number}",
                "X-Tierfaas-Note": "not for functions",
            },
        )
        where = (node.host, method)
        assert answer.status == status, (where, answer)
        forwarded = node is not home
        assert answer.route == ("forwarded-warm" if forwarded else "local-warm"), where
        assert answer.served_by == cluster.name(home), where
        # What the function got.
        got = answer.json()
        assert (got["method"], got["url"], got["body"]) == (method, target, f"body {number}")
        assert got["headers"]["x-custom"] == f"custom {number}", (where, got)
        assert got["headers"]["x-request-id"] == request_id, (where, got)
        assert [h for h in got["headers"] if h.startswith("x-tierfaas")] == [], (where, got)
        # What the caller got: the function's headers, not the ones it may not set.
        assert answer.headers.getall("Set-Cookie") == COOKIES, (where, answer.headers)
        assert answer.headers["X-Hello"] == "node", where
        assert answer.headers["Content-Type"] == "application/json; charset=utf-8", where
        assert answer.headers["X-Request-Id"] == request_id, where
        assert answer.headers.getall(fw.ROUTE) == [answer.route], where
        assert answer.headers.getall(fw.SERVED_BY) == [cluster.name(home)], where
        assert fw.REJECT not in answer.headers, (where, answer.headers)
    # A status without a body.
    for node in (cluster.a, cluster.b):
        empty = call(node, "node-hello", method="GET", path="/?status=204")
        assert (empty.status, empty.body) == (204, b""), empty
        assert empty.headers.getall("Set-Cookie") == COOKIES
    # A chunked answer (a streaming server) arrives whole.
    for node in (cluster.a, cluster.b):
        chunked = call(node, "node-hello", method="GET", path="/chunked")
        assert (chunked.status, chunked.body) == (200, b"chunk one, chunk two"), chunked
        assert chunked.headers["Content-Type"] == "text/plain"
    # Nothing below /function/NAME: the function sees "/".
    bare = call(cluster.b, "node-hello", method="GET")
    assert (bare.status, bare.json()["url"], bare.route) == (200, "/", "forwarded-warm")
    assert starts(cluster, "node-hello") == 1
    # Hop headers from a client are neither run nor routed, on either node.
    for node in (cluster.a, cluster.b):
        refused = call(node, "node-hello", headers={fw.HOPS: "1", fw.PATH: "x"})
        assert refused.error()[:2] == (403, "hop_refused"), refused


def test_an_http_function_with_a_ready_path_gets_calls_once_it_answers_200(
    cluster: Cluster,
) -> None:
    """node-ready: GET /healthz answers 503 for its first 400 ms, then 200."""
    answer = call(cluster.b, "node-ready", b"x")
    assert (answer.status, answer.route) == (200, "local-cold"), answer
    got = answer.json()
    assert got["probes"] >= 1, got  # asked, until it answered 200
    assert got["since_start_ms"] >= 400, got  # the call came after that


def test_an_http_1_0_answer_ended_by_the_close_arrives(cluster: Cluster) -> None:
    answer = call(cluster.a, "node-http10", b"x")
    assert (answer.status, answer.body) == (200, b"hello from HTTP/1.0"), answer
    assert answer.headers["Content-Type"] == "text/plain"


def test_a_204_answer_with_a_body_leaves_the_connection_usable(cluster: Cluster) -> None:
    placed(cluster, cluster.a, "sh-hello")
    """sh-hello answers a body "no-content" with status 204 and 2 bytes of body: the caller
    gets a 204 without a body, and its next call on the same connection its own answer
    (forwarded from b, then on a). Today the client reads b"hi" as the next status line."""

    async def twice(node: NodeProcess) -> list[tuple[int, bytes]]:
        url = f"{node.url}/function/sh-hello"
        timeout = aiohttp.ClientTimeout(total=10)
        connector = aiohttp.TCPConnector(limit=1)  # one connection: the second call reuses it
        got = []
        async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
            for body in (b"no-content", b"next"):
                async with session.post(url, data=body) as answer:
                    got.append((answer.status, (await answer.read())[:16]))
        return got

    for node in (cluster.b, cluster.a):
        assert asyncio.run(twice(node)) == [(204, b""), (200, b"hello from sh: n")], node.host


# -- limits ----------------------------------------------------------------------------------


def test_eight_calls_pipelined_on_one_stdio_instance(cluster: Cluster) -> None:
    """c-pipeline answers only once 8 calls are in flight on it, newest first: every answer
    arriving, each to its own call, shows the node sent 8 at once and matched the ids."""
    for round_ in range(2):
        bodies = [f"round-{round_}-call-{i}" for i in range(8)]
        answers = together([Call(cluster.a, "c-pipeline", b.encode()) for b in bodies])
        assert [(a.status, a.body) for a in answers] == [
            (200, f"pipelined {b}".encode()) for b in bodies
        ], answers
        routes = {a.route for a in answers}
        if round_ == 0:  # the calls that came before the instance was ready waited for it
            assert "local-cold" in routes and routes <= {"local-cold", "local-warm"}, routes
        else:
            assert routes == {"local-warm"}
    assert starts(cluster, "c-pipeline") == 1


def test_max_instances_serves_calls_one_by_one_on_one_instance(cluster: Cluster) -> None:
    """sh-one: ``concurrency = 1``, ``max_instances = 1``; each call sleeps 0.25 s. (Warm
    first: the waits, 0.25 and 0.5 s, stay far below the queue's 2 s also on a loaded
    machine.)"""
    first = call(cluster.b, "sh-one", b"0")
    answers = together([Call(cluster.b, "sh-one", b"0.25") for _ in range(3)])
    assert [a.status for a in answers] == [200] * 3, answers
    assert {a.token() for a in answers} == {first.token()}  # one instance
    assert max(a.seconds for a in answers) >= 0.75  # the three ran one after another
    assert starts(cluster, "sh-one") == 1


def test_a_call_past_its_timeout_answers_504_and_the_next_gets_a_new_instance(
    cluster: Cluster,
) -> None:
    """sh-sleep: ``timeout_s = 3``; forwarded from b to its instance on a."""
    first = placed(cluster, cluster.a, "sh-sleep", b"0")
    assert programs(cluster.a, "modes.sh sleep") != []
    late = call(cluster.b, "sh-sleep", b"30")
    assert late.error() == (
        504,
        "timeout",
        "'sh-sleep' did not answer within its timeout of 3 s; its instance was stopped",
    ), late
    assert late.seconds < 10  # 3 s and the forward, not the 30 s the program sleeps
    assert stops(cluster.a, "sh-sleep", "timeout") == 1
    # Killed: the script and its sleep are gone.
    eventually(lambda: programs(cluster.a, "modes.sh sleep") == [], 5, what="the instance gone")
    assert programs(cluster.a, "sleep 30") == []
    after = call(cluster.a, "sh-sleep", b"0")
    assert (after.status, after.route) == (200, "local-cold"), after
    assert after.token() != first.token()
    assert starts(cluster, "sh-sleep") == 2


def test_an_http_call_past_its_timeout_answers_504_and_the_next_gets_a_new_instance(
    cluster: Cluster,
) -> None:
    """node-slow: ``timeout_s = 5``; warm on b, its /sleep forwarded from a."""
    first = placed(cluster, cluster.b, "node-slow")
    late = call(cluster.a, "node-slow", path="/sleep?ms=30000", method="GET")
    assert late.error() == (
        504,
        "timeout",
        "'node-slow' did not answer within its timeout of 5 s; its instance was stopped",
    ), late
    assert late.seconds < 10
    assert stops(cluster.b, "node-slow", "timeout") == 1
    after = call(cluster.b, "node-slow", path="/sleep?ms=1", method="GET")
    assert (after.status, after.body, after.route) == (200, b"woke up", "local-cold"), after
    again = call(cluster.b, "node-slow")
    assert again.json()["instance"] != first.json()["instance"]
    assert starts(cluster, "node-slow") == 2


def test_a_program_past_memory_mb_is_stopped(cluster: Cluster) -> None:
    """c-hog: ``memory_mb = 32``. Under the sandbox the instance's cgroup holds it there and
    the kernel's OOM killer ends it: 502 out_of_memory. Under process isolation (no cgroup)
    the limit is an address-space rlimit: the allocation fails and the program exits."""
    isolation = functions(cluster.a)["c-hog"]["isolation"]
    small = call(cluster.a, "c-hog", b"4")
    assert (small.status, small.body) == (200, b"touched 4 MiB"), small
    big = call(cluster.a, "c-hog", b"200")
    if isolation == "sandbox":
        assert big.error() == (
            502,
            "out_of_memory",
            "the instance of 'c-hog' exceeded its memory limit of 32 MiB and was stopped",
        ), big
        assert stops(cluster.a, "c-hog", "out_of_memory") == 1
    else:
        assert big.error()[:2] == (502, "instance_crashed"), big
    again = call(cluster.a, "c-hog", b"4")
    assert (again.status, again.route, again.body) == (200, "local-cold", b"touched 4 MiB")
    assert starts(cluster, "c-hog") == 2


def test_keep_alive_reaps_an_idle_exec_instance(cluster: Cluster) -> None:
    """sh-idle: ``keep_alive_s = 1``; the node checks every second (--reap-interval-s)."""
    answer = call(cluster.b, "sh-idle", b"x")
    assert answer.status == 200, answer
    assert len(programs(cluster.b, "modes.sh idle")) == 1
    eventually(lambda: stops(cluster.b, "sh-idle", "idle") == 1, 10, what="sh-idle reaped")
    assert functions(cluster.b)["sh-idle"]["instances"] == 0
    eventually(lambda: programs(cluster.b, "modes.sh idle") == [], 5, what="its process gone")


# -- what /v1/functions shows ----------------------------------------------------------------


def test_v1_functions_shows_runtime_command_and_protocol(cluster: Cluster) -> None:
    for node in (cluster.a, cluster.b):
        listed = functions(node)
        shown = {
            name: (f["runtime"], f["command"], f["protocol"], f["handler"])
            for name, f in listed.items()
            if name in ("node-hello", "c-hello", "sh-hello", "py-hello")
        }
        assert shown == {
            "node-hello": ("exec", ["node", "server.js", "hello"], "http", None),
            "c-hello": ("exec", ["./hello", "hello"], "stdio", None),
            "sh-hello": ("exec", ["sh", "modes.sh", "hello"], "stdio", None),
            "py-hello": ("python", None, None, "fns:hello"),
        }
        assert len(listed) == 21


# -- errors ----------------------------------------------------------------------------------


def test_a_missing_program_fails_manifest_validation_naming_the_function(tmp_path: Path) -> None:
    for program, reason in (
        ("no-such-program-e2e", "is not found on PATH"),
        ("./bin/missing", "is not an executable file in"),
    ):
        release = tmp_path / program.strip("./").replace("/", "-")
        release.mkdir()
        (release / "tierfaas.toml").write_text(
            '[release]\nname = "ghosts"\nversion = "1"\n\n'
            '[functions.fine]\nruntime = "exec"\ncommand = ["sh", "x.sh"]\nprotocol = "stdio"\n\n'
            f'[functions.ghost]\nruntime = "exec"\ncommand = ["{program}"]\nprotocol = "stdio"\n'
        )
        loaded = load_release(release)  # the manifest itself is well-formed
        with pytest.raises(ManifestError) as info:
            check_commands(loaded)
        assert info.value.field == "functions.ghost.command"
        assert program in info.value.reason and reason in info.value.reason, info.value
        assert str(info.value).startswith(f"{release / 'tierfaas.toml'}: functions.ghost.command")
        # And a node started on the release refuses to start, saying which function.
        started = run_cli("node", "--release", str(release), "--http", f"127.0.31.9:{free_port()}",
                          timeout=60)  # fmt: skip
        assert started.returncode == 2, started.stdout + started.stderr
        assert "functions.ghost.command" in started.stderr and program in started.stderr


def test_an_instance_that_exits_before_ready_answers_its_stderr(cluster: Cluster) -> None:
    for node in (cluster.a, cluster.b):
        answer = call(node, "sh-early", b"x")
        assert answer.error() == (
            502,
            "start_failed",
            "instance of 'sh-early' exited during start; the last lines of its stderr:\n"
            "loading settings\nfatal: settings.toml not found",
        ), answer
    assert starts(cluster, "sh-early") == 0


def test_an_http_program_that_never_listens_answers_start_failed(cluster: Cluster) -> None:
    answers = together([Call(cluster.a, "http-never"), Call(cluster.b, "http-never")])
    for answer in answers:
        status, code, message = answer.error()
        assert (status, code) == (502, "start_failed"), answer
        assert f"'http-never' did not finish getting ready within {START_TIMEOUT_S:g} s" in (
            message
        )
        assert START_TIMEOUT_S - 0.5 <= answer.seconds < START_TIMEOUT_S + 10, answer
    assert starts(cluster, "http-never") == 0
    eventually(  # killed at the timeout
        lambda: programs(cluster.a, "sleep 60") == programs(cluster.b, "sleep 60") == [],
        5,
        what="the programs killed",
    )


@pytest.mark.parametrize(
    ("kind", "detail", "forwarded"),
    [
        pytest.param("garbage", "expected READY or RESULT, got b'HELLO THERE'", True, id="garbage"),
        pytest.param(
            "unknown-id", "a RESULT for call 987654321, which is not in flight", False, id="id"
        ),
        pytest.param("long-line", "a header line longer than 256 bytes", True, id="long"),
        pytest.param("bad-status", "99 is outside 200..599", False, id="status"),
    ],
)
def test_a_stdio_program_that_breaks_the_protocol_is_replaced(
    cluster: Cluster, kind: str, detail: str, forwarded: bool
) -> None:
    stopped = stops(cluster.a, "sh-break", "protocol_error")
    good = placed(cluster, cluster.a, "sh-break", b"ok")  # left warm by the test before, or new
    before = starts(cluster, "sh-break")
    node = cluster.b if forwarded else cluster.a
    broken = call(node, "sh-break", kind.encode())
    assert broken.error() == (
        502,
        "protocol_error",
        f"the instance of 'sh-break' broke the protocol ({detail}) and was stopped; the next "
        "call gets a new one",
    ), broken
    assert stops(cluster.a, "sh-break", "protocol_error") == stopped + 1
    after = call(cluster.a, "sh-break", b"ok")
    assert (after.status, after.route) == (200, "local-cold"), after
    assert after.token() != good.token()
    assert starts(cluster, "sh-break") == before + 1


def test_an_http_program_that_answers_garbage_is_replaced(cluster: Cluster) -> None:
    for number in (1, 2):
        answer = call(cluster.a, "node-garbage", b"x")
        assert answer.error() == (
            502,
            "protocol_error",
            "the instance of 'node-garbage' broke the protocol (unreadable answer: Expected "
            "HTTP/, RTSP/ or ICE/) and was stopped; the next call gets a new one",
        ), answer
        assert stops(cluster.a, "node-garbage", "protocol_error") == number
        assert starts(cluster, "node-garbage") == number  # a new instance for each


def test_an_answer_over_max_response_bytes_is_refused(cluster: Cluster) -> None:
    limit = MAX_RESPONSE_BYTES
    # stdio: the limit itself passes; one byte over is refused, and the instance replaced.
    placed(cluster, cluster.b, "sh-big", str(limit).encode())
    over = call(cluster.a, "sh-big", str(limit + 1).encode())  # forwarded to b
    assert over.error() == (
        502,
        "response_too_large",
        f"'sh-big' answered {limit + 1} bytes, over the limit of {limit}; its instance was "
        "replaced",
    ), over
    assert stops(cluster.b, "sh-big", "response_too_large") == 1
    fits = call(cluster.b, "sh-big", str(limit).encode())
    assert (fits.status, fits.body, fits.route) == (200, b"x" * limit, "local-cold"), fits
    # http: the same, for node-hello's /big (placed on a by the tests above, or here).
    if cluster.name(cluster.a) not in holders(cluster.a, "node-hello"):
        placed(cluster, cluster.a, "node-hello")
    for node in (cluster.a, cluster.b):
        fits = call(node, "node-hello", path=f"/big?n={limit}", method="GET")
        assert (fits.status, fits.body) == (200, b"x" * limit), fits
        over = call(node, "node-hello", path=f"/big?n={limit + 1}", method="GET")
        assert over.error() == (
            502,
            "response_too_large",
            f"'node-hello' answered over the limit of {limit} bytes",
        ), over
        assert over.served_by is None or over.served_by == cluster.name(cluster.a)


def test_a_program_that_dies_mid_call_answers_instance_crashed(cluster: Cluster) -> None:
    # stdio: the script exits during its first call.
    crashed = call(cluster.a, "sh-crash", b"x")
    assert crashed.error() == (
        502,
        "instance_crashed",
        "the instance of 'sh-crash' died while handling the call (exited with code 7)",
    ), crashed
    # http, forwarded: warm on a, /crash sent to b.
    placed(cluster, cluster.a, "node-crash")
    died = call(cluster.b, "node-crash", path="/crash")
    assert died.error() == (
        502,
        "instance_crashed",
        "the instance of 'node-crash' died while handling the call (exited with code 9)",
    ), died
    assert stops(cluster.a, "node-crash", "crashed") == 1
    after = call(cluster.a, "node-crash", method="GET")
    assert (after.status, after.route) == (200, "local-cold"), after
    assert starts(cluster, "node-crash") == 2


def test_no_node_died_and_no_program_outlived_its_instance(cluster: Cluster) -> None:
    """Last: both nodes still serve, and what the failing tests started is gone."""
    for node in (cluster.a, cluster.b):
        assert node.process is not None and node.process.poll() is None
        assert call(node, "sh-hello", b"still").status == 200
    gone = ("modes.sh early", "modes.sh crash", "server.js garbage")
    for needle in gone:
        assert programs(cluster.a, needle) == [] and programs(cluster.b, needle) == [], needle
    assert os.path.exists(cluster.local.release / "hello")  # compiled into the copy only
    assert not (FIXTURE / "hello").exists()
