"""``tierfaas status``: fetch ``/v1/cluster`` from a node and render it as a table.

Beside the members, the table shows the routing table each holder has: for the master and
every replica, the table version it holds (from its own ``GET /v1/routes``) and, for a
replica, its lag behind the master (master version - replica version, when both hold the
same lineage; ``resync`` when they do not, e.g. right after a failover or before the first
snapshot). A member that does not answer in time shows ``?``.

Each member's memory comes from its own ``GET /v1/stats`` (the node asked: from the URL given,
which also serves a standalone node): what its instances use (measured) out of its budget, and
how many idle instances it evicted in the last minute.

Below it, the functions of the node asked (its ``GET /v1/functions``): each one's isolation
(``sandbox``, or ``process`` when the node runs its functions unsandboxed) and its limits.
"""

from __future__ import annotations

import json
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from rich.markup import escape
from rich.table import Table

_ROLE_STYLE = {"master": "bold magenta", "replica": "cyan", "worker": "green"}
_ISOLATION_SHOWN = {"sandbox": "[green]sandbox[/]", "process": "[bold red]process[/] (unsandboxed)"}
TABLE_HOLDERS = ("master", "replica")
MAX_ROUTES_BYTES = 64 * 1024 * 1024
MIB = 1024 * 1024


def _get_json(url: str, timeout: float, limit: int | None = None, token: str | None = None) -> Any:
    request = urllib.request.Request(url)
    if token:  # nodes bound off loopback with an admin token require it (docs/security.md)
        request.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read(limit) if limit is not None else response.read())


def fetch_cluster(
    url: str, timeout: float = 5.0, routes_timeout: float = 0.5, token: str | None = None
) -> dict[str, Any]:
    """The cluster as the node at ``url`` sees it. Each master and replica member also gets a
    ``table`` entry: ``{"version", "lineage", "loaded"}`` from its ``/v1/routes``, or None if
    it did not answer within ``routes_timeout`` seconds (asked in parallel)."""
    view: dict[str, Any] = _get_json(f"{url.rstrip('/')}/v1/cluster", timeout, token=token)
    members = [m for m in view.get("members", []) if isinstance(m, dict)]
    if members:
        with ThreadPoolExecutor(max_workers=min(16, len(members))) as pool:
            memory = list(
                pool.map(lambda m: fetch_memory(m, view, url, routes_timeout, token), members)
            )
        for member, found in zip(members, memory, strict=True):
            member["memory"] = found
    holders = [
        m for m in view.get("members", []) if isinstance(m, dict) and m.get("role") in TABLE_HOLDERS
    ]
    if holders:
        with ThreadPoolExecutor(max_workers=min(16, len(holders))) as pool:
            tables = list(pool.map(lambda m: fetch_table(m, routes_timeout, token), holders))
        for member, table in zip(holders, tables, strict=True):
            member["table"] = table
    return view


def fetch_functions(
    url: str, timeout: float = 5.0, token: str | None = None
) -> dict[str, Any] | None:
    """The node's ``GET /v1/functions`` (its release and functions), or None when it does not
    answer with one."""
    try:
        listing = _get_json(f"{url.rstrip('/')}/v1/functions", timeout, token=token)
    except (OSError, ValueError):
        return None
    return listing if isinstance(listing, dict) else None


def fetch_memory(
    member: dict[str, Any], view: dict[str, Any], url: str, timeout: float, token: str | None = None
) -> dict[str, Any] | None:
    """``{"used_bytes", "budget_bytes", "evictions_last_min"}`` from ``member``'s
    ``/v1/stats`` (the node asked, ``view["self"]``, at ``url``), or None."""
    if member.get("name") == view.get("self"):
        base = url.rstrip("/")
    elif isinstance(member.get("http"), str) and member["http"]:
        base = f"http://{member['http']}"
    else:
        return None
    try:
        stats = _get_json(f"{base}/v1/stats", timeout, token=token)
    except (OSError, ValueError):
        return None
    if not isinstance(stats, dict) or "memory_budget_bytes" not in stats:
        return None  # unreachable, or a node of a release that does not report it
    keys = ("memory_used_bytes", "memory_budget_bytes", "evictions_last_min")
    return {key.removeprefix("memory_"): stats.get(key) for key in keys}


def memory_columns(member: dict[str, Any]) -> tuple[str, str]:
    """The (memory, evictions/min) cells of ``member`` (plain text, not yet escaped)."""
    if "memory" not in member:
        return "-", "-"
    memory = member["memory"]
    if not isinstance(memory, dict):
        return "?", "?"
    used, budget = memory.get("used_bytes"), memory.get("budget_bytes")
    if not isinstance(used, int | float) or not isinstance(budget, int | float):
        return "?", "?"
    evictions = memory.get("evictions_last_min")
    return (
        f"{used / MIB:.0f} / {budget / MIB:.0f} MiB",
        str(evictions) if isinstance(evictions, int) else "?",
    )


