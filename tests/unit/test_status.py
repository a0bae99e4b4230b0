"""``tierfaas status`` rendering: table versions and replica lag, from a fake view (fetching
the view over HTTP: tests/integration/test_status_fetch.py)."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

from tierfaas.status import memory_columns, render_cluster, render_functions, table_columns

NOW = 1_800_000_000.0


def member(name: str, role: str, table: Any = "absent", **extra: Any) -> dict[str, Any]:
    m: dict[str, Any] = {
        "name": name,
        "http": f"127.0.0.1:{8000 + len(name)}",
        "role": role,
        "replica": None,
        "version": "1.0.0",
        "state": "alive",
        "epoch": int((NOW - 65) * 1000),
        **extra,
    }
    if table != "absent":
        m["table"] = table
    return m


def tbl(version: int, lineage: str = "L1", loaded: bool = True) -> dict[str, Any]:
    return {"version": version, "lineage": lineage, "loaded": loaded}


def rows(table: Table) -> dict[str, dict[str, str]]:
    """node -> column -> the cell's markup, as rendered."""
    cells = {str(c.header): [str(v) for v in c._cells] for c in table.columns}
    names = cells["node"]
    return {n: {h: cells[h][i] for h in cells} for i, n in enumerate(names)}


def text(table: Table) -> str:
    console = Console(width=250, record=True, color_system=None)
    console.print(table)
    return console.export_text()


def test_master_version_and_replica_lag_in_the_same_lineage() -> None:
    view = {
        "self": "m",
        "master": "m",
        "members": [
            member("m", "master", tbl(42)),
            member("r1", "replica", tbl(42)),
            member("r2", "replica", tbl(39)),
            member("w", "worker", replica="r1"),
        ],
    }
    got = rows(render_cluster(view, now=NOW))
    assert (got["m"]["table"], got["m"]["lag"]) == ("42", "-")
    assert (got["r1"]["table"], got["r1"]["lag"]) == ("42", "0")
    assert (got["r2"]["table"], got["r2"]["lag"]) == ("39", "3")
    assert (got["w"]["table"], got["w"]["lag"]) == ("-", "-")
    assert got["m"]["uptime"] == "1m05s"
    out = text(render_cluster(view, now=NOW))
    assert "table" in out and "lag" in out


def test_another_lineage_or_no_snapshot_yet_is_resync() -> None:
    master = member("m", "master", tbl(5, "new"))
    assert table_columns(member("r", "replica", tbl(90, "old")), master) == ("90", "resync")
    assert table_columns(member("r", "replica", tbl(0, "", False)), master) == ("0", "resync")
    # A replica read a moment after its master may be ahead: the lag is never negative.
    assert table_columns(member("r", "replica", tbl(6, "new")), master) == ("6", "0")


def test_a_member_that_did_not_answer_shows_a_question_mark() -> None:
    master = member("m", "master", None)
    replica = member("r", "replica", tbl(3))
    assert table_columns(master, master) == ("?", "-")
    assert table_columns(replica, master) == ("3", "?")
    assert table_columns(member("r", "replica", None), member("m", "master", tbl(3))) == (
        "?",
        "?",
    )
    assert table_columns(replica, None) == ("3", "?")  # no master in the view
    # Garbage where a version should be is not trusted either.
    assert table_columns(member("r", "replica", {"version": "7"}), master) == ("?", "?")
    assert table_columns(member("r", "replica", {"version": True}), master) == ("?", "?")
    # A view fetched without tables (older callers): nothing to show.
    assert table_columns(member("m", "master"), None) == ("-", "-")


