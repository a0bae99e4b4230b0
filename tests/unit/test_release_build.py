"""The build step's pure parts: its output lines and tail, the log budget, the environment,
and the error a failed build raises. (Real builds: tests/integration/test_release_build.py.)"""

from __future__ import annotations

import shutil
from pathlib import Path

from tierfaas.deploy.build import (
    LOCK_NAME,
    LogBudget,
    OutputLines,
    build_environment,
    status_of,
)
from tierfaas.deploy.registry import DirectoryRegistry, digest_of
from tierfaas.errors import BuildFailed
from tierfaas.node.readiness import Readiness
from tierfaas.testing import FakeClock

DEMO = Path(__file__).parents[2] / "examples" / "demo"


def test_output_is_split_into_lines_across_chunks() -> None:
    output = OutputLines()
    assert output.feed(b"one\ntw") == ["one"]
    assert output.feed(b"o\r\nthree") == ["two"]
    assert output.close() == ["three"]
    assert list(output.tail) == ["one", "two", "three"]


def test_the_tail_keeps_only_the_last_lines() -> None:
    output = OutputLines(tail_lines=3)
    for number in range(100):
        output.feed(f"line {number}\n".encode())
    assert list(output.tail) == ["line 97", "line 98", "line 99"]
    assert output.close() == []


def test_a_long_line_is_cut_and_only_its_head_is_held() -> None:
    output = OutputLines(line_chars=10)
    for _ in range(1000):
        assert output.feed(b"x" * 1000) == []
        assert len(output._head) <= 10  # a line without end costs its kept head only
    (line,) = output.feed(b"\n")
    assert line == "x" * 10 + f" ...[cut {1000 * 1000 - 10} bytes]"


def test_undecodable_bytes_do_not_break_the_output() -> None:
    assert OutputLines().feed(b"caf\xc3\xa9 \xff\n") == ["café \ufffd"]


def test_the_log_budget_allows_a_burst_then_its_rate_and_counts_what_it_dropped() -> None:
    clock = FakeClock()
    budget = LogBudget(clock, rate=10.0, burst=5, hold_s=1.0)
    assert [budget.take() for _ in range(7)] == [True] * 5 + [False] * 2
    clock.advance(0.5)  # five lines' worth, but a drop holds everything for a second
    assert not budget.take()
    clock.advance(0.5)
    assert budget.take()
    assert budget.resumed() == 3 and budget.resumed() == 0
    clock.advance(100.0)  # refills to the burst, never beyond
    assert sum(budget.take() for _ in range(10)) == 5


def test_a_flood_gets_at_most_one_summary_per_hold() -> None:
    clock = FakeClock()
    budget = LogBudget(clock, rate=100.0, burst=10, hold_s=1.0)
    resumes = 0
    for _ in range(10_000):  # a line every millisecond for 10 s
        if budget.take() and budget.resumed():
            resumes += 1
        clock.advance(0.001)
    assert resumes <= 10


def test_the_environment_keeps_path_home_and_locale_only() -> None:
    environ = {
        "PATH": "/opt/bin:/usr/bin",
        "HOME": "/home/node",
        "LANG": "C.UTF-8",
        "LC_ALL": "C",
        "TIERFAAS_KEY_FILE": "/etc/tierfaas/key",
        "TIERFAAS_CLUSTER_KEY": "secret",
        "AWS_SECRET_ACCESS_KEY": "secret",
        "LD_PRELOAD": "/tmp/evil.so",
    }
    assert build_environment(environ) == {
        "PATH": "/opt/bin:/usr/bin",
        "HOME": "/home/node",
        "LANG": "C.UTF-8",
        "LC_ALL": "C",
    }


def test_the_environment_has_a_path_even_when_the_node_has_none() -> None:
    assert build_environment({})["PATH"] == "/usr/local/bin:/usr/bin:/bin"


def test_the_status_names_the_exit_code_or_the_signal() -> None:
    assert status_of(2) == "exit 2"
    assert status_of(-9) == "killed by SIGKILL"
    assert status_of(-200) == "killed by signal 200"


def test_a_failed_build_says_which_release_how_it_failed_and_its_last_lines() -> None:
    error = BuildFailed("demo 2.0.0", ("make",), "exit 2", ("cc -c x.c", "x.c:1: error: oops"))
    text = str(error)
    assert "demo 2.0.0" in text and "['make']" in text and "exit 2" in text
    assert text.endswith("  | cc -c x.c\n  | x.c:1: error: oops")
    assert (
        error.summary()
        == "release demo 2.0.0: build failed (exit 2): cc -c x.c | x.c:1: error: oops"
    )


def test_the_summary_fits_its_limit_and_keeps_the_latest_lines() -> None:
    tail = (*(f"line {n} " + "x" * 40 for n in range(20)), "", "the error")
    summary = BuildFailed("demo 2.0.0", ("make",), "exit 1", tail).summary(limit=200)
    assert len(summary) <= 200
    assert summary.endswith("| the error") and "line 19" in summary and "line 0 " not in summary


def test_the_summary_of_one_huge_line_keeps_its_end() -> None:
    summary = BuildFailed("d 1", ("make",), "exit 1", ("a" * 1000 + " THE END",)).summary(100)
    assert len(summary) <= 100 and summary.endswith("THE END")


def test_the_summary_of_a_build_without_output() -> None:
    error = BuildFailed("d 1", ("make",), "timed out after 5 s", ())
    assert error.summary() == "release d 1: build failed (timed out after 5 s)"
    assert "(no output)" in str(error)


def test_the_build_lock_is_no_part_of_a_published_release(tmp_path: Path) -> None:
    source = tmp_path / "src"
    shutil.copytree(DEMO, source)
    before = digest_of(source)
    (source / LOCK_NAME).write_text("")
    assert digest_of(source) == before
    registry = DirectoryRegistry(tmp_path / "reg")
    info, _ = registry.publish(source)
    assert not (registry.release_dir(info.version) / LOCK_NAME).exists()


def test_a_failed_build_leaves_a_registry_node_not_ready_for_good() -> None:
    readiness = Readiness(check_release=True)
    assert readiness.reason() == "checking that the release imports"
    readiness.fail("release d 1: build failed (exit 2): oops")
    assert readiness.checked  # no import check follows
    assert readiness.fatal() and readiness.reason() == "release d 1: build failed (exit 2): oops"
