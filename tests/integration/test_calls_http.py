"""The asynchronous calls' HTTP routes in process (no socket), over a standalone call service
with a real store in a tmp dir and a fake function: what is refused before anything is kept,
the 202 and its replay, the reads, the retry and its conflict."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import MutableMapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tierfaas import errors
from tierfaas.calls.api import CallsApi
from tierfaas.calls.callbacks import AllowList, check_callback_url
from tierfaas.calls.logstore import CallLog
from tierfaas.calls.metrics import CallMetrics
from tierfaas.calls.service import CallService, CallSettings
from tierfaas.clock import LoopScheduler
from tierfaas.http.asgi import respond_error
from tierfaas.testing import fake_release

RELEASE = fake_release({"f": {}, "locked": {"api_keys": (b"x" * 32,)}})


@dataclass
class FakeReply:
    status: int
    body: bytes
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)


class Harness:
    def __init__(self, folder: Path) -> None:
        self.status = 200
        self.seen: list[dict[str, Any]] = []
        store = CallLog(folder / "calls.log")
        store.open()
        self.service = CallService(
            node="n1",
            store=store,
            functions=RELEASE.functions,
            run=self.run,
            peers=None,
            settings=CallSettings(retry_base_s=0.01, retry_cap_s=0.02, queue_max=3),
            scheduler=LoopScheduler(time.time),
            wall=time.time,
            metrics=CallMetrics(),
        )
        allow = AllowList.parse("127.0.0.0/8")
        self.api = CallsApi(
            self.service,
            api_keys={"locked": (b"x" * 32,)},
            max_body_bytes=100,
            check_callback=lambda url: check_callback_url(url, allow),
        )

    async def run(self, name: str, body: bytes, **kw: Any) -> FakeReply:
        self.seen.append({"body": body, **kw})
        return FakeReply(self.status, b'{"ok":1}', [(b"content-type", b"application/json")])

    async def request(
        self,
        method: str,
        path: str,
        body: bytes = b"",
        headers: dict[str, str] | None = None,
        query: bytes = b"",
    ) -> tuple[int, dict[str, str], Any]:
        raw_headers = [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
        scope = {"type": "http", "method": method, "path": path, "query_string": query,
                 "headers": raw_headers}  # fmt: skip
        sent: list[dict[str, Any]] = []

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": body, "more_body": False}

        async def send(message: MutableMapping[str, Any]) -> None:
            sent.append(dict(message))

        try:
            await self.api.serve(scope, receive, send, path, "r1", None)
        except errors.HttpError as exc:
            await respond_error(send, exc, "r1")
        got = {k.decode(): v.decode() for k, v in sent[0]["headers"]}
        return sent[0]["status"], got, json.loads(b"".join(m.get("body", b"") for m in sent[1:]))


@pytest.fixture
async def h(tmp_path: Path) -> object:
    harness = Harness(tmp_path)
    await harness.service.start(claim=False)
    yield harness
    await harness.service.stop()
    harness.service.store.close()


async def _settled(h: Harness, call_id: str) -> dict[str, Any]:
    for _ in range(500):
        status, _, call = await h.request("GET", f"/v1/calls/{call_id}")
        assert status == 200
        if call["state"] in ("succeeded", "failed", "dead"):
            return call  # type: ignore[no-any-return]
        await asyncio.sleep(0.01)
    raise AssertionError("the call did not finish")


async def test_an_accepted_call_runs_and_reports(h: Harness) -> None:
    status, headers, answer = await h.request(
        "POST", "/async-function/f/a/b", b"hello", {"X-Custom": "1", "Idempotency-Key": "k"},
        query=b"q=1",
    )  # fmt: skip
    assert status == 202 and answer["state"] == "queued"
    call_id = answer["call_id"]
    assert headers["x-call-id"] == call_id and call_id.startswith("n1~n1~")
    call = await _settled(h, call_id)
    assert call["state"] == "succeeded" and call["attempts"] == 1
    assert call["result"] == {"status": 200, "content_type": "application/json", "body": '{"ok":1}'}
    (seen,) = h.seen
    assert seen["body"] == b"hello" and seen["path"] == "/a/b" and seen["query"] == "q=1"
    assert seen["call"] == (call_id, 1) and seen["method"] == "POST"
    assert (b"x-custom", b"1") in seen["headers"]
    # The same key again: the first call, nothing new runs.
    status, headers, again = await h.request(
        "POST", "/async-function/f", b"other", {"Idempotency-Key": "k"}
    )
    assert status == 202 and again == {"call_id": call_id, "state": "succeeded"}
    assert headers["x-idempotent-replay"] == "true"
    status, _, listed = await h.request("GET", "/v1/calls", query=b"state=succeeded&limit=5")
    assert status == 200 and [c["call_id"] for c in listed["calls"]] == [call_id]
    assert len(h.seen) == 1


@pytest.mark.parametrize(
    ("method", "path", "headers", "body", "status", "code"),
    [
        ("GET", "/async-function/f", {}, b"", 405, "method_not_allowed"),
        ("POST", "/async-function/nope", {}, b"", 404, "not_found"),
        ("POST", "/async-function/bad name", {}, b"", 400, "bad_name"),
        ("POST", "/async-function/locked", {}, b"", 401, "unauthorized"),
        ("POST", "/async-function/f", {}, b"x" * 101, 413, "body_too_large"),
        ("POST", "/async-function/f", {"Idempotency-Key": "a b"}, b"", 400, "bad_request"),
        ("POST", "/async-function/f", {"Idempotency-Key": "k" * 129}, b"", 400, "bad_request"),
        ("POST", "/async-function/f", {"X-Callback-Url": "ftp://x/"}, b"", 400, "bad_callback"),
        ("POST", "/async-function/f", {"X-Callback-Url": "http://10.0.0.1/"}, b"", 400,
         "bad_callback"),
        ("GET", "/v1/calls/nope", {}, b"", 400, "bad_request"),
        ("GET", "/v1/calls/n1~n1~0123456789abcdef", {}, b"", 404, "not_found"),
        ("POST", "/v1/calls/n1~n1~0123456789abcdef/retry", {}, b"", 404, "not_found"),
        ("GET", "/v1/calls/n1~n1~0123456789abcdef/retry", {}, b"", 405, "method_not_allowed"),
    ],
)  # fmt: skip
async def test_refusals_keep_nothing(
    h: Harness,
    method: str,
    path: str,
    headers: dict[str, str],
    body: bytes,
    status: int,
    code: str,
) -> None:
    got, answer_headers, answer = await h.request(method, path, body, headers)
    assert (got, answer["error"]) == (status, code)
    if status == 405:
        assert "allow" in answer_headers
    assert h.service.store.listed() == []


async def test_a_full_queue_answers_429_with_retry_after(h: Harness) -> None:
    h.service.dispatcher.paused = True  # nothing runs: the queue fills
    for _ in range(3):
        assert (await h.request("POST", "/async-function/f"))[0] == 202
    status, headers, answer = await h.request("POST", "/async-function/f")
    assert (status, answer["error"]) == (429, "queue_full")
    assert headers["retry-after"] == "1"


async def test_dead_calls_are_letters_and_retried_once_asked(h: Harness) -> None:
    h.status = 500
    _, _, answer = await h.request("POST", "/async-function/f", b"x")
    call = await _settled(h, answer["call_id"])
    assert call["state"] == "dead" and call["attempts"] == 3  # max_retries 2
    _, _, letters = await h.request("GET", "/v1/dead-letters")
    assert [c["call_id"] for c in letters["calls"]] == [answer["call_id"]]
    assert letters["unanswered"] == []
    h.status = 200
    status, _, retried = await h.request("POST", f"/v1/calls/{answer['call_id']}/retry")
    assert status == 202 and retried["state"] == "queued" and retried["attempts"] == 0
    assert (await _settled(h, answer["call_id"]))["state"] == "succeeded"
    status, _, refused = await h.request("POST", f"/v1/calls/{answer['call_id']}/retry")
    assert (status, refused["error"]) == (409, "conflict")


async def test_a_4xx_answer_fails_the_call_without_retries(h: Harness) -> None:
    h.status = 422
    _, _, answer = await h.request("POST", "/async-function/f")
    call = await _settled(h, answer["call_id"])
    assert (call["state"], call["attempts"]) == ("failed", 1)


async def test_a_store_that_cannot_write_answers_503(h: Harness) -> None:
    h.service.store.close()  # as if its disk were gone
    status, headers, answer = await h.request("POST", "/async-function/f")
    assert (status, answer["error"]) == (503, "unavailable") and "retry-after" in headers
    assert h.service.unfinished == 0
    h.service.store.open()  # the fixture closes it again
