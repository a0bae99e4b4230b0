"""Secrets at rest, in the registry folder (a folder every node can read)::

    registry/secrets/
      NAME/1, NAME/2, ...   each version of NAME, sealed (``crypto.seal``): the newest counts
      .lock                 held (``flock``) while a version is added or a secret removed

A version is written under a temporary name and linked into place (``link`` refuses an
existing name, so a version, once there, never changes), then the temporary name goes: a
reader sees a whole version or none. ``remove`` renames the secret's folder away first, so it
vanishes at once, then deletes it. A version's size is its value's (the blob less the
format's fixed overhead) and its time the file's modification time, both readable without the
key, so ``list`` needs none.

Every call is plain blocking file I/O: a node calls these off its event loop.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tierfaas.names import is_valid_name
from tierfaas.secrets.crypto import MAGIC, NONCE_BYTES, TAG_BYTES, seal, unseal
from tierfaas.secrets.errors import (
    BadSecretName,
    EmptySecret,
    SecretTooLarge,
    SecretUnreadable,
    UnknownSecret,
    WrongKey,
)

MAX_SECRET_BYTES = 64 * 1024
"""Largest value a secret may hold (64 KiB): certificates and keys fit, files do not."""
OVERHEAD_BYTES = len(MAGIC) + NONCE_BYTES + TAG_BYTES
FOLDER = "secrets"


@dataclass(frozen=True, slots=True)
class SecretInfo:
    """What ``list`` shows of a secret: never its value."""

    name: str
    versions: int  # how many versions are kept
    version: int  # the newest, the one functions get
    size: int  # bytes of the newest version's value
    created_ms: int  # when the newest version was written (Unix ms)
    first_ms: int  # when the first kept version was written (Unix ms)


def check_name(name: str) -> str:
    """``name`` if it is a plain name (the rule of function names); else ``BadSecretName``."""
    if not isinstance(name, str) or not is_valid_name(name):
        raise BadSecretName(str(name))
    return name


def check_value(name: str, value: bytes) -> bytes:
    if not value:
        raise EmptySecret(name)
    if len(value) > MAX_SECRET_BYTES:
        raise SecretTooLarge(name, len(value), MAX_SECRET_BYTES)
    return value


class SecretStore:
    """The secrets of one registry folder. ``key`` (from ``crypto.secrets_key``) is needed to
    add or read a value; listing and removing need none."""

    def __init__(self, registry: Path, key: bytes | None = None) -> None:
        self.root = registry / FOLDER
        self.key = key

    # -- reading ---------------------------------------------------------------------------------

    def names(self) -> list[str]:
        """Every secret that has a version, sorted."""
        try:
            entries = sorted(os.listdir(self.root))
        except FileNotFoundError:
            return []
        return [n for n in entries if is_valid_name(n) and self._versions(n)]

    def _versions(self, name: str) -> list[int]:
        try:
            entries = os.listdir(self.root / name)
        except (FileNotFoundError, NotADirectoryError):
            return []
        return sorted(int(e) for e in entries if e.isdigit() and not e.startswith("0"))

    def current_version(self, name: str) -> int | None:
        """The newest version of ``name``, None if there is no such secret."""
        versions = self._versions(check_name(name))
        return versions[-1] if versions else None

    def info(self, name: str) -> SecretInfo:
        versions = self._versions(check_name(name))
        if not versions:
            raise UnknownSecret(name, str(self.root.parent))
        newest = os.stat(self.root / name / str(versions[-1]))
        first = os.stat(self.root / name / str(versions[0]))
        return SecretInfo(
            name=name,
            versions=len(versions),
            version=versions[-1],
            size=max(0, newest.st_size - OVERHEAD_BYTES),
            created_ms=newest.st_mtime_ns // 1_000_000,
            first_ms=first.st_mtime_ns // 1_000_000,
        )

    def listing(self) -> list[SecretInfo]:
        found = []
        for name in self.names():
            with contextlib.suppress(UnknownSecret, FileNotFoundError):  # removed meanwhile
                found.append(self.info(name))
        return found

    def read(self, name: str, version: int | None = None) -> tuple[int, bytes]:
        """(version, value) of ``version`` of ``name`` (default: the newest). Raises
        ``UnknownSecret`` or ``SecretUnreadable``."""
        key = self._key()
        if version is None:
            version = self.current_version(name)
        if version is None:
            raise UnknownSecret(name, str(self.root.parent))
        try:
            blob = (self.root / check_name(name) / str(version)).read_bytes()
        except FileNotFoundError:
            raise UnknownSecret(name, str(self.root.parent)) from None
        return version, unseal(key, name, version, blob)

    # -- writing ---------------------------------------------------------------------------------

    def create(self, name: str, value: bytes) -> int:
        """Adds ``value`` as the next version of ``name`` (1 for a new secret); returns it."""
        check_name(name)
        check_value(name, value)
        key = self._key()
        folder = self.root / name
        with self._locked():
            self._check_same_key()
            folder.mkdir(mode=0o700, exist_ok=True)
            versions = self._versions(name)
            version = versions[-1] + 1 if versions else 1
            blob = seal(key, name, version, value)
            fd, tmp = tempfile.mkstemp(dir=folder, prefix=".new-")
            try:
                with os.fdopen(fd, "wb") as out:
                    out.write(blob)
                    out.flush()
                    os.fsync(out.fileno())
                os.link(tmp, folder / str(version))  # never replaces: versions are immutable
            finally:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp)
        return version

    def remove(self, name: str) -> int:
        """Removes every version of ``name``; returns how many there were. Raises
        ``UnknownSecret`` if there is no such secret."""
        check_name(name)
        with self._locked():
            versions = self._versions(name)
            if not versions:
                raise UnknownSecret(name, str(self.root.parent))
            gone = Path(tempfile.mkdtemp(dir=self.root, prefix=".removed-"))
            os.replace(self.root / name, gone / name)  # gone from readers at once
            shutil.rmtree(gone, ignore_errors=True)
        return len(versions)

    def _check_same_key(self) -> None:
        """Refuses a key other than the one the stored secrets are sealed with (a value the
        cluster could not open would only fail later, on every node)."""
        for other in self.names():
            try:
                self.read(other)
            except SecretUnreadable as exc:
                raise WrongKey(str(self.root.parent), str(exc)) from None
            return

    def _key(self) -> bytes:
        if self.key is None:
            raise RuntimeError("this SecretStore was made without a key")
        return self.key

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        with open(self.root / ".lock", "a+") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)
