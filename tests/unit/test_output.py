"""``OutputStream`` and ``OutputBudget``: an instance's bytes turned into log lines of bounded
size and rate, on a fake clock (no fds, no loop)."""

from __future__ import annotations

import logging

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tierfaas.runtime.output import (
    OutputBudget,
    OutputLimits,
    OutputLine,
    OutputStream,
    log_sink,
)
from tierfaas.testing.clock import FakeClock

# Limits too wide to drop anything: the tests of splitting and cutting.
UNLIMITED = OutputLimits(bytes_per_s=1 << 40, burst_bytes=1 << 40)
# A small rate in round numbers: a 36-character line costs 100 bytes (with RECORD_BYTES), and
# its 37 bytes with the newline are what a drop counts.
SMALL = OutputLimits(bytes_per_s=1000, burst_bytes=2000, line_bytes=100, buffer_bytes=1000)
LINE = b"x" * 36 + b"\n"


def stream_of(
    limits: OutputLimits = UNLIMITED,
    clock: FakeClock | None = None,
    name: str = "stdout",
) -> OutputStream:
    budget = OutputBudget(limits, clock if clock is not None else FakeClock())
    return OutputStream("fn", 7, "stdout" if name == "stdout" else "stderr", budget)


def texts(lines: list[OutputLine]) -> list[str]:
    return [line.text for line in lines]


def summaries(lines: list[OutputLine]) -> list[str]:
    return [line.text for line in lines if line.text.startswith("…[dropped")]


# -- splitting ----------------------------------------------------------------------------------


def test_lines_split_across_reads_come_out_whole() -> None:
    stream = stream_of()
    assert stream.feed(b"hel") == []
    assert texts(stream.feed(b"lo\nwor")) == ["hello"]
    assert texts(stream.feed(b"ld\n\nlast\n")) == ["world", "", "last"]
    assert stream.pending_bytes == 0


def test_a_line_carries_function_instance_stream_and_the_request_it_ended_in() -> None:
    stream = stream_of()
    stream.feed(b"during ")
    stream.request = "r-1"
    [line] = stream.feed(b"r-1\n")
    assert line == OutputLine("fn", 7, "r-1", "stdout", "during r-1")
    stream.request = None
    assert stream.feed(b"idle\n")[0].request is None


def test_crlf_ends_a_line_even_split_between_reads_and_a_lone_cr_stays() -> None:
    stream = stream_of()
    assert texts(stream.feed(b"dos\r\nsplit\r")) == ["dos"]
    assert texts(stream.feed(b"\nprogress 1\rprogress 2\n")) == ["split", "progress 1\rprogress 2"]


def test_invalid_utf8_is_replaced_not_fatal() -> None:
    stream = stream_of()
    assert texts(stream.feed(b"ok \xff\xfe bad\n\xe2\x82\n")) == ["ok \ufffd\ufffd bad", "\ufffd"]


@given(st.lists(st.binary(max_size=50), max_size=20), st.integers(min_value=1, max_value=7))
def test_any_split_of_the_bytes_gives_the_same_lines(lines: list[bytes], cut: int) -> None:
    data = b"".join(line.replace(b"\n", b"") + b"\n" for line in lines)
    whole = texts(stream_of().feed(data))
    stream = stream_of()
    pieces: list[OutputLine] = []
    for start in range(0, len(data), cut):
        pieces += stream.feed(data[start : start + cut])
    assert texts(pieces) == whole
    assert len(whole) == len(lines)


# -- size ---------------------------------------------------------------------------------------


def test_a_long_line_keeps_its_head_and_says_how_much_was_cut() -> None:
    stream = stream_of(OutputLimits(line_bytes=4096, burst_bytes=1 << 30))
    [line] = stream.feed(b"a" * 5000 + b"\n")
    assert line.text == "a" * 4096 + "…[truncated 904 bytes]"
    assert texts(stream.feed(b"b" * 4096 + b"\n")) == ["b" * 4096]  # exactly the limit: whole


def test_a_cut_never_splits_a_character() -> None:
    stream = stream_of(OutputLimits(line_bytes=5, buffer_bytes=100, burst_bytes=1 << 30))
    euro = "€".encode()  # three bytes; the cut at 5 falls inside the second one
    assert texts(stream.feed(b"aa" + euro * 3 + b"\n")) == ["aa€…[truncated 6 bytes]"]


