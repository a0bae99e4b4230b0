"""Fencing (issue 17.3): every store a master changes refuses a term older than the newest
it has seen: the registry's status file, the local provider's folder, a handover target."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tierfaas.control.handover import handover_refusal
from tierfaas.deploy.local import LocalProvider, LocalSettings
from tierfaas.deploy.registry import DirectoryRegistry
from tierfaas.deploy.term import FencedError, Term, TermRecord
from tierfaas.membership.base import MemberInfo, MemberState


def test_terms_order_by_generation_then_number() -> None:
    assert Term(1, 9).older_than(Term(2, 1))
    assert Term(2, 1).older_than(Term(2, 2))
    assert not Term(2, 2).older_than(Term(2, 2))
    assert not Term(2, 2).older_than(None)
    assert Term.from_json(Term(3, 4, "n1", "ab").to_json()) == Term(3, 4, "n1", "ab")
    assert Term.from_json({"generation": "x"}) is None


def test_a_term_record_keeps_the_newest_and_refuses_older(tmp_path: Path) -> None:
    record = TermRecord(tmp_path / "term")
    record.check(Term(0, 2), "x")
    with pytest.raises(FencedError, match=r"y refused: term 0\.1"):
        record.check(Term(0, 1, "old"), "y")
    record.check(None, "an operator's call")  # not fenced
    record.check(Term(1, 1), "z")
    assert record.read() == Term(1, 1)


def test_each_claim_is_newer_than_every_term_before(tmp_path: Path) -> None:
    registry = DirectoryRegistry(tmp_path / "reg")
    first = registry.claim_term(0, "n1", "aa")
    second = registry.claim_term(0, "n2", "bb")
    assert first.older_than(second) and second.number == first.number + 1
    # A handover raises the generation; a later claim never goes back below it.
    third = registry.claim_term(1, "n3")
    assert registry.claim_term(0, "n4").key == (1, third.number + 1)


def test_the_status_of_an_older_term_is_refused(tmp_path: Path) -> None:
    registry = DirectoryRegistry(tmp_path / "reg")
    old = registry.claim_term(0, "n1")
    registry.write_status({"phase": "rolling", "master": "n1"}, old)
    assert registry.read_status() == {
        "phase": "rolling",
        "master": "n1",
        "term": old.to_json(),
    }
    new = registry.claim_term(0, "n2")  # the majority's new master
    with pytest.raises(FencedError, match="writing the rollout status refused"):
        registry.write_status({"phase": "idle", "master": "n1"}, old)
    assert (registry.read_status() or {})["master"] == "n1"  # untouched
    registry.write_status({"phase": "idle", "master": "n2"}, new)
    assert registry.current_term() == new


def test_a_status_written_by_a_newer_term_fences_even_without_a_claim(tmp_path: Path) -> None:
    registry = DirectoryRegistry(tmp_path / "reg")
    (tmp_path / "reg").mkdir()
    newer = {"phase": "idle", "term": Term(2, 7, "n9").to_json()}
    (tmp_path / "reg" / "rollout.json").write_text(json.dumps(newer))
    with pytest.raises(FencedError):
        registry.write_status({"phase": "idle"}, Term(2, 6))
    assert registry.claim_term(0, "n1").key == (2, 8)


def provider(tmp_path: Path) -> LocalProvider:
    settings = LocalSettings(
        registry=str(tmp_path / "reg"),
        key_file=str(tmp_path / "key"),
        cluster_port=7946,
        first_host="127.0.9.10",
        seeds=[],
    )
    return LocalProvider.create(tmp_path / "provider", settings)


def record(p: LocalProvider, name: str) -> None:
    data = {
        "name": name, "host": "127.0.9.10", "http": "127.0.9.10:1", "version": "1.0.0",
        "generation": 0, "pid": 2**22 + 1, "start_time": None, "phase": "running",
        "launched_at": 0.0, "log": "",
    }  # fmt: skip
    (p.nodes_dir / f"{name}.json").write_text(json.dumps(data))


def test_the_local_provider_refuses_an_older_terminate_and_launch(tmp_path: Path) -> None:
    p = provider(tmp_path)
    record(p, "a")
    p.terminate_now("a", term=Term(0, 5, "majority"))
    assert json.loads((p.nodes_dir / "a.json").read_text())["phase"] == "draining"
    record(p, "b")
    with pytest.raises(FencedError, match="terminating b refused"):
        p.terminate_now("b", term=Term(0, 4, "cut-off"))
    assert json.loads((p.nodes_dir / "b.json").read_text())["phase"] == "running"
    with pytest.raises(FencedError, match="launching 1 node"):
        p.launch_now("1.0.0", 0, 1, term=Term(0, 4, "cut-off"))  # refused before any start
    assert sorted(x.name for x in p.nodes_dir.iterdir()) == ["a.json", "b.json"]
    assert TermRecord(p.state_dir / "term").read() == Term(0, 5, "majority")


def member(name: str, generation: int, state: MemberState = MemberState.ALIVE) -> MemberInfo:
    return MemberInfo(name, 1, state, "x", generation=generation)


def test_a_handover_to_a_generation_already_taken_is_refused() -> None:
    view = [member("old-master", 3), member("canary", 3)]
    assert handover_refusal(4, view) is None
    # The table went to another node of generation 4 already: a second sender is stale.
    assert "not newer" in (handover_refusal(4, [*view, member("other", 4)]) or "")
    # A cut-off master of an older generation handing over into one that exists.
    assert handover_refusal(3, view) is not None
    # Dead members do not count: their generation is not taken by anyone alive.
    assert handover_refusal(4, [*view, member("gone", 4, MemberState.DEAD)]) is None
