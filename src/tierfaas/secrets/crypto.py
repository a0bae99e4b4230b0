"""Sealing one secret version: AES-256-GCM under ``derive(cluster_key, "secrets")``.

The associated data binds a sealed blob to its secret's name and version, so a blob copied to
another name or version (by anyone who can write the registry folder) fails to open instead of
handing one function another's value. Each seal draws a fresh random 96-bit nonce; with at
most a handful of versions per secret, the birthday bound of random nonces (2^32 seals per
key) is far away. The cluster key itself never encrypts anything (``keys.derive``).

Blob layout: ``b"TFS1"`` (format), 12-byte nonce, ciphertext with its 16-byte tag.
"""

from __future__ import annotations

import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from tierfaas.keys import derive
from tierfaas.secrets.errors import SecretUnreadable

MAGIC = b"TFS1"
NONCE_BYTES = 12
TAG_BYTES = 16
PURPOSE = "secrets"


def secrets_key(cluster_key: bytes) -> bytes:
    """The key that seals secrets, derived from the cluster key for this one purpose."""
    return derive(cluster_key, PURPOSE)


def _associated(name: str, version: int) -> bytes:
    return f"tierfaas-secret\0{name}\0{version}".encode()


def seal(key: bytes, name: str, version: int, value: bytes) -> bytes:
    """``value`` encrypted and authenticated under ``key`` (from ``secrets_key``)."""
    nonce = os.urandom(NONCE_BYTES)
    return MAGIC + nonce + AESGCM(key).encrypt(nonce, value, _associated(name, version))


def unseal(key: bytes, name: str, version: int, blob: bytes) -> bytes:
    """The value sealed in ``blob``. Raises ``SecretUnreadable`` (naming the secret, never a
    byte of it) for another key, another name or version, or any change to the blob."""
    if len(blob) < len(MAGIC) + NONCE_BYTES + TAG_BYTES or not blob.startswith(MAGIC):
        raise SecretUnreadable(name, version, "not a sealed secret (damaged file)")
    nonce = blob[len(MAGIC) : len(MAGIC) + NONCE_BYTES]
    try:
        return AESGCM(key).decrypt(
            nonce, blob[len(MAGIC) + NONCE_BYTES :], _associated(name, version)
        )
    except InvalidTag:
        raise SecretUnreadable(
            name, version, "does not open with this cluster key (another key, or a changed file)"
        ) from None
