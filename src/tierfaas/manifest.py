"""The release manifest, ``tierfaas.toml``: what a release is and which functions it serves.

    [release]
    name = "demo"
    version = "1.0.0"
    preload = ["json", "numpy"] # optional: modules the release's zygote imports once, so its
                                # instances start with them loaded (at most 64)

    [defaults]                  # optional, applies to every function
    timeout_s = 30

    [functions.hello]
    handler = "handlers:hello"  # module:callable, resolved inside the release directory
    init = "handlers:setup"     # optional, run once when an instance starts
    timeout_s = 10              # a call over this kills its instance and answers 504
    memory_mb = 128             # memory limit of one instance (see below)
    cpu = 0.5                   # optional: CPU quota of one instance, in cores (0.01..1024)
    pids = 64                   # processes and threads one instance may hold at once
    network = "host"            # "host": the node's network; "none": no network at all
    concurrency = 1             # calls in flight per instance (pipelined to it)
    threads = 1                 # threads running a sync handler in one instance (blocking I/O)
    max_instances = 4           # instances of this function per node
    keep_alive_s = 300          # an idle instance is reaped after this
    env = { GREETING = "hi" }   # environment of the instance process
    api_keys = ["sha256:..."]   # optional: calls need one of these keys (SHA-256 digests)

Every key of a function but ``handler``, ``init`` and ``env`` may also be set in ``[defaults]``.

``memory_mb``: under the sandbox (``--isolation sandbox``, the default) it is the limit of the
instance's cgroup: its whole resident memory, its private ``/tmp`` included (a tmpfs of
``--sandbox-tmp-mb``), is held to it, and an instance over it is killed and its call answers
``502 out_of_memory``. With ``--isolation process`` it caps the instance's address space above
the runtime's own. Either way the node counts it against ``--memory-budget-mb``. ``cpu`` and
``pids`` are limits of the instance's cgroup too (with ``--isolation process`` they are not
enforced); ``cpu`` unset means no quota.

Loading never imports user code: it checks the file and every field and resolves each handler
module to a file that must lie inside the release directory (symlinks included), so a handler
can't import from outside it; ``preload`` names are checked but not resolved (they may be
installed packages) and not imported. Every problem raises ``ManifestError`` naming the file,
the field and the reason; unknown keys are errors too, because a typo'd setting silently
ignored is worse.
"""

from __future__ import annotations

import math
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tierfaas.errors import ManifestError
from tierfaas.names import is_valid_name

MANIFEST_NAME = "tierfaas.toml"
MAX_MANIFEST_BYTES = 1024 * 1024

_MODULE_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")
_ATTR_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_ENV_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_VERSION_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,63}")

# name -> (type, default, minimum, maximum)
_LIMITS: dict[str, tuple[type, float, float, float]] = {
    "timeout_s": (float, 30.0, 0.001, 3600.0),
    "memory_mb": (int, 256, 16, 65536),
    "pids": (int, 64, 1, 65536),
    "concurrency": (int, 1, 1, 1024),
    "threads": (int, 1, 1, 256),
    "max_instances": (int, 4, 1, 1024),
    "keep_alive_s": (float, 300.0, 0.0, 86400.0),
}
CPU_RANGE = (0.01, 1024.0)
"""Cores of ``cpu``: from a hundredth of one (the smallest quota worth enforcing) to 1024."""
NETWORKS = ("host", "none")
_FUNCTION_KEYS = {"handler", "init", "env", "api_keys", "cpu", "network", *_LIMITS}
_DEFAULT_KEYS = {"api_keys", "cpu", "network", *_LIMITS}
MAX_PRELOAD = 64
_API_KEY_RE = re.compile(r"sha256:[0-9a-f]{64}")
MAX_API_KEYS = 64


@dataclass(frozen=True, slots=True)
class EntryPoint:
    """``module:callable``, with the module's file resolved inside the release."""

    module: str
    attr: str
    path: Path

    def __str__(self) -> str:
        return f"{self.module}:{self.attr}"


