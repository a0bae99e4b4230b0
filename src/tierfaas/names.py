"""What a valid function or node name is: short, ASCII, safe in a URL path, a log line and HTML."""

from __future__ import annotations

import re

NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def is_valid_name(name: str) -> bool:
    """1-64 ASCII letters, digits, '.', '_' or '-', starting with a letter or digit."""
    return NAME_RE.fullmatch(name) is not None
