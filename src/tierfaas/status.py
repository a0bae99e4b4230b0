"""``tierfaas status``: fetch ``/v1/cluster`` from a node and render it as a table."""

from __future__ import annotations

import json
import time
import urllib.request
from typing import Any

from rich.markup import escape
from rich.table import Table

_ROLE_STYLE = {"master": "bold magenta", "replica": "cyan", "worker": "green"}


def fetch_cluster(url: str, timeout: float = 5.0) -> dict[str, Any]:
    with urllib.request.urlopen(f"{url.rstrip('/')}/v1/cluster", timeout=timeout) as response:
        view: dict[str, Any] = json.loads(response.read())
    return view


def _uptime(epoch_ms: int, now: float) -> str:
    if not epoch_ms:
        return "-"
    seconds = max(0, int(now - epoch_ms / 1000))
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{seconds:02d}s"


def render_cluster(view: dict[str, Any], now: float | None = None) -> Table:
    """A rich table of the members in rank order. Every value from the node is escaped: names
    and metadata come from other nodes and are not trusted to be free of markup."""
    now = time.time() if now is None else now
    title = f"cluster seen by {view.get('self')} - master: {view.get('master') or 'none'}"
    if not view.get("joined", True):
        title += f" (not joined: {view.get('join_reason')})"
    table = Table(title=escape(title))
    for column in ("node", "address", "role", "replica", "version", "uptime", "state"):
        table.add_column(column, overflow="fold")
    for member in view.get("members", []):
        role = str(member.get("role") or "-")
        style = _ROLE_STYLE.get(role, "")
        table.add_row(
            escape(str(member.get("name"))),
            escape(str(member.get("http") or "-")),
            f"[{style}]{escape(role)}[/]" if style else escape(role),
            escape(str(member.get("replica") or "-")),
            escape(str(member.get("version") or "-")),
            _uptime(int(member.get("epoch") or 0), now),
            escape(str(member.get("state"))),
        )
    return table