@dataclass(frozen=True, slots=True)
class FunctionSpec:
    name: str
    handler: EntryPoint
    init: EntryPoint | None = None
    timeout_s: float = 30.0
    memory_mb: int = 256
    """The limit of an instance's memory, in MiB (see the module's doc)."""
    concurrency: int = 1
    threads: int = 1
    max_instances: int = 4
    keep_alive_s: float = 300.0
    env: dict[str, str] = field(default_factory=dict)
    api_keys: tuple[bytes, ...] = ()
    """SHA-256 digests of the keys a call must present one of; empty: no key needed."""
    cpu: float | None = None
    """The CPU quota of one instance, in cores; None: no quota."""
    pids: int = 64
    """How many processes and threads one instance may hold at once."""
    network: str = "host"
    """``"host"``: the node's network; ``"none"``: an instance with no network at all."""

    def describe(self) -> dict[str, Any]:
        """The JSON-able settings shown by ``GET /v1/functions``."""
        return {
            "name": self.name,
            "handler": str(self.handler),
            "init": None if self.init is None else str(self.init),
            "timeout_s": self.timeout_s,
            "memory_mb": self.memory_mb,
            "cpu": self.cpu,
            "pids": self.pids,
            "network": self.network,
            "concurrency": self.concurrency,
            "threads": self.threads,
            "max_instances": self.max_instances,
            "keep_alive_s": self.keep_alive_s,
            "api_key": bool(self.api_keys),  # whether calls need a key (never the keys)
        }


@dataclass(frozen=True, slots=True)
class Release:
    name: str
    version: str
    root: Path
    functions: dict[str, FunctionSpec]
    preload: tuple[str, ...] = ()
    """Modules the release's zygote imports once, before it forks instances (not checked to
    exist: they may be installed packages; never imported by ``load_release``)."""


def load_release(directory: Path | str) -> Release:
    """Reads and validates ``DIRECTORY/tierfaas.toml``. Raises ``ManifestError``."""
    root = Path(directory).resolve()
    path = root / MANIFEST_NAME
    where = str(path)
    if not path.is_file():
        raise ManifestError(where, "(file)", "no tierfaas.toml in the release directory")
    # Read at most the limit plus one byte: the size stat() reports can lie (a symlink to a
    # file in /proc says 0 bytes and reads without end).
    try:
        with path.open("rb") as file:
            raw = file.read(MAX_MANIFEST_BYTES + 1)
    except OSError as exc:
        raise ManifestError(where, "(file)", f"cannot read: {exc.strerror}") from None
    if len(raw) > MAX_MANIFEST_BYTES:
        raise ManifestError(where, "(file)", f"larger than {MAX_MANIFEST_BYTES} bytes")
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ManifestError(where, "(file)", f"not valid TOML: {exc}") from None
    except RecursionError:  # tomllib recurses into nested arrays and inline tables
        raise ManifestError(where, "(file)", "not valid TOML: nested too deeply") from None

    _only_keys(where, "", data, {"release", "defaults", "functions"})
    release = _table(where, "release", data.get("release"))
    _only_keys(where, "release", release, {"name", "version", "preload"})
    name = _string(where, "release.name", release.get("name"))
    if not is_valid_name(name):
        raise ManifestError(where, "release.name", f"{_show(name)} is not a valid name")
    version = _string(where, "release.version", release.get("version"))
    if not _VERSION_RE.fullmatch(version):
        raise ManifestError(where, "release.version", f"{_show(version)}: use [A-Za-z0-9._+-]")

    preload = _preload(where, "release.preload", release.get("preload", []))

    defaults = _table(where, "defaults", data.get("defaults", {}))
    _only_keys(where, "defaults", defaults, _DEFAULT_KEYS)
    functions_table = _table(where, "functions", data.get("functions"))
    if not functions_table:
        raise ManifestError(where, "functions", "the release defines no function")
    functions = {}
    for fname, raw in functions_table.items():
        functions[fname] = _function(where, root, fname, raw, defaults)
    return Release(name=name, version=version, root=root, functions=functions, preload=preload)


