"""The release registry a cluster follows (SPEC 6.1): versions, and the one that is desired.

``DirectoryRegistry`` is the default: a folder any node can read (a local path, an NFS
mount, a Kubernetes volume)::

    registry/
      versions/<version>/          a copy of the release folder (tierfaas.toml + code)
      versions/<version>.json      {"digest": sha256 of the content, "published_at": ms, ...}
      desired                      the desired version, one line
      rollout.json                 the deploying master's status and history (it writes it)
      term                         the newest term a master claimed (``tierfaas.deploy.term``)
      lock                         held (``flock``) while a term is claimed or the status written

Versions are immutable: publishing an existing version again is accepted only with the same
content (same digest), so "2.0.0" means one thing forever. Every write goes to a temporary
name first and is renamed into place, so a reader never sees half a version or half a file.
The digest is of the content as published: a release with a build step (``[release] build``)
gains its artifacts in ``versions/<version>/`` when the nodes that load it build it there
(one at a time, under the folder's ``.tierfaas-build.lock``, which no copy or digest holds).
Other registries (HTTP, object stores) implement ``Registry``: the master only needs
``desired()``, ``release_dir()``, the status calls and ``claim_term``.

Fencing (issue 17.3): ``claim_term`` hands each new deploying master a term one higher than
any before, and ``write_status`` refuses a status whose term is older than the newest claimed
or written one (``FencedError``), so a master cut off by a partition cannot overwrite what
the master of the majority wrote. The status records its writer's term (``"term"``).

Every call here is plain blocking file I/O: the master makes them off its event loop,
through ``tierfaas.deploy.offloop`` (a shared volume can stall for seconds).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from tierfaas.deploy.build import LOCK_NAME as BUILD_LOCK_NAME
from tierfaas.deploy.term import Term, TermRecord, fence
from tierfaas.errors import ManifestError
from tierfaas.manifest import Release, load_release

_SKIPPED = {"__pycache__", ".git", ".venv", ".mypy_cache", ".pytest_cache", ".ruff_cache"}
_SKIPPED_FILES = {BUILD_LOCK_NAME}
"""Files that are no part of a release's content (the build step's lock)."""
MAX_RELEASE_BYTES = 256 * 1024 * 1024
"""Largest release a registry accepts: the sum of its files."""


class RegistryError(Exception):
    """A registry operation was refused; the message says why and what to do."""


@dataclass(frozen=True, slots=True)
class VersionInfo:
    version: str
    digest: str
    published_at: int  # Unix ms
    name: str  # the release's name from its manifest


class Registry(Protocol):
    """What a master needs from a registry. ``location`` names it in logs and status."""

    location: str

    def desired(self) -> str | None:
        """The desired version, None if none was ever set."""
        ...

    def release_dir(self, version: str) -> Path:
        """A local folder holding ``version``'s release. Raises ``RegistryError`` if unknown."""
        ...

    def read_status(self) -> dict[str, Any] | None: ...

    def write_status(self, status: dict[str, Any], term: Term | None = None) -> None:
        """Writes the status; raises ``FencedError`` if ``term`` is older than the newest."""
        ...

    def claim_term(self, generation: int, master: str, lineage: str = "") -> Term:
        """A term newer than every term claimed or written so far."""
        ...


def release_files(root: Path) -> Iterator[Path]:
    """The files of a release in a stable order, without caches, VCS folders and the build
    lock."""
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in _SKIPPED)
        for name in sorted(filenames):
            if not name.endswith((".pyc", ".pyo")) and name not in _SKIPPED_FILES:
                yield Path(dirpath) / name


def digest_of(root: Path) -> str:
    """SHA-256 over every file's relative path and content: equal for equal releases."""
    h = hashlib.sha256()
    total = 0
    for path in release_files(root):
        if path.is_symlink() and not path.resolve().is_relative_to(root.resolve()):
            raise RegistryError(f"{path} links outside the release folder")
        data = path.read_bytes()
        total += len(data)
        if total > MAX_RELEASE_BYTES:
            raise RegistryError(f"the release is over {MAX_RELEASE_BYTES >> 20} MiB")
        rel = path.relative_to(root).as_posix().encode()
        h.update(len(rel).to_bytes(4, "big") + rel + len(data).to_bytes(8, "big") + data)
    return h.hexdigest()


