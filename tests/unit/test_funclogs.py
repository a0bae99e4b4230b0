"""The pure parts of the function logs: ``since``, the ring, rotation, files, the merge, the
query of GET /v1/logs and the follower's bound. Files in tmp_path; no sockets, no sleep."""

from __future__ import annotations

import asyncio
import json
from collections.abc import MutableMapping
from pathlib import Path
from typing import Any

import pytest

from tierfaas import errors
from tierfaas.funclogs.api import MAX_LIMIT, parse_query, serve_logs
from tierfaas.funclogs.line import LogLine, iso
from tierfaas.funclogs.merge import merge, render
from tierfaas.funclogs.since import parse_since
from tierfaas.funclogs.store import (
    MAX_FOLLOWERS,
    Follower,
    LogSettings,
    LogStore,
    RotatingFile,
    TooManyFollowers,
    read_files,
)
from tierfaas.runtime.output import OutputLine

NOW = 1_764_770_400.0  # 2025-12-03T14:00:00Z


def line(at: float, text: str = "x", *, node: str = "a", request: str | None = None) -> LogLine:
    return LogLine(at, "f", node, 1, "stdout", request, text)


class Wall:
    def __init__(self, at: float = NOW) -> None:
        self.at = at

    def __call__(self) -> float:
        return self.at


# -- since ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "back"),
    [("30s", 30), ("5m", 300), ("2h", 7200), ("1d", 86400), ("1h30m", 5400), ("250ms", 0.25),
     ("1.5m", 90), ("0s", 0)],
)  # fmt: skip
def test_a_duration_counts_back_from_now(text: str, back: float) -> None:
    assert parse_since(text, NOW) == pytest.approx(NOW - back)


@pytest.mark.parametrize(
    "text",
    ["2025-12-03T14:00:00Z", "2025-12-03t14:00:00z", "2025-12-03T15:00:00+01:00",
     "2025-12-03 14:00:00Z", "2025-12-03T14:00:00.000000000Z"],
)  # fmt: skip
def test_an_rfc_3339_time_is_taken_with_its_offset(text: str) -> None:
    assert parse_since(text, 0.0) == NOW


def test_a_fraction_of_a_second_is_kept_to_the_microsecond() -> None:
    assert parse_since("2025-12-03T14:00:00.25Z", 0.0) == NOW + 0.25
    assert parse_since("2025-12-03T14:00:00.1234567Z", 0.0) == pytest.approx(NOW + 0.123456)


@pytest.mark.parametrize(
    "text",
    ["", "5", "m", "5 m", "-5m", "5y", "yesterday", "2025-12-03", "2025-12-03T14:00:00",
     "2025-13-03T14:00:00Z", "2025-12-03T14:00:00+1", "5m" * 40, "1e3s"],
)  # fmt: skip
def test_anything_else_is_refused_with_what_it_takes(text: str) -> None:
    with pytest.raises(ValueError, match="since"):
        parse_since(text, NOW)


def test_iso_text_is_utc_to_the_microsecond() -> None:
    assert iso(NOW + 0.5) == "2025-12-03T14:00:00.500000Z"
    assert parse_since(iso(NOW + 0.5), 0.0) == NOW + 0.5


# -- the store -----------------------------------------------------------------------------------


def store(tmp_path: Path | None, wall: Wall, **settings: int) -> LogStore:
    return LogStore("a", ["f", "g"], LogSettings(**settings), tmp_path, wall)


def test_a_printed_line_is_stamped_with_the_node_its_time_and_its_request(tmp_path: Path) -> None:
    wall = Wall()
    logs = store(tmp_path, wall)
    logs.sink(OutputLine("f", 3, "req-1", "stderr", "boom"))
    (kept,) = logs.recent("f", None, None, 10)
    assert kept == LogLine(NOW, "f", "a", 3, "stderr", "req-1", "boom")
    assert kept.to_json()["time_iso"] == "2025-12-03T14:00:00.000000Z"
    assert logs.recent("g", None, None, 10) == []
    logs.sink(OutputLine("nope", 1, None, "stdout", "not of this release"))  # ignored
    assert "nope" not in logs


