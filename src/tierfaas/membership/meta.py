"""Node metadata on the gossip wire: what each node publishes about itself, and its checks.

The keys below are part of the protocol between nodes: add keys, never rename or reuse one
(an old node ignores keys it does not know). Any holder of the cluster key can forge a
member's metadata, so everything read from a peer is validated; a member whose metadata is
invalid stays a member, with no addresses, and the reason is returned for the log.
Kinship refuses metadata over 512 encoded bytes; we keep ours under ``META_BUDGET`` so that
later keys still fit.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from tierfaas.config import Address
from tierfaas.errors import ConfigError

# WARNING: only append to these keys; their names are part of the protocol.
KEY_VERSION = "v"  # release version, e.g. "2026.11.3+abc"
KEY_HTTP = "http"  # invocation/admin API, "host:port"
KEY_RPC = "rpc"  # gRPC control plane, "host:port"
KEY_SINCE = "since"  # Unix ms at which this run was demoted after being declared dead
KEY_GENERATION = "g"  # rollout generation this node was started in or handed (absent: 0)
KEY_COHORT = "c"  # how late this run joined (tierfaas.topology.next_cohort); COHORT_PENDING
# while it is joining; absent: a release before cohorts

COHORT_PENDING = "?"
"""The value of ``KEY_COHORT`` a run publishes until it has seen the cluster it joins."""

META_BUDGET = 256
"""Most bytes our metadata may take encoded (kinship's own limit is 512)."""

_VERSION = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,63}")
_MS = re.compile(r"[1-9][0-9]{0,15}")
_GEN = re.compile(r"0|[1-9][0-9]{0,8}")
_COHORT = re.compile(r"0|[1-9][0-9]{0,14}")


@dataclass(frozen=True, slots=True)
class NodeMeta:
    """Metadata of one member after validation. ``problems`` is empty when all was valid."""

    http: Address | None = None
    rpc: Address | None = None
    version: str = ""
    since: int | None = None
    problems: tuple[str, ...] = field(default=())
    generation: int = 0
    cohort: int | None = None
    cohort_pending: bool = False


def encoded_size(meta: Mapping[str, str]) -> int:
    """An upper bound of the encoded size (kinship adds about 2 bytes per key and value)."""
    return sum(len(k.encode()) + len(v.encode()) + 4 for k, v in meta.items())


def encode_meta(
    *,
    version: str,
    http: Address | None,
    rpc: Address | None,
    since: int | None = None,
    generation: int = 0,
    cohort: int | None = None,
) -> dict[str, str]:
    """The metadata this node publishes; ``cohort`` None publishes it as pending. Raises
    ``ConfigError`` for values a peer would refuse."""
    meta: dict[str, str] = {}
    if version:
        if not _VERSION.fullmatch(version):
            raise ConfigError("version", f"{version!r}: use 1-64 of [A-Za-z0-9._+-]")
        meta[KEY_VERSION] = version
    if http is not None:
        meta[KEY_HTTP] = str(http)
    if rpc is not None:
        meta[KEY_RPC] = str(rpc)
    if since is not None:
        meta[KEY_SINCE] = str(since)
    if generation:
        meta[KEY_GENERATION] = str(generation)
    meta[KEY_COHORT] = COHORT_PENDING if cohort is None else encode_cohort(cohort)
    check_size(meta)
    return meta


def encode_cohort(cohort: int) -> str:
    """``cohort`` as published. Raises ``ConfigError`` for one a peer would refuse."""
    text = str(cohort)
    if not _COHORT.fullmatch(text):
        raise ConfigError("cohort", f"{cohort} is not an integer from 0 to 15 digits")
    return text


def check_size(meta: Mapping[str, str]) -> None:
    """Raises ``ConfigError`` when ``meta`` would not fit in ``META_BUDGET`` bytes."""
    size = encoded_size(meta)
    if size > META_BUDGET:
        raise ConfigError("meta", f"{size} bytes encoded, more than the {META_BUDGET} allowed")


def _address(text: str, key: str, problems: list[str]) -> Address | None:
    try:
        addr = Address.parse(text, key)
    except ConfigError as e:
        problems.append(f"{key}: {e.reason}")
        return None
    if addr.port == 0 or addr.host in ("0.0.0.0", "::"):
        problems.append(f"{key}: {text!r} is not a reachable address")
        return None
    return addr


def parse_meta(meta: Mapping[str, str]) -> NodeMeta:
    """Validates metadata read from a peer. Never raises: bad values become None or ""."""
    problems: list[str] = []
    if encoded_size(meta) > 512:
        return NodeMeta(problems=("metadata larger than 512 bytes",), cohort_pending=True)
    http = rpc = None
    version = ""
    since = None
    generation = 0
    cohort: int | None = None
    pending = False
    if (text := meta.get(KEY_HTTP)) is not None:
        http = _address(text, KEY_HTTP, problems)
    if (text := meta.get(KEY_RPC)) is not None:
        rpc = _address(text, KEY_RPC, problems)
    if (text := meta.get(KEY_VERSION)) is not None:
        if _VERSION.fullmatch(text):
            version = text
        else:
            problems.append(f"{KEY_VERSION}: {text[:80]!r} is not a release version")
    if (text := meta.get(KEY_SINCE)) is not None:
        if _MS.fullmatch(text):
            since = int(text)
        else:
            problems.append(f"{KEY_SINCE}: {text[:80]!r} is not a time in ms")
    if (text := meta.get(KEY_GENERATION)) is not None:
        if _GEN.fullmatch(text):
            generation = int(text)
        else:
            problems.append(f"{KEY_GENERATION}: {text[:80]!r} is not a generation")
    if (text := meta.get(KEY_COHORT)) is not None:
        if text == COHORT_PENDING:
            pending = True
        elif _COHORT.fullmatch(text):
            cohort = int(text)
        else:
            # Ranked as still joining: after every run with a valid cohort.
            pending = True
            problems.append(f"{KEY_COHORT}: {text[:80]!r} is not a cohort")
    if problems:
        # One forged field makes the whole record suspect: route nothing to it.
        http = rpc = None
    return NodeMeta(http, rpc, version, since, tuple(problems), generation, cohort, pending)
