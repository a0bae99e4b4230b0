"""Terms: the fencing token every side effect of a deploying master carries (issue 17.3).

Two nodes may both believe they are master for a while: a master cut off from the others by
a partition keeps its role in its own view until it declares them dead, while the majority
elects a master of its own. Both run a rollout controller. A *term* orders them: it is
``(generation, number)``, the rollout generation (a handover raises it, so the new release's
master outranks the old one) and a counter the registry hands out (``claim_term``), one
higher at every claim. A master claims a term when it starts acting as the deploying master,
and only while it reaches a majority of the membership it knew (``quorum.MajorityGuard``), so
a new master on the majority side always holds a newer term than a cut-off old one.

Every store a master changes keeps the newest term it has seen (``TermRecord``): the
registry's status file and term file, the local provider's folder. A change that carries an
older term is refused with ``FencedError``, whoever makes it and whatever its own view says.
``lineage`` (the master's routing-table lineage) and ``master`` only name the holder in
status and logs; they play no part in the order.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any


class FencedError(Exception):
    """A side effect was refused: whoever keeps the resource has seen a newer term."""


@dataclass(frozen=True, slots=True)
class Term:
    generation: int
    number: int
    master: str = ""
    lineage: str = ""

    @property
    def key(self) -> tuple[int, int]:
        """The order of terms: generation first, then the claim counter."""
        return (self.generation, self.number)

    def older_than(self, other: Term | None) -> bool:
        return other is not None and self.key < other.key

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @staticmethod
    def from_json(data: Any) -> Term | None:
        """The term in ``data`` (as ``to_json`` wrote it); None if absent or damaged."""
        if not isinstance(data, dict):
            return None
        try:
            generation, number = int(data["generation"]), int(data["number"])
        except (KeyError, TypeError, ValueError):
            return None
        return Term(generation, number, str(data.get("master", "")), str(data.get("lineage", "")))

    def __str__(self) -> str:
        return f"term {self.generation}.{self.number} ({self.master or '?'})"


def fence(term: Term | None, newest: Term | None, what: str) -> None:
    """Raises ``FencedError`` when ``term`` is older than ``newest``. A call without a term
    (an operator's command, ``tierfaas up``) is not fenced."""
    if term is not None and newest is not None and term.older_than(newest):
        raise FencedError(f"{what} refused: {term} is older than {newest}")


class SeenTerms:
    """The newest term a node has seen outside a store: the terms of the handovers it got,
    the terms its own rollout controller claimed or read. In memory: after a restart the
    registry (when the node follows one) still holds the newest."""

    def __init__(self) -> None:
        self.newest: Term | None = None

    def see(self, term: Term | None) -> None:
        if term is not None and (self.newest is None or self.newest.key < term.key):
            self.newest = term


class TermRecord:
    """The newest term a store has seen, in one JSON file. Not locked: the store calls it
    under the lock that also covers the change it fences."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def read(self) -> Term | None:
        try:
            return Term.from_json(json.loads(self.path.read_text()))
        except (OSError, ValueError):
            return None

    def check(self, term: Term | None, what: str) -> None:
        """Refuses ``term`` if older than the recorded one; records it if newer."""
        newest = self.read()
        fence(term, newest, what)
        if term is not None and (newest is None or newest.key < term.key):
            self.write(term)

    def write(self, term: Term) -> None:
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        tmp.write_text(json.dumps(term.to_json()) + "\n")
        os.replace(tmp, self.path)
