"""Call ids: ``<origin>~<holder>~<16 hex>``. Node names are ``[A-Za-z0-9._-]``, so ``~``
separates them, and any node that is asked about an id knows which two nodes keep it: the
origin (which accepted and runs it) and the holder of its second copy. A standalone node is
its own holder.

The 16 hex digits are time-ordered, like a UUIDv7 with a counter (RFC 9562, method 1): 40
bits of the accept's Unix time in milliseconds, then a 24-bit counter of this process that
starts at a random value. Ordered ids land at the end of the stores' index on ``call_id``,
so a group commit writes one or two index pages instead of one random page per call (an
accept's WAL bytes on both nodes, measured in benchmarks/call_store.py). Two ids of one
origin are equal only if its clock stepped back into the same millisecond *and* the counter
came round to the same value (16.7 million ids later, or a restart that drew it), where
random ids relied on 64 random bits."""

from __future__ import annotations

import itertools
import os
import re
import time
from collections.abc import Callable
from typing import NamedTuple

from tierfaas.names import is_valid_name

_RANDOM = re.compile(r"[0-9a-f]{16}")
_NAME = r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}"  # names.NAME_RE
_ID = re.compile(f"{_NAME}~{_NAME}~[0-9a-f]{{16}}")
MAX_ID_CHARS = 64 + 1 + 64 + 1 + 16


class CallId(NamedTuple):
    origin: str
    holder: str
    random: str


# Ids must be unique, not secret (reading a call needs the admin token). The counter's start
# is drawn once from the OS: the accept path makes no getrandom() syscall, which under load
# was a place where the event loop waited for the GIL (18 % of its samples in py-spy).
_SEQUENCE = itertools.count(int.from_bytes(os.urandom(3), "big"))
_MS_MASK = (1 << 40) - 1
_SEQ_MASK = (1 << 24) - 1


def new_random(
    now: Callable[[], float] = time.time, sequence: Callable[[], int] = _SEQUENCE.__next__
) -> str:
    """A fresh last part of an id (16 hex digits): the time in ms, then the counter."""
    return f"{int(now() * 1000) & _MS_MASK:010x}{sequence() & _SEQ_MASK:06x}"


def new_id(origin: str, holder: str, *, random_part: str | None = None) -> str:
    """A fresh id for a call accepted by ``origin`` and copied to ``holder`` (with
    ``random_part``: the one picked before the holder, which it ranks the holders by)."""
    return f"{origin}~{holder}~{random_part or new_random()}"


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
