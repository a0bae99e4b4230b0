"""``tierfaas secret create|list|rm``: the secrets of a registry folder.

They work where the registry lives, like ``tierfaas publish``: ``--registry`` (else
``$TIERFAAS_REGISTRY``, else the registry ``tierfaas up`` keeps in its state folder). Creating
a version needs the cluster key: ``--key-file`` (else ``$TIERFAAS_CLUSTER_KEY``, else the key
``tierfaas up`` keeps in its state folder). A value is read from stdin or ``--from-file``,
never from the command line (other users could read it in the process list), and is never
printed.
"""

from __future__ import annotations

import datetime
import getpass
import json
import os
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from tierfaas.errors import ConfigError

secret = typer.Typer(
    help="Keep secrets (passwords, tokens) for functions: sealed with the cluster key in the "
    "registry folder, given only to the functions whose manifest lists them "
    '(secrets = ["db"]) as /var/secrets/NAME and context.secret("NAME").',
    no_args_is_help=True,
)
err = Console(stderr=True)

_Registry = Annotated[
    Path | None,
    typer.Option(
        help="the registry folder [default: $TIERFAAS_REGISTRY, else the one 'tierfaas up' "
        "keeps in its state folder]",
        envvar="TIERFAAS_REGISTRY",
    ),
]
_KeyFile = Annotated[
    Path | None,
    typer.Option(
        help="the cluster key file (mode 600) [default: $TIERFAAS_CLUSTER_KEY, else the key "
        "'tierfaas up' keeps in its state folder]",
        envvar="TIERFAAS_KEY_FILE",
    ),
]


def _fail(message: str, code: int = 2) -> typer.Exit:
    err.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True, markup=True)
    return typer.Exit(code)


def _registry(path: Path | None) -> Path:
    from tierfaas.up import default_state_dir

    return path or default_state_dir() / "registry"


def _key(key_file: Path | None, make: bool = False) -> bytes:
    """The cluster key: ``key_file``, else $TIERFAAS_CLUSTER_KEY, else the one 'tierfaas up'
    keeps in its state folder (made there first when ``make`` and there is none: 'up' keeps
    it while its registry holds secrets)."""
    from tierfaas.keys import KEY_ENV, load_key, write_key_file
    from tierfaas.up import default_state_dir
    from tierfaas.up.state import KEY_FILE

    if key_file is None and not os.environ.get(KEY_ENV):
        key_file = default_state_dir() / KEY_FILE
        if make and not key_file.exists():
            key_file.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            write_key_file(key_file)
            err.print(f"made a new cluster key in {key_file} for 'tierfaas up'", highlight=False)
        if not key_file.exists():
            key_file = None
    try:
        key = load_key(key_file)
    except ConfigError as exc:
        raise _fail(str(exc)) from None
    if key is None:
        raise _fail(
            "no cluster key: give --key-file or $TIERFAAS_CLUSTER_KEY (secrets are sealed with "
            "the key of the cluster that reads them)"
        )
    return key


def _read_value(from_file: Path | None, limit: int) -> bytes:
    """The value: the file's content, else stdin (a prompt without echo on a terminal); at
    most ``limit`` + 1 bytes are read, so an oversized value is refused without holding it."""
    if from_file is not None:
        try:
            with from_file.open("rb") as file:
                return file.read(limit + 1)
        except OSError as exc:
            raise _fail(f"cannot read {from_file}: {exc.strerror}") from None
    if sys.stdin.isatty():
        return getpass.getpass("value (not shown): ").encode()
    return sys.stdin.buffer.read(limit + 1)


@secret.command("create")
def create(
    name: Annotated[str, typer.Argument(help="the secret's name: 1-64 of [A-Za-z0-9._-]")],
    from_file: Annotated[
        Path | None, typer.Option(help="read the value from this file (default: stdin)")
    ] = None,
    registry: _Registry = None,
    key_file: _KeyFile = None,
) -> None:
    """Add a secret, or a new version of it (versions are immutable; functions get the newest
    within a poll, running instances on their next read). The value comes from stdin or
    --from-file, at most 64 KiB."""
    from tierfaas.secrets.crypto import secrets_key
    from tierfaas.secrets.errors import SecretError
    from tierfaas.secrets.store import MAX_SECRET_BYTES, SecretStore, check_name

    try:
        check_name(name)  # before the value is asked for
    except SecretError as exc:
        raise _fail(str(exc)) from None
    root = _registry(registry)
    store = SecretStore(root, secrets_key(_key(key_file, make=registry is None)))
    value = _read_value(from_file, MAX_SECRET_BYTES)
    try:
        version = store.create(name, value)
    except SecretError as exc:
        raise _fail(str(exc)) from None
    except OSError as exc:
        raise _fail(f"cannot write to {root}: {exc.strerror}", 1) from None
    Console().print(
        f"secret {name} version {version} ({len(value)} bytes) stored in {root}", highlight=False
    )


def _time(ms: int) -> str:
    moment = datetime.datetime.fromtimestamp(ms / 1000, tz=datetime.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


@secret.command("list")
def list_(
    registry: _Registry = None,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """The secrets: name, versions kept, the newest version, its size and when it was made
    (never a value; no key needed)."""
    from tierfaas.secrets.store import SecretStore

    root = _registry(registry)
    try:
        found = SecretStore(root).listing()
    except OSError as exc:
        raise _fail(f"cannot read {root}: {exc.strerror}", 1) from None
    if as_json:
        rows = [
            {
                "name": s.name,
                "version": s.version,
                "versions": s.versions,
                "size": s.size,
                "created_ms": s.created_ms,
                "first_ms": s.first_ms,
            }
            for s in found
        ]
        print(json.dumps({"registry": str(root), "secrets": rows}, indent=2))
        return
    table = Table(title=f"secrets in {root}", title_justify="left")
    for column in ("name", "version", "versions", "size", "created", "first created"):
        numeric = column in ("version", "versions", "size")
        table.add_column(column, justify="right" if numeric else "left")
    for s in found:
        table.add_row(
            s.name, str(s.version), str(s.versions), f"{s.size} B", _time(s.created_ms),
            _time(s.first_ms),
        )  # fmt: skip
    Console().print(table)


@secret.command("rm")
def remove(
    name: Annotated[str, typer.Argument(help="the secret's name")],
    registry: _Registry = None,
) -> None:
    """Remove a secret, every version of it. Functions that list it lose it within a poll
    (their files go), and a node that loads a release listing it refuses to start."""
    from tierfaas.secrets.errors import SecretError
    from tierfaas.secrets.store import SecretStore

    root = _registry(registry)
    try:
        count = SecretStore(root).remove(name)
    except SecretError as exc:
        raise _fail(str(exc)) from None
    except OSError as exc:
        raise _fail(f"cannot change {root}: {exc.strerror}", 1) from None
    Console().print(f"secret {name} removed ({count} versions) from {root}", highlight=False)
