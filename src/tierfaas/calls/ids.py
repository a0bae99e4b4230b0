"""Call ids: ``<origin>~<holder>~<16 hex>``. Node names are ``[A-Za-z0-9._-]``, so ``~``
separates them, and any node that is asked about an id knows which two nodes keep it: the
origin (which accepted and runs it) and the holder of its second copy. A standalone node is
its own holder."""

from __future__ import annotations

import os
import random as _random
import re
from collections.abc import Callable
from typing import NamedTuple

from tierfaas.names import is_valid_name

_RANDOM = re.compile(r"[0-9a-f]{16}")
_NAME = r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}"  # names.NAME_RE
_ID = re.compile(f"{_NAME}~{_NAME}~[0-9a-f]{{16}}")
MAX_ID_CHARS = 64 + 1 + 64 + 1 + 16
# Ids must be unique, not secret (reading a call needs the admin token): a generator seeded
# once from the OS is enough, and spares the accept path a getrandom() syscall, which under
# load was a place where the event loop waited for the GIL (18 % of its samples in py-spy).
_RNG = _random.Random(os.urandom(32))


def _bytes(n: int) -> bytes:
    return _RNG.getrandbits(8 * n).to_bytes(n, "big")


class CallId(NamedTuple):
    origin: str
    holder: str
    random: str


def new_random(random: Callable[[int], bytes] = _bytes) -> str:
    """A fresh random part of an id (16 hex digits)."""
    return random(8).hex()


def new_id(
    origin: str,
    holder: str,
    random: Callable[[int], bytes] = _bytes,
    *,
    random_part: str | None = None,
) -> str:
    """A fresh id for a call accepted by ``origin`` and copied to ``holder`` (with
    ``random_part``: the one picked before the holder, which it ranks the holders by)."""
    return f"{origin}~{holder}~{random_part or random(8).hex()}"


def parse(call_id: str) -> CallId:
    """The parts of ``call_id``; raises ``ValueError`` for a string that is not one."""
    if len(call_id) > MAX_ID_CHARS:
        raise ValueError("a call id has at most 146 characters")
    parts = call_id.split("~")
    if len(parts) != 3:
        raise ValueError("a call id is ORIGIN~HOLDER~RANDOM")
    origin, holder, random = parts
    if not (is_valid_name(origin) and is_valid_name(holder) and _RANDOM.fullmatch(random)):
        raise ValueError("a call id is ORIGIN~HOLDER~RANDOM (node names, then 16 hex digits)")
    return CallId(origin, holder, random)


def is_valid(call_id: str) -> bool:
    """Whether ``call_id`` is a call id (``parse`` would accept it), in one match."""
    return _ID.fullmatch(call_id) is not None


def nodes(call_id: str) -> tuple[str, str]:
    """The origin and holder of an id this node made or took in (already valid: no
    checks, for the path every call takes)."""
    origin, holder, _ = call_id.split("~", 2)
    return origin, holder


def request_id(call_id: str, attempt: int) -> str:
    """The request id of one attempt (``X-Request-Id`` allows no ``~``, and 64 characters)."""
    return f"c{call_id.rsplit('~', 1)[-1]}.{attempt}"
