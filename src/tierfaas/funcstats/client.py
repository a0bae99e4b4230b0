"""``tierfaas functions`` and ``describe``: ask one node for the members (``/v1/cluster``),
then every live member for the same path at once, and keep each one's answer. Standard
library only (through ``calls.render.request``): the command line starts fast."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from tierfaas.calls.render import request
from tierfaas.funclogs.client import Target, targets


@dataclass
class Gathered:
    """Each node's JSON answer (by node name); the nodes that answered 404
    ``unknown_function`` (not in their release), with their error line; the nodes that did
    not answer (or not with JSON), with why."""

    answers: dict[str, Any] = field(default_factory=dict)
    not_found: dict[str, str] = field(default_factory=dict)
    unanswered: dict[str, str] = field(default_factory=dict)


def gather(url: str, path: str, token: str | None, timeout: float = 10.0) -> Gathered:
    """``GET path`` of every live member the node at ``url`` knows (``url`` alone for a
    standalone node). Raises ``funclogs.client.LogsError`` when ``url`` does not answer."""
    found = targets(url, token, None, timeout)

    def one(target: Target) -> tuple[str, str, Any]:
        try:
            answer = request(target.url, path, token=token, timeout=timeout)
        except OSError as exc:
            return "unanswered", f"cannot reach {target.url}: {getattr(exc, 'reason', exc)}", None
        if answer.status == 404 and _code(answer.body) == "unknown_function":
            return "not_found", answer.error_line(), None
        if answer.status != 200:
            return "unanswered", answer.error_line(), None
        try:
            return "answer", "", answer.json()
        except ValueError:
            return "unanswered", f"{answer.status} with no JSON: {answer.body[:200]!r}", None

    gathered = Gathered()
    with ThreadPoolExecutor(max_workers=min(16, max(1, len(found)))) as pool:
        for target, (kind, reason, value) in zip(found, pool.map(one, found), strict=True):
            if kind == "answer":
                gathered.answers[target.node] = value
            elif kind == "not_found":
                gathered.not_found[target.node] = reason
            else:
                gathered.unanswered[target.node] = reason
    return gathered


def _code(body: bytes) -> str | None:
    try:
        detail = json.loads(body)
    except ValueError:
        return None
    return detail.get("error") if isinstance(detail, dict) else None
