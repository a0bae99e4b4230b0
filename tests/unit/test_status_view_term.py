"""``tierfaas rollout status`` shows the writer's term and majority (issue 17.3)."""

from __future__ import annotations

from rich.console import Console

from tierfaas.deploy.status_view import render_status


def test_the_status_shows_the_term_and_the_majority() -> None:
    status = {
        "phase": "rolling",
        "master": "n1",
        "term": {"generation": 1, "number": 3, "master": "n1", "lineage": "ab"},
        "majority": {"reached": 2, "known": 5},
    }
    console = Console(record=True, width=120)
    console.print(render_status(status, "2.0.0"))
    text = console.export_text()
    assert "term 1.3" in text and "majority 2 of 5 members reachable" in text
