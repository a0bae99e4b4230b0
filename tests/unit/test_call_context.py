"""The handler's context carries an async call's id and attempt (from the headers its node
set), and nothing of the kind for a synchronous call."""

from __future__ import annotations

from tierfaas.runtime.process.child import _context


def test_an_async_calls_context_has_its_id_and_attempt() -> None:
    headers = {"x-call-id": "a~b~0123456789abcdef", "x-call-attempt": "2"}
    context = _context("f", {"request_id": "r", "headers": headers})
    assert (context.call_id, context.attempt) == ("a~b~0123456789abcdef", 2)
    assert context.headers == headers and context.function == "f"


def test_a_sync_calls_context_has_none() -> None:
    for ctx in ({"request_id": "r"}, {"request_id": "r", "headers": {"x-other": "1"}}):
        context = _context("f", ctx)
        assert (context.call_id, context.attempt) == (None, 0)


def test_a_malformed_attempt_reads_as_zero() -> None:
    headers = {"x-call-id": "a~b~0123456789abcdef", "x-call-attempt": "two"}
    assert _context("f", {"request_id": "r", "headers": headers}).attempt == 0
