"""``InstanceOutput`` on real pipes and a real asyncio loop: a process printing 100 MB runs to
its end while the node's lines, memory and time stay bounded; lines carry the request they
ended in; a stream that went quiet after its drops still gets its summary; close and end of
file release the fds."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator

import pytest

from tierfaas.runtime.output import (
    RECORD_BYTES,
    InstanceOutput,
    OutputBudget,
    OutputLimits,
    OutputLine,
)
from tierfaas.testing.clock import FakeClock

LINES_PER_MIB = 10486
FLOOD_MIB = 100
# 100 MB of 100-byte lines on stdout, framed by two lines on stderr.
FLOODER = f"""
import sys
sys.stderr.write("starting\\n")
sys.stderr.flush()
block = (b"x" * 99 + b"\\n") * {LINES_PER_MIB}
for _ in range({FLOOD_MIB}):
    sys.stdout.buffer.write(block)
sys.stdout.flush()
sys.stderr.write("done\\n")
"""


def rss_bytes() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS in /proc/self/status")


class Pipes:
    """An instance's two pipes. Each test hands the read ends to an InstanceOutput at once (it
    owns and closes them); the write ends are closed at teardown unless a test closed one."""

    def __init__(self) -> None:
        self.out_r, self.out_w = os.pipe()
        self.err_r, self.err_w = os.pipe()
        self.writers = {self.out_w, self.err_w}

    def close_writer(self, fd: int) -> None:
        self.writers.discard(fd)
        os.close(fd)


@pytest.fixture
def pipes() -> Iterator[Pipes]:
    pipes = Pipes()
    yield pipes
    for fd in list(pipes.writers):  # never a number closed before: it may be reused by now
        pipes.close_writer(fd)


async def until(condition: Callable[[], bool], within_s: float) -> None:
    deadline = time.monotonic() + within_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.005)


async def test_a_100mb_flood_leaves_the_writer_free_and_the_log_memory_and_time_bounded() -> None:
    limits = OutputLimits()
    budget = OutputBudget(limits, time.monotonic)
    lines: list[OutputLine] = []
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    rss_before = rss_bytes()
    started = time.monotonic()
    process = subprocess.Popen([sys.executable, "-c", FLOODER], stdout=out_w, stderr=err_w)
    os.close(out_w)
    os.close(err_w)
    output = InstanceOutput("flood", 1, out_r, err_r, budget, lines.append)
    gaps: list[float] = []

    async def tick() -> None:  # the loop keeps serving others during the flood
        last = time.monotonic()
        while True:
            await asyncio.sleep(0.002)
            now = time.monotonic()
            gaps.append(now - last)
            last = now

    ticker = asyncio.create_task(tick())
    try:
        await until(lambda: process.poll() is not None and output.eof, within_s=15.0)
    finally:
        ticker.cancel()
        output.close()
        if process.poll() is None:
            process.kill()
        process.wait()
    elapsed = time.monotonic() - started
    rss_growth = rss_bytes() - rss_before

    assert process.returncode == 0
    assert elapsed < 15.0
    stdout = [line for line in lines if line.stream == "stdout"]
    stderr = [line.text for line in lines if line.stream == "stderr"]
    summaries = [line for line in stdout if line.text.startswith("…[dropped")]
    passed = [line for line in stdout if not line.text.startswith("…[dropped")]
    total_lines = LINES_PER_MIB * FLOOD_MIB
    assert len(passed) + output.dropped_lines == total_lines  # every line: logged or counted
    assert output.dropped_bytes == (total_lines - len(passed)) * 100
    spent = sum(len(line.text) + RECORD_BYTES for line in lines)
    assert spent <= limits.burst_bytes + limits.bytes_per_s * elapsed + 2 * 1024
    assert 1 <= len(summaries) <= elapsed + 2  # about one a second, and one at the end
    assert stderr[0] == "starting"
    assert stderr[-1] == "done" or stderr[-1].startswith("…[dropped")
    assert rss_growth < 20 * 1024 * 1024, f"RSS grew by {rss_growth / 2**20:.1f} MiB"
    longest_gap = max(gaps, default=0.0)
    assert longest_gap < 0.5, f"the loop stalled for {longest_gap:.3f} s"
    print(
        f"\n100 MB in {elapsed:.2f} s ({FLOOD_MIB / elapsed:.0f} MiB/s), "
        f"{len(passed)} lines logged, {len(summaries)} summaries, "
        f"RSS +{rss_growth / 2**20:.1f} MiB, longest loop gap {longest_gap * 1000:.1f} ms"
    )


# About 20 MB/s for 2.5 s: long enough for the hold to end twice while the flood goes on.
SLOW_FLOODER = """
import sys, time
block = (b"x" * 99 + b"\\n") * 10486
for _ in range(50):
    sys.stdout.buffer.write(block)
    sys.stdout.flush()
    time.sleep(0.05)