def test_the_ring_keeps_the_last_lines_and_reads_filter_by_since_request_and_limit() -> None:
    wall = Wall()
    logs = store(None, wall, lines=5, files=0)
    for n in range(8):
        wall.at = NOW + n
        logs.sink(OutputLine("f", 1, f"r{n % 2}", "stdout", str(n)))

    def texts(found: list[LogLine]) -> list[str]:
        return [x.text for x in found]

    assert texts(logs.recent("f", None, None, 100)) == ["3", "4", "5", "6", "7"]
    assert texts(logs.recent("f", NOW + 5, None, 100)) == ["5", "6", "7"]
    assert texts(logs.recent("f", None, "r1", 100)) == ["3", "5", "7"]
    assert texts(logs.recent("f", None, None, 2)) == ["6", "7"]
    assert logs.in_memory("f", None)  # no file: the ring is all there is


def test_a_file_rotates_at_its_size_and_keeps_that_many_files(tmp_path: Path) -> None:
    file = RotatingFile(tmp_path / "f.log", max_bytes=10, keep=3)
    for n in range(7):
        file.write(b"%d23456\n" % n)  # 7 bytes: one a file
    file.close()
    assert [p.name for p in file.paths()] == ["f.log.2", "f.log.1", "f.log"]
    assert [p.read_bytes() for p in file.paths()] == [b"423456\n", b"523456\n", b"623456\n"]
    one = RotatingFile(tmp_path / "g.log", max_bytes=10, keep=1)
    for n in range(3):
        one.write(b"%d23456\n" % n)
    assert [p.read_bytes() for p in one.paths()] == [b"223456\n"]


def test_a_read_older_than_the_ring_comes_from_the_files(tmp_path: Path) -> None:
    wall = Wall()
    logs = store(tmp_path, wall, lines=3, file_bytes=64 * 1024)
    for n in range(10):
        wall.at = NOW + n
        logs.sink(OutputLine("f", 1, None, "stdout", str(n)))
    assert not logs.in_memory("f", NOW)  # the ring let lines go
    assert logs.in_memory("f", NOW + 8)
    found = asyncio.run(logs.read("f", NOW + 2, None, 100))
    assert [x.text for x in found] == [str(n) for n in range(2, 10)]
    assert [x.text for x in asyncio.run(logs.read("f", None, None, 4))] == ["6", "7", "8", "9"]
    logs.close()
    # A node started again on the same folder finds its earlier lines.
    again = store(tmp_path, Wall(NOW + 100))
    assert not again.in_memory("f", None)
    assert len(asyncio.run(again.read("f", None, None, 100))) == 10


def test_torn_or_foreign_lines_in_a_file_are_skipped(tmp_path: Path) -> None:
    path = tmp_path / "f.log"
    good = line(NOW, "ok").encode()
    path.write_bytes(b"not json\n" + good + b'{"time": 1}\n' + good[:20])
    assert [x.text for x in read_files([path, tmp_path / "missing"], None, None, 10)] == ["ok"]


def test_a_file_that_cannot_be_written_costs_only_its_copy(tmp_path: Path) -> None:
    (tmp_path / "logs").write_text("a file where the folder should be")
    wall = Wall()
    logs = store(tmp_path / "logs", wall)
    logs.sink(OutputLine("f", 1, None, "stdout", "still kept"))
    assert [x.text for x in logs.recent("f", None, None, 10)] == ["still kept"]
    assert logs.logs["f"].write_failures == 1


def test_a_follower_gets_new_lines_of_its_request_and_misses_past_its_bound() -> None:
    logs = store(None, Wall(), files=0)

    async def scenario() -> None:
        follower = logs.follow("f", "r1")
        logs.sink(OutputLine("f", 1, "r1", "stdout", "mine"))
        logs.sink(OutputLine("f", 1, "r2", "stdout", "not mine"))
        assert follower.ready.is_set()
        lines, missed = follower.take()
        assert ([x.text for x in lines], missed) == (["mine"], 0)
        assert not follower.ready.is_set()
        logs.unfollow("f", follower)
        assert not logs.logs["f"].followers

    asyncio.run(scenario())
    small = Follower(None, capacity=2)
    for n in range(5):
        small.offer(line(NOW + n, str(n)))
    lines, missed = small.take()
    assert ([x.text for x in lines], missed) == (["0", "1"], 3)


# -- merge and render ----------------------------------------------------------------------------


