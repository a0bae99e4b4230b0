"""Which call a printed line belongs to, with real instances (tests/fixtures/printer) and the
node's function log (``tierfaas.funclogs``): a line is tagged with the request id of the call
its instance ran alone when it printed it, also for a handler that takes no context; a line
printed with no call running, or with several, has no request id."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tierfaas.config import NodeConfig
from tierfaas.funclogs.line import LogLine
from tierfaas.funclogs.store import LogSettings, LogStore
from tierfaas.manifest import load_release
from tierfaas.runtime import Runtime

PRINTER = Path(__file__).parent.parent / "fixtures" / "printer"


@pytest.fixture
async def node() -> AsyncIterator[tuple[Runtime, LogStore]]:
    release = load_release(PRINTER)
    logs = LogStore("n1", release.functions, LogSettings(files=0), None)
    config = NodeConfig(release_dir=PRINTER, isolation="process")
    runtime = Runtime(release, config, output_sinks=[logs.sink])
    await runtime.start()
    yield runtime, logs
    await runtime.close()


async def lines_of(logs: LogStore, function: str, count: int) -> list[LogLine]:
    deadline = time.monotonic() + 10.0
    while time.monotonic() < deadline:
        found = logs.recent(function, None, None, 100)
        if len(found) >= count:
            return found
        await asyncio.sleep(0.02)
    raise AssertionError(f"{function}: {logs.recent(function, None, None, 100)}")


async def test_a_handler_without_a_context_has_its_lines_tagged(
    node: tuple[Runtime, LogStore],
) -> None:
    runtime, logs = node
    await runtime.invoke("plain", b"one", request_id="r-plain")
    (line,) = await lines_of(logs, "plain", 1)
    assert (line.text, line.request, line.node, line.stream) == (
        "plain one",
        "r-plain",
        "n1",
        "stdout",
    )


async def test_a_line_printed_after_the_call_ended_has_no_request(
    node: tuple[Runtime, LogStore],
) -> None:
    runtime, logs = node
    await runtime.invoke("later", b"", request_id="r-later")
    (line,) = await lines_of(logs, "later", 1)
    assert (line.text, line.request) == ("later, after the call", None)


async def test_lines_printed_while_calls_overlap_have_no_request(
    node: tuple[Runtime, LogStore],
) -> None:
    runtime, logs = node
    await runtime.invoke("chat", b"alone", request_id="r-alone", query="0")
    first = asyncio.ensure_future(runtime.invoke("chat", b"a", request_id="r-a", query="1.5"))
    await asyncio.sleep(0.2)
    second = asyncio.ensure_future(runtime.invoke("chat", b"b", request_id="r-b", query="2.5"))
    await asyncio.gather(first, second)
    found = {line.text: line.request for line in await lines_of(logs, "chat", 6)}
    assert found["chat alone begins"] == found["chat alone ends"] == "r-alone"
    assert found["chat a begins"] == "r-a"  # it ran alone then
    assert found["chat b begins"] is None and found["chat a ends"] is None  # two in flight
    assert found["chat b ends"] == "r-b"  # a had ended