@pytest.mark.parametrize("read_bytes", [64 * 1024, 10 * 1024 * 1024])
def test_a_10mb_line_without_newline_is_cut_in_records_and_never_held(read_bytes: int) -> None:
    limits = OutputLimits(burst_bytes=1 << 40, bytes_per_s=1 << 40)
    stream = stream_of(limits)
    size = 10 * 1024 * 1024
    blob = b"y" * size
    out: list[OutputLine] = []
    for start in range(0, size, read_bytes):
        out += stream.feed(blob[start : start + read_bytes])
        assert stream.held_bytes <= limits.line_bytes
        assert stream.pending_bytes < limits.buffer_bytes
    cut = limits.buffer_bytes - limits.line_bytes
    assert len(out) == size // limits.buffer_bytes
    assert set(texts(out)) == {"y" * limits.line_bytes + f"…[truncated {cut} bytes]"}
    # The newline that comes right after a record boundary ends nothing more.
    assert stream.feed(b"\nnext\n")[-1].text == "next"
    assert len(stream.feed(b"")) == 0


def test_the_unfinished_line_comes_out_when_the_stream_ends() -> None:
    stream = stream_of()
    stream.feed(b"complete\nno newline at the end")
    assert texts(stream.finish()) == ["no newline at the end"]
    assert stream.finish() == []


# -- rate ---------------------------------------------------------------------------------------


def test_past_the_burst_lines_are_dropped_and_summed_up_once_the_hold_is_over() -> None:
    clock = FakeClock()
    stream = stream_of(SMALL, clock)
    out = stream.feed(LINE * 50)
    assert len(out) == 20  # the burst: 2000 bytes
    assert (stream.dropped_lines, stream.dropped_bytes) == (30, 30 * 37)
    clock.advance(0.5)
    assert stream.feed(LINE * 10) == []  # still dropping: no summary per line
    assert stream.summary_due_at() == pytest.approx(clock() + 0.5)
    assert stream.poll() == []
    clock.advance(0.5)
    [summary] = stream.poll()
    assert summary.text == "…[dropped 40 lines, 1480 bytes: over the output rate of 1000 B/s]"
    assert summary.stream == "stdout"
    assert stream.poll() == []
    assert stream.summary_due_at() is None
    assert texts(stream.feed(b"back\n")) == ["back"]


def test_the_summary_comes_before_the_first_line_let_through_again() -> None:
    clock = FakeClock()
    stream = stream_of(SMALL, clock)
    stream.feed(LINE * 25)
    clock.advance(1.0)
    out = texts(stream.feed(b"again\n"))
    assert out == ["…[dropped 5 lines, 185 bytes: over the output rate of 1000 B/s]", "again"]


def test_a_stream_waits_for_room_in_the_bucket_after_its_hold() -> None:
    clock = FakeClock()
    budget = OutputBudget(SMALL, clock)
    stream = OutputStream("fn", 1, "stdout", budget)
    stream.feed(LINE * 21)
    budget.charge(3000)  # another stream put the bucket deep in debt
    clock.advance(1.0)
    assert stream.poll() == []
    assert stream.summary_due_at() == pytest.approx(clock() + 2.001)  # 2001 bytes at 1000/s
    clock.advance(2.001)
    assert summaries(stream.poll()) != []


def test_a_sustained_flood_is_held_to_the_rate_with_one_summary_a_second() -> None:
    clock = FakeClock()
    limits = OutputLimits(bytes_per_s=64 * 1024, burst_bytes=256 * 1024)
    stream = stream_of(limits, clock)
    chunk = LINE * 1771  # ~64 KiB per read, 100 reads a second: ~6.5 MB/s for 10 s
    out: list[OutputLine] = []
    for _ in range(1000):
        out += stream.feed(chunk)
        clock.advance(0.01)
    passed = [line for line in out if not line.text.startswith("…[dropped")]
    spent = len(passed) * 100
    assert spent <= limits.burst_bytes + limits.bytes_per_s * 10 + 100
    assert spent >= limits.burst_bytes + limits.bytes_per_s * 10 * 0.9  # no more drops than due
    assert 9 <= len(summaries(out)) <= 10
    assert "over the output rate of 64 KiB/s" in summaries(out)[0]
    assert stream.lines + stream.dropped_lines == 1771 * 1000
    assert stream.dropped_bytes == (1771 * 1000 - stream.lines) * 37


def test_the_bucket_holds_no_more_than_the_burst_after_a_long_quiet() -> None:
    clock = FakeClock()
    stream = stream_of(SMALL, clock)
    clock.advance(3600)
    assert len(stream.feed(LINE * 100)) == 20