def test_the_merge_orders_every_nodes_lines_by_time() -> None:
    a = [line(1, "a1", node="a"), line(4, "a4", node="a")]
    b = [line(2, "b2", node="b"), line(3, "b3", node="b"), line(5, "b5", node="b")]
    c: list[LogLine] = []
    assert [x.text for x in merge([a, b, c])] == ["a1", "b2", "b3", "a4", "b5"]
    assert [x.text for x in merge([a, b], limit=2)] == ["a4", "b5"]


def test_a_rendered_line_shows_its_node_and_escapes_control_characters() -> None:
    shown = render(LogLine(NOW, "f", "n2", 7, "stderr", "req", "red \x1b[31m\rfake"))
    assert shown == "2025-12-03T14:00:00.000000Z n2 #7 req stderr: red \\x1b[31m\\x0dfake"
    assert " - stdout: " in render(line(NOW))


def test_a_line_survives_its_json_form() -> None:
    original = LogLine(NOW, "f", "n", 2, "stderr", None, "é \x00")
    assert LogLine.from_json(json.loads(original.encode())) == original
    with pytest.raises(ValueError):
        LogLine.from_json({"time": 1, "stream": "stdin"})


# -- the query of GET /v1/logs -------------------------------------------------------------------


def query(text: str) -> object:
    return parse_query(text.encode(), NOW, lambda name: name in ("f", "g"))


def test_the_query_takes_each_parameter() -> None:
    parsed = parse_query(
        b"function=f&since=5m&request=r-1&follow=true&limit=7", NOW, {"f"}.__contains__
    )
    assert (parsed.function, parsed.since, parsed.request, parsed.follow, parsed.limit) == (
        "f", NOW - 300, "r-1", True, 7,
    )  # fmt: skip
    plain = parse_query(b"function=g&other=1", NOW, {"g"}.__contains__)
    assert (plain.since, plain.request, plain.follow, plain.limit) == (None, None, False, 1000)


@pytest.mark.parametrize(
    ("text", "error"),
    [("", errors.BadQuery), ("since=5m", errors.BadQuery),
     ("function=nope", errors.UnknownFunction), ("function=f&since=yesterday", errors.BadQuery),
     ("function=f&since=5m&since=6m", errors.BadQuery),
     ("function=f&follow=maybe", errors.BadQuery), ("function=f&limit=0", errors.BadQuery),
     (f"function=f&limit={MAX_LIMIT + 1}", errors.BadQuery),
     ("function=f&request=a%20b", errors.BadQuery)],
)  # fmt: skip
def test_a_malformed_query_is_a_typed_error(text: str, error: type[errors.HttpError]) -> None:
    with pytest.raises(error) as raised:
        query(text)
    assert raised.value.status == (404 if error is errors.UnknownFunction else 400)
    assert raised.value.code == (
        "unknown_function" if error is errors.UnknownFunction else "bad_query"
    )


# -- the answer of GET /v1/logs (in-memory ASGI) -------------------------------------------------


class Client:
    """An ASGI client in memory: what the app sends, and a disconnect the test triggers."""

    def __init__(self) -> None:
        self.sent: list[MutableMapping[str, Any]] = []
        self.leave = asyncio.Event()

    async def receive(self) -> MutableMapping[str, Any]:
        await self.leave.wait()
        return {"type": "http.disconnect"}

    async def send(self, message: MutableMapping[str, Any]) -> None:
        self.sent.append(message)

    def lines(self) -> list[dict[str, Any]]:
        body = b"".join(m.get("body", b"") for m in self.sent[1:])
        return [json.loads(raw) for raw in body.splitlines()]


async def settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


def test_the_answer_is_ndjson_of_the_matching_lines() -> None:
    wall = Wall()
    logs = store(None, wall, files=0)
    logs.sink(OutputLine("f", 1, "r1", "stdout", "one"))
    logs.sink(OutputLine("f", 1, "r2", "stdout", "two"))
    client = Client()
    asked = parse_query(b"function=f&request=r2", NOW, logs.__contains__)
    asyncio.run(serve_logs(logs, asked, client.receive, client.send, [], lambda: False))
    start = client.sent[0]
    assert start["status"] == 200
    assert (b"content-type", b"application/x-ndjson") in start["headers"]
    assert [line["text"] for line in client.lines()] == ["two"]


