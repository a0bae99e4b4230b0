"""``tierfaas calls ...`` and ``invoke --async``: what they ask the node and what they print
(the node is a fake ``request``: no socket)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from rich.console import Console
from typer.testing import CliRunner

from tierfaas import cli
from tierfaas.calls import render
from tierfaas.calls.render import Answer, ago, outcome, render_call, render_calls, when

NOW = 1796303100.0  # 2026-12-03 13:05:00 UTC
CALL = {
    "call_id": "n1~n2~00112233aabbccdd",
    "function": "resize",
    "state": "dead",
    "attempts": 3,
    "accepted_at": NOW - 125,
    "finished_at": NOW - 5,
    "node": "n1",
    "result": {"status": 504, "content_type": "application/json", "body": '{"error":"timeout"}'},
    "error": {"error": "timeout", "message": "resize ran past its timeout (10 s)"},
    "callback": {"url": "http://127.0.0.1:9000/done", "state": "delivered", "attempts": 2},
}
DONE = {
    **CALL,
    "call_id": "n1~n3~0011223344556677",
    "state": "succeeded",
    "attempts": 1,
    "result": {"status": 200, "content_type": "text/plain", "body": "ok"},
    "error": None,
    "callback": None,
}


def text(renderable: Any, width: int = 200) -> str:
    console = Console(width=width, record=True, color_system=None)
    console.print(renderable)
    return console.export_text()


def test_times_are_utc_and_ages_short() -> None:
    assert when(NOW) == "2026-12-03 13:05:00"
    assert when(None) == "-"
    assert [ago(NOW - s, NOW) for s in (5, 125, 7300, 2 * 86400 + 5)] == ["5s", "2m", "2h", "2d"]
    assert ago(NOW + 3, NOW) == "0s"  # a clock ahead of ours is not negative


def test_outcome_is_the_status_or_the_typed_error() -> None:
    assert outcome(DONE) == "200"
    assert outcome(CALL) == "504 timeout: resize ran past its timeout (10 s)"
    assert outcome({"state": "queued", "result": None, "error": None}) == "-"
    long = {**CALL, "error": {"error": "E", "message": "x" * 100}}
    assert outcome(long).endswith("x...") and len(outcome(long)) < 80


def test_the_list_shows_one_row_per_call() -> None:
    shown = text(render_calls([CALL, DONE], now=NOW, title="calls on n1"))
    assert "calls on n1" in shown
    dead_row = next(line for line in shown.splitlines() if "00112233aabbccdd" in line)
    for cell in ("resize", "dead", "3", "2m ago", "120.00s", "n1", "504 timeout", "delivered"):
        assert cell in dead_row
    done_row = next(line for line in shown.splitlines() if "0011223344556677" in line)
    assert "succeeded" in done_row and " 200 " in done_row


def test_a_narrow_terminal_keeps_the_id_state_and_outcome() -> None:
    shown = text(render_calls([CALL], now=NOW, title="t", width=80), width=80)
    assert all(len(line) <= 80 for line in shown.splitlines())
    assert (
        "".join(line.split("│")[0].strip() for line in shown.splitlines()[3:]) == (CALL["call_id"])
    )  # folded onto lines, whole
    assert "dead" in shown and "504 timeout" in shown
    assert "delivered" not in shown and "120.00s" not in shown  # calls show has them


def test_an_empty_list_says_so_and_names_silent_nodes() -> None:
    shown = text(render_calls([], now=NOW, title="dead letters", unanswered=["n4", "n5"]))
    assert "no calls" in shown
    assert "n4, n5" in shown


def test_show_prints_every_field_and_the_body() -> None:
    shown = text(render_call(CALL))
    for line in (
        "n1~n2~00112233aabbccdd",
        "2026-12-03 13:02:55 UTC",
        "2026-12-03 13:04:55 UTC",
        "timeout: resize ran past its timeout (10 s)",
        "http://127.0.0.1:9000/done: delivered (2 attempts)",
        '{"error":"timeout"}',
    ):
        assert line in shown


def test_show_cuts_a_long_body_and_names_a_binary_one() -> None:
    long = {**DONE, "result": {"status": 200, "content_type": "text/plain", "body": "y" * 5000}}
    shown = text(render_call(long), width=100)
    assert "5000 characters; --json shows them all" in shown
    assert shown.count("y") < 2100
    binary = {**DONE, "result": {"status": 200, "content_type": "x", "body_base64": "AAE="}}
    assert "binary body" in text(render_call(binary))


def test_markup_in_a_field_is_shown_as_is() -> None:
    odd = {**DONE, "function": "[bold]x[/]", "result": {"status": 200, "body": "[red]hi[/]"}}
    shown = text(render_call(odd))
    assert "[bold]x[/]" in shown and "[red]hi[/]" in shown


# -- the commands, against a fake node ------------------------------------------------------


class FakeNode:
    def __init__(self, *answers: Answer) -> None:
        self.answers = list(answers)
        self.asked: list[dict[str, Any]] = []

    def __call__(self, url: str, path: str, **kwargs: Any) -> Answer:
        self.asked.append({"url": url, "path": path, **kwargs})
        return self.answers.pop(0)


def answer(status: int, body: Any, **headers: str) -> Answer:
    return Answer(status, headers, json.dumps(body).encode())


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


def run(runner: CliRunner, monkeypatch: pytest.MonkeyPatch, node: FakeNode, *argv: str) -> Any:
    monkeypatch.setattr(render, "request", node)
    monkeypatch.delenv("TIERFAAS_ADMIN_TOKEN", raising=False)
    return runner.invoke(cli.app, list(argv), env={"COLUMNS": "200"})


def test_invoke_async_prints_the_id_and_sends_the_headers(
    runner: CliRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    node = FakeNode(answer(202, {"call_id": "a~b~0123456789abcdef", "state": "queued"}))
    result = run(
        runner,
        monkeypatch,
        node,
        "invoke",
        "resize",
        "--async",
        "-d",
        "hello",
        "--callback-url",
        "http://127.0.0.1:9000/done",
        "--idempotency-key",
        "k-1",
        "--url",
        "http://127.0.0.1:8181",
    )
    assert result.exit_code == 0, result.output
    assert result.stdout.strip().splitlines()[-1] == "a~b~0123456789abcdef"
    asked = node.asked[0]
    assert (asked["url"], asked["path"], asked["method"]) == (
        "http://127.0.0.1:8181",
        "/async-function/resize",
        "POST",
    )
    assert asked["body"] == b"hello"
    assert asked["headers"]["X-Callback-Url"] == "http://127.0.0.1:9000/done"
    assert asked["headers"]["Idempotency-Key"] == "k-1"


def test_invoke_async_says_when_the_key_was_seen_before(
    runner: CliRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    node = FakeNode(
        answer(
            202,
            {"call_id": "a~b~0123456789abcdef", "state": "succeeded"},
            **{"x-idempotent-replay": "true"},
        )
    )
    result = run(runner, monkeypatch, node, "invoke", "f", "--async", "--idempotency-key", "k")
    assert result.exit_code == 0
    assert "already accepted with this Idempotency-Key" in result.output


@pytest.mark.parametrize(
    ("status", "code"),
    [(400, "bad_callback"), (404, "not_found"), (413, "body_too_large"), (429, "queue_full")],
)
def test_invoke_async_refused_exits_1_with_the_typed_error(
    runner: CliRunner, monkeypatch: pytest.MonkeyPatch, status: int, code: str
) -> None:
    node = FakeNode(answer(status, {"error": code, "message": "why", "request_id": "r"}))
    result = run(runner, monkeypatch, node, "invoke", "f", "--async")
    assert result.exit_code == 1
    assert f"{status} {code}: why" in result.output


def test_callback_options_need_async(runner: CliRunner, monkeypatch: pytest.MonkeyPatch) -> None:
    result = run(runner, monkeypatch, FakeNode(), "invoke", "f", "--callback-url", "http://x/")
    assert result.exit_code == 2
    assert "go with --async" in result.output


def test_calls_list_passes_the_filters(runner: CliRunner, monkeypatch: pytest.MonkeyPatch) -> None:
    node = FakeNode(answer(200, {"node": "n1", "calls": [CALL]}))
    result = run(
        runner, monkeypatch, node, "calls", "list", "--state", "dead", "--function", "resize",
        "--limit", "5",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert node.asked[0]["path"] == "/v1/calls"
    assert node.asked[0]["query"] == {"state": "dead", "function": "resize", "limit": 5}
    assert "00112233aabbccdd" in result.output and "calls on n1 (dead)" in result.output


def test_calls_list_refuses_an_unknown_state(
    runner: CliRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    node = FakeNode()
    result = run(runner, monkeypatch, node, "calls", "list", "--state", "done")
    assert result.exit_code == 2 and node.asked == []
    assert "queued, running, succeeded, failed, dead" in result.output


def test_calls_list_json_is_the_nodes_answer(
    runner: CliRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    node = FakeNode(answer(200, {"node": "n1", "calls": [CALL]}))
    result = run(runner, monkeypatch, node, "calls", "list", "--json")
    assert json.loads(result.stdout) == {"node": "n1", "calls": [CALL]}


def test_calls_show(runner: CliRunner, monkeypatch: pytest.MonkeyPatch) -> None:
    node = FakeNode(answer(200, CALL))
    result = run(runner, monkeypatch, node, "calls", "show", CALL["call_id"])
    assert result.exit_code == 0
    assert node.asked[0]["path"] == "/v1/calls/n1~n2~00112233aabbccdd"
    assert "resize ran past its timeout" in result.output


def test_calls_show_of_an_unknown_id(runner: CliRunner, monkeypatch: pytest.MonkeyPatch) -> None:
    node = FakeNode(answer(404, {"error": "not_found", "message": "no call x", "request_id": "r"}))
    result = run(runner, monkeypatch, node, "calls", "show", "a~b~0000000000000000")
    assert result.exit_code == 1
    assert "404 not_found: no call x" in result.output and "expired" in result.output


def test_calls_retry_posts_and_a_conflict_exits_1(
    runner: CliRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    node = FakeNode(
        answer(202, {**CALL, "state": "queued", "attempts": 0}),
        answer(409, {"error": "conflict", "message": "it succeeded", "request_id": "r"}),
    )
    first = run(runner, monkeypatch, node, "calls", "retry", CALL["call_id"])
    assert first.exit_code == 0 and "is queued again" in first.output
    assert (node.asked[0]["path"], node.asked[0]["method"]) == (
        "/v1/calls/n1~n2~00112233aabbccdd/retry",
        "POST",
    )
    second = run(runner, monkeypatch, node, "calls", "retry", CALL["call_id"])
    assert second.exit_code == 1 and "409 conflict: it succeeded" in second.output


def test_calls_dead_names_the_nodes_that_did_not_answer(
    runner: CliRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    node = FakeNode(answer(200, {"calls": [CALL], "unanswered": ["n7"]}))
    result = run(runner, monkeypatch, node, "calls", "dead", "--function", "resize")
    assert result.exit_code == 0
    assert node.asked[0]["path"] == "/v1/dead-letters"
    assert node.asked[0]["query"] == {"function": "resize", "limit": 100}
    assert "dead letters" in result.output and "n7" in result.output


def test_the_admin_token_is_sent(
    runner: CliRunner, monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    token = tmp_path / "token"
    token.write_text("t" * 32)
    token.chmod(0o600)
    node = FakeNode(answer(200, {"node": "n1", "calls": []}))
    result = run(runner, monkeypatch, node, "calls", "list", "--admin-token-file", str(token))
    assert result.exit_code == 0, result.output
    assert node.asked[0]["token"] == "t" * 32


def test_calls_show_wait_polls_until_final_and_exits_by_the_state(
    runner: CliRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    slept: list[float] = []
    monkeypatch.setattr("time.sleep", slept.append)
    queued = {**CALL, "state": "queued", "finished_at": None, "result": None, "error": None}
    node = FakeNode(
        answer(200, queued), answer(200, {**queued, "state": "running"}), answer(200, DONE)
    )
    result = run(runner, monkeypatch, node, "calls", "show", CALL["call_id"], "--wait")
    assert result.exit_code == 0, result.output
    assert len(node.asked) == 3 and len(slept) == 2
    assert "succeeded" in result.output
    dead = FakeNode(answer(200, queued), answer(200, CALL))
    result = run(runner, monkeypatch, dead, "calls", "show", CALL["call_id"], "--wait")
    assert result.exit_code == 1 and "dead" in result.output


def test_calls_show_wait_gives_up_after_its_timeout(
    runner: CliRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    queued = {**CALL, "state": "queued", "finished_at": None, "result": None, "error": None}
    now = [100.0]
    monkeypatch.setattr("time.monotonic", lambda: now[0])
    monkeypatch.setattr("time.sleep", lambda s: now.__setitem__(0, now[0] + s))
    node = FakeNode(*[answer(200, queued)] * 50)
    argv = ("calls", "show", CALL["call_id"], "--wait", "--timeout", "5")
    result = run(runner, monkeypatch, node, *argv)
    assert result.exit_code == 1
    assert "still queued after 5 s" in result.output
    assert 3 <= len(node.asked) <= 10
