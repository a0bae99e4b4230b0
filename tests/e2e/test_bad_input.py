"""Bad input against real node processes: every case gets a typed answer, no node crashes,
no process is left behind and memory stays bounded (docs/security.md).

- HTTP on raw sockets: garbage request lines, bad Content-Length, chunked abuse, huge heads,
  slowloris clients (head and body one byte at a time), idle connections, unread answers;
- refusals every client reads: urllib, requests and curl writing a whole oversized request
  before reading get their 413 or 431, and the node's lingering after them is bounded;
- functions that misbehave (tests/fixtures/hostile): unserialisable results, exceptions that
  cannot be printed, huge outputs, forged protocol frames, fork bombs, memory hogs;
- API keys per function (also through a forwarded call) and the admin token on loopback;
- the control plane: unauthenticated and malformed gRPC calls on every method, garbage on the
  query lane and the gossip port.

Hosts 127.0.10.30-49 are this file's.
"""

from __future__ import annotations

import base64
import concurrent.futures
import contextlib
import json
import os
import random
import select
import shutil
import signal
import socket
import struct
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import requests

from tierfaas.control import tierfaas_pb2 as pb
from tierfaas.control.auth import call_metadata, credential
from tierfaas.control.constants import AUTH_HEADER as HEADER
from tierfaas.control.lane import AUTH, QUERY, frame
from tierfaas.http.protocol import LINGER_MAX_BYTES, LINGER_TIME_S, SWEEP_INTERVAL_S
from tierfaas.keys import generate_key, parse_key
from tierfaas.testing.cluster import LocalCluster
from tierfaas.testing.nodes import (
    NodeProcess,
    descendants,
    free_port,
    http_get,
    processes_in_session,
    rss_mib,
)
from tierfaas.testing.wait import eventually

pytestmark = pytest.mark.e2e

HOSTILE = Path(__file__).parent.parent / "fixtures" / "hostile"
API_KEY = "hostile-fixture-api-key-0123456789"  # tests/fixtures/hostile/tierfaas.toml
LIMITS = [
    "--header-timeout-s", "2", "--body-timeout-s", "2", "--send-timeout-s", "2",
    "--max-body-bytes", "65536", "--max-header-bytes", "8192",
]  # fmt: skip
# How long this node drains after an answer that ends a request: its body timeout caps it.
LINGER_S = min(LINGER_TIME_S, 2.0)
# The node's memory may grow by at most this much over a burst of bad input. A warm node grows
# by about 1 MiB; the bound leaves room for allocator noise, not for a leak per request: the
# three rounds move over 500 MiB of bodies, heads and answers.
RSS_BOUND_MIB = 48


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProcess]:
    log = tmp_path_factory.mktemp("bad_input") / "node.log"
    with NodeProcess(HOSTILE, host="127.0.10.30", extra_args=LIMITS, log_path=log) as started:
        session = zygote_session(started)
        yield started
    # The node's SIGKILL takes its zygote and instances along, but not what a handler forked
    # (the forker's sleepers live in the zygote's session, not the node's): end them here.
    for pid in processes_in_session(session):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def exchange(node: NodeProcess, data: bytes, wait_s: float = 6.0) -> tuple[bytes, bool]:
    """Sends ``data`` on a new connection; (what came back, whether the node closed it)."""
    with socket.create_connection((node.host, node.port), timeout=wait_s) as sock:
        try:
            sock.sendall(data)
        except OSError:
            pass  # the node may close before reading it all
        out = b""
        try:
            while chunk := sock.recv(65536):
                out += chunk
        except TimeoutError:
            return out, False
        except ConnectionResetError:
            pass
        return out, True


def answers(node: NodeProcess, data: bytes, count: int) -> bytes:
    """Sends ``data`` on a new connection and reads ``count`` whole answers (each framed by its
    Content-Length) on a connection the node keeps open: no waiting for a close."""
    with socket.create_connection((node.host, node.port), timeout=6.0) as sock:
        sock.sendall(data)
        out = b""
        while True:
            rest, complete = out, 0
            while b"\r\n\r\n" in rest:
                head, _, after = rest.partition(b"\r\n\r\n")
                length = int(parse(head + b"\r\n\r\n")[1].get("content-length", "0"))
                if len(after) < length:
                    break
                complete, rest = complete + 1, after[length:]
            if complete >= count:
                return out
            chunk = sock.recv(65536)
            assert chunk, f"the node closed after {complete} of {count} answers: {out!r}"
            out += chunk


