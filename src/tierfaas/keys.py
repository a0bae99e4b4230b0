"""The cluster key: one 32-byte secret shared by every node of a cluster.

It encrypts and authenticates gossip (AES-GCM, in kinship), and the credentials of gRPC calls
and forwarded requests are derived from it (HMAC-SHA256 with a purpose label, so no channel
ever sends the key itself). A node reads it from ``TIERFAAS_CLUSTER_KEY`` (base64) or from a
key file (``--key-file``, made by ``tierfaas keygen``); never from a command-line flag, which
other users of the machine could read in the process list.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import secrets
import stat
from pathlib import Path

from tierfaas.errors import ConfigError

KEY_BYTES = 32
KEY_ENV = "TIERFAAS_CLUSTER_KEY"


def generate_key() -> str:
    """A new random key as base64 text."""
    return base64.b64encode(secrets.token_bytes(KEY_BYTES)).decode()


def parse_key(value: bytes | str, field: str = "cluster_key") -> bytes:
    """32 raw bytes, or their base64 text. Raises ``ConfigError`` naming ``field``."""
    if isinstance(value, str):
        try:
            value = base64.b64decode(value.strip(), validate=True)
        except (binascii.Error, ValueError):
            raise ConfigError(field, "is not valid base64") from None
    if not isinstance(value, bytes) or len(value) != KEY_BYTES:
        raise ConfigError(field, f"must be {KEY_BYTES} bytes (base64: 44 characters)")
    return value


def load_key(key_file: Path | None) -> bytes | None:
    """The key from ``key_file`` if given, else from ``$TIERFAAS_CLUSTER_KEY``, else None."""
    if key_file is not None:
        try:
            mode = key_file.stat().st_mode
            text = key_file.read_text()
        except OSError as exc:
            raise ConfigError("key_file", f"cannot read {key_file}: {exc.strerror}") from None
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise ConfigError("key_file", f"{key_file} is readable by others: chmod 600 it")
        return parse_key(text, "key_file")
    from_env = os.environ.get(KEY_ENV)
    if from_env:
        return parse_key(from_env, KEY_ENV)
    return None


def write_key_file(path: Path) -> None:
    """Creates ``path`` (mode 600) holding a new key; refuses to overwrite."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(generate_key() + "\n")


def derive(key: bytes, purpose: str) -> bytes:
    """A sub-key for one purpose ("grpc", "forward", ...), so channels never share a secret."""
    return hmac.new(key, f"tierfaas/{purpose}/v1".encode(), hashlib.sha256).digest()
