"""A node's copy of the secrets its functions list, and how it stays current.

At start (``open_delivery``, blocking, before the node serves) every secret a function lists
must exist in the registry and open with the cluster key, or the release does not load: the
error names the function and the secret, never a value. The values go to a folder private
to the node on a tmpfs (``/dev/shm``, else the temporary folder), never to an environment
variable or the disk::

    /dev/shm/tierfaas-secrets-PID-XXXX/ 0700 (0711 under a root node's sandbox: see below)
      FUNCTION/NAME                     the newest version of each secret FUNCTION lists

Each file is replaced by a rename, so a reader sees a whole version. ``follow`` polls the
store every ``secrets_poll_s`` on the node's clock, in a worker thread (a shared registry
volume can stall): a new version is written to the folder of every function that lists it,
where running instances read it on their next read and new instances at start; a removed
secret's files go. Every value is taught to the ``Redactor`` before any instance can read it.

Under the sandbox of a root node, the zygote (host uid ``sandbox_uid_base``) must reach the
folder to bind it, so the top folder is 0711 (no listing); each ``FUNCTION`` folder (0500) and
file (0400) belongs to that function's host uid, so an instance reads only its own function's
secrets, and the instance binds its folder at ``/var/secrets`` read-only and unmounts the
rest (``sandbox.enter``). Under process isolation instances run as the node's user and read
``FUNCTION/`` directly (``Context.secret``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path

from tierfaas import errors
from tierfaas.config import NodeConfig
from tierfaas.keys import load_key
from tierfaas.manifest import MANIFEST_NAME, Release
from tierfaas.procs import alive
from tierfaas.secrets.crypto import secrets_key
from tierfaas.secrets.errors import SecretError
from tierfaas.secrets.redact import Redactor
from tierfaas.secrets.store import SecretStore

log = logging.getLogger(__name__)

TMPFS_DIRS = ("/dev/shm",)
"""Where the private folder goes when one of these is a writable directory (a tmpfs on
Linux): decrypted values never reach a disk."""


def users_of(release: Release) -> dict[str, list[str]]:
    """Each secret any function lists -> the functions that list it (sorted)."""
    users: dict[str, list[str]] = {}
    for name in sorted(release.functions):
        for secret in release.functions[name].secrets:
            users.setdefault(secret, []).append(name)
    return users


PREFIX = "tierfaas-secrets-"


def private_folder() -> Path:
    """A new folder (0700) for this node's secrets, named after its pid, on a tmpfs when one
    is there. The folders of nodes that died without removing theirs (SIGKILL) are swept
    first: a folder whose pid no longer runs is removed."""
    base = next(
        (b for b in TMPFS_DIRS if os.path.isdir(b) and os.access(b, os.W_OK | os.X_OK)),
        tempfile.gettempdir(),
    )
    sweep_stale(Path(base))
    return Path(tempfile.mkdtemp(prefix=f"{PREFIX}{os.getpid()}-", dir=base))


def sweep_stale(base: Path) -> None:
    """Removes the secrets folders in ``base`` of node processes that no longer run."""
    try:
        entries = os.listdir(base)
    except OSError:
        return
    for entry in entries:
        pid = entry[len(PREFIX) :].split("-", 1)[0]
        if entry.startswith(PREFIX) and pid.isdigit() and not alive(int(pid), None):
            shutil.rmtree(base / entry, ignore_errors=True)


class SecretsDelivery:
    """The node's private copy of the current values of the secrets its functions list."""

    def __init__(
        self,
        store: SecretStore,
        release: Release,
        folder: Path,
        *,
        owners: dict[str, int] | None = None,
        redactor: Redactor | None = None,
        poll_s: float = 1.0,
    ) -> None:
        """``owners``: each function's host uid (a root node's sandbox), None: the node's."""
        self.store = store
        self.release = release
        self.folder = folder
        self.users = users_of(release)
        self.owners = owners
        self.redactor = redactor if redactor is not None else Redactor()
        self.poll_s = poll_s
        self.delivered: dict[str, int] = {}  # secret -> the version in the folder
        self.function_names = sorted(
            name for name, spec in release.functions.items() if spec.secrets
        )

    # -- paths -----------------------------------------------------------------------------------

    def function_dir(self, function: str) -> Path:
        """Where ``function``'s secrets are on the host (its instances under process
        isolation read them here)."""
        return self.folder / function

    def lists_secrets(self, function: str) -> bool:
        return function in self.function_names

    # -- start, refresh, stop --------------------------------------------------------------------

    def start(self) -> None:
        """Makes the folders and writes every listed secret's newest version. Raises
        ``ManifestError`` naming the function and the first secret that does not exist or
        does not open. Blocking."""
        top_mode = 0o711 if self.owners else 0o700
        os.chmod(self.folder, top_mode)
        for function in self.function_names:
            path = self.function_dir(function)
            path.mkdir(mode=0o700, exist_ok=True)
            self._own(path, function, 0o500)
        where = str(self.release.root / MANIFEST_NAME)
        for secret, functions in self.users.items():
            try:
                version = self.store.current_version(secret)
                if version is None:
                    raise _manifest_error(where, functions[0], self._missing(secret))
                _, value = self.store.read(secret, version)
            except SecretError as exc:
                raise _manifest_error(where, functions[0], str(exc)) from None
            self._deliver(secret, version, value)

    def _missing(self, secret: str) -> str:
        registry = self.store.root.parent
        return (
            f"secret {secret!r} does not exist in the registry {registry} (create it: "
            f"tierfaas secret create {secret} --registry {registry})"
        )

    def refresh(self) -> int:
        """One poll of the store (blocking): delivers each listed secret's newer version and
        removes the files of a removed secret. Returns how many secrets changed. Problems are
        logged (by secret name) and the last good value stays."""
        changed = 0
        for secret in self.users:
            try:
                version = self.store.current_version(secret)
            except OSError as exc:
                log.warning("secrets: cannot read the registry's secret %r: %s", secret, exc)
                continue
            if version is None:
                if secret in self.delivered:
                    self._withdraw(secret)
                    changed += 1
                continue
            if self.delivered.get(secret) == version:
                continue
            try:
                _, value = self.store.read(secret, version)
            except (SecretError, OSError) as exc:
                log.warning("secrets: keeping the last good value: %s", exc)
                continue
            self._deliver(secret, version, value)
            log.info(
                "secrets: version %d of %r given to %s",
                version,
                secret,
                ", ".join(self.users[secret]),
            )
            changed += 1
        return changed

    async def follow(self, sleep: Callable[[float], Awaitable[object]] = asyncio.sleep) -> None:
        """Polls the store every ``poll_s`` (``sleep`` is the node clock's), in a worker
        thread, until cancelled."""
        while True:
            await sleep(self.poll_s)
            await asyncio.to_thread(self.refresh)

    def close(self) -> None:
        """Removes the private folder and every value in it."""
        shutil.rmtree(self.folder, ignore_errors=True)

    # -- files -----------------------------------------------------------------------------------

    def _deliver(self, secret: str, version: int, value: bytes) -> None:
        # Taught first: no instance reads a value the redactor does not know.
        self.redactor.learn([value])
        for function in self.users[secret]:
            folder = self.function_dir(function)
            fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{secret}.")
            try:
                with os.fdopen(fd, "wb") as out:
                    out.write(value)
                self._own(Path(tmp), function, 0o400)
                os.replace(tmp, folder / secret)
            finally:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp)
        self.delivered[secret] = version

    def _withdraw(self, secret: str) -> None:
        for function in self.users[secret]:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.function_dir(function) / secret)
        del self.delivered[secret]
        log.warning(
            "secrets: %r was removed from the registry; %s no longer have it",
            secret,
            ", ".join(self.users[secret]),
        )

    def _own(self, path: Path, function: str, mode: int) -> None:
        os.chmod(path, mode)
        if self.owners is not None:
            uid = self.owners[function]
            os.chown(path, uid, uid)


