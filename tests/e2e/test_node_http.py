"""One real node process on loopback, driven over HTTP as a user would."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
from multidict import CIMultiDict

from tierfaas.http.protocol import LINGER_IDLE_S, SWEEP_INTERVAL_S
from tierfaas.testing.nodes import NodeProcess, descendants, http_get
from tierfaas.testing.wait import eventually, eventually_async

pytestmark = pytest.mark.e2e

TESTREL = Path(__file__).parent.parent / "fixtures" / "testrel"
ARGS = ["--max-body-bytes", "1000", "--queue-max", "1", "--queue-timeout-s", "0.3"]


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProcess]:
    log = tmp_path_factory.mktemp("node") / "node.log"
    with NodeProcess(TESTREL, host="127.0.0.2", extra_args=ARGS, log_path=log) as started:
        yield started


async def post(
    url: str, body: bytes = b"", headers: CIMultiDict[str] | None = None, method: str = "POST"
) -> tuple[int, CIMultiDict[str], bytes]:
    async with (
        aiohttp.ClientSession() as session,
        session.request(method, url, data=body, headers=headers) as response,
    ):
        return response.status, CIMultiDict(response.headers), await response.read()


def invoke(
    node: NodeProcess, name: str, body: bytes = b"", **kw: object
) -> tuple[int, CIMultiDict[str], bytes]:
    return asyncio.run(post(f"{node.url}/function/{name}", body, **kw))  # type: ignore[arg-type]


def test_invocation_answers_with_request_id_and_node(node: NodeProcess) -> None:
    status, headers, body = invoke(node, "echo", b"hi")
    assert (status, body) == (200, b"hi")
    assert len(headers["X-Request-Id"]) == 16
    assert headers["X-Tierfaas-Served-By"] == f"127.0.0.2-{node.port}"
    assert headers["Content-Type"] == "application/octet-stream"
    status, headers, _ = invoke(node, "echo", b"", headers={"X-Request-Id": "trace-42"})
    assert headers["X-Request-Id"] == "trace-42"
    _, headers, _ = invoke(node, "echo", b"", headers={"X-Request-Id": "<bad id>"})
    assert headers["X-Request-Id"] != "<bad id>"


def test_get_with_query_string(node: NodeProcess) -> None:
    status, headers, body = asyncio.run(post(f"{node.url}/function/ctx?x=1&y=2", method="GET"))
    assert status == 200 and headers["Content-Type"] == "application/json"
    assert json.loads(body)["query"] == "x=1&y=2"
    assert json.loads(body)["method"] == "GET"


@pytest.mark.parametrize(
    ("path", "method", "status", "code"),
    [
        ("/function/nope", "POST", 404, "unknown_function"),
        ("/function/bad%20name", "POST", 400, "bad_name"),
        ("/function/" + "x" * 65, "POST", 400, "bad_name"),
        ("/function/echo", "DELETE", 405, "method_not_allowed"),
        ("/nothing-here", "GET", 404, "not_found"),
    ],
)
def test_client_errors_are_typed_json(
    node: NodeProcess, path: str, method: str, status: int, code: str
) -> None:
    got, headers, body = asyncio.run(post(f"{node.url}{path}", method=method))
    detail = json.loads(body)
    assert (got, detail["error"]) == (status, code)
    assert detail["request_id"] == headers["X-Request-Id"]
    assert detail["message"]


def test_unknown_function_points_to_the_list(node: NodeProcess) -> None:
    _, _, body = invoke(node, "nope")
    assert "/v1/functions" in json.loads(body)["message"]


def test_body_over_the_limit_is_413(node: NodeProcess) -> None:
    status, _, body = invoke(node, "echo", b"x" * 1001)
    assert (status, json.loads(body)["error"]) == (413, "body_too_large")

    async def chunked() -> int:
        async def chunks():  # type: ignore[no-untyped-def]
            for _ in range(20):
                yield b"y" * 100

        async with (
            aiohttp.ClientSession() as session,
            session.post(f"{node.url}/function/echo", data=chunks()) as response,
        ):
            return response.status

    assert asyncio.run(chunked()) == 413
    assert invoke(node, "echo", b"x" * 1000)[0] == 200


def test_a_client_that_goes_quiet_after_its_413_reads_it_and_is_let_go(node: NodeProcess) -> None:
    with socket.create_connection((node.host, node.port), timeout=10) as sock:
        sock.sendall(
            b"POST /function/echo HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n"
            + b"x" * 5000
        )
        answer = b""
        while chunk := sock.recv(65536):  # to the node's end of stream, not a reset
            answer += chunk
        assert answer.startswith(b"HTTP/1.1 413") and b'"body_too_large"' in answer
        sock.sendall(b"x")  # the node still lingers: taken and dropped
        time.sleep(LINGER_IDLE_S + SWEEP_INTERVAL_S + 0.5)
        # Closed now: the first byte draws a reset, the next one fails.
        with pytest.raises((BrokenPipeError, ConnectionResetError)):
            sock.sendall(b"x")
            time.sleep(0.2)
            sock.sendall(b"x")


@pytest.mark.parametrize(
    ("function", "status", "code", "needle"),
    [
        ("boomfn", 500, "ValueError", "bad input: 42"),
        ("badresult", 500, "UnserializableResult", "object"),
        ("crash", 502, "instance_crashed", "exited with code 7"),
        ("oom", 502, "out_of_memory", "memory limit"),
        ("flaky_init", 502, "start_failed", "init could not load its model"),
        ("slow", 504, "timeout", "timeout of 0.5 s"),
    ],
)
def test_function_failures_are_typed(
    node: NodeProcess, function: str, status: int, code: str, needle: str
) -> None:
    got, _, body = invoke(node, function, b"3" if function == "slow" else b"")
    detail = json.loads(body)
    assert (got, detail["error"]) == (status, code)
    assert needle in detail["message"]
    assert "Traceback" not in detail["message"]


def test_overload_is_429_with_retry_after(node: NodeProcess) -> None:
    async def burst() -> list[tuple[int, CIMultiDict[str], bytes]]:
        url = f"{node.url}/function/onebyone"
        return await asyncio.gather(*(post(url, b"1") for _ in range(4)))

    results = asyncio.run(burst())
    statuses = sorted(status for status, _, _ in results)
    assert statuses[0] == 200 and 429 in statuses
    for status, headers, body in results:
        if status == 429:
            assert headers["Retry-After"] == "1"
            assert json.loads(body)["error"] == "overloaded"


def test_function_list_metrics_and_readiness(node: NodeProcess) -> None:
    invoke(node, "jsonval", b"abc")
    status, body = http_get(f"{node.url}/v1/functions")
    listing = json.loads(body)
    assert status == 200 and listing["release"] == {"name": "testrel", "version": "0.1.0"}
    jsonval = next(f for f in listing["functions"] if f["name"] == "jsonval")
    assert jsonval["instances"] == 1 and jsonval["memory_mb"] == 64
    assert (jsonval["cpu"], jsonval["pids"], jsonval["network"]) == (None, 64, "host")
    assert jsonval["isolation"] == "sandbox"  # the default
    status, body = http_get(f"{node.url}/metrics")
    text = body.decode()
    assert 'tierfaas_invocations_total{function="jsonval",outcome="ok",start="cold"}' in text
    assert 'tierfaas_instances{function="jsonval"} 1.0' in text
    assert "tierfaas_cold_start_seconds_bucket" in text
    assert http_get(f"{node.url}/readyz")[0] == 200
    assert json.loads(http_get(f"{node.url}/healthz")[1])["status"] == "ok"


@pytest.mark.serial
def test_health_answers_while_cpu_hogs_fill_every_instance(tmp_path: Path) -> None:
    node = NodeProcess(TESTREL, host="127.0.0.4", log_path=tmp_path / "node.log")

    async def scenario() -> list[float]:
        url = f"{node.url}/function/hog"
        hogs = [asyncio.create_task(post(url, b"3")) for _ in range(2)]  # max_instances = 2
        waits = []
        async with aiohttp.ClientSession() as session:

            async def hog_instances() -> int:
                async with session.get(f"{node.url}/v1/functions") as response:
                    listing = await response.json()
                return sum(f["instances"] for f in listing["functions"] if f["name"] == "hog")

            deadline = time.monotonic() + 10.0
            while await hog_instances() < 2:  # until both instances are spinning
                assert time.monotonic() < deadline, "the hogs did not start within 10 s"
                await asyncio.sleep(0.05)
            for _ in range(10):
                began = time.monotonic()
                async with session.get(f"{node.url}/healthz") as response:
                    assert response.status == 200
                waits.append(time.monotonic() - began)
                await asyncio.sleep(0.1)
        assert all(status == 200 for status, _, _ in await asyncio.gather(*hogs))
        return waits

    with node:
        waits = asyncio.run(scenario())
    assert max(waits) < 1.0, waits  # generous: the loop is never blocked by the hogs


def test_sigterm_drains_in_flight_calls_then_exits_leaving_no_process(tmp_path: Path) -> None:
    node = NodeProcess(TESTREL, host="127.0.0.3", log_path=tmp_path / "node.log").start()
    try:

        async def scenario() -> tuple[int, int, str, str, str]:
            async with aiohttp.ClientSession() as kept:
                # A keep-alive connection opened before the drain.
                async with kept.post(f"{node.url}/function/echo", data=b"a") as first:
                    assert first.status == 200
                    await first.read()  # read to the end, or aiohttp drops the connection
                before = len(descendants(node.pid))  # the zygote
                # 2 s: time enough for the checks below while the call is in flight.
                slow = asyncio.create_task(post(f"{node.url}/function/onebyone", b"2"))

                async def onebyone_busy() -> bool:
                    async with (
                        aiohttp.ClientSession() as session,
                        session.get(f"{node.url}/v1/functions") as response,
                    ):
                        listing = await response.json()
                    return any(f["name"] == "onebyone" and f["busy"] for f in listing["functions"])

                # The call is in flight (its instance busy) before the signal: a descendant
                # count alone can grow for another reason while the call is still connecting.
                deadline = time.monotonic() + 10.0
                while not await onebyone_busy():
                    assert time.monotonic() < deadline, "onebyone was not busy within 10 s"
                    await asyncio.sleep(0.02)

                def started() -> list[int] | None:  # the call's instance is forked
                    found = descendants(node.pid)
                    return found if len(found) > before else None

                children = await eventually_async(started, 10.0)
                scenario.children = children  # type: ignore[attr-defined]
                node.signal(signal.SIGTERM)

                # New connections are refused once the node has the signal: a load balancer
                # moves on.
                async def refused_now() -> str:
                    try:
                        await post(f"{node.url}/function/echo", b"x")
                    except aiohttp.ClientConnectorError as exc:
                        return exc.__class__.__name__
                    return ""

                refused = ""
                for _ in range(40):
                    if refused := await refused_now():
                        break
                    await asyncio.sleep(0.025)
                # A call still arriving on an open connection is served, and closes it.
                async with kept.post(f"{node.url}/function/echo", data=b"late") as late:
                    late_status, late_body = late.status, await late.read()
                    closing = late.headers.get("Connection", "")
                assert late_status == 200 and late_body == b"late"
                status, _, answer = await slow
                return status, late_status, refused, closing, answer.decode()

        status, late, refused, closing, answer = asyncio.run(scenario())
        assert (status, late, answer) == (200, 200, "done")
        assert refused == "ClientConnectorError"
        assert closing.lower() == "close"
        assert node.process is not None and node.process.wait(10) == 0
        children: list[int] = scenario.children  # type: ignore[attr-defined]
        eventually(lambda: not [pid for pid in children if Path(f"/proc/{pid}").exists()], 5.0)
    finally:
        node.kill()
