"""Signed callbacks: a receiver can tell a callback of the cluster from a forged one.

With ``--callback-key-file`` set, every callback attempt carries

    X-Tierfaas-Signature: t=<Unix seconds>,v1=<hex HMAC-SHA256(key, "<t>." + body)>

(the scheme webhook receivers know from payment providers). The body names the call
(``call_id``) and its outcome, so the MAC binds both; ``t`` lets a receiver refuse an old
message replayed later (``verify``'s tolerance), and it dedups retries by ``X-Call-Id``. The
time is the sender's wall clock, so a receiver's tolerance must cover the skew between the
two machines' clocks as well as the delivery's retries (each attempt is signed anew).
"""

from __future__ import annotations

import hashlib
import hmac

SIGNATURE_HEADER = "x-tierfaas-signature"
DEFAULT_TOLERANCE_S = 300.0


def sign(key: bytes, timestamp: int, body: bytes) -> str:
    """The header's value for ``body`` sent at ``timestamp`` (Unix seconds)."""
    mac = hmac.new(key, b"%d." % timestamp + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


def verify(
    key: bytes, header: str, body: bytes, now: float, tolerance_s: float = DEFAULT_TOLERANCE_S
) -> bool:
    """Whether ``header`` signs ``body`` with ``key`` and its time is within ``tolerance_s``
    of ``now`` (Unix seconds). For receivers written in Python, and the tests."""
    fields = dict(part.partition("=")[::2] for part in header.split(","))
    timestamp, given = fields.get("t", ""), fields.get("v1", "")
    if not timestamp.isdigit() or not given:
        return False
    if abs(now - int(timestamp)) > tolerance_s:
        return False
    return hmac.compare_digest(sign(key, int(timestamp), body), f"t={timestamp},v1={given}")