def _function(
    where: str, root: Path, name: str, raw: Any, defaults: dict[str, Any]
) -> FunctionSpec:
    prefix = f"functions.{name[:80]}"
    if not is_valid_name(name):
        raise ManifestError(where, prefix, "a function name is 1-64 of [A-Za-z0-9._-]")
    table = _table(where, prefix, raw)
    _only_keys(where, prefix, table, _FUNCTION_KEYS)
    handler = _entry_point(where, root, f"{prefix}.handler", table.get("handler"))
    init = None
    if "init" in table:
        init = _entry_point(where, root, f"{prefix}.init", table["init"])
    limits = {}
    for key, (kind, default, low, high) in _LIMITS.items():
        value = table.get(key, defaults.get(key, default))
        limits[key] = _number(where, f"{prefix}.{key}", value, kind, low, high)
    env = _env(where, f"{prefix}.env", table.get("env", {}))
    cpu_field, cpu = _inherited(prefix, "cpu", table, defaults, None)
    if cpu is not None:
        cpu = _number(where, cpu_field, cpu, float, *CPU_RANGE)
    network_field, network = _inherited(prefix, "network", table, defaults, "host")
    if network not in NETWORKS:
        allowed = " or ".join(repr(n) for n in NETWORKS)
        raise ManifestError(where, network_field, f"{_show(network)} is not {allowed}")
    if "api_keys" in table:
        api_keys = _api_keys(where, f"{prefix}.api_keys", table["api_keys"])
    elif "api_keys" in defaults:
        api_keys = _api_keys(where, "defaults.api_keys", defaults["api_keys"])
    else:
        api_keys = ()
    return FunctionSpec(
        name=name,
        handler=handler,
        init=init,
        env=env,
        api_keys=api_keys,
        cpu=cpu,
        network=network,
        **limits,
    )


def _inherited(
    prefix: str, key: str, table: dict[str, Any], defaults: dict[str, Any], default: Any
) -> tuple[str, Any]:
    """(the field an error names, the value): the function's own ``key``, else the one of
    ``[defaults]``, else ``default``."""
    if key in table:
        return f"{prefix}.{key}", table[key]
    if key in defaults:
        return f"defaults.{key}", defaults[key]
    return f"{prefix}.{key}", default


def _preload(where: str, fieldname: str, value: Any) -> tuple[str, ...]:
    """``["module", ...]``: dotted module names, checked but never imported here."""
    if not isinstance(value, list):
        raise ManifestError(
            where, fieldname, f"expected a list of module names, got {type(value).__name__}"
        )
    if len(value) > MAX_PRELOAD:
        raise ManifestError(where, fieldname, f"at most {MAX_PRELOAD} modules")
    modules: list[str] = []
    for number, item in enumerate(value, 1):
        if not isinstance(item, str) or len(item) > 255 or not _MODULE_RE.fullmatch(item):
            raise ManifestError(
                where, fieldname, f"entry {number}, {_show(item)}, is not a dotted module name"
            )
        if item in modules:
            raise ManifestError(where, fieldname, f"{item!r} is listed twice")
        modules.append(item)
    return tuple(modules)


