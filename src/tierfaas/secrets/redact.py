"""Masking secret values in text that instances produce, where it enters the node.

A node knows every value it gave its functions. Whatever an instance writes that the node
passes on (its output lines, before the node's log and the function logs keep them; a
handler's error message; an exec program's stderr tail in a 502) first goes through
``Redactor.text``, which replaces each value with ``***``, as CI systems mask their secrets.

What counts as a value: each delivered version as text (a value that is not UTF-8 is matched
by its decoding with replacement characters, as output lines are decoded), without the
whitespace around it too (``echo pw | tierfaas secret create`` stores ``pw`` and a newline,
and a printed line loses its newline), and, for a value of several lines, each of its lines
of at least ``MIN_LINE_CHARS`` (output is cut into lines, so a printed PEM key arrives line
by line). The longest pattern matches first, so a value containing another is masked whole.
Values the node delivered earlier stay masked (a running instance may still hold one).

Limits, said plainly: a value split by the node's line cut (``line_bytes``) or encoded by the
function (base64, reversed) is not recognised.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

MASK = "***"
MIN_LINE_CHARS = 8
MAX_REMEMBERED = 4096
"""Distinct patterns kept at most (the newest win): a bound on the node's memory and on the
cost of each masked line, far above what 64 secrets per function with a few versions need."""


def patterns_of(value: bytes) -> set[str]:
    """The texts that stand for ``value`` in an instance's output (see the module doc)."""
    text = value.decode("utf-8", "replace")
    found = {text, text.strip()}
    lines = text.splitlines()
    if len(lines) > 1:
        found.update(line.strip() for line in lines if len(line.strip()) >= MIN_LINE_CHARS)
    found.discard("")
    return found


class Redactor:
    """Replaces every known secret value in a text with ``***``. ``learn`` adds values; a
    value is never forgotten while the node runs (bounded by ``MAX_REMEMBERED``)."""

    def __init__(self) -> None:
        self._patterns: dict[str, None] = {}  # insertion-ordered: the oldest go first
        self._regex: re.Pattern[str] | None = None

    @property
    def active(self) -> bool:
        return self._regex is not None

    def learn(self, values: Iterable[bytes]) -> None:
        added = False
        for value in values:
            for pattern in patterns_of(value):
                if pattern not in self._patterns:
                    self._patterns[pattern] = None
                    added = True
        if not added:
            return
        while len(self._patterns) > MAX_REMEMBERED:
            del self._patterns[next(iter(self._patterns))]
        ordered = sorted(self._patterns, key=len, reverse=True)
        self._regex = re.compile("|".join(re.escape(p) for p in ordered))

    def text(self, text: str) -> str:
        """``text`` with every known value replaced by ``***``."""
        regex = self._regex
        if regex is None or not text:
            return text
        return regex.sub(MASK, text)

    __call__ = text
