"""The headers nodes add when they forward a request, and how a receiver trusts them.

A forwarding node adds ``X-Tierfaas-Hops`` (hops so far), ``X-Tierfaas-Path`` (the nodes the
request went through, comma-separated), ``X-Tierfaas-Deadline`` (Unix time: routing time
counts against the function's timeout) and ``X-Tierfaas-Forward``, an HMAC-SHA256 over all of
them, the request id and the function, keyed by a sub-key of the cluster key, with a time
stamp. A receiver believes the hop headers only when the signature checks and the stamp is
recent; otherwise the request is treated as coming from outside (hops 0, empty path), so a
client forging ``X-Tierfaas-Hops`` or a path cannot make nodes bounce a request: every node
adds itself to the path and never forwards to a node already on it.

WARNING: header names are part of the protocol between nodes: only add new ones.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Sequence
from dataclasses import dataclass

HOPS = "x-tierfaas-hops"
PATH = "x-tierfaas-path"
DEADLINE = "x-tierfaas-deadline"
START = "x-tierfaas-start-ok"  # "1": the target may start an instance (the function's home)
SIGNATURE = "x-tierfaas-forward"
REJECT = "x-tierfaas-reject"  # answer of a target that did not start the call: not_warm | busy
LOAD = "x-tierfaas-load"  # the target's busy share of its instances of the function, 0..1
ROUTE = "x-tierfaas-route"  # local-warm | forwarded-warm | local-cold
SERVED_BY = "x-tierfaas-served-by"

INTERNAL = frozenset({HOPS, PATH, DEADLINE, SIGNATURE, START})
MAX_SKEW_S = 30.0
MAX_PATH = 8


@dataclass(frozen=True, slots=True)
class Hop:
    """What a receiver knows of a request's route so far (trusted, or empty)."""

    hops: int = 0
    path: tuple[str, ...] = ()
    deadline: float | None = None
    start: bool = False  # the sender chose this node as the function's home: it may start it

    @property
    def forwarded(self) -> bool:
        return self.hops > 0


def _mac(key: bytes, request_id: str, function: str, hop: Hop, stamp: str) -> str:
    deadline = "" if hop.deadline is None else f"{hop.deadline:.3f}"
    fields = [request_id, function, str(hop.hops), ",".join(hop.path), deadline, stamp]
    if hop.start:
        fields.append("start")
    message = "\n".join(fields)
    return hmac.new(key, message.encode(), hashlib.sha256).hexdigest()


def sign(
    key: bytes, request_id: str, function: str, hop: Hop, now: float | None = None
) -> dict[str, str]:
    """The headers to add to a forwarded request."""
    stamp = f"{time.time() if now is None else now:.3f}"
    headers = {HOPS: str(hop.hops), PATH: ",".join(hop.path)}
    if hop.deadline is not None:
        headers[DEADLINE] = f"{hop.deadline:.3f}"
    if hop.start:
        headers[START] = "1"
    headers[SIGNATURE] = f"{stamp}:{_mac(key, request_id, function, hop, stamp)}"
    return headers


def verify(
    key: bytes,
    request_id: str,
    function: str,
    headers: dict[str, str],
    now: float | None = None,
) -> Hop:
    """The trusted hop state of a request, or ``Hop()`` when anything does not check out."""
    signature = headers.get(SIGNATURE)
    if not signature:
        return Hop()
    try:
        stamp, mac = signature.split(":", 1)
        hops = int(headers.get(HOPS, ""))
        path = tuple(p for p in headers.get(PATH, "").split(",") if p)
        deadline_text = headers.get(DEADLINE)
        deadline = None if deadline_text is None else float(deadline_text)
        sent = float(stamp)
    except ValueError:
        return Hop()
    current = time.time() if now is None else now
    if not 0 < hops <= MAX_PATH or len(path) > MAX_PATH or abs(current - sent) > MAX_SKEW_S:
        return Hop()
    hop = Hop(hops, path, deadline, headers.get(START) == "1")
    if not hmac.compare_digest(mac, _mac(key, request_id, function, hop, stamp)):
        return Hop()
    return hop


def next_hop(current: Hop, self_name: str, deadline: float, start: bool = False) -> Hop:
    """The hop state a node sends when it forwards ``current`` onward."""
    path: Sequence[str] = (*current.path, self_name)
    return Hop(current.hops + 1, tuple(path)[-MAX_PATH:], deadline, start)