def _manifest_error(where: str, function: str, reason: str) -> errors.ManifestError:
    return errors.ManifestError(where, f"functions.{function}.secrets", reason)


def open_delivery(
    config: NodeConfig, release: Release, redactor: Redactor | None = None
) -> SecretsDelivery | None:
    """The node's delivery, started (every listed secret checked and written), or None when
    no function lists a secret. Raises ``ManifestError`` (a listed secret that does not exist
    or does not open, naming the function and the secret) or ``ConfigError`` (no registry or
    no cluster key to take secrets from). Blocking."""
    users = users_of(release)
    if not users:
        return None
    secret, functions = next(iter(users.items()))
    where = str(release.root / MANIFEST_NAME)
    if config.registry is None:
        raise _manifest_error(
            where,
            functions[0],
            f"lists secret {secret!r}, but the node follows no registry (--registry) to take "
            "secrets from",
        )
    key = load_key(config.key_file)
    if key is None:
        raise errors.ConfigError(
            "key_file",
            f"function {functions[0]!r} lists secret {secret!r}: secrets are sealed with the "
            "cluster key, and this node has none (--key-file or $TIERFAAS_CLUSTER_KEY)",
        )
    owners = None
    if config.isolation == "sandbox" and os.geteuid() == 0:
        # Each function's host uid: its uid in the release's namespace, mapped from the base.
        from tierfaas.runtime.spawner import release_identities

        ids = release_identities(release, config)  # ConfigError for a range too small
        owners = {name: config.sandbox_uid_base + ids.of(name) for name in release.functions}
    store = SecretStore(config.registry, secrets_key(key))
    delivery = SecretsDelivery(
        store,
        release,
        private_folder(),
        owners=owners,
        redactor=redactor,
        poll_s=config.secrets_poll_s,
    )
    try:
        delivery.start()
    except BaseException:
        delivery.close()
        raise
    return delivery