def test_a_line_is_never_cut_for_the_rate_the_bucket_goes_into_debt_instead() -> None:
    clock = FakeClock()
    limits = OutputLimits(bytes_per_s=1000, burst_bytes=1000, line_bytes=900, buffer_bytes=1000)
    budget = OutputBudget(limits, clock)
    stream = OutputStream("fn", 1, "stdout", budget)
    assert len(stream.feed(b"a" * 600 + b"\n" + b"b" * 600 + b"\n")) == 2  # 1328 of 1000
    assert not budget.has_room()
    clock.advance(0.3)
    assert not budget.has_room()  # the debt is paid first
    clock.advance(0.03)
    assert budget.has_room()


def test_instances_of_one_function_share_its_budget_and_each_reports_its_own_drops() -> None:
    clock = FakeClock()
    budget = OutputBudget(SMALL, clock)
    noisy = OutputStream("fn", 1, "stdout", budget)
    quiet = OutputStream("fn", 2, "stderr", budget)
    assert len(noisy.feed(LINE * 30)) == 20
    assert quiet.feed(b"hello\n") == []  # the noisy one spent the function's budget
    assert (budget.dropped_lines, budget.dropped_bytes) == (11, 10 * 37 + 6)
    clock.advance(1.0)
    [from_noisy] = noisy.poll()
    [from_quiet, hello] = quiet.feed(b"hello again\n")
    assert from_noisy.instance == 1
    assert "dropped 10 lines, 370 bytes" in from_noisy.text
    assert (from_quiet.instance, from_quiet.stream) == (2, "stderr")
    assert "dropped 1 line, 6 bytes" in from_quiet.text
    assert hello.text == "hello again"


def test_a_flooding_instance_does_not_starve_a_quiet_neighbour_that_once_lost_a_line() -> None:
    clock = FakeClock()
    budget = OutputBudget(SMALL, clock)
    noisy = OutputStream("fn", 1, "stdout", budget)
    quiet = OutputStream("fn", 2, "stderr", budget)
    noisy.feed(LINE * 100)
    heard = texts(quiet.feed(b"tick 0\n"))  # right after the flood emptied the bucket: lost
    for step in range(1, 101):  # the flood reads every 0.1 s, the neighbour writes at x.5 s
        clock.advance(0.1)
        noisy.feed(LINE * 10)
        if step % 10 == 5:
            heard += texts(quiet.feed(f"tick {step // 10 + 1}\n".encode()))
    # It holds for a second after its loss (tick 1 too), then writes between the flood's runs.
    summary = "…[dropped 2 lines, 14 bytes: over the output rate of 1000 B/s]"
    assert heard == [summary, *(f"tick {second}" for second in range(2, 11))]
    assert noisy.dropped_lines > 900


def test_what_was_dropped_is_reported_when_the_stream_ends_even_during_the_hold() -> None:
    clock = FakeClock()
    stream = stream_of(SMALL, clock)
    stream.feed(LINE * 21 + b"tail")
    out = texts(stream.finish())
    assert out == ["…[dropped 2 lines, 41 bytes: over the output rate of 1000 B/s]"]
    assert stream.finish() == []


# -- limits and the log -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"bytes_per_s": 0}, "bytes_per_s must be positive"),
        ({"line_bytes": -1}, "line_bytes must be positive"),
        ({"line_bytes": 10, "buffer_bytes": 5}, "must not exceed buffer_bytes"),
    ],
)
def test_limits_that_cannot_work_are_refused(fields: dict[str, int], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        OutputLimits(**fields)


def test_the_log_sink_writes_one_tagged_record_per_line(caplog: pytest.LogCaptureFixture) -> None:
    logger = logging.getLogger("tierfaas.test.output")
    sink = log_sink(logger)
    with caplog.at_level(logging.INFO, logger=logger.name):
        sink(OutputLine("echo", 3, "req-9", "stdout", "hello"))
        sink(OutputLine("echo", 3, None, "stderr", "oops\x1b[31m\rfake\tok"))
    out, err = caplog.records
    assert (out.levelno, out.getMessage()) == (
        logging.INFO,
        "fn=echo instance=3 request=req-9 stdout: hello",
    )
    assert err.levelno == logging.WARNING
    assert err.getMessage() == r"fn=echo instance=3 request=- stderr: oops\x1b[31m\x0dfake" + "\tok"