"""


async def test_a_flood_over_seconds_comes_out_in_runs_with_a_summary_a_second() -> None:
    limits = OutputLimits()
    budget = OutputBudget(limits, time.monotonic)
    lines: list[OutputLine] = []
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    started = time.monotonic()
    process = subprocess.Popen([sys.executable, "-c", SLOW_FLOODER], stdout=out_w, stderr=err_w)
    os.close(out_w)
    os.close(err_w)
    output = InstanceOutput("flood", 2, out_r, err_r, budget, lines.append)
    try:
        await until(lambda: process.poll() is not None and output.eof, within_s=15.0)
    finally:
        output.close()
        if process.poll() is None:
            process.kill()
        process.wait()
    elapsed = time.monotonic() - started
    summaries = [line.text for line in lines if line.text.startswith("…[dropped")]
    spent = sum(len(line.text) + RECORD_BYTES for line in lines)
    assert process.returncode == 0
    assert spent <= limits.burst_bytes + limits.bytes_per_s * elapsed + 2 * 1024
    assert spent > limits.burst_bytes + limits.bytes_per_s  # a run after the burst, at least
    assert 2 <= len(summaries) <= elapsed + 2
    assert len(lines) - len(summaries) + output.dropped_lines == 10486 * 50


async def test_lines_carry_the_request_they_were_written_in(
    pipes: Pipes,
) -> None:
    out_r, out_w, err_r, err_w = pipes.out_r, pipes.out_w, pipes.err_r, pipes.err_w
    lines: list[OutputLine] = []
    budget = OutputBudget(OutputLimits(), time.monotonic)
    output = InstanceOutput("echo", 4, out_r, err_r, budget, lines.append)
    try:
        os.write(out_w, b"while idle\n")
        # The switch reads what the pipe holds first: the idle line keeps the idle tag even
        # though no readiness callback ran before it.
        output.set_request("req-1")
        os.write(out_w, b"during req-1\n")
        os.write(err_w, b"warning in req-1\n")
        await until(lambda: len(lines) == 3, within_s=5.0)
        os.write(out_w, b"end of req-1\n")
        output.set_request(None)  # several calls in flight, or idle: untagged
        os.write(out_w, b"between\n")
        await until(lambda: len(lines) == 5, within_s=5.0)
    finally:
        output.close()
    assert [(line.request, line.stream, line.text) for line in lines] == [
        (None, "stdout", "while idle"),
        ("req-1", "stdout", "during req-1"),
        ("req-1", "stderr", "warning in req-1"),
        ("req-1", "stdout", "end of req-1"),
        (None, "stdout", "between"),
    ]
    assert {(line.function, line.instance) for line in lines} == {("echo", 4)}


async def test_a_stream_quiet_after_its_drops_gets_its_summary_when_the_hold_is_over(
    pipes: Pipes,
) -> None:
    out_r, out_w, err_r = pipes.out_r, pipes.out_w, pipes.err_r
    clock = FakeClock()
    limits = OutputLimits(bytes_per_s=1000, burst_bytes=1000, line_bytes=100, buffer_bytes=1000)
    lines: list[OutputLine] = []
    output = InstanceOutput(
        "fn", 1, out_r, err_r, OutputBudget(limits, clock), lines.append, scheduler=clock
    )
    try:
        os.write(out_w, (b"z" * 36 + b"\n") * 21)  # 100 bytes each: 10 pass, 11 do not
        await until(lambda: output.dropped_lines == 11, within_s=5.0)
        assert len(lines) == 10
        await clock.run_for(0.999)
        assert len(lines) == 10
        await clock.run_for(0.002)
        assert lines[-1].text == "…[dropped 11 lines, 407 bytes: over the output rate of 1000 B/s]"
        assert clock.pending() == 0  # nothing more to report, no timer left
    finally:
        output.close()


async def test_end_of_file_and_close_deliver_the_last_line_and_release_the_fds(
    pipes: Pipes,
) -> None:
    out_r, out_w, err_r, err_w = pipes.out_r, pipes.out_w, pipes.err_r, pipes.err_w
    lines: list[OutputLine] = []
    output = InstanceOutput(
        "fn", 1, out_r, err_r, OutputBudget(OutputLimits(), time.monotonic), lines.append
    )
    os.write(err_w, b"Traceback without a newline")
    pipes.close_writer(err_w)
    await until(lambda: len(lines) == 1, within_s=5.0)
    assert lines[0].text == "Traceback without a newline"
    assert not output.eof  # stdout still open
    os.write(out_w, b"partial")
    output.close()
    output.close()
    assert output.eof
    assert [line.text for line in lines] == ["Traceback without a newline", "partial"]
    with pytest.raises(BrokenPipeError):  # the read end is closed: a writer is not left hanging
        os.write(out_w, b"more\n")