def test_every_value_from_the_nodes_is_escaped() -> None:
    evil = "[bold red]pwn[/]"
    view = {
        "self": evil,
        "master": evil,
        "members": [
            member(evil, "master", {"version": 4, "lineage": evil, "loaded": True}, http=evil),
            member("r", "replica", {"version": 4, "lineage": "[x]", "loaded": True}),
            member("w", evil, tbl(1), replica=evil, version=evil, state=evil),
        ],
    }
    table = render_cluster(view, now=NOW)
    out = text(table)
    assert out.count(evil) >= 5  # shown literally, never interpreted as markup
    got = rows(table)
    assert got["r"]["lag"] == "resync"
    assert got[r"\[bold red]pwn\[/]"]["table"] == "4"


def listing(*functions: dict[str, Any]) -> dict[str, Any]:
    return {"release": {"name": "rel", "version": "2.0"}, "node": "n1", "functions": [*functions]}


def function(name: str, isolation: str, **extra: Any) -> dict[str, Any]:
    settings = {"memory_mb": 128, "cpu": None, "pids": 64, "network": "host", "instances": 0}
    return {"name": name, "isolation": isolation, **settings, **extra}


def function_rows(table: Table) -> dict[str, dict[str, str]]:
    cells = {str(c.header): [str(v) for v in c._cells] for c in table.columns}
    return {n: {h: cells[h][i] for h in cells} for i, n in enumerate(cells["function"])}


def test_the_functions_of_the_node_asked_show_their_isolation_and_limits() -> None:
    shown = listing(
        function("a", "sandbox", cpu=0.25, pids=8, network="none", instances=2),
        function("b", "process"),
    )
    table = render_functions(shown)
    got = function_rows(table)
    assert got["a"] == {
        "function": "a", "runtime": "python", "isolation": "[green]sandbox[/]",
        "memory_mb": "128", "cpu": "0.25", "pids": "8", "network": "none", "instances": "2",
    }  # fmt: skip
    assert got["b"]["isolation"] == "[bold red]process[/] (unsandboxed)"
    assert got["b"]["cpu"] == "-"  # no quota
    out = text(table)
    assert "functions on n1 - release rel 2.0" in out
    assert "process (unsandboxed)" in out


def test_an_exec_function_shows_its_runtime_and_protocol() -> None:
    shown = listing({**function("web", "sandbox"), "runtime": "exec", "protocol": "http"})
    assert function_rows(render_functions(shown))["web"]["runtime"] == "exec (http)"


def test_a_function_list_from_an_older_node_or_garbage_still_renders() -> None:
    older = {"name": "old", "memory_mb": 64, "instances": 1}  # no isolation, no limits
    got = function_rows(render_functions(listing(older, "not a function")))  # type: ignore[arg-type]
    assert list(got) == ["old"]
    assert got["old"]["isolation"] == "?" and got["old"]["pids"] == "?"
    assert function_rows(render_functions({"functions": "nope"})) == {}


def test_every_value_of_the_function_list_is_escaped() -> None:
    evil = "[bold red]pwn[/]"
    shown = {
        "release": {"name": evil, "version": evil},
        "node": evil,
        "functions": [function(evil, evil, network=evil, cpu=evil, pids=evil)],
    }
    out = text(render_functions(shown))
    assert out.count(evil) >= 6  # shown literally, never interpreted as markup


def test_each_members_memory_and_evictions_per_minute() -> None:
    mib = 1024 * 1024
    used = {"used_bytes": 120 * mib, "budget_bytes": 2048 * mib, "evictions_last_min": 4}
    assert memory_columns(member("a", "worker", memory=used)) == ("120 / 2048 MiB", "4")
    assert memory_columns(member("b", "worker", memory=None)) == ("?", "?")  # no answer
    assert memory_columns(member("c", "worker")) == ("-", "-")  # not asked
    assert memory_columns(member("d", "worker", memory={"used_bytes": "x"})) == ("?", "?")
    view = {"self": "a", "master": "a", "members": [member("a", "master", memory=used)]}
    got = rows(render_cluster(view, now=NOW))
    assert (got["a"]["memory"], got["a"]["evict/min"]) == ("120 / 2048 MiB", "4")