def _write_atomic(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


class DirectoryRegistry:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.location = str(root)

    @property
    def _versions(self) -> Path:
        return self.root / "versions"

    def _check_exists(self) -> None:
        if not self._versions.is_dir():
            raise RegistryError(
                f"{self.root} is not a tierfaas registry (no versions/ folder); "
                "create one with: tierfaas publish RELEASE --registry " + str(self.root)
            )

    # -- reading -------------------------------------------------------------------------------

    def desired(self) -> str | None:
        try:
            text = (self.root / "desired").read_text().strip()
        except FileNotFoundError:
            return None
        return text or None

    def info(self, version: str) -> VersionInfo:
        self._check_exists()
        try:
            data = json.loads((self._versions / f"{version}.json").read_text())
            return VersionInfo(version, data["digest"], data["published_at"], data["name"])
        except FileNotFoundError:
            raise RegistryError(f"version {version!r} is not in the registry {self.root}") from None
        except (ValueError, KeyError, TypeError) as exc:
            raise RegistryError(f"the record of version {version!r} is damaged: {exc}") from None

    def versions(self) -> list[VersionInfo]:
        """Every published version, oldest first."""
        self._check_exists()
        found = []
        for record in self._versions.glob("*.json"):
            with contextlib.suppress(RegistryError):
                found.append(self.info(record.stem))
        return sorted(found, key=lambda v: (v.published_at, v.version))

    def release_dir(self, version: str) -> Path:
        self.info(version)
        return self._versions / version

    def load(self, version: str) -> Release:
        """The version's release, validated. Raises ``RegistryError`` with the manifest's
        problem if it does not load."""
        try:
            return load_release(self.release_dir(version))
        except ManifestError as exc:
            raise RegistryError(f"version {version} is not a valid release: {exc}") from None

    # -- writing ---------------------------------------------------------------------------------

    def publish(self, source: Path, *, make_desired: bool = True) -> tuple[VersionInfo, bool]:
        """Copies the release at ``source`` in as the version its manifest names; returns it
        and whether it is new. Refuses an invalid release and a version that exists with
        other content."""
        try:
            release = load_release(source)
        except ManifestError as exc:
            raise RegistryError(f"not published: {exc}") from None
        version = release.version
        digest = digest_of(source)
        self._versions.mkdir(parents=True, exist_ok=True)
        target = self._versions / version
        new = True
        if (self._versions / f"{version}.json").exists():
            existing = self.info(version)
            if existing.digest != digest:
                raise RegistryError(
                    f"version {version} is already published with other content; versions "
                    "are immutable: give this release a new version in its tierfaas.toml"
                )
            new = False
        else:
            staging = Path(tempfile.mkdtemp(dir=self._versions, prefix=f".{version}."))
            try:
                shutil.copytree(
                    source,
                    staging / "release",
                    ignore=shutil.ignore_patterns(*_SKIPPED, *_SKIPPED_FILES, "*.pyc", "*.pyo"),
                    symlinks=False,
                )
                if digest_of(staging / "release") != digest:
                    raise RegistryError("the release changed while it was being published")
                shutil.rmtree(target, ignore_errors=True)  # a leftover of a crashed publish
                os.replace(staging / "release", target)
            finally:
                shutil.rmtree(staging, ignore_errors=True)
            record: dict[str, object] = {
                "digest": digest,
                "published_at": int(time.time() * 1000),
                "name": release.name,
            }
            _write_atomic(self._versions / f"{version}.json", json.dumps(record) + "\n")
        if make_desired:
            self.set_desired(version)
        return self.info(version), new

    def set_desired(self, version: str) -> None:
        self.info(version)
        _write_atomic(self.root / "desired", version + "\n")

    def read_status(self) -> dict[str, Any] | None:
        try:
            data = json.loads((self.root / "rollout.json").read_text())
        except (FileNotFoundError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    def write_status(self, status: dict[str, Any], term: Term | None = None) -> None:
        """Writes ``rollout.json``, with ``term`` as its ``"term"``. Raises ``FencedError`` if
        ``term`` is older than the newest term claimed or written (a newer master exists)."""
        self.root.mkdir(parents=True, exist_ok=True)
        with self._locked():
            written = Term.from_json((self.read_status() or {}).get("term"))
            fence(term, written, "writing the rollout status")
            TermRecord(self.root / "term").check(term, "writing the rollout status")
            if term is not None:
                status = {**status, "term": term.to_json()}
            _write_atomic(self.root / "rollout.json", json.dumps(status, indent=1) + "\n")

    def claim_term(self, generation: int, master: str, lineage: str = "") -> Term:
        """A term one higher than the newest claimed or written, in ``generation`` or the
        newest generation seen, whichever is higher; recorded before it is returned."""
        self.root.mkdir(parents=True, exist_ok=True)
        with self._locked():
            record = TermRecord(self.root / "term")
            newest = [t for t in (record.read(), self.term_of_status()) if t is not None]
            number = max((t.number for t in newest), default=0) + 1
            top = max((t.generation for t in newest), default=0)
            term = Term(max(generation, top), number, master, lineage)
            record.write(term)
            return term

    def current_term(self) -> Term | None:
        """The newest term claimed or written, if any."""
        found = [t for t in (TermRecord(self.root / "term").read(), self.term_of_status()) if t]
        return max(found, key=lambda t: t.key, default=None)

    def term_of_status(self) -> Term | None:
        return Term.from_json((self.read_status() or {}).get("term"))

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        with open(self.root / "lock", "a+") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)


class FailedVersions:
    """Versions whose rollout failed or was aborted, with the reason: ``failed/<version>``
    files in the registry folder. A failed version is not tried again; publish a new one."""

    def __init__(self, root: Path) -> None:
        self.folder = root / "failed"

    def mark(self, version: str, reason: str) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        _write_atomic(self.folder / version, reason.strip()[:2000] + "\n")

    def all(self) -> dict[str, str]:
        if not self.folder.is_dir():
            return {}
        found = {}
        for path in self.folder.iterdir():
            if not path.name.startswith("."):
                with contextlib.suppress(OSError):
                    found[path.name] = path.read_text().strip()
        return found
