"""The header lines of the stdio protocol (docs/exec-protocol.md), as the node writes and reads
them: ``call_line`` builds a CALL line, ``parse_result_line`` believes a RESULT line only when
every field is what the protocol says."""

from __future__ import annotations

import pytest

from tierfaas.runtime.exec_instance import (
    DEFAULT_CONTENT_TYPE,
    MAX_CONTENT_TYPE_CHARS,
    _Broken,
    call_line,
    parse_result_line,
)

# -- CALL ---------------------------------------------------------------------------------


def test_a_call_line_has_id_length_request_id_and_timeout() -> None:
    assert call_line(7, 12, "req-1.a_B", 2.5) == b"CALL 7 12 req-1.a_B 2500\n"


def test_a_call_line_with_an_empty_body_and_large_id() -> None:
    assert call_line(2**63 - 1, 0, "r", 30.0) == b"CALL 9223372036854775807 0 r 30000\n"


@pytest.mark.parametrize(
    "request_id",
    [None, "", "has space", "new\nline", "x" * 65, "é", "semi;colon", "slash/", "a\x00b"],
)
def test_a_request_id_that_is_not_safe_is_sent_as_a_dash(request_id: str | None) -> None:
    assert call_line(1, 0, request_id, 1.0) == b"CALL 1 0 - 1000\n"


def test_the_longest_safe_request_id_is_kept() -> None:
    rid = "A" * 64
    assert call_line(1, 0, rid, 1.0) == b"CALL 1 0 " + rid.encode() + b" 1000\n"


@pytest.mark.parametrize(
    ("timeout_s", "ms"),
    [(0.0, 1), (0.0000001, 1), (0.0005, 1), (0.001, 1), (0.0011, 2), (1.2341, 1235), (3600.0,
     3600000)],
)  # fmt: skip
def test_the_timeout_is_whole_ms_rounded_up_and_at_least_one(timeout_s: float, ms: int) -> None:
    assert call_line(1, 0, "r", timeout_s) == b"CALL 1 0 r %d\n" % ms


def test_a_call_line_fits_the_line_limit_at_its_largest() -> None:
    line = call_line(2**63 - 1, 2**62, "x" * 64, 3600.0)
    assert len(line) <= 256 and line.endswith(b"\n") and line.count(b"\n") == 1


# -- RESULT -------------------------------------------------------------------------------


def test_a_result_line_without_content_type_is_octet_stream() -> None:
    assert parse_result_line(b"RESULT 1 200 5") == (1, 200, 5, DEFAULT_CONTENT_TYPE)
    assert DEFAULT_CONTENT_TYPE == "application/octet-stream"


def test_a_result_line_with_a_content_type() -> None:
    assert parse_result_line(b"RESULT 42 404 0 application/json") == (
        42, 404, 0, "application/json",
    )  # fmt: skip


def test_a_content_type_is_the_rest_of_the_line_spaces_included() -> None:
    parsed = parse_result_line(b"RESULT 3 201 10 text/plain; charset=utf-8")
    assert parsed == (3, 201, 10, "text/plain; charset=utf-8")
    parsed = parse_result_line(b"RESULT 3 201 10 multipart/form-data; boundary=a b  c")
    assert parsed[3] == "multipart/form-data; boundary=a b  c"


def test_the_edges_of_each_field_are_accepted() -> None:
    assert parse_result_line(b"RESULT 1 200 0") == (1, 200, 0, DEFAULT_CONTENT_TYPE)
    assert parse_result_line(b"RESULT 9223372036854775807 599 4611686018427387904")[:3] == (
        2**63 - 1, 599, 2**62,
    )  # fmt: skip
    longest = b"t/" + b"x" * (MAX_CONTENT_TYPE_CHARS - 2)
    assert parse_result_line(b"RESULT 1 200 0 " + longest)[3] == longest.decode()


@pytest.mark.parametrize(
    "line",
    [
        b"",
        b"RESULT",
        b"RESULT 1",
        b"RESULT 1 200",
        b"RESULT 1 200 ",  # the length empty
        b"result 1 200 5",
        b"READY 1 200 5",
        b"RESULTS 1 200 5",
        b"CALL 1 200 5",
        b" RESULT 1 200 5",  # a leading space
        b"RESULT  1 200 5",  # two spaces: an empty id
        b"RESULT 1  200 5",
        b"RESULT\t1 200 5",
        b"RESULT 0 200 5",  # ids start at 1
        b"RESULT 9223372036854775808 200 5",  # over 2^63-1
        b"RESULT 99999999999999999999 200 5",  # 20 digits
        b"RESULT -1 200 5",
        b"RESULT +1 200 5",
        b"RESULT 0x1 200 5",
        b"RESULT 1.0 200 5",
        b"RESULT 1 99 5",
        b"RESULT 1 600 5",
        b"RESULT 1 0200x 5",
        b"RESULT 1 2OO 5",
        b"RESULT 1 200 -5",
        b"RESULT 1 200 5.0",
        b"RESULT 1 200 1e3",
        b"RESULT 1 200 4611686018427387905",  # over 2^62
        b"RESULT 1 200 " + b"9" * 40,
        b"RESULT 1 200 \xd9\xa3",  # an Arabic-Indic digit: isdigit() in str, not in bytes
        b"RESULT 1 200 5 ",  # an empty content type
        b"RESULT 1 200 5  text/plain",  # a content type with a leading space
        b"RESULT 1 200 5 text/pl\xc3\xa9in",  # not ASCII
        b"RESULT 1 200 5 text/plain\x00",
        b"RESULT 1 200 5 text/plain\x7f",
        b"RESULT 1 200 5 text/plain\r",
        b"RESULT 1 200 5 text/plain\tx",
        b"RESULT 1 200 5 t/" + b"x" * (MAX_CONTENT_TYPE_CHARS - 1),  # one over
    ],
)
def test_a_malformed_result_line_is_refused(line: bytes) -> None:
    with pytest.raises(_Broken):
        parse_result_line(line)


def test_a_refusal_says_what_was_wrong_and_quotes_little() -> None:
    with pytest.raises(_Broken, match="expected READY or RESULT"):
        parse_result_line(b"HELLO " + b"x" * 500)
    with pytest.raises(_Broken, match=r"outside 200\.\.599"):
        parse_result_line(b"RESULT 1 600 0")
    with pytest.raises(_Broken, match=r"outside 200\.\.599"):  # an interim 1xx is no answer
        parse_result_line(b"RESULT 1 199 0")
    with pytest.raises(_Broken, match="is not a decimal number"):
        parse_result_line(b"RESULT 1 200 -5")
    with pytest.raises(_Broken, match="not printable ASCII"):
        parse_result_line(b"RESULT 1 200 5 \xff")
    with pytest.raises(_Broken) as info:
        parse_result_line(b"RESULT 1 200 " + b"7" * 300)
    assert len(str(info.value)) < 120