def parse(answer: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, body = answer.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        key, _, value = line.partition(":")
        headers[key.strip().lower()] = value.strip()
    return int(lines[0].split()[1]), headers, body


def call(
    node: NodeProcess,
    name: str,
    body: bytes = b"",
    headers: dict[str, str] | None = None,
    timeout: float = 20.0,
) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(
        f"{node.url}/function/{name}", data=body, method="POST", headers=headers or {}
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return (
                response.status,
                {k.lower(): v for k, v in response.headers.items()},
                response.read(),
            )
    except urllib.error.HTTPError as exc:
        return exc.code, {k.lower(): v for k, v in exc.headers.items()}, exc.read()


def typed(body: bytes) -> str:
    """The ``error`` code of a typed error body (asserting its shape)."""
    detail = json.loads(body)
    assert set(detail) == {"error", "message", "request_id"}, detail
    assert detail["message"] and detail["request_id"]
    return str(detail["error"])


def zygote_session(node: NodeProcess) -> int:
    """The session of the node's zygote, which holds every instance and what they fork."""
    pids = descendants(node.pid)
    assert pids, "the node has no zygote"
    return pids[0]


# -- malformed HTTP ------------------------------------------------------------------------------

POST = b"POST /function/echo HTTP/1.1\r\nHost: x\r\n"
MALFORMED = {
    "garbage line": b"GARBAGE\r\n\r\n",
    "binary": b"\x00\x01\x02\xff\xfe\r\n\r\n",
    "TLS hello": bytes.fromhex("16030100a5010000a10303") + b"\x00" * 64,
    "HTTP/2 preface": b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
    "unknown version": b"GET /healthz HTTP/9.9\r\nHost: x\r\n\r\n",
    "CONNECT": b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com\r\n\r\n",
    "header without colon": b"GET /healthz HTTP/1.1\r\nHost: x\r\nBad header line\r\n\r\n",
    "NUL in header": b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-A: a\x00b\r\n\r\n",
    "space in header name": b"GET /healthz HTTP/1.1\r\nHost: x\r\nX A: b\r\n\r\n",
    "bare LF": b"GET /healthz HTTP/1.1\nHost: x\n\n",
    "negative length": POST + b"Content-Length: -1\r\n\r\n",
    "length not a number": POST + b"Content-Length: abc\r\n\r\n",
    "two lengths": POST + b"Content-Length: 1\r\nContent-Length: 2\r\n\r\nab",
    "length overflow": POST + b"Content-Length: 99999999999999999999999\r\n\r\n",
    "chunked and length": POST
    + b"Transfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n0\r\n\r\n",
    "unknown coding": POST + b"Transfer-Encoding: gzip, chunked, foo\r\n\r\n",
    "bad chunk size": POST + b"Transfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n",
    "chunk size overflow": POST
    + b"Transfer-Encoding: chunked\r\n\r\nffffffffffffffffffffff\r\nabc\r\n",
}


@pytest.mark.parametrize("data", MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_http_gets_a_typed_400_and_the_connection_closes(
    node: NodeProcess, data: bytes
) -> None:
    answer, closed = exchange(node, data)
    status, headers, body = parse(answer)
    assert (status, typed(body)) == (400, "bad_request")
    assert headers["connection"] == "close" and closed
    assert headers["content-type"] == "application/json"


@pytest.mark.parametrize(
    ("data", "status", "code"),
    [
        (POST + b"Content-Length: 10737418240\r\n\r\n", 413, "body_too_large"),
        (POST + b"Transfer-Encoding: chunked\r\n\r\n" + (b"8000\r\n" + b"y" * 0x8000 + b"\r\n") * 3
         + b"0\r\n\r\n", 413, "body_too_large"),
        (b"GET /" + b"a" * 100_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 431, "headers_too_large"),
        (b"GET /healthz HTTP/1.1\r\n" + b"".join(b"X-%d: y\r\n" % i for i in range(10_000))
         + b"\r\n", 431, "headers_too_large"),
        (b"GET /healthz HTTP/1.1\r\nX-Big: " + b"a" * 1_000_000 + b"\r\n\r\n",
         431, "headers_too_large"),
    ],
    ids=["declared 10 GiB", "chunked over the limit", "100 KB URL", "10k headers",
         "1 MB header"],
)  # fmt: skip
def test_oversized_requests_are_refused_before_they_are_read(
    node: NodeProcess, data: bytes, status: int, code: str
) -> None:
    answer, _ = exchange(node, data)
    got, headers, body = parse(answer)
    assert (got, typed(body)) == (status, code)
    assert headers["connection"] == "close"


def test_a_chunked_body_over_the_limit_in_one_chunk_is_cut_at_the_limit(node: NodeProcess) -> None:
    # 2 GiB announced in one chunk: the node reads up to its limit, then answers 413.
    data = POST + b"Transfer-Encoding: chunked\r\n\r\n7fffffff\r\n" + b"z" * 70_000
    answer, _ = exchange(node, data)
    status, _, body = parse(answer)
    assert (status, typed(body)) == (413, "body_too_large")


# -- answers every client can read ---------------------------------------------------------------
# Clients that write their whole request before they read (urllib, requests, curl without
# Expect) read the 413 or 431 the node sends while they still write: the node half-closes and
# drops the rest (lingering close, tierfaas/http/protocol.py) instead of resetting.

FAR_OVER = 16 * 1024 * 1024  # 256 times this node's body limit
BIG_HEADER = 96 * 1024  # 12 times this node's head limit; curl sends header lines up to 100 KiB
CLIENTS = ["urllib", "urllib chunked", "requests", "requests chunked", "curl", "curl no Expect"]


def send_with(
    client: str, url: str, body: bytes, headers: dict[str, str], tmp_path: Path
) -> tuple[int, bytes]:
    """POSTs ``body`` with ``client`` (the whole body sent before the answer is read, or with
    curl's ``Expect: 100-continue`` unless "no Expect"); (status, answer body)."""
    data: bytes | Iterable[bytes] = body
    if client.endswith("chunked"):  # no Content-Length: the node finds out while reading
        data = (body[i : i + 65536] for i in range(0, len(body), 65536))
    if client.startswith("urllib"):
        request = urllib.request.Request(url, data=data, method="POST", headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()
    if client.startswith("requests"):
        answer = requests.post(url, data=data, headers=headers, timeout=30)
        return answer.status_code, answer.content
    if shutil.which("curl") is None:
        pytest.skip("curl is not installed: the curl cases need the curl command")
    if client == "curl no Expect":
        headers = {**headers, "Expect": ""}  # curl then sends the body without waiting
    (tmp_path / "body").write_bytes(body)
    (tmp_path / "headers").write_text("".join(f"{k}: {v}\n" for k, v in headers.items()))
    done = subprocess.run(
        ["curl", "--silent", "--show-error", "--max-time", "30", "--output",
         str(tmp_path / "answer"), "--write-out", "%{http_code}", "--header",
         f"@{tmp_path / 'headers'}", "--data-binary", f"@{tmp_path / 'body'}", url],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return int(done.stdout), (tmp_path / "answer").read_bytes()


@pytest.mark.parametrize("client", CLIENTS)
def test_a_body_far_over_the_limit_gets_its_413_with_every_client(
    node: NodeProcess, client: str, tmp_path: Path
) -> None:
    url = f"{node.url}/function/echo"
    status, body = send_with(client, url, b"x" * FAR_OVER, {}, tmp_path)
    assert (status, typed(body)) == (413, "body_too_large")


@pytest.mark.parametrize("client", ["urllib", "requests", "curl"])
def test_a_header_far_over_the_limit_gets_its_431_with_every_client(
    node: NodeProcess, client: str, tmp_path: Path
) -> None:
    url = f"{node.url}/function/echo"
    big = {"X-Big": "a" * BIG_HEADER}  # and a big body, so the client is still writing
    status, body = send_with(client, url, b"x" * FAR_OVER, big, tmp_path)
    assert (status, typed(body)) == (431, "headers_too_large")


def readable_within(sock: socket.socket, timeout: float) -> bool:
    return bool(select.select([sock], [], [], timeout)[0])


def read_to_the_end(sock: socket.socket) -> bytes:
    """Everything until the node's end of stream; a reset fails the test."""
    sock.settimeout(10)
    out = b""
    while chunk := sock.recv(65536):
        out += chunk
    return out


@pytest.mark.parametrize(
    ("start", "more"),
    [
        (b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ", b"s"),
        (POST + b"Content-Length: 1000\r\n\r\n" + b"b" * 10, b"b"),
    ],
    ids=["head", "body"],
)
def test_a_slow_client_that_writes_on_after_its_408_reads_it(
    node: NodeProcess, start: bytes, more: bytes
) -> None:
    """The client trickles, and goes on writing for a while after the 408 is there (as one that
    reads only once it has sent everything): it reads the 408 and an orderly end."""
    with socket.create_connection((node.host, node.port), timeout=10) as sock:
        sock.sendall(start)
        deadline = time.monotonic() + 10.0
        while not readable_within(sock, 0.1):
            assert time.monotonic() < deadline, "no answer within 10 s"
            sock.sendall(more)
        for _ in range(5):  # 0.5 s more of writing, well within the lingering time
            sock.sendall(more)
            time.sleep(0.1)
        status, headers, body = parse(read_to_the_end(sock))
    assert (status, typed(body)) == (408, "request_timeout")
    assert headers["connection"] == "close"


def test_a_client_that_sends_on_forever_after_its_413_is_cut_after_the_byte_bound(
    node: NodeProcess,
) -> None:
    chunk = b"z" * (1 << 20)
    sent = 0
    with socket.create_connection((node.host, node.port), timeout=10) as sock:
        sock.sendall(POST + b"Content-Length: 10737418240\r\n\r\n")
        cut: OSError | None = None
        try:
            while sent < 4 * LINGER_MAX_BYTES:
                sock.sendall(chunk)
                sent += len(chunk)
        except (BrokenPipeError, ConnectionResetError) as exc:
            cut = exc
    assert cut is not None, f"{sent} bytes taken after the 413"
    # The node drops LINGER_MAX_BYTES, then closes; what the kernels' buffers held on the way
    # (a few MiB each side on loopback) is sent too.
    assert LINGER_MAX_BYTES <= sent <= LINGER_MAX_BYTES + 32 * 1024 * 1024, sent


def test_a_client_that_trickles_on_forever_after_its_413_is_cut_after_the_time_bound(
    node: NodeProcess,
) -> None:
    with socket.create_connection((node.host, node.port), timeout=10) as sock:
        sock.sendall(POST + b"Content-Length: 10737418240\r\n\r\n")
        assert readable_within(sock, 10.0)  # the 413 is there: the node lingers from now
        began = time.monotonic()
        with pytest.raises((BrokenPipeError, ConnectionResetError)):
            while time.monotonic() - began < LINGER_S + 10.0:
                sock.sendall(b"z")
                time.sleep(0.1)
        took = time.monotonic() - began
    # Cut by the first sweep past LINGER_S; the client sees it at its second byte after that.
    assert LINGER_S - 0.1 <= took <= LINGER_S + SWEEP_INTERVAL_S + 2.0, took


def test_upgrade_requests_are_served_as_plain_http(node: NodeProcess) -> None:
    for upgrade in (b"websocket", b"h2c"):
        data = (
            b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: "
            + upgrade
            + b"\r\nSec-WebSocket-Version: 13\r\n"
            + b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
        )
        status, _, body = parse(answers(node, data, 1))
        assert status == 200 and json.loads(body)["status"] == "ok"


def test_pipelined_requests_are_answered_in_order(node: NodeProcess) -> None:
    data = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\nGET /readyz HTTP/1.1\r\nHost: x\r\n\r\n"
    answer = answers(node, data, 2)
    assert answer.count(b"HTTP/1.1 200 OK") == 2
    assert answer.index(b'"status":"ok"') < answer.index(b'"ready":true')


def test_methods_no_operation_lists_get_405_with_allow(node: NodeProcess) -> None:
    for path, allow in (("/function/echo", "GET, POST, PUT"), ("/healthz", "GET, HEAD")):
        request = urllib.request.Request(f"{node.url}{path}", method="DELETE")
        with pytest.raises(urllib.error.HTTPError) as raised:
            urllib.request.urlopen(request, timeout=5)
        assert raised.value.code == 405 and raised.value.headers["Allow"] == allow
        assert typed(raised.value.read()) == "method_not_allowed"


# -- slow clients --------------------------------------------------------------------------------


def trickle(node: NodeProcess, head: bytes, data: bytes, every_s: float) -> tuple[float, bytes]:
    """Sends ``head`` at once, then ``data`` one byte every ``every_s`` until the node closes
    the connection; (seconds until it did, what it answered)."""
    with socket.create_connection((node.host, node.port), timeout=10) as sock:
        began = time.monotonic()
        sock.sendall(head)
        answer = b""
        sock.settimeout(every_s)
        for byte in data:
            try:
                sock.sendall(bytes([byte]))
                chunk = sock.recv(65536)
                answer += chunk
                if not chunk:
                    break
            except TimeoutError:
                continue
            except OSError:
                break
        return time.monotonic() - began, answer


def test_a_client_sending_its_head_one_byte_at_a_time_is_cut_off(node: NodeProcess) -> None:
    head = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"s" * 100
    took, answer = trickle(node, b"", head, every_s=0.25)
    # header timeout 2 s, checked once a second
    assert 2.0 <= took <= 4.5, took
    status, _, body = parse(answer)
    assert (status, typed(body)) == (408, "request_timeout")


def test_a_client_sending_its_body_one_byte_at_a_time_is_cut_off(node: NodeProcess) -> None:
    head = POST + b"Content-Length: 1000\r\n\r\n"
    took, answer = trickle(node, head, b"b" * 1000, every_s=0.25)
    assert 2.0 <= took <= 4.5, took
    status, _, body = parse(answer)
    assert (status, typed(body)) == (408, "request_timeout")


def test_bytes_trickled_between_requests_do_not_hold_the_connection(node: NodeProcess) -> None:
    took, answer = trickle(
        node, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n", b"\r\n" * 100, every_s=0.25
    )
    assert took <= 4.5, took
    assert answer.startswith(b"HTTP/1.1 200") and b"408 Request Timeout" in answer


def test_idle_connections_are_closed_and_the_node_serves_meanwhile(node: NodeProcess) -> None:
    idle = [socket.create_connection((node.host, node.port), timeout=6) for _ in range(100)]
    try:
        began = time.monotonic()
        assert http_get(f"{node.url}/healthz")[0] == 200
        for sock in idle:
            status, _, body = parse(sock.recv(65536))
            assert (status, typed(body)) == (408, "request_timeout")
            assert sock.recv(1) == b""
        assert time.monotonic() - began <= 4.5
    finally:
        for sock in idle:
            sock.close()


def test_a_client_that_never_reads_its_answer_is_cut_off(node: NodeProcess) -> None:
    def cut() -> float:
        return _metric(node, "tierfaas_http_rejected_total", 'reason="send_timeout"')

    cut_before = cut()
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect((node.host, node.port))
        # Five pipelined answers of 5.7 MiB: more than the kernel's buffers hold, so the
        # node's own write buffer fills and stays full while the client reads nothing.
        request = POST.replace(b"echo", b"hugeout") + b"Content-Length: 7\r\n\r\n6000000"
        sock.sendall(request * 5)
        # Send timeout 2 s, swept once a second, after the first call ran.
        eventually(lambda: cut() > cut_before, 15.0)
        received = 0
        sock.settimeout(5)
        try:
            while chunk := sock.recv(1 << 20):
                received += len(chunk)
        except (ConnectionResetError, TimeoutError):
            pass
        assert received < 5 * 6_000_000  # the answers were dropped, the connection closed


# -- functions that misbehave ----------------------------------------------------------------------

UNSERIALISABLE = [
    "object", "set", "nan", "circular", "deep", "surrogate", "bigint", "tuplekeys", "generator",
    "exception",
]  # fmt: skip
HOSTILE_CASES = [
    *[("unserialisable", v, 500, "UnserializableResult") for v in UNSERIALISABLE],
    ("badstr", "", 500, "_Unprintable"),
    ("badstr_async", "", 500, "_Unprintable"),
    ("badstr_threads", "", 500, "_Unprintable"),
    ("hugeout", "", 502, "response_too_large"),
    ("memhog", "", 502, "out_of_memory"),
    ("mmaphog", "", 502, "out_of_memory"),
    ("forge", "type", 502, "protocol_error"),
    ("forge", "header", 502, "protocol_error"),
    ("forge", "short", 502, "protocol_error"),
    ("forge", "bigname", 500, "E" * 128),
    ("exits", "exit", 502, "instance_crashed"),
    ("exits", "keyboard", 502, "instance_crashed"),
    ("exits", "abort", 502, "instance_crashed"),
    ("exits", "closefds", 502, "instance_crashed"),
    ("stopped", "", 504, "timeout"),
    ("forkbomb", "200", 504, "timeout"),
]


@pytest.mark.parametrize(
    ("function", "body", "status", "code"),
    HOSTILE_CASES,
    ids=[f"{f}-{b}" if b else f for f, b, _, _ in HOSTILE_CASES],
)
def test_a_misbehaving_function_gets_a_typed_error(
    node: NodeProcess, function: str, body: str, status: int, code: str
) -> None:
    got, _, answer = call(node, function, body.encode())
    assert (got, typed(answer)) == (status, code)
    assert http_get(f"{node.url}/healthz")[0] == 200


def test_a_memory_hog_in_a_forked_child_is_held_by_the_same_limit(node: NodeProcess) -> None:
    status, _, body = call(node, "memhog", b"child")
    # Sandboxed, the instance's cgroup OOM-kills the child (-9); as a plain process, its
    # inherited address-space limit makes it exit with MemoryError (9).
    assert status == 200 and json.loads(body)["child_exit"] in (-9, 9)


def test_what_a_handler_forks_dies_with_its_instance(node: NodeProcess) -> None:
    session = zygote_session(node)
    before = set(processes_in_session(session))
    status, _, body = call(node, "forker", b"20")
    assert status == 200 and len(json.loads(body)) == 20
    # They outlive the call (their pids are the instance's own, in its pid namespace: counted
    # here as the processes new in the zygote's session).
    assert len(set(processes_in_session(session)) - before) >= 20
    # A fork bomb within its limits (200 processes): its timeout kills the whole tree. Counted
    # as what is new since just before it (processes of earlier tests may still be dying).
    before = set(processes_in_session(session))
    status, _, body = call(node, "forkbomb", b"200")
    assert (status, typed(body)) == (504, "timeout")
    # What may be new: the next prepared instance (sandboxed: it and its reaper) and one more.
    eventually(lambda: len(set(processes_in_session(session)) - before) <= 3, 5.0)


def test_a_node_stopped_after_fork_bombs_leaves_no_process(tmp_path: Path) -> None:
    node = NodeProcess(HOSTILE, host="127.0.10.31", log_path=tmp_path / "node.log").start()
    try:
        session = zygote_session(node)
        assert call(node, "forker", b"20")[0] == 200
        call(node, "forkbomb", b"100", timeout=10)
        assert call(node, "forker", b"10")[0] == 200  # alive, with children, at the stop
        assert node.stop() == 0
        eventually(lambda: processes_in_session(session) == [], 5.0)
    finally:
        for pid in processes_in_session(session):
            os.kill(pid, 9)
        node.kill()


def test_a_handler_raising_ever_new_exception_types_cannot_grow_the_metrics(
    node: NodeProcess,
) -> None:
    for _ in range(60):
        status, _, body = call(node, "newtypes")
        assert status == 500 and typed(body).startswith("Error")
    metrics = http_get(f"{node.url}/metrics")[1].decode()
    series = [
        line
        for line in metrics.splitlines()
        if line.startswith('tierfaas_invocations_total{function="newtypes"')
    ]
    assert 32 <= len(series) <= 34
    assert any('outcome="(other)"' in line for line in series)


def test_a_function_writing_megabytes_to_its_output_leaves_the_node_serving(
    node: NodeProcess,
) -> None:
    status, _, body = call(node, "printer", str(4 * 1024 * 1024).encode())
    assert (status, body) == (200, b"printed")
    assert call(node, "echo", b"still here")[2] == b"still here"


def test_memory_stays_bounded_over_a_burst_of_bad_input(node: NodeProcess) -> None:
    """Measures the node's RSS after a warm-up and after a burst of every kind of bad input
    (8 clients in parallel); the growth must stay under RSS_BOUND_MIB."""

    def burst(round_: int) -> None:
        rng = random.Random(round_)
        garbage = bytes(rng.getrandbits(8) for _ in range(60_000))
        kinds = [
            lambda: call(node, "echo", garbage),
            lambda: call(node, "echo", b"x" * 70_000),  # 413
            lambda: call(node, "hugeout", b"6000000"),  # 5.7 MiB answers
            lambda: call(node, "unserialisable", b"deep"),
            lambda: call(node, "secret", b"no key"),
            lambda: exchange(node, b"GET /healthz HTTP/1.1\r\nX: " + b"a" * 200_000, 2.0),
            lambda: exchange(node, MALFORMED["binary"], 2.0),
            lambda: exchange(node, POST + b"Content-Length: 10737418240\r\n\r\n" + garbage, 2.0),
        ]
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            for future in [pool.submit(kinds[i % len(kinds)]) for i in range(240)]:
                future.result()

    burst(0)  # warm-up: instances started, buffers and caches at their working size
    time.sleep(1.0)
    before = rss_mib(node.pid)
    for round_ in range(1, 4):
        burst(round_)
    time.sleep(1.0)
    after = rss_mib(node.pid)
    print(f"node RSS: {before:.1f} MiB before, {after:.1f} MiB after 720 bad requests")
    assert after - before < RSS_BOUND_MIB, (before, after)
    assert http_get(f"{node.url}/healthz")[0] == 200


# -- API keys and the admin token ----------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong-key-that-is-long-enough"},
        {"X-Api-Key": "wrong"},
        {"Authorization": f"Basic {base64.b64encode(b'x:wrong').decode()}"},
        {"Authorization": API_KEY},  # no scheme
    ],
    ids=["none", "wrong bearer", "wrong x-api-key", "wrong basic", "no scheme"],
)
def test_a_keyed_function_refuses_calls_without_its_key(
    node: NodeProcess, headers: dict[str, str]
) -> None:
    status, got, body = call(node, "secret", b"hi", headers)
    assert (status, typed(body)) == (401, "unauthorized")
    assert got["www-authenticate"].startswith("Bearer")


@pytest.mark.parametrize(
    "headers",
    [
        {"Authorization": f"Bearer {API_KEY}"},
        {"Authorization": f"bearer {API_KEY}"},
        {"X-Api-Key": API_KEY},
        {"X-Api-Key": "wrong", "Authorization": f"Bearer {API_KEY}"},
    ],
    ids=["bearer", "lower-case scheme", "x-api-key", "one of two"],
)
def test_a_keyed_function_answers_with_its_key(node: NodeProcess, headers: dict[str, str]) -> None:
    assert call(node, "secret", b"hi", headers)[::2] == (200, b"hi")


def test_keys_never_show_in_the_function_list_the_metrics_or_the_log(node: NodeProcess) -> None:
    call(node, "secret", b"x", {"X-Api-Key": "a-wrong-key-to-look-for-in-the-log"})
    listing = json.loads(http_get(f"{node.url}/v1/functions")[1])
    by_name = {f["name"]: f for f in listing["functions"]}
    assert by_name["secret"]["api_key"] is True and by_name["echo"]["api_key"] is False
    text = json.dumps(listing) + http_get(f"{node.url}/metrics")[1].decode()
    assert API_KEY not in text and "2887aa9e" not in text  # nor the digest
    assert node.log_path is not None
    log = node.log_path.read_text(errors="replace")
    assert API_KEY not in log and "a-wrong-key-to-look-for-in-the-log" not in log


def test_a_keyed_function_forwarded_to_its_warm_node_still_needs_and_passes_the_key(
    tmp_path: Path,
) -> None:
    args = ["--cold-starts", "local"]
    with LocalCluster(
        HOSTILE, 2, subnet="127.0.10", first_host=40, log_dir=tmp_path, extra_args=args
    ) as cluster:
        first, second = cluster.nodes
        eventually(lambda: all(http_get(f"{n.url}/readyz")[0] == 200 for n in cluster.nodes), 20)
        key = {"Authorization": f"Bearer {API_KEY}"}
        assert call(second, "secret", b"warm", key)[0] == 200  # warm on the second node only

        def routed() -> bool:
            status, headers, _ = call(first, "echo")  # keep it honest: echo runs locally
            del status, headers
            status, body = http_get(f"{first.url}/v1/routes")
            return status == 200 and bool(json.loads(body)["routes"].get("secret"))

        eventually(routed, 10.0)
        status, headers, body = call(first, "secret", b"via", key)
        assert (status, body) == (200, b"via")
        assert headers["x-tierfaas-route"] == "forwarded-warm"
        assert headers["x-tierfaas-served-by"] == cluster.name_of(second)
        # Without the key, the first node refuses it: nothing is forwarded.
        forwards = _metric(first, "tierfaas_forwards_total", 'outcome="ok"')
        status, _, body = call(first, "secret", b"via")
        assert (status, typed(body)) == (401, "unauthorized")
        assert _metric(first, "tierfaas_forwards_total", 'outcome="ok"') == forwards


def _metric(node: NodeProcess, name: str, labels: str) -> float:
    for line in http_get(f"{node.url}/metrics")[1].decode().splitlines():
        if line.startswith(f"{name}{{") and labels in line:
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_an_admin_token_on_loopback_leaves_the_dashboard_open(tmp_path: Path) -> None:
    token_file = tmp_path / "admin.token"
    token_file.write_text("an-admin-token-of-some-length\n")
    token_file.chmod(0o600)
    args = ["--admin-token-file", str(token_file)]
    with NodeProcess(
        HOSTILE, host="127.0.10.32", extra_args=args, log_path=tmp_path / "node.log"
    ) as node:
        for path in ("/v1/stats", "/v1/cluster", "/metrics", "/"):
            assert http_get(f"{node.url}{path}")[0] == 200, path
        assert "an-admin-token-of-some-length" not in (tmp_path / "node.log").read_text()
    token_file.chmod(0o644)
    bad = NodeProcess(HOSTILE, host="127.0.10.32", extra_args=args, log_path=tmp_path / "b.log")
    with pytest.raises(RuntimeError, match="readable by others"):
        bad.start(timeout=10)
    bad.kill()


# -- the control plane ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def keyed_node(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[NodeProcess, bytes, int]]:
    """A cluster of one with a key: (node, key, gossip port); RPC on +1, lane on +2."""
    key = generate_key()
    host = "127.0.10.33"
    gossip = free_port(host)
    args = ["--gossip", f"{host}:{gossip}", "--gossip-preset", "local"]
    log = tmp_path_factory.mktemp("control") / "node.log"
    env = {"TIERFAAS_CLUSTER_KEY": key}
    with NodeProcess(HOSTILE, host=host, extra_args=args, log_path=log, env=env) as node:
        eventually(lambda: http_get(f"{node.url}/readyz")[0] == 200, 20.0)
        yield node, parse_key(key), gossip


METHODS: dict[str, str] = {
    "Register": "unary_unary",
    "Unregister": "unary_unary",
    "Announce": "unary_unary",
    "Query": "unary_unary",
    "Info": "unary_unary",
    "QueryStream": "stream_stream",
    "Subscribe": "unary_stream",
    "Handover": "stream_unary",
}


def rpc_status(channel: grpc.Channel, method: str, body: bytes, metadata: Any) -> grpc.StatusCode:
    """Calls ``method`` with raw ``body`` bytes; the status it ends with."""
    path = f"/tierfaas.v1.Control/{method}"
    kind = METHODS[method]
    stub = getattr(channel, kind)(path)
    try:
        if kind == "unary_unary":
            stub(body, metadata=metadata, timeout=5)
        elif kind == "unary_stream":
            for _ in stub(body, metadata=metadata, timeout=2):
                pass
        else:
            answer = stub(iter([body]), metadata=metadata, timeout=5)
            if kind == "stream_stream":
                for _ in answer:
                    pass
    except grpc.RpcError as exc:
        return exc.code()  # type: ignore[no-any-return]
    return grpc.StatusCode.OK


@pytest.mark.parametrize("method", METHODS)
def test_every_control_call_without_the_credential_is_unauthenticated(
    keyed_node: tuple[NodeProcess, bytes, int], method: str
) -> None:
    node, _, gossip = keyed_node
    wrong = ((HEADER, credential(parse_key(generate_key()))),)
    with grpc.insecure_channel(f"{node.host}:{gossip + 1}") as channel:
        for metadata in ((), wrong, ((HEADER, "x" * 1_000),)):
            got = rpc_status(channel, method, b"\xff" * 32, metadata)
            assert got == grpc.StatusCode.UNAUTHENTICATED, (method, got)
        # Metadata over gRPC's 8 KiB limit is refused by the transport, before anything else.
        got = rpc_status(channel, method, b"", ((HEADER, "x" * 20_000),))
        assert got in {grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.RESOURCE_EXHAUSTED}


def test_reflection_without_the_credential_is_unauthenticated(
    keyed_node: tuple[NodeProcess, bytes, int],
) -> None:
    node, _, gossip = keyed_node
    with grpc.insecure_channel(f"{node.host}:{gossip + 1}") as channel:
        stub = channel.stream_stream(
            "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"
        )
        with pytest.raises(grpc.RpcError) as raised:
            list(stub(iter([b"\x3a\x00"]), timeout=5))  # list_services
        assert raised.value.code() == grpc.StatusCode.UNAUTHENTICATED


GARBAGE = [
    b"\xff" * 64,  # wire type 7: not protobuf
    b"\x0a\xff\xff\xff\xff\x0f",  # a field longer than the message
    b"\x08" + b"\xff" * 11,  # a varint of 11 bytes
    b"\x0a\x06../etc",  # a name that is not valid (field 1 of most requests)
    b"\x0a" + b"\x80\x80\x80\x02" + b"a" * (4 * 1024 * 1024),  # over the 4 MiB limit
]


@pytest.mark.parametrize("method", METHODS)
def test_malformed_control_calls_are_refused_and_the_node_keeps_serving(
    keyed_node: tuple[NodeProcess, bytes, int], method: str
) -> None:
    node, key, gossip = keyed_node
    right = call_metadata(key)
    refused = {
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.FAILED_PRECONDITION,  # Handover: a master takes none
    }
    with grpc.insecure_channel(
        f"{node.host}:{gossip + 1}",
        options=[("grpc.max_send_message_length", 16 * 1024 * 1024)],
    ) as channel:
        for body in GARBAGE:
            got = rpc_status(channel, method, body, right)
            assert got in refused or _answered_in_band(method, body, got), (method, body[:8], got)
        good = pb.QueryRequest(function="echo").SerializeToString()
        assert rpc_status(channel, "Query", good, right) == grpc.StatusCode.OK
    assert http_get(f"{node.url}/healthz")[0] == 200


def _answered_in_band(method: str, body: bytes, got: grpc.StatusCode) -> bool:
    """The calls that answer some bad input in their reply rather than with a status:
    Handover (a reply with ``error``), Info (no fields to break), QueryStream (a reply with
    ``error`` per bad name), and Subscribe, which takes any replica name (only logged) and so
    streams on until the client's deadline."""
    if method in ("Handover", "Info"):
        return got == grpc.StatusCode.OK
    if body == b"\x0a\x06../etc":
        return (method, got) in {
            ("QueryStream", grpc.StatusCode.OK),
            ("Subscribe", grpc.StatusCode.DEADLINE_EXCEEDED),
        }
    return False


def lane_closed(sock: socket.socket, wait_s: float) -> bool:
    sock.settimeout(wait_s)
    try:
        while sock.recv(65536):
            pass
    except TimeoutError:
        return False
    except ConnectionResetError:
        pass
    return True


def test_the_query_lane_drops_garbage_and_silent_clients(
    keyed_node: tuple[NodeProcess, bytes, int],
) -> None:
    node, key, gossip = keyed_node
    lane = (node.host, gossip + 2)
    auth = frame(AUTH, credential(key).encode())
    cases = [
        b"\x00" * 64,  # a frame of length 0
        struct.pack(">IB", 0xFFFFFFFF, AUTH),  # a frame of 4 GiB announced
        frame(QUERY, pb.QueryRequest(function="echo").SerializeToString()),  # no AUTH first
        frame(AUTH, b"0" * 64),  # a wrong credential
        auth + frame(QUERY, b"\xff" * 16),  # authenticated, then not a QueryRequest
        auth + frame(9, b"?"),  # an unknown kind
    ]
    for data in cases:
        with socket.create_connection(lane, timeout=5) as sock:
            sock.sendall(data)
            assert lane_closed(sock, 3.0), data[:16]
    with socket.create_connection(lane, timeout=10) as sock:  # says nothing: cut after 5 s
        began = time.monotonic()
        assert lane_closed(sock, 8.0)
        assert time.monotonic() - began < 7.0
    with socket.create_connection(lane, timeout=5) as sock:  # and it still answers
        sock.sendall(auth + frame(QUERY, pb.QueryRequest(function="echo").SerializeToString()))
        sock.settimeout(5)
        assert sock.recv(65536)


def test_the_query_lane_holds_no_big_buffer_for_a_client_that_did_not_authenticate(
    keyed_node: tuple[NodeProcess, bytes, int],
) -> None:
    node, _, gossip = keyed_node
    lane = (node.host, gossip + 2)
    before = rss_mib(node.pid)
    socks = []
    try:
        for _ in range(40):  # each announces a 4 MiB AUTH frame and sends most of it
            sock = socket.create_connection(lane, timeout=5)
            socks.append(sock)
            try:
                sock.sendall(
                    struct.pack(">IB", 4 * 1024 * 1024, AUTH) + b"a" * (4 * 1024 * 1024 - 2)
                )
            except OSError:
                pass  # refused early: what we want
        time.sleep(0.5)
        grown = rss_mib(node.pid) - before
        assert grown < 32, f"the node holds {grown:.0f} MiB for 40 unauthenticated clients"
    finally:
        for sock in socks:
            sock.close()


def test_garbage_on_the_gossip_port_is_dropped_and_the_node_stays_joined(
    keyed_node: tuple[NodeProcess, bytes, int],
) -> None:
    node, _, gossip = keyed_node
    rng = random.Random(8)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        for _ in range(2000):
            udp.sendto(rng.randbytes(rng.randint(0, 1400)), (node.host, gossip))
    for _ in range(20):
        with socket.create_connection((node.host, gossip), timeout=5) as tcp:
            try:
                tcp.sendall(rng.randbytes(rng.randint(1, 70_000)))
                tcp.settimeout(2)
                tcp.recv(1)
            except OSError:
                pass
    time.sleep(1.0)
    assert http_get(f"{node.url}/readyz")[0] == 200
    view = json.loads(http_get(f"{node.url}/v1/cluster")[1])
    assert view["joined"] and view["master"] == view["self"]


def test_the_node_answers_while_many_threads_send_bad_input(node: NodeProcess) -> None:
    """Everything above at once, from many threads, with a healthy node at the end."""
    stop = time.monotonic() + 3.0
    failures: list[BaseException] = []

    def hammer(seed: int) -> None:
        rng = random.Random(seed)
        try:
            while time.monotonic() < stop:
                data = rng.choice(list(MALFORMED.values()))
                exchange(node, data, 2.0)
                call(node, "unserialisable", rng.choice(UNSERIALISABLE).encode())
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=hammer, args=(i,)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not failures, failures
    assert http_get(f"{node.url}/healthz")[0] == 200
