"""The text of ``tierfaas functions`` and ``tierfaas describe`` (pure: merged views in, rich
renderables out). Every value from a node is escaped or put in a ``Text``: names, settings
and error messages are not trusted to be free of markup."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rich.console import Group, RenderableType
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from tierfaas.calls.render import when

_ISOLATION = {"sandbox": Text("sandbox", style="green"),
              "process": Text("process (unsandboxed)", style="bold red")}  # fmt: skip
# The settings ``describe`` shows, in this order (others the node sends follow, by name).
# Unset ones are left out (an exec function's command, a Python one's handler, ...), but for
# those whose "none" says something.
_SETTINGS_ORDER = (
    "runtime", "handler", "init", "command", "protocol", "listen", "timeout_s", "memory_mb",
    "cpu", "pids", "network", "concurrency", "threads", "max_instances", "min_instances",
    "keep_alive_s", "api_key", "max_retries", "schedule",
)  # fmt: skip
_SHOWN_UNSET = frozenset({"cpu", "schedule"})


def rate(value: Any) -> str:
    """Calls per second as shown: ``0``, ``0.05``, ``3.2``, ``140``."""
    if not isinstance(value, int | float) or isinstance(value, bool):
        return "-"
    if value == 0:
        return "0"
    if value < 1:
        return f"{value:.2f}"
    return f"{value:.1f}" if value < 100 else f"{value:.0f}"


def millis(value: Any) -> str:
    """A latency in ms as shown: ``-`` for none, ``0.42 ms``, ``12 ms``, ``1.5 s``."""
    if not isinstance(value, int | float) or isinstance(value, bool):
        return "-"
    if value >= 1000:
        return f"{value / 1000:.1f} s"
    return f"{value:.2f} ms" if value < 10 else f"{value:.0f} ms"


def _unanswered(unanswered: Mapping[str, str]) -> list[RenderableType]:
    return [
        Text(f"{node} did not answer: {reason}", style="yellow")
        for node, reason in sorted(unanswered.items())
    ]


def render_functions(
    rows: list[dict[str, Any]], unanswered: Mapping[str, str], title: str = "functions"
) -> RenderableType:
    """The table of ``tierfaas functions`` (rows of ``cluster.merge_listings``), then the
    nodes that did not answer, whose share is missing from it."""
    table = Table(title=escape(title), title_justify="left", show_edge=False, pad_edge=False)
    table.add_column("function", overflow="fold", min_width=8)
    table.add_column("runtime", no_wrap=True)
    table.add_column("version", overflow="fold")
    table.add_column("warm on", overflow="fold")
    table.add_column("inst", justify="right", no_wrap=True)
    table.add_column("calls/s", justify="right", no_wrap=True)
    table.add_column("p99", justify="right", no_wrap=True)
    table.add_column("calls", justify="right", no_wrap=True)
    table.add_column("errors", justify="right", no_wrap=True)
    table.add_column("cold", justify="right", no_wrap=True)
    for row in rows:
        warm = row.get("warm_nodes") or []
        errors = row.get("errors", 0)
        table.add_row(
            escape(str(row.get("name"))),
            escape(str(row.get("runtime"))),
            escape(", ".join(row.get("versions") or []) or "-"),
            escape(", ".join(warm)) if warm else Text("-", style="dim"),
            str(row.get("instances", 0)),
            rate(row.get("calls_per_s")),
            millis(row.get("p99_ms")),
            str(row.get("calls", 0)),
            Text(str(errors), style="red") if errors else "0",
            str(row.get("cold_starts", 0)),
        )
    parts: list[RenderableType] = [table]
    if not rows:
        parts.append(Text("no functions", style="dim"))
    parts += _unanswered(unanswered)
    return Group(*parts)


def _setting(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, list):
        return " ".join(str(v) for v in value) or "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


def render_describe(view: dict[str, Any], unanswered: Mapping[str, str]) -> RenderableType:
    """``tierfaas describe`` (a view of ``cluster.merge_describe``): settings, isolation, env
    and secret names, the nodes with their instances and stats, the recent errors (newest
    first), then the nodes that did not answer."""
    head = Table.grid(padding=(0, 2))
    head.add_column(style="bold")
    head.add_column()
    head.add_row("function", escape(str(view.get("name"))))
    head.add_row("versions", escape(", ".join(view.get("versions") or []) or "-"))
    isolation = str(view.get("isolation"))
    head.add_row("isolation", _ISOLATION.get(isolation, Text(isolation)))
    settings = dict(view.get("settings") or {})
    settings.setdefault("runtime", view.get("runtime"))
    shown = [key for key in _SETTINGS_ORDER if key in settings]
    shown += sorted(key for key in settings if key not in _SETTINGS_ORDER)
    shown = [key for key in shown if settings[key] is not None or key in _SHOWN_UNSET]
    for key in shown:
        head.add_row(escape(key), Text(_setting(settings[key])))
    head.add_row("env", Text(", ".join(view.get("env") or []) or "-"))
    head.add_row("secrets", Text(", ".join(view.get("secrets") or []) or "-"))
    stats = view.get("stats") or {}
    warm = stats.get("warm_nodes") or []
    head.add_row("warm on", Text(", ".join(warm) or "nowhere", style="" if warm else "dim"))
    head.add_row(
        "stats",
        Text(
            f"{stats.get('calls', 0)} calls, {stats.get('errors', 0)} errors, "
            f"{stats.get('cold_starts', 0)} cold starts since the nodes started; last minute: "
            f"{rate(stats.get('calls_per_s'))} calls/s, p99 {millis(stats.get('p99_ms'))}"
        ),
    )
    nodes = Table(title="nodes", title_justify="left", show_edge=False, pad_edge=False)
    for column in ("node", "version", "inst", "busy", "calls/s", "p99", "calls", "errors", "cold"):
        nodes.add_column(column, justify="left" if column in ("node", "version") else "right")
    for node in view.get("nodes") or []:
        node_stats = node.get("stats") or {}
        nodes.add_row(
            escape(str(node.get("node"))),
            escape(str(node.get("version") or "-")),
            str(node.get("instances", 0)),
            str(node.get("busy", 0)),
            rate(node_stats.get("calls_per_s")),
            millis(node_stats.get("p99_ms")),
            str(node_stats.get("calls", 0)),
            str(node_stats.get("errors", 0)),
            str(node_stats.get("cold_starts", 0)),
        )
    parts: list[RenderableType] = [head, Text(""), nodes, Text("")]
    errors = view.get("recent_errors") or []
    if errors:
        # One block an error, its message on a line of its own: a table would squeeze the
        # message out of a narrow terminal.
        parts.append(Text("recent errors (newest first, UTC)", style="italic"))
        for error in errors:
            at = error.get("time_ms")
            seconds = at / 1000 if isinstance(at, int | float) else None
            line = Text(f"{when(seconds)}  {error.get('node')}  {error.get('request_id')}  ")
            line.append(f"{error.get('status')} {error.get('error')}", style="red")
            parts.append(line)
            parts.append(Text(f"    {error.get('message')}"))
    else:
        parts.append(Text("no recent errors", style="dim"))
    parts += _unanswered(unanswered)
    return Group(*parts)
