"""The chaos suite's own bookkeeping, without a cluster: the result schema, the accounting
of outcomes against kills and the ledger, and the report that renders the results."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from tests.chaos import report
from tests.chaos.cluster import Kill
from tests.chaos.harness import ScenarioResult, account, validate, write_result
from tests.chaos.load import Outcome, _parse_error


def outcome(rid: str, status: int, code: str = "", **kw: object) -> Outcome:
    fields: dict[str, object] = {"target": "n1", "sent": 1.0, "done": 1.1, "message": ""}
    fields.update(kw)
    return Outcome(rid, "alpha", status=status, code=code, **fields)  # type: ignore[arg-type]


def test_write_result_checks_the_counts_add_up(tmp_path: Path) -> None:
    good = ScenarioResult("crash", "short", sent=3, ok=1, typed_errors=1, failed=1)
    path = write_result(good, tmp_path)
    assert path == tmp_path / "crash.json"
    assert json.loads(path.read_text())["failed"] == 1
    with pytest.raises(ValueError, match="sent 4"):
        write_result(ScenarioResult("crash", "short", sent=4, ok=1), tmp_path)
    with pytest.raises(ValueError, match="mode"):
        write_result({**json.loads(path.read_text()), "mode": "medium"}, tmp_path)
    with pytest.raises(ValueError, match="recovery_s"):
        validate({**json.loads(path.read_text()), "recovery_s": "soon"})


def test_typed_errors_are_told_from_other_answers() -> None:
    body = b'{"error": "forward_failed", "message": "node n2 failed", "request_id": "c1"}'
    assert _parse_error(502, body) == ("forward_failed", "node n2 failed")
    assert _parse_error(502, b"<html>Bad Gateway</html>")[0] == "untyped_502"
    assert outcome("a", 502, "forward_failed").typed
    assert outcome("a", 502, "untyped_502").failed
    assert outcome("a", 0, "ServerDisconnectedError").failed


def test_account_explains_failures_by_the_kill_and_checks_the_ledger() -> None:
    kill = Kill("worker", ["n2"], ["worker"], at=5.0, in_flight={"c2"})
    outcomes = [
        outcome("c1", 200),
        outcome("c2", 0, "ServerDisconnectedError", target="n2", sent=4.9, done=5.0),
        # forwarded by n1 to n2, sent before the kill: in flight on the victim
        outcome("c3", 502, "forward_failed", message="node n2 failed", sent=4.95, done=5.01),
        outcome("c4", 429, "overloaded"),  # said it did not run
    ]
    runs = Counter({"c1": 1, "c2": 1})
    result, problems = account("crash", "short", outcomes, [kill], runs)
    assert problems == []
    assert (result.sent, result.ok, result.typed_errors, result.failed) == (4, 1, 2, 1)
    assert result.failed_detail == {"in_flight_on_killed": 1}
    assert result.extra["per_kill"][0] | {"victims": 0} == {
        "kill": "worker", "victims": 0, "roles": ["worker"], "in_flight_at_kill": 1,
        "failed": 1, "typed_errors": 1, "membership_s": None, "recovery_s": None,
    }  # fmt: skip
    validate(json.loads(json.dumps(result.__dict__)))

    # A failure nobody explains, a 200 that never ran, a call run twice, an overloaded
    # answer that ran anyway, and an id the client never sent: each is a problem.
    bad = [
        outcome("d1", 0, "ClientOSError", sent=6.0, done=6.1),
        outcome("d2", 200),
        outcome("d3", 200),
        outcome("d4", 429, "overloaded"),
        outcome("d5", 502, "forward_failed", message="node n2 failed", sent=5.5, done=5.6),
    ]
    result, problems = account("crash", "short", bad, [kill], Counter({"d3": 2, "d4": 1, "zz": 1}))
    text = "\n".join(problems)
    assert result.failed_detail == {"unexplained_ClientOSError": 1}
    for needle in ("d1 to n1", "d2 answered 200 but never ran", "d3 ran 2 times",
                   "d4 answered overloaded", "d5 to n1", "never sent"):  # fmt: skip
        assert needle in text, needle


def test_a_killed_instance_explains_only_its_crashed_calls() -> None:
    kill = Kill("an instance", ["n2"], ["worker's instance"], at=5.0, kind="instance")
    outcomes = [
        outcome("e1", 502, "instance_crashed", target="n1", sent=4.9, done=5.02),  # forwarded
        outcome("e2", 502, "instance_crashed", sent=6.0, done=6.1),  # a crash of its own
        outcome("e3", 0, "ServerDisconnectedError", target="n2", sent=4.9, done=5.02),
    ]
    result, problems = account("crash", "short", outcomes, [kill], Counter({"e1": 1}))
    assert [p.split()[0] for p in problems] == ["e2", "e3"]
    assert result.extra["per_kill"][0]["typed_errors"] == 1
    assert result.extra["per_kill"][0]["in_flight_at_kill"] is None


def test_report_renders_every_result_and_keeps_the_prose(tmp_path: Path) -> None:
    results = tmp_path / "results"
    mine = ScenarioResult("crash", "long", sent=10, ok=9, failed=1,
                          failed_detail={"in_flight_on_killed": 1}, recovery_s=1.5)  # fmt: skip
    mine.extra["per_kill"] = [
        {"kill": "worker", "victims": ["n2"], "roles": ["worker"], "in_flight_at_kill": 1,
         "failed": 1, "typed_errors": 0, "recovery_s": 1.5},
    ]  # fmt: skip
    write_result(mine, results)
    # A scenario written by someone else, with extras the report does not know.
    theirs = {"scenario": "partition", "mode": "long", "sent": 5, "ok": 5, "typed_errors": 0,
              "failed": 0, "failed_detail": {}, "recovery_s": None,
              "extra": {"loss": [10, 30]}, "notes": "majority | minority"}  # fmt: skip
    write_result(theirs, results)
    page = tmp_path / "reliability.md"
    page.write_text("# Reliability\n\nMethod, by hand.\n\n" + report.BEGIN + "\nold\n"
                    + report.END + "\n\n## Findings\n\nAlso by hand.\n")  # fmt: skip
    assert report.main(["--dir", str(results), "--out", str(page)]) == 0
    text = page.read_text()
    assert "Method, by hand." in text and "Also by hand." in text and "\nold\n" not in text
    assert "| crash | long | 10 | 9 | 0 | 1 | in_flight_on_killed 1 | 1.50 |" in text
    assert "| partition | long | 5 | 5 | 0 | 0 | - | - |" in text
    assert text.index("| crash |") < text.index("| partition |")
    assert "| worker | worker | 1 | 1 | 0 | - | 1.50 |" in text
    assert "- loss: [10, 30]" in text and "majority | minority" in text
    # A page without markers gets them; a broken file fails the report.
    page.write_text("# Reliability\n")
    assert report.main(["--dir", str(results), "--out", str(page)]) == 0
    assert report.BEGIN in page.read_text()
    (results / "broken.json").write_text(json.dumps({**theirs, "sent": 6}))
    assert report.main(["--dir", str(results), "--out", str(page)]) == 1


def test_a_frozen_worker_gets_a_row_and_its_freezes_a_table(tmp_path: Path) -> None:
    results = tmp_path / "results"
    frozen = ScenarioResult("frozen_worker", "short", sent=7, ok=7, recovery_s=0.13)
    frozen.extra["freezes"] = [
        {"victim": "n3", "functions": ["delta"], "frozen_s": 1.2, "declared": "dead",
         "rejoin_s": 0.01, "back_after_alive_s": 0.13, "back_after_sigcont_s": 0.15},
    ]  # fmt: skip
    write_result(frozen, results)
    page = tmp_path / "reliability.md"
    assert report.main(["--dir", str(results), "--out", str(page)]) == 0
    text = page.read_text()
    assert "| frozen_worker | short | 7 | 7 | 0 | 0 | - | 0.13 |" in text
    assert "| n3 (worker) | delta | 1.20 | dead | 0.01 | 0.13 | 0.15 |" in text


def test_a_forward_to_a_victim_not_yet_reaped_is_explained_by_its_kill() -> None:
    # kill -9 at 5.0; the victim tore its memory down and closed its sockets at 5.3: a
    # forward written to its open socket at 5.2 is lost with it, one sent after is not.
    kill = Kill("master", ["n2"], ["master"], at=5.0, gone_at=5.3)
    during = outcome("e1", 502, "forward_failed", message="node n2 failed", sent=5.2, done=5.31)
    after = outcome("e2", 502, "forward_failed", message="node n2 failed", sent=5.6, done=5.61)
    result, problems = account("crash", "short", [during, after], [kill], Counter())
    assert result.extra["per_kill"][0]["typed_errors"] == 1
    assert len(problems) == 1 and "e2 to n1" in problems[0]
