"""``tierfaas rollout status``: the registry's rollout status as rich tables."""

from __future__ import annotations

import time
from typing import Any

from rich.console import Group
from rich.table import Table
from rich.text import Text


def _ago(ms: int | None) -> str:
    if not ms:
        return "-"
    seconds = max(0.0, time.time() - ms / 1000)
    if seconds < 120:
        return f"{seconds:.0f} s ago"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min ago"
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(ms / 1000))


def render_status(status: dict[str, Any], desired: str | None) -> Group:
    parts: list[Any] = []
    phase = str(status.get("phase", "unknown"))
    colour = {"rolling": "yellow", "idle": "green", "done": "green"}.get(phase, "red")
    head = Text.assemble(
        ("phase ", "bold"),
        (phase, f"bold {colour}"),
        f"   desired {desired or '-'}   master {status.get('master', '-')} "
        f"({status.get('master_version', '-')})   updated {_ago(status.get('updated_at'))}",
    )
    parts.append(head)
    term, majority = status.get("term") or {}, status.get("majority") or {}
    if term or majority:
        reached, known = majority.get("reached"), majority.get("known")
        held = reached is not None and known is not None and 2 * reached > known
        parts.append(
            Text.assemble(
                f"term {term.get('generation', '-')}.{term.get('number', '-')}   majority ",
                (f"{reached} of {known} members reachable", "green" if held else "bold red"),
            )
        )
    nodes = Table(title="nodes by version", title_justify="left")
    nodes.add_column("version")
    nodes.add_column("nodes", justify="right")
    nodes.add_column("names")
    for version, names in (status.get("nodes") or {}).items():
        nodes.add_row(Text(version), str(len(names)), Text(", ".join(names)))
    draining = status.get("draining") or []
    if draining:
        nodes.add_row(Text("(draining)"), str(len(draining)), Text(", ".join(draining)))
    parts.append(nodes)
    current = status.get("rollout")
    if current:
        parts.append(
            Text(
                f"rolling {current.get('from')} -> {current.get('to')} "
                f"({current.get('size')} nodes), now: {current.get('step', '-')}"
            )
        )
        for event in (current.get("events") or [])[-8:]:
            parts.append(Text(f"  {_ago(event.get('at'))}: {event.get('text')}"))
    for version, reason in sorted((status.get("failed") or {}).items()):
        parts.append(Text.assemble(("failed ", "bold red"), f"{version}: {reason}"))
    history = status.get("history") or []
    if history:
        table = Table(title="history", title_justify="left")
        for column in ("started", "from", "to", "result", "seconds", "handover"):
            table.add_column(column)
        for entry in reversed(history[-10:]):
            handover = entry.get("handover") or {}
            table.add_row(
                _ago(entry.get("started_at")),
                Text(str(entry.get("from"))),
                Text(str(entry.get("to"))),
                Text(str(entry.get("result", "-"))),
                str(entry.get("seconds", "-")),
                Text(f"{handover.get('routes')} routes to {handover.get('target')}")
                if handover
                else "-",
            )
        parts.append(table)
    return Group(*parts)