def _api_keys(where: str, fieldname: str, value: Any) -> tuple[bytes, ...]:
    """``["sha256:HEX", ...]``: the digests of the accepted keys (never the keys themselves)."""
    if not isinstance(value, list) or not value:
        raise ManifestError(
            where, fieldname, "expected a non-empty list of 'sha256:HEX' digests of keys"
        )
    if len(value) > MAX_API_KEYS:
        raise ManifestError(where, fieldname, f"at most {MAX_API_KEYS} keys")
    digests = []
    for number, item in enumerate(value, 1):
        if not isinstance(item, str) or not _API_KEY_RE.fullmatch(item):
            # The entry itself is not shown: it may be a key pasted by mistake.
            raise ManifestError(
                where,
                fieldname,
                f"entry {number} is not 'sha256:' and 64 lowercase hex digits, the SHA-256 of "
                'a key (printf %s "$KEY" | sha256sum); keys never go in a manifest',
            )
        digests.append(bytes.fromhex(item[len("sha256:") :]))
    return tuple(digests)


def _entry_point(where: str, root: Path, fieldname: str, value: Any) -> EntryPoint:
    text = _string(where, fieldname, value)
    module, sep, attr = text.partition(":")
    if not sep or not _MODULE_RE.fullmatch(module) or not _ATTR_RE.fullmatch(attr):
        raise ManifestError(where, fieldname, f"{_show(text)} is not 'module:callable'")
    parts = module.split(".")
    candidates = [root.joinpath(*parts).with_suffix(".py"), root.joinpath(*parts, "__init__.py")]
    for candidate in candidates:
        try:
            found = candidate.is_file()
            resolved = candidate.resolve(strict=True) if found else candidate
        except (OSError, RuntimeError) as exc:  # a name too long, a symlink loop
            raise ManifestError(
                where, fieldname, f"module {_show(module)}: {getattr(exc, 'strerror', exc)}"
            ) from None
        if found:
            if not resolved.is_relative_to(root):
                raise ManifestError(
                    where, fieldname, f"module {module!r} resolves outside the release directory"
                )
            return EntryPoint(module=module, attr=attr, path=resolved)
    raise ManifestError(
        where, fieldname, f"module {_show(module)} not found in the release directory ({root})"
    )


def _number(where: str, fieldname: str, value: Any, kind: type, low: float, high: float) -> Any:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ManifestError(where, fieldname, f"expected a number, got {_show(value)}")
    if kind is int and not isinstance(value, int):
        raise ManifestError(where, fieldname, f"expected a whole number, got {_show(value)}")
    if not math.isfinite(value) or not low <= value <= high:
        raise ManifestError(where, fieldname, f"{value!r} is outside {low:g}..{high:g}")
    return kind(value)


def _env(where: str, fieldname: str, value: Any) -> dict[str, str]:
    table = _table(where, fieldname, value)
    env = {}
    for key, item in table.items():
        if not _ENV_RE.fullmatch(key):
            raise ManifestError(where, f"{fieldname}.{key[:80]}", "not a valid variable name")
        if not isinstance(item, str | int | float) or isinstance(item, bool):
            raise ManifestError(where, f"{fieldname}.{key[:80]}", "values are strings or numbers")
        env[key] = str(item)
    return env


def _table(where: str, fieldname: str, value: Any) -> dict[str, Any]:
    if value is None:
        raise ManifestError(where, fieldname, "missing")
    if not isinstance(value, dict):
        raise ManifestError(where, fieldname, f"expected a table, got {type(value).__name__}")
    return value


def _string(where: str, fieldname: str, value: Any) -> str:
    if value is None:
        raise ManifestError(where, fieldname, "missing")
    if not isinstance(value, str) or not value:
        raise ManifestError(where, fieldname, f"expected a non-empty string, got {_show(value)}")
    return value


def _show(value: Any, limit: int = 80) -> str:
    """``repr(value)``, cut to ``limit`` characters: errors quote what they refuse, briefly."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[: limit - 3]}..."


def _only_keys(where: str, prefix: str, table: dict[str, Any], allowed: set[str]) -> None:
    for key in table:
        if key not in allowed:
            name = f"{prefix}.{key[:80]}" if prefix else key[:80]
            raise ManifestError(where, name, f"unknown key (expected one of {sorted(allowed)})")
