"""Every node's lines of a function as one list in time order. Pure.

Each node answers its lines oldest first, so the merge is a k-way merge of sorted lists; two
lines of the same time keep their node's order. Times are the nodes' wall clocks: the order
across nodes is as good as their clocks agree (NTP keeps them within milliseconds)."""

from __future__ import annotations

import heapq
from collections.abc import Iterable

from tierfaas.funclogs.line import LogLine


def merge(per_node: Iterable[list[LogLine]], limit: int | None = None) -> list[LogLine]:
    """The lines of every list in time order; the last ``limit`` of them if given."""
    merged = list(heapq.merge(*per_node, key=lambda line: line.time))
    return merged[-limit:] if limit is not None else merged


def render(line: LogLine, *, show_node: bool = True) -> str:
    """One line for a terminal: ``TIME NODE instance REQUEST stream: text``, control
    characters escaped so a function cannot move the cursor or fake a line of its own."""
    request = line.request or "-"
    node = f"{line.node} " if show_node else ""
    text = line.text.translate(_UNPRINTABLE)
    return f"{line.to_json()['time_iso']} {node}#{line.instance} {request} {line.stream}: {text}"


_UNPRINTABLE = {
    code: f"\\x{code:02x}" for code in (*range(0x20), 0x7F, *range(0x80, 0xA0)) if code != 0x09
}