def test_follow_sends_the_lines_so_far_then_new_ones_until_the_client_leaves() -> None:
    logs = store(None, Wall(), files=0)
    logs.sink(OutputLine("f", 1, None, "stdout", "before"))

    async def scenario() -> Client:
        client = Client()
        asked = parse_query(b"function=f&follow=true", NOW, logs.__contains__)
        task = asyncio.ensure_future(
            serve_logs(logs, asked, client.receive, client.send, [], lambda: False)
        )
        await settle()
        assert [line["text"] for line in client.lines()] == ["before"]
        logs.sink(OutputLine("f", 1, None, "stderr", "after"))
        await settle()
        assert [line["text"] for line in client.lines()] == ["before", "after"]
        client.leave.set()
        await asyncio.wait_for(task, 5)
        assert not logs.logs["f"].followers  # the follower is gone with the client
        return client

    client = asyncio.run(scenario())
    assert client.sent[-1] == {"type": "http.response.body", "body": b"", "more_body": False}


def test_follow_ends_when_the_node_drains() -> None:
    logs = store(None, Wall(), files=0)
    draining = False

    async def scenario() -> None:
        nonlocal draining
        client = Client()
        asked = parse_query(b"function=f&follow=1", NOW, logs.__contains__)
        task = asyncio.ensure_future(
            serve_logs(logs, asked, client.receive, client.send, [], lambda: draining)
        )
        await settle()
        draining = True
        logs.sink(OutputLine("f", 1, None, "stdout", "last"))  # wakes it to see the drain
        await asyncio.wait_for(task, 5)

    asyncio.run(scenario())


def test_a_read_the_ring_can_answer_reads_no_file(tmp_path: Path) -> None:
    wall = Wall()
    logs = store(tmp_path, wall, lines=3, file_bytes=64 * 1024)
    for n in range(10):
        wall.at = NOW + n
        logs.sink(OutputLine("f", 1, f"r{n}", "stdout", str(n)))
    for path in logs.logs["f"].file.paths():  # type: ignore[union-attr]
        path.write_bytes(b"")  # a read of the files would find nothing now
    assert [x.text for x in asyncio.run(logs.read("f", None, None, 2))] == ["8", "9"]
    assert asyncio.run(logs.read("f", None, "r1", 5)) == []  # not in the ring: the files


def test_a_request_is_found_in_the_files_by_its_id(tmp_path: Path) -> None:
    wall = Wall()
    logs = store(tmp_path, wall, lines=3, file_bytes=64 * 1024)
    for n in range(10):
        wall.at = NOW + n
        logs.sink(OutputLine("f", 1, f"r{n % 5}", "stdout", str(n)))
    assert [x.text for x in asyncio.run(logs.read("f", None, "r1", 5))] == ["1", "6"]


def test_a_function_has_a_bounded_number_of_followers() -> None:
    logs = store(None, Wall(), files=0)

    async def scenario() -> None:
        followers = [logs.follow("f", None) for _ in range(MAX_FOLLOWERS)]
        with pytest.raises(TooManyFollowers):
            logs.follow("f", None)
        client = Client()
        asked = parse_query(b"function=f&follow=true", NOW, logs.__contains__)
        with pytest.raises(errors.Overloaded):
            await serve_logs(logs, asked, client.receive, client.send, [], lambda: False)
        logs.unfollow("f", followers[0])
        assert logs.follow("g", None) and logs.follow("f", None)

    asyncio.run(scenario())


def test_line_times_never_go_back_when_the_wall_clock_does() -> None:
    wall = Wall()
    logs = store(None, wall, files=0)
    for at in (NOW, NOW - 5, NOW + 1):
        wall.at = at
        logs.sink(OutputLine("f", 1, None, "stdout", str(at)))
    assert [x.time for x in logs.recent("f", None, None, 10)] == [NOW, NOW, NOW + 1]


def test_each_sink_gets_every_line_even_when_another_fails() -> None:
    from tierfaas.runtime.output import tee

    got: list[str] = []

    def broken(line: OutputLine) -> None:
        raise RuntimeError("a sink that fails")

    sink = tee([broken, lambda line: got.append(line.text)])
    sink(OutputLine("f", 1, None, "stdout", "one"))
    assert got == ["one"]

    def alone(line: OutputLine) -> None:
        got.append(line.text)

    assert tee([alone]) is alone
