"""The compiled call path: the modules every invocation runs through, compiled with mypyc
when a C compiler is at hand, loaded in place of their sources only when they were built from
exactly these sources.

``python -m tierfaas.native.build`` (which ``make run`` and ``make test`` call) compiles
``HOT_MODULES`` into ``<sys.prefix>/tierfaas-native/`` with a manifest of the SHA-256 of each
source it compiled. ``activate()``, called when the ``tierfaas`` package is imported, compares
those digests with the sources beside it: all equal, and an import hook loads the compiled
modules; one differs (a source edited since the build, another checkout, an older tree), and
none is loaded, since the compiled modules call each other directly and a mix would run code
that is not in the sources. ``TIERFAAS_NATIVE=0`` turns it off. The node logs which it runs
(``STATE``).

The compiled code does what the sources say, with one difference a caller can see: mypyc
checks argument and attribute types at run time, so a value of the wrong type raises
``TypeError`` where the interpreter would let it through.
"""

from __future__ import annotations

import hashlib
import importlib.abc
import importlib.machinery
import importlib.util
import json
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, Final

HOT_MODULES: Final = (
    "tierfaas.funcstats.stats",
    "tierfaas.funcstats.window",
    "tierfaas.http.app",
    "tierfaas.http.metrics",
    "tierfaas.http.protocol",
    "tierfaas.routing.router",
    "tierfaas.runtime.eviction",
    "tierfaas.runtime.exec_http",
    "tierfaas.runtime.exec_instance",
    "tierfaas.runtime.instance",
    "tierfaas.runtime.meter",
    "tierfaas.runtime.pool",
    "tierfaas.runtime.runtime",
)
"""What a warm call runs through, from the connection's protocol to the instance's wire, and
the statistics it updates."""

GROUP: Final = "tierfaas_native"
"""mypyc's shared library of the compiled modules: ``tierfaas_native__mypyc``."""
MANIFEST: Final = "manifest.json"
FORMAT: Final = 1
ENV: Final = "TIERFAAS_NATIVE"


def native_dir() -> Path:
    """Where the build puts the compiled modules: inside the environment tierfaas runs in."""
    return Path(sys.prefix) / "tierfaas-native"


def source_path(package_dir: Path, module: str) -> Path:
    """The source file of ``module`` (``tierfaas.x.y``) under the package directory."""
    parts = module.split(".")
    return package_dir.joinpath(*parts[1:]).with_suffix(".py")


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def source_digests(package_dir: Path) -> dict[str, str | None]:
    """The digest of each hot module's source under the package directory (None: none)."""
    digests: dict[str, str | None] = {}
    for module in HOT_MODULES:
        try:
            digests[module] = digest(source_path(package_dir, module))
        except OSError:
            digests[module] = None
    return digests


def runtime_tag() -> str:
    """What compiled modules must have been built for: this interpreter, exactly."""
    return f"{sys.implementation.cache_tag} {sys.version}"


def disabled(setting: str | None) -> bool:
    """``TIERFAAS_NATIVE`` turns the compiled modules off."""
    return setting is not None and setting.strip().lower() in ("0", "off", "no", "false")


@dataclass(frozen=True)
class NativeState:
    """Whether the compiled call path is loaded, and why not when it is not."""

    active: bool
    reason: str
    files: Mapping[str, Path] = field(default_factory=dict)  # module name -> its .so

    def describe(self) -> str:
        if self.active:
            return f"compiled (mypyc, {len(self.files) - 1} modules)"
        return f"interpreted ({self.reason})"


def decide(
    setting: str | None,
    manifest: Mapping[str, Any] | None,
    digests: Mapping[str, str | None],
    tag: str,
    root: Path,
) -> NativeState:
    """Whether to load the compiled modules. ``setting``: ``TIERFAAS_NATIVE``; ``manifest``:
    the build's (None: no build); ``digests``: each hot module's source digest now (None: no
    source); ``tag``: ``runtime_tag()``; ``root``: the build's directory."""
    if disabled(setting):
        return NativeState(False, f"{ENV}={setting}")
    if manifest is None:
        return NativeState(False, "not built: python -m tierfaas.native.build")
    if manifest.get("format") != FORMAT or manifest.get("runtime") != tag:
        return NativeState(False, "built for another Python: rebuild it")
    built: Mapping[str, Any] = manifest.get("modules") or {}
    files: Mapping[str, Any] = manifest.get("files") or {}
    extra = sorted(set(built) - set(HOT_MODULES))
    if extra:  # compiled with the others, which would call it compiled
        return NativeState(False, f"the build has {extra[0]}, no longer compiled: rebuild it")
    for module in HOT_MODULES:
        if module not in built or not isinstance(files.get(module), str):
            return NativeState(False, f"the build has no {module}: rebuild it")
        if digests.get(module) != built[module]:
            return NativeState(False, f"{module} changed since the build: rebuild it")
    group = f"{GROUP}__mypyc"
    if not isinstance(files.get(group), str):
        return NativeState(False, "the build has no shared library: rebuild it")
    paths = {name: root / files[name] for name in (*HOT_MODULES, group)}
    missing = sorted(name for name, path in paths.items() if not path.is_file())
    if missing:
        return NativeState(False, f"the build lacks {missing[0]}'s file: rebuild it")
    return NativeState(True, "", paths)


class NativeFinder(importlib.abc.MetaPathFinder):
    """Finds each compiled module (and their shared library) at its file of the build."""

    def __init__(self, files: Mapping[str, Path]) -> None:
        self.files = dict(files)

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        file = self.files.get(fullname)
        if file is None:
            return None
        loader = importlib.machinery.ExtensionFileLoader(fullname, str(file))
        return importlib.util.spec_from_file_location(fullname, file, loader=loader)


STATE = NativeState(False, "not activated")


def activate(package_dir: Path, root: Path | None = None) -> NativeState:
    """Loads the compiled modules from now on if ``decide`` says so (before any of them is
    imported: the ``tierfaas`` package calls this first). ``root``: the build (default
    ``native_dir()``)."""
    global STATE
    root = native_dir() if root is None else root
    manifest: dict[str, Any] | None = None
    digests: dict[str, str | None] = {}
    setting = os.environ.get(ENV)
    try:
        manifest = json.loads((root / MANIFEST).read_text())
        if not isinstance(manifest, dict) or not all(
            isinstance(name, str) for name in (manifest.get("files") or {}).values()
        ):
            raise ValueError("not a manifest of this build")
    except FileNotFoundError:
        pass
    except (OSError, ValueError, AttributeError) as exc:
        STATE = NativeState(False, f"unreadable manifest: {exc}")
        return STATE
    if manifest is not None and not disabled(setting):
        digests = source_digests(package_dir)
    STATE = decide(setting, manifest, digests, runtime_tag(), root)
    if STATE.active and not any(isinstance(f, NativeFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, NativeFinder(STATE.files))
    return STATE
