"""The programs of examples/polyglot, and the reference implementation printed in
docs/exec-protocol.md, speak the exec runtime's protocols. No node is involved: each program is
started the way a node starts it (argv, the release directory as its working directory,
PORT or SOCKET_PATH for http, one socket as stdin and stdout for stdio) and driven the way a
node drives it.

The stdio client below is this test's own, written from docs/exec-protocol.md, not the node's
parser: a misreading of the spec in one does not hide the same misreading in the other."""

from __future__ import annotations

import http.client
import json
import os
import random
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import pytest

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "polyglot"
SPEC = REPO / "docs" / "exec-protocol.md"
# Every wait on a program ends within this; generous, since two loaded cores run the suite.
WAIT_S = 30.0
LINE_MAX = 256  # bytes of a header line, its "\n" included
# What a sandboxed instance's environment holds, more or less (docs/security.md).
BASE_ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": "/tmp"}
RESULT_LINE = re.compile(rb"RESULT ([0-9]+) ([0-9]+) ([0-9]+)(?: ([\x20-\x7e]+))?")


def need(*programs: str) -> None:
    for program in programs:
        if shutil.which(program) is None:
            pytest.skip(f"{program} is not installed")


@pytest.fixture(scope="module")
def release(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of examples/polyglot after its build step (`make`), as a node would load it."""
    need("make", "gcc")
    path = tmp_path_factory.mktemp("polyglot") / "release"
    shutil.copytree(EXAMPLE, path, ignore=shutil.ignore_patterns("hello-c"))
    built = subprocess.run(
        ["make"], cwd=path, capture_output=True, text=True, timeout=120, check=False
    )
    assert built.returncode == 0, f"make failed:\n{built.stdout}{built.stderr}"
    assert os.access(path / "hello-c", os.X_OK)
    return path


# -- stdio ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Result:
    id: int
    status: int
    content_type: str | None
    body: bytes


class StdioPeer:
    """The node's side of the stdio protocol, for one program started with a socket pair as
    its stdin and stdout (and its stderr in a file, read at the end)."""

    def __init__(self, argv: Sequence[str], cwd: Path, stderr_path: Path) -> None:
        self.sock, theirs = socket.socketpair()
        self.stderr_file = stderr_path.open("wb")
        try:
            self.process = subprocess.Popen(
                argv,
                cwd=cwd,
                stdin=theirs.fileno(),
                stdout=theirs.fileno(),
                stderr=self.stderr_file,
                env={**BASE_ENV, "TIERFAAS_FUNCTION": "test"},
            )
        finally:
            theirs.close()
        self.stderr_path = stderr_path
        self.sock.settimeout(WAIT_S)
        self.buffer = b""
        self.sender: threading.Thread | None = None

    def __enter__(self) -> StdioPeer:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.stop()

    def stop(self) -> None:
        """Kills the program if it still runs and releases everything (idempotent)."""
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(timeout=WAIT_S)
        self.sock.close()
        self.stderr_file.close()
        if self.sender is not None:
            self.sender.join(timeout=WAIT_S)

    def stderr(self) -> str:
        self.stderr_file.flush()
        return self.stderr_path.read_text(errors="replace")

    def _more(self) -> None:
        chunk = self.sock.recv(1 << 16)
        if not chunk:
            raise AssertionError(f"the program closed its output; stderr: {self.stderr()!r}")
        self.buffer += chunk

    def read_line(self) -> bytes:
        while b"\n" not in self.buffer[:LINE_MAX]:
            assert len(self.buffer) < LINE_MAX, f"header line over 256 bytes: {self.buffer!r}"
            self._more()
        line, _, self.buffer = self.buffer.partition(b"\n")
        return line

    def read_exactly(self, size: int) -> bytes:
        while len(self.buffer) < size:
            self._more()
        data, self.buffer = self.buffer[:size], self.buffer[size:]
        return data

    def expect_ready(self) -> None:
        assert self.read_line() == b"READY"

    def read_result(self) -> Result:
        line = self.read_line()
        match = RESULT_LINE.fullmatch(line)
        assert match is not None, f"not a RESULT line: {line!r}"
        number, status, length = (int(match[i]) for i in (1, 2, 3))
        assert 1 <= number < 2**63 and 100 <= status <= 599, line
        content_type = match[4].decode("ascii") if match[4] is not None else None
        return Result(number, status, content_type, self.read_exactly(length))

    def send(self, data: bytes) -> None:
        """Sends data from another thread, as the node writes while it reads: a program that
        answers a large call before it has read the next one must not deadlock the test."""
        assert self.sender is None or not self.sender.is_alive()
        self.sender = threading.Thread(target=self.sock.sendall, args=(data,), daemon=True)
        self.sender.start()

    def close_and_wait(self) -> int:
        """Closes the node's end (the program reads end of input) and returns its exit code."""
        if self.sender is not None:
            self.sender.join(timeout=WAIT_S)
        self.sock.shutdown(socket.SHUT_RDWR)
        return self.process.wait(timeout=WAIT_S)


def call_frame(number: int, body: bytes, request_id: str = "req-1", extra: str = "") -> bytes:
    """A CALL frame: its header line, then its body."""
    head = b"CALL %d %d %s 10000%s\n" % (number, len(body), request_id.encode(), extra.encode())
    return head + body


def reference_program(tmp_path: Path) -> list[str]:
    """The Python block of docs/exec-protocol.md, written to a file and run as is."""
    blocks = re.findall(r"```python\n(.*?)```", SPEC.read_text(), re.DOTALL)
    assert len(blocks) == 1, "docs/exec-protocol.md has one Python block: the reference"
    assert len(blocks[0].splitlines()) < 30  # the promise: under 30 lines
    script = tmp_path / "hello.py"
    script.write_text(blocks[0])
    return [sys.executable, str(script)]


@dataclass(frozen=True)
class StdioProgram:
    argv: list[str]
    greeting: bytes
    content_type: str
    large_body: int  # bytes of the largest body its pipelined test sends


PROGRAMS = {
    "c": StdioProgram(["./hello-c"], b"Hello from C, ", "text/plain; charset=utf-8", 100_000),
    "sh": StdioProgram(["sh", "hello.sh"], b"Hello from sh, ", "text/plain; charset=utf-8", 20_000),
    "python-reference": StdioProgram([], b"Hello, ", "text/plain", 100_000),
}


@pytest.fixture(params=sorted(PROGRAMS))
def program(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StdioProgram]:
    chosen = PROGRAMS[request.param]
    if request.param == "python-reference":
        chosen = StdioProgram(
            reference_program(tmp_path), chosen.greeting, chosen.content_type, chosen.large_body
        )
    yield chosen


Start = Callable[[Sequence[str]], StdioPeer]


@pytest.fixture
def start(release: Path, tmp_path: Path) -> Iterator[Start]:
    """Starts programs in the built release; each is killed at the end if still running."""
    peers: list[StdioPeer] = []

    def started(argv: Sequence[str]) -> StdioPeer:
        peers.append(StdioPeer(argv, release, tmp_path / f"stderr-{len(peers)}"))
        return peers[-1]

    try:
        yield started
    finally:
        for peer in peers:
            peer.stop()


def random_bytes(size: int, seed: int) -> bytes:
    """Bytes of every value, newlines and NULs included, so a body is never taken for text."""
    return random.Random(seed).randbytes(size)


def test_pipelined_calls_are_answered_in_order_byte_exactly(
    start: Start, program: StdioProgram
) -> None:
    bodies = [
        b"Ada",
        b"",  # an empty body answers "world"
        random_bytes(program.large_body, seed=1),
        b"CALL 99 3 x 1\nabc",  # a body that looks like a frame is still a body
        "Grüße, 世界".encode(),  # lengths are bytes, not characters
        b"\n",
    ]
    frames = b"".join(call_frame(i + 1, body, f"req-{i}") for i, body in enumerate(bodies))
    frames += call_frame(len(bodies) + 1, b"last", "r.7_x-y", extra=" future-field 42")
    bodies.append(b"last")
    with start(program.argv) as peer:
        peer.expect_ready()
        peer.send(frames)  # every call before any answer: pipelined
        for number, body in enumerate(bodies, start=1):
            assert peer.read_result() == Result(
                number, 200, program.content_type, program.greeting + (body or b"world")
            )
        assert peer.close_and_wait() == 0, peer.stderr()
        assert peer.buffer == b""  # nothing after the last answer
        assert peer.stderr() == ""


def test_a_long_pipelined_stream_crosses_every_read_boundary(
    start: Start, program: StdioProgram
) -> None:
    """500 calls of 0-400 bytes sent at once: over 100 KB, so header lines and bodies fall
    across the boundaries of the programs' reads wherever they happen to be."""
    sizes = random.Random(3).choices(range(401), k=500)
    bodies = [random_bytes(size, seed=i) for i, size in enumerate(sizes)]
    with start(program.argv) as peer:
        peer.expect_ready()
        peer.send(b"".join(call_frame(i + 1, body) for i, body in enumerate(bodies)))
        for number, body in enumerate(bodies, start=1):
            result = peer.read_result()
            assert (result.id, result.body) == (number, program.greeting + (body or b"world"))
        assert peer.close_and_wait() == 0, peer.stderr()


def test_frames_split_anywhere_are_read_whole(start: Start, program: StdioProgram) -> None:
    """The node's writes reach the program in pieces: mid header line, mid body, and a body
    glued to the next header line. Pauses between the pieces make them separate reads."""
    body = random_bytes(3000, seed=2)
    first = call_frame(1, body)
    stream = first + call_frame(2, b"Bob")
    cuts = [7, 20, len(first) - len(body) + 1500, len(first) + 3]
    with start(program.argv) as peer:
        peer.expect_ready()
        for begin, end in zip([0, *cuts], [*cuts, len(stream)], strict=True):
            peer.sock.sendall(stream[begin:end])
            time.sleep(0.05)
        assert peer.read_result().body == program.greeting + body
        assert peer.read_result().body == program.greeting + b"Bob"
        assert peer.close_and_wait() == 0, peer.stderr()


def test_end_of_input_right_after_ready_exits_0(start: Start, program: StdioProgram) -> None:
    with start(program.argv) as peer:
        peer.expect_ready()
        assert peer.close_and_wait() == 0, peer.stderr()


MALFORMED = {
    "not a CALL": b"HELLO 1 2 r 5\n",
    "id not a number": b"CALL x 2 r 5\nhi",
    "id 0": b"CALL 0 2 r 5\nhi",
    "length not a number": b"CALL 1 -2 r 5\n",
    "too few fields": b"CALL 1 2\nhi",
    "end of input inside a header line": b"CALL 1 2 r",
}
C_ONLY_MALFORMED = {
    "end of input inside a body": b"CALL 1 5 r 5\nabc",
    "header line over 256 bytes": b"CALL 1 2 " + b"r" * 300 + b" 5\n",
    "body over the cap": b"CALL 1 999999999 r 5\n",
    "request id with a bad character": b"CALL 1 2 r/1 5\nhi",
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
@pytest.mark.parametrize("name", ["c", "sh"])
def test_malformed_input_exits_nonzero_saying_why_on_stderr(
    start: Start, name: str, case: str
) -> None:
    check_malformed(start, PROGRAMS[name].argv, MALFORMED[case], f"hello-{name}: ")


@pytest.mark.parametrize("case", sorted(C_ONLY_MALFORMED))
def test_malformed_input_c_only(start: Start, case: str) -> None:
    check_malformed(start, PROGRAMS["c"].argv, C_ONLY_MALFORMED[case], "hello-c: ")


def check_malformed(start: Start, argv: list[str], data: bytes, prefix: str) -> None:
    with start(argv) as peer:
        peer.expect_ready()
        peer.sock.sendall(data)
        peer.sock.shutdown(socket.SHUT_WR)  # end of input after the bad bytes
        code = peer.process.wait(timeout=WAIT_S)
        assert code != 0
        assert peer.stderr().startswith(prefix), peer.stderr()
        assert unread(peer.sock) == b""  # and it answered nothing


def unread(sock: socket.socket) -> bytes:
    """What is left to read on sock until the other end is gone. A Unix socket closed with
    bytes it never read resets the connection: that ends the data too."""
    data = b""
    try:
        while chunk := sock.recv(1 << 16):
            data += chunk
    except ConnectionResetError:
        pass
    return data


# -- http ------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@pytest.fixture
def node_server(release: Path, tmp_path: Path) -> Iterator[int]:
    """hello-node started as the node starts it, ready once GET /healthz answers 200."""
    need("node")
    port = free_port()
    env = {**BASE_ENV, "PORT": str(port), "TIERFAAS_FUNCTION": "hello-node"}
    with (tmp_path / "node-stderr").open("wb") as stderr:
        process = subprocess.Popen(
            ["node", "hello.js"], cwd=release, env=env, stdout=stderr, stderr=stderr
        )
        try:
            wait_ready(process, port, tmp_path / "node-stderr")
            yield port
        finally:
            process.kill()
            process.wait(timeout=WAIT_S)


def wait_ready(process: subprocess.Popen[bytes], port: int, stderr: Path) -> None:
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        assert process.poll() is None, f"node exited: {stderr.read_text()}"
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=WAIT_S)
            connection.request("GET", "/healthz")
            if connection.getresponse().status == 200:
                connection.close()
                return
        except OSError:
            pass  # not listening yet
        time.sleep(0.05)
    raise AssertionError(f"hello-node was not ready within {WAIT_S} s")


def test_node_answers_get_and_post_on_one_kept_alive_connection(node_server: int) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", node_server, timeout=WAIT_S)
    try:
        connection.request("GET", "/json?x=1&y=two", headers={"X-Demo": "yes"})
        answer = connection.getresponse()
        assert (answer.status, answer.getheader("Content-Type")) == (200, "application/json")
        assert json.loads(answer.read()) == {
            "method": "GET",
            "path": "/json",
            "query": {"x": "1", "y": "two"},
            "demo": "yes",
            "bodyBytes": 0,
            "function": "hello-node",
        }
        connection.request("POST", "/anything?a=b", body=b"Ada")
        answer = connection.getresponse()
        assert answer.status == 200
        assert answer.getheader("Content-Type") == "text/plain; charset=utf-8"
        assert answer.read() == b"Hello from Node.js, Ada"
        connection.request("POST", "/", body=b"")
        assert connection.getresponse().read() == b"Hello from Node.js, world"
        connection.request("PUT", "/json", body=b"12345")
        assert json.loads(connection.getresponse().read())["bodyBytes"] == 5
    finally:
        connection.close()


def test_node_listens_on_socket_path_when_given(release: Path, tmp_path: Path) -> None:
    """listen = "unix": the node sets SOCKET_PATH instead of PORT, and hello-node serves there
    (kept-alive, as the node uses it)."""
    need("node")
    path = tmp_path / "http.sock"
    env = {**BASE_ENV, "SOCKET_PATH": str(path), "TIERFAAS_FUNCTION": "hello-node"}
    with (tmp_path / "node-stderr").open("wb") as stderr:
        process = subprocess.Popen(
            ["node", "hello.js"], cwd=release, env=env, stdout=stderr, stderr=stderr
        )
    try:
        deadline = time.monotonic() + WAIT_S
        while not path.exists():
            assert process.poll() is None, (tmp_path / "node-stderr").read_text()
            assert time.monotonic() < deadline, f"no socket at {path} within {WAIT_S} s"
            time.sleep(0.05)
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(WAIT_S)
            sock.connect(str(path))
            answers = []
            for name in (b"Ada", b"Grace"):
                sock.sendall(
                    b"POST / HTTP/1.1\r\nhost: localhost\r\ncontent-length: %d\r\n\r\n%s"
                    % (len(name), name)
                )
                answer = http.client.HTTPResponse(sock)
                answer.begin()
                answers.append((answer.status, answer.read()))
        assert answers == [
            (200, b"Hello from Node.js, Ada"),
            (200, b"Hello from Node.js, Grace"),
        ]
    finally:
        process.kill()
        process.wait(timeout=WAIT_S)


def test_node_without_port_exits_nonzero_saying_why(release: Path) -> None:
    need("node")
    ran = subprocess.run(
        ["node", "hello.js"],
        cwd=release,
        env=BASE_ENV,
        capture_output=True,
        timeout=WAIT_S,
        check=False,
    )
    assert ran.returncode != 0
    assert b"neither SOCKET_PATH nor PORT is set" in ran.stderr
