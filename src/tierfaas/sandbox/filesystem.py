"""What a release's processes see of the host's files: the plan of their root directory.

The root is an empty tmpfs onto which the zygote binds, read-only: the system's programs and
libraries (``/usr`` and the merged-usr links ``/bin``, ``/lib``...), a few files of ``/etc``
that programs need to resolve names and verify certificates, the Python installation and the
directories tierfaas is imported from, and the release itself. Nothing else exists in there:
not the node's state directory, its key file, the registry, another release, the home
directories. A secret that lies inside one of the bound directories (a key file kept in the
release's parent checkout, say) is masked by an empty mount over it.

``plan_root`` is pure: it takes what exists (gathered by ``gather_sources``) and returns the
mount operations in the order they must run; ``tierfaas.sandbox.enter`` carries them out.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

SYSTEM_PATHS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
ETC_PATHS = (
    "/etc/passwd",
    "/etc/group",
    "/etc/hosts",
    "/etc/host.conf",
    "/etc/resolv.conf",
    "/etc/nsswitch.conf",
    "/etc/gai.conf",
    "/etc/services",
    "/etc/protocols",
    "/etc/localtime",
    "/etc/ld.so.cache",
    "/etc/ld.so.conf",
    "/etc/ld.so.conf.d",
    "/etc/ssl",
    "/etc/ca-certificates",
    "/etc/pki",
    "/etc/alternatives",
    "/etc/os-release",
    "/etc/mime.types",
)

Kind = Literal["dir", "file", "symlink"]


@dataclass(frozen=True, slots=True)
class Source:
    path: str  # absolute
    kind: Kind
    link: str = ""  # the symlink's target, for kind "symlink"


@dataclass(frozen=True, slots=True)
class Bind:
    """Bind ``path`` of the host read-only at the same path in the new root."""

    path: str
    is_dir: bool


@dataclass(frozen=True, slots=True)
class Symlink:
    path: str
    target: str


@dataclass(frozen=True, slots=True)
class Mask:
    """Cover ``path`` (inside a bind) with an empty directory or file."""

    path: str
    is_dir: bool


MountOp = Bind | Symlink | Mask


def _inside(path: str, parent: str) -> bool:
    return path == parent or path.startswith(parent.rstrip("/") + "/")


def plan_root(sources: Iterable[Source], hidden: Iterable[Source]) -> list[MountOp]:
    """The operations that build the root: symlinks and binds (a path inside another bound
    path is not bound twice), parents before children, then a mask over every hidden path
    that a bind would show (once: a path inside a masked directory is hidden already, and
    its mount point could not be made in the empty, read-only mask)."""
    ordered = sorted(
        {s.path: s for s in sources}.values(), key=lambda s: (s.path.count("/"), s.path)
    )
    ops: list[MountOp] = []
    bound: list[str] = []
    for source in ordered:
        if any(_inside(source.path, b) for b in bound):
            continue
        if source.kind == "symlink":
            ops.append(Symlink(source.path, source.link))
        else:
            ops.append(Bind(source.path, source.kind == "dir"))
            bound.append(source.path)
    masked: list[str] = []
    for secret in sorted({h.path: h for h in hidden}.values(), key=lambda s: s.path):
        if secret.kind == "symlink" or any(_inside(secret.path, m) for m in masked):
            continue
        if any(_inside(secret.path, b) for b in bound):
            ops.append(Mask(secret.path, secret.kind == "dir"))
            if secret.kind == "dir":
                masked.append(secret.path)
    return ops


def describe(path: str | os.PathLike[str]) -> Source | None:
    """What is at ``path`` on the host (None: nothing, or not a file, directory or link)."""
    text = os.path.abspath(path)
    try:
        if os.path.islink(text):
            return Source(text, "symlink", os.readlink(text))
        if os.path.isdir(text):
            return Source(text, "dir")
        if os.path.isfile(text):
            return Source(text, "file")
    except OSError:
        return None
    return None


def python_paths() -> list[str]:
    """Where this interpreter, its standard library and tierfaas come from."""
    import tierfaas

    package_parent = str(Path(tierfaas.__file__).resolve().parent.parent)
    paths = [sys.base_prefix, sys.prefix, package_parent, os.path.realpath(sys.executable)]
    # site directories outside the prefixes (a user site, a PYTHONPATH entry); never the
    # working directory, which '' or a script's directory would put on sys.path.
    cwd = os.getcwd()
    for entry in sys.path:
        if entry and os.path.isabs(entry) and entry != cwd and "site-packages" in entry:
            paths.append(entry)
    return paths


def gather_sources(release_root: Path, extra: Iterable[str] = ()) -> list[Source]:
    """The host paths a release's root is built from, as they exist now."""
    wanted = [*SYSTEM_PATHS, *ETC_PATHS, *python_paths(), str(release_root), *extra]
    found = (describe(path) for path in wanted)
    return [source for source in found if source is not None]


def gather_hidden(paths: Iterable[Path | None]) -> list[Source]:
    """The host paths to mask, as they exist now: each as given and, when a symlink lies on
    its way, as it resolves (a link inside a bound directory would lead to the secret)."""
    wanted: dict[str, None] = {}
    for path in paths:
        if path is not None:
            wanted.update(dict.fromkeys([os.path.abspath(path), os.path.realpath(path)]))
    found = (describe(path) for path in wanted)
    return [source for source in found if source is not None]
