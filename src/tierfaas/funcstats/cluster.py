"""The cluster's view of its functions, merged from every node's answers (pure).

``tierfaas functions`` merges each node's ``GET /v1/functions``; ``tierfaas describe`` each
node's ``GET /v1/functions/NAME``. Counts add up (a call counts on the node that ran it) and
so do rates; a p99 cannot be merged from per-node p99s, so the cluster's is the highest
node's (an upper bound of the true one, and the node to look at). The keys of what these
functions return are the ``--json`` output of the two commands: add keys, never rename.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# What a /v1/functions entry says about one node rather than the function's settings.
NODE_KEYS = frozenset(
    {"instances", "busy", "starting", "queued", "pinned", "keep_alive_window_s",
     "prewarm_window_s", "keep_alive_source", "keep_alive_reason", "idle_samples", "stats"}
)  # fmt: skip
# Shown apart from the settings by ``describe``.
_APART = frozenset({"name", "isolation", "secrets", "env"})
_SUMMED = ("calls", "errors", "cold_starts", "calls_per_s")


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _entries(listing: Any) -> list[dict[str, Any]]:
    functions = listing.get("functions") if isinstance(listing, dict) else None
    if not isinstance(functions, list):
        return []
    return [f for f in functions if isinstance(f, dict) and isinstance(f.get("name"), str)]


def _version(listing: Any) -> str | None:
    release = listing.get("release") if isinstance(listing, dict) else None
    version = release.get("version") if isinstance(release, dict) else None
    return str(version) if version is not None else None


def combine_stats(per_node: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """The cluster's stats of one function from each node's ``stats`` (and its
    ``instances``/``busy``): counts and rates summed, p99 the highest node's, the nodes with
    an instance as ``warm_nodes`` (sorted)."""
    total: dict[str, Any] = {key: 0 for key in _SUMMED}
    total["calls_per_s"] = 0.0
    p99: float | None = None
    instances = busy = 0
    warm = []
    for node, entry in per_node.items():
        stats = _dict(entry.get("stats"))
        for key in ("calls", "errors", "cold_starts"):
            total[key] += _int(stats.get(key))
        total["calls_per_s"] += _number(stats.get("calls_per_s")) or 0.0
        node_p99 = _number(stats.get("p99_ms"))
        if node_p99 is not None and (p99 is None or node_p99 > p99):
            p99 = node_p99
        count = _int(entry.get("instances"))
        instances += count
        busy += _int(entry.get("busy"))
        if count:
            warm.append(node)
    total["calls_per_s"] = round(total["calls_per_s"], 3)
    return {
        **total, "p99_ms": p99, "instances": instances, "busy": busy,
        "warm_nodes": sorted(warm),
    }  # fmt: skip


def merge_listings(listings: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One row per function, by name, from each node's ``GET /v1/functions`` (by node):
    ``{name, runtime, versions, nodes, warm_nodes, instances, busy, calls, errors,
    cold_starts, calls_per_s, p99_ms}``; ``versions``: the release versions of the nodes
    that have it (several during a rollout), ``nodes``: those nodes."""
    found: dict[str, dict[str, dict[str, Any]]] = {}
    versions: dict[str, set[str]] = {}
    runtimes: dict[str, str] = {}
    for node, listing in listings.items():
        version = _version(listing)
        for entry in _entries(listing):
            name = entry["name"]
            found.setdefault(name, {})[node] = entry
            if version is not None:
                versions.setdefault(name, set()).add(version)
            runtimes.setdefault(name, str(entry.get("runtime") or "python"))
    rows = []
    for name in sorted(found):
        per_node = found[name]
        rows.append(
            {
                "name": name,
                "runtime": runtimes[name],
                "versions": sorted(versions.get(name, ())),
                "nodes": sorted(per_node),
                **combine_stats(per_node),
            }
        )
    return rows


def merge_describe(function: str, answers: Mapping[str, Any]) -> dict[str, Any]:
    """``tierfaas describe``'s view of ``function`` from each node's ``GET
    /v1/functions/NAME`` answer (by node; only nodes that have it): its settings (as the
    first node in name order has them), isolation, env and secret names, versions, each
    node's version, isolation, instances and stats, the cluster's stats, and the recent
    errors of every node merged newest first, each with its node."""
    nodes = sorted(node for node, answer in answers.items() if _entry(answer) is not None)
    entries = {node: _entry(answers[node]) or {} for node in nodes}
    first = entries[nodes[0]] if nodes else {}
    settings = {k: v for k, v in first.items() if k not in NODE_KEYS and k not in _APART}
    errors = [{**error, "node": node} for node in nodes for error in _recent(answers[node])]
    errors.sort(key=lambda e: -_int(e.get("time_ms")))
    per_node = [
        {
            "node": node,
            "version": _version(answers[node]),
            "isolation": str(entries[node].get("isolation") or "?"),
            "instances": _int(entries[node].get("instances")),
            "busy": _int(entries[node].get("busy")),
            "stats": _dict(entries[node].get("stats")),
        }
        for node in nodes
    ]
    return {
        "name": function,
        "runtime": str(first.get("runtime") or "python"),
        "isolation": str(first.get("isolation") or "?"),
        "settings": settings,
        "env": _names(first.get("env")),
        "secrets": _names(first.get("secrets")),
        "versions": sorted({v for v in (p["version"] for p in per_node) if v is not None}),
        "nodes": per_node,
        "stats": combine_stats(entries),
        "recent_errors": errors,
    }


def _entry(answer: Any) -> dict[str, Any] | None:
    function = answer.get("function") if isinstance(answer, dict) else None
    return function if isinstance(function, dict) else None


def _recent(answer: Any) -> list[dict[str, Any]]:
    errors = answer.get("recent_errors") if isinstance(answer, dict) else None
    return [e for e in errors if isinstance(e, dict)] if isinstance(errors, list) else []


def _names(value: Any) -> list[str]:
    return [str(v) for v in value] if isinstance(value, list) else []
