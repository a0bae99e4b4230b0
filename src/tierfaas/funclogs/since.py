"""The ``since`` of ``GET /v1/logs`` and ``tierfaas logs --since``: a duration back from now
(``30s``, ``5m``, ``2h``, ``1d``, ``1h30m``) or an RFC 3339 time (``2026-12-03T14:00:00Z``, with
``Z`` or an offset). Pure: ``now`` is given."""

from __future__ import annotations

import re
from datetime import datetime

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_DURATION = re.compile(r"(?:\d+(?:\.\d+)?(?:ms|s|m|h|d))+")
_RFC3339 = re.compile(
    r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(?:\.\d{1,9})?(?:[Zz]|[+-]\d{2}:\d{2})"
)
MAX_TEXT = 64


def parse_since(text: str, now: float) -> float:
    """The Unix time ``text`` names, relative to ``now`` for a duration. ``ValueError`` with
    a message fit for the caller when it is neither a duration nor an RFC 3339 time with its
    offset (a time without one would depend on the node's time zone)."""
    if len(text) > MAX_TEXT:
        raise ValueError(f"since is {len(text)} characters; at most {MAX_TEXT}")
    if _DURATION.fullmatch(text):
        seconds = sum(float(n) * _UNITS[unit] for n, unit in _PART.findall(text))
        return now - seconds
    if _RFC3339.fullmatch(text):
        # fromisoformat takes at most 6 fractional digits and no lower-case t or z.
        head, dot, rest = text.upper().replace(" ", "T").partition(".")
        iso = head
        if dot:
            digits = re.match(r"\d+", rest)
            assert digits is not None
            iso = f"{head}.{digits.group()[:6].ljust(6, '0')}{rest[digits.end() :]}"
        try:
            return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()
        except ValueError:
            pass  # a well-formed time that does not exist (month 13): said below
    raise ValueError(
        f"since {text[:MAX_TEXT]!r} is neither a duration (30s, 5m, 2h, 1d) nor an RFC 3339 "
        "time with its offset (2026-12-03T14:00:00Z)"
    )
