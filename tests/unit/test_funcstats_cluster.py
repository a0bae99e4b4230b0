"""``tierfaas functions`` and ``describe`` from the nodes' answers: the merge (counts and
rates add up, p99 is the highest node's, recent errors newest first across nodes) and the
text (every column, the nodes that did not answer, markup from a node shown as text)."""

from __future__ import annotations

from typing import Any

from rich.console import Console

from tierfaas.funcstats.cluster import merge_describe, merge_listings
from tierfaas.funcstats.render import millis, rate, render_describe, render_functions


def entry(name: str, instances: int, calls: int, errors: int, p99: float | None) -> dict[str, Any]:
    return {
        "name": name, "runtime": "python", "handler": f"fns:{name}", "timeout_s": 5.0,
        "concurrency": 2, "max_retries": 1, "env": ["GREETING"], "isolation": "sandbox",
        "instances": instances, "busy": 0, "queued": 0, "keep_alive_window_s": 120.0,
        "stats": {
            "calls": calls, "errors": errors, "cold_starts": min(calls, 1),
            "calls_per_s": calls / 60, "p99_ms": p99, "instances": instances, "busy": 0,
        },
    }  # fmt: skip


def listing(node: str, version: str, *entries: dict[str, Any]) -> dict[str, Any]:
    return {
        "node": node, "release": {"name": "r", "version": version}, "functions": list(entries)
    }  # fmt: skip


LISTINGS = {
    "a": listing("a", "1.0", entry("greet", 1, 30, 0, 4.2), entry("fails", 0, 0, 0, None)),
    "b": listing("b", "1.1", entry("greet", 2, 90, 3, 12.0), entry("fails", 1, 5, 5, 1.0)),
    "c": listing("c", "1.1", entry("greet", 0, 0, 0, None)),  # a release without fails
}


def render(renderable: Any) -> str:
    console = Console(width=160, record=True, color_system=None)
    console.print(renderable)
    return console.export_text()


def test_rows_add_up_the_nodes_and_take_the_highest_p99() -> None:
    greet, fails = merge_listings(LISTINGS)[1], merge_listings(LISTINGS)[0]
    assert greet == {
        "name": "greet", "runtime": "python", "versions": ["1.0", "1.1"],
        "nodes": ["a", "b", "c"], "warm_nodes": ["a", "b"], "instances": 3, "busy": 0,
        "calls": 120, "errors": 3, "cold_starts": 2, "calls_per_s": 2.0, "p99_ms": 12.0,
    }  # fmt: skip
    assert (fails["name"], fails["nodes"], fails["warm_nodes"]) == ("fails", ["a", "b"], ["b"])
    assert fails["p99_ms"] == 1.0


def test_a_node_answering_garbage_adds_nothing() -> None:
    rows = merge_listings({"a": LISTINGS["a"], "x": "not a listing", "y": {"functions": [7]}})
    assert [row["nodes"] for row in rows] == [["a"], ["a"]]


def test_the_table_shows_every_column_and_names_the_nodes_that_did_not_answer() -> None:
    text = render(render_functions(merge_listings(LISTINGS), {"d": "cannot reach d: refused"}))
    greet = next(line for line in text.splitlines() if line.lstrip().startswith("greet"))
    for cell in ("python", "1.0, 1.1", "a, b", "3", "2.0", "12 ms", "120"):
        assert cell in greet, cell
    assert "d did not answer: cannot reach d: refused" in text
    assert "no functions" in render(render_functions([], {}))


def test_describe_merges_settings_nodes_and_errors_newest_first() -> None:
    def answer(node: str, version: str, errors: list[tuple[int, str]]) -> dict[str, Any]:
        return {
            "node": node, "release": {"name": "r", "version": version},
            "function": entry("fails", 1, 5, len(errors), 3.0),
            "recent_errors": [
                {"time_ms": at, "request_id": rid, "status": 500, "error": "ValueError",
                 "message": f"bad {rid}"}
                for at, rid in errors
            ],
        }  # fmt: skip

    view = merge_describe(
        "fails",
        {
            "b": answer("b", "1.1", [(3000, "r3"), (1000, "r1")]),
            "a": answer("a", "1.0", [(2000, "r2")]),
            "gone": {"error": "what"},
        },
    )
    assert [(e["request_id"], e["node"]) for e in view["recent_errors"]] == [
        ("r3", "b"), ("r2", "a"), ("r1", "b"),
    ]  # fmt: skip
    assert view["settings"] == {
        "runtime": "python", "handler": "fns:fails", "timeout_s": 5.0, "concurrency": 2,
        "max_retries": 1,
    }  # fmt: skip
    assert (view["env"], view["secrets"], view["isolation"]) == (["GREETING"], [], "sandbox")
    assert view["versions"] == ["1.0", "1.1"]
    assert [n["node"] for n in view["nodes"]] == ["a", "b"]
    assert view["stats"]["errors"] == 3 and view["stats"]["warm_nodes"] == ["a", "b"]

    text = render(render_describe(view, {"c": "503 draining: bye"}))
    for expected in ("fns:fails", "timeout_s", "GREETING", "sandbox", "recent errors",
                     "warm on      a, b", "bad r3",
                     "c did not answer: 503 draining: bye"):  # fmt: skip
        assert expected in text, expected
    assert text.index("r3") < text.index("r2") < text.index("r1")


def test_secret_names_show_when_the_nodes_send_them() -> None:
    function = {**entry("db", 1, 1, 0, 1.0), "secrets": ["db-password"]}
    view = merge_describe("db", {"a": {"node": "a", "function": function, "recent_errors": []}})
    assert view["secrets"] == ["db-password"]
    text = render(render_describe(view, {}))
    assert "db-password" in text and "no recent errors" in text


def test_markup_from_a_node_is_shown_as_text() -> None:
    function = entry("greet", 1, 1, 1, 1.0)
    error = {"time_ms": 1, "request_id": "r", "status": 500, "error": "[red]x[/]",
             "message": "[bold]not markup[/bold]"}  # fmt: skip
    view = merge_describe("greet", {"a": {"function": function, "recent_errors": [error]}})
    text = render(render_describe(view, {}))
    assert "[bold]not markup[/bold]" in text and "[red]x[/]" in text


def test_rates_and_latencies_read_at_a_glance() -> None:
    assert [rate(v) for v in (0, 0.05, 3.21, 140.4, None)] == ["0", "0.05", "3.2", "140", "-"]
    assert [millis(v) for v in (0.421, 12.4, 1500.0, None)] == ["0.42 ms", "12 ms", "1.5 s", "-"]
