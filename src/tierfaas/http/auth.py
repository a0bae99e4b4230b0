"""Who may call what over HTTP: API keys per function, and the admin token.

**API keys.** A function whose manifest lists ``api_keys`` (SHA-256 digests of the keys it
accepts, see docs/security.md) answers 401 ``unauthorized`` unless the request carries one of
them as ``Authorization: Bearer KEY`` or ``X-Api-Key: KEY``. The check runs on the node that
receives the call from the client, before its body is read and before any routing; a call
forwarded to another node keeps the header and passes the same check there. The manifest holds
digests, never keys, so a release can be published, listed (``/v1/functions`` says only
whether a key is needed) and logged without exposing one.

**The admin token.** Everything but invocations, ``/healthz`` and ``/readyz`` and the function
list is an admin endpoint: it shows the cluster's inside (members and their control
addresses, the routing table, counters, metrics). When a token is configured and the node's
HTTP address is not loopback, those endpoints need it as ``Authorization: Bearer TOKEN`` or
as HTTP Basic credentials with the token as the password (any user name; browsers ask for it,
and send it with the dashboard's own requests). On loopback they stay open, so ``make run``
users open the dashboard with nothing to type. No HTTP endpoint changes state (invocations
aside): the token guards against reading, not writing.

Comparisons are constant-time over SHA-256 digests of equal length, so neither the length
nor the content of a secret leaks through timing.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import stat
from collections.abc import Iterable
from pathlib import Path

from tierfaas import errors

ADMIN_TOKEN_ENV = "TIERFAAS_ADMIN_TOKEN"
MIN_TOKEN_CHARS = 16
MAX_TOKEN_CHARS = 4096
API_KEY_PREFIX = "sha256:"

_BEARER = b"bearer "
_BASIC = b"basic "
_AUTHORIZATION = b"authorization"
_X_API_KEY = b"x-api-key"


def digest(secret: bytes | str) -> bytes:
    """SHA-256 of a key or token, as stored and compared."""
    if isinstance(secret, str):
        secret = secret.encode()
    return hashlib.sha256(secret).digest()


def matches(presented: bytes, accepted: Iterable[bytes]) -> bool:
    """Whether ``presented`` (a raw secret) hashes to one of the ``accepted`` digests. Compares
    against every digest, without stopping at the first match."""
    mine = digest(presented)
    found = False
    for candidate in accepted:
        found |= hmac.compare_digest(mine, candidate)
    return found


def load_admin_token(path: Path | None) -> str | None:
    """The admin token from ``path`` (which must not be readable by others), else from
    ``$TIERFAAS_ADMIN_TOKEN``, else None. Raises ``ConfigError``."""
    if path is not None:
        return read_secret_file("admin_token_file", path, "the admin token")
    from_env = os.environ.get(ADMIN_TOKEN_ENV)
    if from_env:
        return _check_token(ADMIN_TOKEN_ENV, from_env.strip(), "the admin token")
    return None


def read_secret_file(field: str, path: Path, what: str) -> str:
    """The secret in ``path``: a file not readable by others, holding 16-4096 printable ASCII
    characters without spaces (surrounding whitespace is dropped). ``what`` names the secret
    in the ``ConfigError`` (of setting ``field``) that anything else raises."""
    try:
        mode = path.stat().st_mode
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise errors.ConfigError(
            field, f"cannot read {path}: {getattr(exc, 'strerror', exc)}"
        ) from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise errors.ConfigError(field, f"{path} is readable by others: chmod 600")
    return _check_token(field, text.strip(), what)


def _check_token(field: str, token: str, what: str) -> str:
    if not MIN_TOKEN_CHARS <= len(token) <= MAX_TOKEN_CHARS:
        raise errors.ConfigError(
            field, f"{what} must be {MIN_TOKEN_CHARS}-{MAX_TOKEN_CHARS} characters"
        )
    if not token.isascii() or any(c.isspace() or not c.isprintable() for c in token):
        raise errors.ConfigError(field, f"{what} must be printable ASCII, no spaces")
    return token


def presented_secrets(headers: Iterable[tuple[bytes, bytes]]) -> list[bytes]:
    """The secrets a request presents: a Bearer token, the password of Basic credentials,
    an ``X-Api-Key``."""
    found = []
    for key, value in headers:
        if key == _AUTHORIZATION:
            scheme = value[:7].lower()
            if scheme == _BEARER:
                found.append(value[7:].strip())
            elif scheme[:6] == _BASIC:
                try:
                    decoded = base64.b64decode(value[6:].strip(), validate=True)
                except (binascii.Error, ValueError):
                    continue
                found.append(decoded.partition(b":")[2])
        elif key == _X_API_KEY:
            found.append(value.strip())
    return found


def authorized(headers: Iterable[tuple[bytes, bytes]], accepted: Iterable[bytes]) -> bool:
    """Whether any secret the request presents matches one of the ``accepted`` digests."""
    accepted = tuple(accepted)
    ok = False
    for secret in presented_secrets(headers):
        ok |= matches(secret, accepted)
    return ok