def fetch_table(
    member: dict[str, Any], timeout: float, token: str | None = None
) -> dict[str, Any] | None:
    """``{"version", "lineage", "loaded"}`` of the table ``member`` holds, or None."""
    http = member.get("http")
    if not isinstance(http, str) or not http:
        return None
    try:
        routes = _get_json(f"http://{http}/v1/routes", timeout, MAX_ROUTES_BYTES, token)
    except (OSError, ValueError):  # unreachable, timed out, refused, not JSON
        return None
    if not isinstance(routes, dict):
        return None
    return {k: routes.get(k) for k in ("version", "lineage", "loaded")}


def _uptime(epoch_ms: int, now: float) -> str:
    if not epoch_ms:
        return "-"
    seconds = max(0, int(now - epoch_ms / 1000))
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{seconds:02d}s"


def _version(table: Any) -> int | None:
    if not isinstance(table, dict):
        return None
    version = table.get("version")
    return version if isinstance(version, int) and not isinstance(version, bool) else None


def table_columns(member: dict[str, Any], master: dict[str, Any] | None) -> tuple[str, str]:
    """The (table version, lag) cells of ``member`` (plain text, not yet escaped)."""
    role = member.get("role")
    if role not in TABLE_HOLDERS or "table" not in member:
        return "-", "-"
    version = _version(member["table"])
    if version is None:
        return "?", "-" if role == "master" else "?"
    if role == "master":
        return str(version), "-"
    master_table = master.get("table") if master is not None else None
    master_version = _version(master_table)
    if master_version is None:
        return str(version), "?"
    assert isinstance(master_table, dict)
    table = member["table"]
    if not table.get("loaded", True) or table.get("lineage") != master_table.get("lineage"):
        return str(version), "resync"
    # Asked in parallel, a replica may answer a moment after its master: never below 0.
    return str(version), str(max(0, master_version - version))


def render_cluster(view: dict[str, Any], now: float | None = None) -> Table:
    """A rich table of the members in rank order. Every value from the node is escaped: names
    and metadata come from other nodes and are not trusted to be free of markup."""
    now = time.time() if now is None else now
    title = f"cluster seen by {view.get('self')} - master: {view.get('master') or 'none'}"
    if not view.get("joined", True):
        title += f" (not joined: {view.get('join_reason')})"
    table = Table(title=escape(title))
    columns = (
        "node", "address", "role", "replica", "version", "uptime", "state", "table", "lag",
        "memory", "evict/min",
    )  # fmt: skip
    for column in columns:
        table.add_column(column, overflow="fold")
    members = [m for m in view.get("members", []) if isinstance(m, dict)]
    master = next((m for m in members if m.get("role") == "master"), None)
    for member in members:
        role = str(member.get("role") or "-")
        style = _ROLE_STYLE.get(role, "")
        table_version, lag = table_columns(member, master)
        memory, evictions = memory_columns(member)
        table.add_row(
            escape(str(member.get("name"))),
            escape(str(member.get("http") or "-")),
            f"[{style}]{escape(role)}[/]" if style else escape(role),
            escape(str(member.get("replica") or "-")),
            escape(str(member.get("version") or "-")),
            _uptime(int(member.get("epoch") or 0), now),
            escape(str(member.get("state"))),
            escape(table_version),
            escape(lag),
            escape(memory),
            escape(evictions),
        )
    return table


def render_functions(listing: dict[str, Any]) -> Table:
    """A rich table of the functions of one node's ``GET /v1/functions``: how each is isolated,
    its limits and its instances there. Every value is escaped (see ``render_cluster``)."""
    release = listing.get("release")
    release = release if isinstance(release, dict) else {}
    title = (
        f"functions on {listing.get('node')} - release {release.get('name')} "
        f"{release.get('version')}"
    )
    table = Table(title=escape(title))
    columns = (
        "function", "runtime", "isolation", "memory_mb", "cpu", "pids", "network", "instances"
    )  # fmt: skip
    for column in columns:
        table.add_column(column, overflow="fold")
    functions = listing.get("functions")
    for function in functions if isinstance(functions, list) else []:
        if not isinstance(function, dict):
            continue
        isolation = str(function.get("isolation") or "?")
        cpu = function.get("cpu")
        runtime = str(function.get("runtime") or "python")  # older nodes: Python only
        if function.get("protocol"):
            runtime = f"{runtime} ({function.get('protocol')})"
        table.add_row(
            escape(str(function.get("name"))),
            escape(runtime),
            _ISOLATION_SHOWN.get(isolation, escape(isolation)),
            escape(str(function.get("memory_mb", "?"))),
            "-" if cpu is None else escape(f"{cpu:g}" if isinstance(cpu, float) else str(cpu)),
            escape(str(function.get("pids", "?"))),
            escape(str(function.get("network", "?"))),
            escape(str(function.get("instances", "?"))),
        )
    return table
