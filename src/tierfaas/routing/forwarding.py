"""The headers nodes add when they forward a request, and how a receiver trusts them.

A forwarding node adds ``X-Tierfaas-Hops`` (hops so far), ``X-Tierfaas-Path`` (the nodes the
request went through, comma-separated), ``X-Tierfaas-Remaining-Ms`` (the milliseconds the call
had left when it was sent: routing time counts against the function's timeout),
``X-Tierfaas-Start-Ok`` (the target may start an instance) and ``X-Tierfaas-Forward``, an
HMAC-SHA256 over all of them, the request id and the function, keyed by a sub-key of the
cluster key.

Theory of operation: the receiver fails closed, and no clock is shared.

- A request that carries *any* hop header is a forwarded one: it is run (never routed again)
  if its signature checks, and refused with 403 ``hop_refused`` otherwise: unsigned,
  malformed, forged, stale or replayed. It is never taken for a fresh call from outside, so
  a client cannot make a node trust, or ignore, a route it made up. A request with no hop
  header is an ordinary outside call.
- Deadlines travel as remaining time; the receiver counts it from the request's arrival on
  its own monotonic clock. Nothing here reads a wall clock, so a node whose clock is off by
  minutes forwards and receives like any other.
- Freshness comes from the receiver, as HTTP Digest's server nonces do: each node has a
  random *hop token* that it replaces every ``ROTATE_S`` seconds of its own monotonic clock
  and hands to its peers in every answer to a forwarded call (``X-Tierfaas-Hop-Token``). A
  signature covers the receiver's token, so it is good only at that node, and only while the
  token is its current or previous one (at most ``2 * ROTATE_S``). A sender with no token or
  an outdated one is refused with ``X-Tierfaas-Reject: hop_stale`` and the current token
  (nothing ran), learns it and signs its retry with it: one extra round trip per pair of
  nodes after a restart or ``ROTATE_S`` of silence.
- Replay: each signature also names the sender's run (random per process) and a sequence
  number it never reuses; the receiver keeps, per token and sender run, a window of the last
  ``WINDOW`` numbers seen, and refuses a number seen before or older than the window.

WARNING: header names are part of the protocol between nodes: only add new ones.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import re
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from tierfaas.clock import Clock

HOPS = "x-tierfaas-hops"
PATH = "x-tierfaas-path"
DEADLINE = "x-tierfaas-deadline"  # retired (absolute Unix time); refused like a forgery
REMAINING = "x-tierfaas-remaining-ms"
START = "x-tierfaas-start-ok"  # "1": the target may start an instance (the function's home)
SIGNATURE = "x-tierfaas-forward"
REJECT = "x-tierfaas-reject"  # answer of a target that did not start the call: not_warm | busy
LOAD = "x-tierfaas-load"  # the target's busy share of its instances of the function, 0..1
ROUTE = "x-tierfaas-route"  # local-warm | forwarded-warm | local-cold
SERVED_BY = "x-tierfaas-served-by"
TOKEN = "x-tierfaas-hop-token"  # answer header: the receiver's current hop token

# Any of these on a request makes it a forwarded one, to be verified or refused.
INTERNAL = frozenset({HOPS, PATH, DEADLINE, REMAINING, SIGNATURE, START})
MAX_PATH = 8
# How long a node's hop token is its current one (seconds of its monotonic clock); a token
# is accepted for up to twice this. Shorter bounds how late a signed request may arrive and
# still be run; longer spares idle pairs of nodes the extra round trip that fetches a token.
ROTATE_S = 30.0
# How many of a sender run's sequence numbers the receiver remembers (a bitmap of this many
# bits per sender run and token, 8 KiB). Numbers are per sender run, over every target, so at
# 10 000 forwards/s a request may be overtaken for 6 s and still be taken.
WINDOW = 1 << 16
MAX_REMAINING_MS = 24 * 3600 * 1000
# Bounds the receiver's replay state for one token (only key holders can add senders).
MAX_SENDERS = 4096
# The REJECT values of a refusal (``errors.HopRefused.reject``): retry once with the TOKEN
# answered, or try elsewhere.
STALE = "hop_stale"
REFUSED = "hop_refused"

_TOKEN_RE = re.compile(r"[0-9a-f]{16}")
_WINDOW_MASK = (1 << WINDOW) - 1


@dataclass(frozen=True, slots=True)
class Hop:
    """What a receiver knows of a request's route so far (verified, or empty: from outside)."""

    hops: int = 0
    path: tuple[str, ...] = ()
    remaining_s: float | None = None  # time the call had left when it was sent
    start: bool = False  # the sender chose this node as the function's home: it may start it

    @property
    def forwarded(self) -> bool:
        return self.hops > 0


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why hop headers were refused: ``reason`` is unsigned, malformed, forged, stale or
    replayed; ``message`` says it to a person."""

    reason: str
    message: str


def next_hop(current: Hop, self_name: str, remaining_s: float, start: bool = False) -> Hop:
    """The hop state a node sends when it forwards ``current`` onward."""
    path = (*current.path, self_name)[-MAX_PATH:]
    return Hop(current.hops + 1, path, remaining_s, start)


def _remaining_ms(hop: Hop) -> str:
    if hop.remaining_s is None:
        return ""
    return str(min(MAX_REMAINING_MS, max(1, round(hop.remaining_s * 1000))))


def _mac(
    key: bytes,
    request_id: str,
    function: str,
    hop_fields: tuple[str, str, str, bool],
    token: str,
    run: str,
    seq: int,
) -> str:
    hops, path, remaining_ms, start = hop_fields
    fields = ["tierfaas-hop-v2", token, run, str(seq), request_id, function, hops, path]
    fields += [remaining_ms, "start" if start else ""]
    return hmac.new(key, "\n".join(fields).encode(), hashlib.sha256).hexdigest()


class Signer:
    """The sending side: signs each forward for its target with the target's latest token.

    ``run`` names this process among the senders a receiver tracks; sequence numbers are
    never reused within a run."""

    def __init__(self, key: bytes, run: str | None = None) -> None:
        self.key = key
        self.run = run if run is not None else secrets.token_hex(8)
        self.tokens: dict[str, str] = {}  # node -> its latest hop token
        self._seq = itertools.count()

    def sign(self, node: str, request_id: str, function: str, hop: Hop) -> dict[str, str]:
        """The headers to add to a request forwarded to ``node``. With no token known for it
        yet, the signature is bound to none and ``node`` answers with its token (stale)."""
        token = self.tokens.get(node, "")
        seq = next(self._seq)
        remaining = _remaining_ms(hop)
        path = ",".join(hop.path)
        mac = _mac(
            self.key, request_id, function, (str(hop.hops), path, remaining, hop.start),
            token, self.run, seq,
        )  # fmt: skip
        headers = {HOPS: str(hop.hops), PATH: path, SIGNATURE: f"{token}:{self.run}:{seq}:{mac}"}
        if remaining:
            headers[REMAINING] = remaining
        if hop.start:
            headers[START] = "1"
        return headers

    def learn(self, node: str, token: str | None) -> None:
        """Keeps ``token`` as ``node``'s, if it is one (it came in ``node``'s answer)."""
        if token is not None and _TOKEN_RE.fullmatch(token):
            self.tokens[node] = token

    def forget(self, node: str) -> None:
        self.tokens.pop(node, None)


@dataclass
class _Window:
    """The sequence numbers seen from one sender run under one token: the highest, and a
    bitmap of the ``WINDOW`` below it (bit ``i``: ``highest - i`` was seen)."""

    highest: int = -1
    seen: int = 0

    def admit(self, seq: int) -> bool:
        """True the first time ``seq`` comes (and records it); false for a repeat or a number
        too far behind to tell."""
        if seq > self.highest:
            shift = seq - self.highest
            self.seen = ((self.seen << shift) | 1) & _WINDOW_MASK if shift < WINDOW else 1
            self.highest = seq
            return True
        behind = self.highest - seq
        if behind >= WINDOW or self.seen >> behind & 1:
            return False
        self.seen |= 1 << behind
        return True


@dataclass
class _Epoch:
    token: str
    senders: dict[str, _Window] = field(default_factory=dict)


class Verifier:
    """The receiving side: checks a request's hop headers against this node's tokens.

    Every decision reads only ``clock`` (this node's monotonic seconds), the key and what
    earlier requests left in the replay windows."""

    def __init__(
        self,
        key: bytes,
        clock: Clock,
        *,
        rotate_s: float = ROTATE_S,
        new_token: Callable[[], str] = lambda: secrets.token_hex(8),
    ) -> None:
        self.key = key
        self.clock = clock
        self.rotate_s = rotate_s
        self.new_token = new_token
        self.current = _Epoch(new_token())
        self.previous: _Epoch | None = None
        self.since = clock()

    @property
    def token(self) -> str:
        """This node's current hop token (sent in every answer to a forwarded call)."""
        self._rotate()
        return self.current.token

    def _rotate(self) -> None:
        periods = int((self.clock() - self.since) // self.rotate_s)
        if periods <= 0:
            return
        # Two periods on, the last current token is older than a token may be: drop it too.
        self.previous = self.current if periods == 1 else None
        self.current = _Epoch(self.new_token())
        self.since += periods * self.rotate_s

    def check(self, request_id: str, function: str, headers: Mapping[str, str]) -> Hop | Refusal:
        """The verified hop state of a request that carries hop headers, or why it is refused.
        ``headers``: the request's, lower-case names."""
        signature = headers.get(SIGNATURE)
        if not signature:
            return Refusal("unsigned", "hop headers without a signature; clients must not send "
                           "X-Tierfaas-* hop headers")  # fmt: skip
        if DEADLINE in headers:
            return Refusal("malformed", "X-Tierfaas-Deadline is retired (deadlines travel as "
                           "X-Tierfaas-Remaining-Ms)")  # fmt: skip
        parsed = _parse(signature, headers)
        if isinstance(parsed, Refusal):
            return parsed
        token, run, seq, mac, hop_fields, hop = parsed
        expected = _mac(self.key, request_id, function, hop_fields, token, run, seq)
        if not hmac.compare_digest(mac, expected):
            return Refusal("forged", "the hop signature does not match the request")
        self._rotate()
        if token == self.current.token:
            epoch = self.current
        elif self.previous is not None and token == self.previous.token:
            epoch = self.previous
        else:
            return Refusal("stale", "the hop signature is for an unknown or expired hop token "
                           "of this node")  # fmt: skip
        window = epoch.senders.get(run)
        if window is None:
            if len(epoch.senders) >= MAX_SENDERS:
                return Refusal("replayed", "too many sender runs under this hop token")
            window = epoch.senders[run] = _Window()
        if not window.admit(seq):
            return Refusal("replayed", "this hop signature was used already")
        return hop


_Parsed = tuple[str, str, int, str, tuple[str, str, str, bool], Hop]


def _parse(signature: str, headers: Mapping[str, str]) -> _Parsed | Refusal:
    """The signature's parts and the hop state the headers claim, if they are well formed."""
    malformed = Refusal("malformed", "the hop headers are malformed")
    parts = signature.split(":")
    if len(parts) != 4:
        return malformed
    token, run, seq_text, mac = parts
    if (
        (token and not _TOKEN_RE.fullmatch(token))
        or not _TOKEN_RE.fullmatch(run)
        or not seq_text.isdigit()
        or len(seq_text) > 20
        or len(mac) != 64
    ):
        return malformed
    hops_text = headers.get(HOPS, "")
    path_text = headers.get(PATH, "")
    remaining_text = headers.get(REMAINING, "")
    start_text = headers.get(START)
    if not hops_text.isdigit() or len(hops_text) > 2 or start_text not in (None, "1"):
        return malformed
    hops = int(hops_text)
    path = tuple(path_text.split(",")) if path_text else ()
    if not 0 < hops <= MAX_PATH or not 0 < len(path) <= MAX_PATH or "" in path:
        return malformed
    remaining_s: float | None = None
    if remaining_text:
        if not remaining_text.isdigit() or not 0 < int(remaining_text) <= MAX_REMAINING_MS:
            return malformed
        remaining_s = int(remaining_text) / 1000
    start = start_text == "1"
    hop = Hop(hops, path, remaining_s, start)
    return token, run, int(seq_text), mac, (hops_text, path_text, remaining_text, start), hop
