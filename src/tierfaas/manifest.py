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
    min_instances = 0           # instances kept warm in the cluster however idle (0..max_instances)
    keep_alive_s = 300          # an idle instance is reaped after this
    env = { GREETING = "hi" }   # environment of the instance process
    api_keys = ["sha256:..."]   # optional: calls need one of these keys (SHA-256 digests)
    max_retries = 2             # async calls: retries after a 5xx or timeout (0..20)
    schedule = "*/5 * * * *"    # optional: cron in UTC, each tick runs an async call
    secrets = ["db"]            # optional: secrets ('tierfaas secret create') given to it as
                                # files /var/secrets/NAME and context.secret(NAME)

    [functions.hello-node]      # a function in any language: a program the node starts
    runtime = "exec"            # "python" (the default) or "exec"
    command = ["node", "index.js"]  # argv, run in the release directory, no shell
    protocol = "http"           # "http": an HTTP/1.1 server on $PORT; "stdio": frames on
                                # stdin/stdout (docs/exec-protocol.md)
    ready_path = "/healthz"     # optional, http: ready once GET of it answers 200
    listen = "port"             # http: "port" (127.0.0.1:$PORT) or "unix" ($SOCKET_PATH)
    pipeline = 1                # http: calls in flight on one connection to it (1..64)

Every key of a function but ``handler``, ``init``, ``env``, ``command``, ``ready_path``,
``schedule`` and ``secrets`` may also be set in ``[defaults]``. An exec function has no
``handler``, ``init`` or ``threads``; a Python one has no ``command``, ``protocol`` or
``ready_path``.
``[release] build = ["make"]`` (argv, optional) runs once when a node loads the release, in
the release directory, before ``check_commands`` checks that each exec function's program
exists.

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
import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tierfaas.calls import cron
from tierfaas.calls.retry import MAX_RETRIES_RANGE
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
    "min_instances": (int, 0, 0, 1024),
    "keep_alive_s": (float, 300.0, 0.0, 86400.0),
    "max_retries": (int, 2, *MAX_RETRIES_RANGE),
}
CPU_RANGE = (0.01, 1024.0)
"""Cores of ``cpu``: from a hundredth of one (the smallest quota worth enforcing) to 1024."""
NETWORKS = ("host", "none")
_FUNCTION_KEYS = {
    "handler", "init", "env", "api_keys", "cpu", "network", "schedule", "secrets", *_LIMITS
}  # fmt: skip
_EXEC_KEYS = {"runtime", "command", "protocol", "ready_path", "listen", "pipeline"}
_DEFAULT_KEYS = {"api_keys", "cpu", "network", "runtime", "protocol", *_LIMITS}
MAX_PRELOAD = 64
RUNTIMES = ("python", "exec")
PROTOCOLS = ("http", "stdio")
LISTENS = ("port", "unix")
MAX_PIPELINE = 64
"""Where an http function listens: ``port``, 127.0.0.1:$PORT; ``unix``, the Unix socket
$SOCKET_PATH (no TCP port any local process could reach; works without network)."""
MAX_ARGV = 256
MAX_ARG_CHARS = 4096
DEFAULT_PATH = "/usr/local/bin:/usr/bin:/bin"
"""Where a ``command`` without a slash is looked up (the instances' own default PATH)."""
_READY_PATH_RE = re.compile(r"/[A-Za-z0-9._~!$&'()*+,;=:@%/?-]{0,1023}")
_API_KEY_RE = re.compile(r"sha256:[0-9a-f]{64}")
MAX_API_KEYS = 64
MAX_SECRETS = 64


@dataclass(frozen=True, slots=True)
class EntryPoint:
    """``module:callable``, with the module's file resolved inside the release."""

    module: str
    attr: str
    path: Path

    def __str__(self) -> str:
        return f"{self.module}:{self.attr}"


@dataclass(frozen=True, slots=True)
class ExecCommand:
    """How an exec function's program is started and spoken to."""

    argv: tuple[str, ...]
    """Run in the release directory, no shell; argv[0] with a slash is a path relative to it."""
    protocol: str
    """``"http"``: an HTTP/1.1 server on 127.0.0.1:$PORT; ``"stdio"``: frames on stdin/stdout."""
    ready_path: str | None = None
    """http: the instance is ready once GET of this path answers 200 (None: once it accepts)."""
    listen: str = "port"
    """http: ``"port"`` (127.0.0.1:$PORT) or ``"unix"`` (the Unix socket $SOCKET_PATH)."""
    pipeline: int = 1
    """http: calls in flight on one connection (HTTP/1.1 pipelining); 1: one per connection.
    With N, an instance keeps at most ``ceil(concurrency / N)`` connections to its server."""


@dataclass(frozen=True, slots=True)
class FunctionSpec:
    name: str
    handler: EntryPoint | None
    """The Python handler (None for an exec function, which has ``command``)."""
    init: EntryPoint | None = None
    timeout_s: float = 30.0
    memory_mb: int = 256
    """The limit of an instance's memory, in MiB (see the module's doc)."""
    concurrency: int = 1
    threads: int = 1
    max_instances: int = 4
    keep_alive_s: float = 300.0
    min_instances: int = 0
    """Instances of the function the cluster keeps warm however idle: the master places them
    on the least loaded nodes (at most ``max_instances`` per node), which neither reap nor
    evict them."""
    env: dict[str, str] = field(default_factory=dict)
    api_keys: tuple[bytes, ...] = ()
    """SHA-256 digests of the keys a call must present one of; empty: no key needed."""
    cpu: float | None = None
    """The CPU quota of one instance, in cores; None: no quota."""
    pids: int = 64
    """How many processes and threads one instance may hold at once."""
    network: str = "host"
    """``"host"``: the node's network; ``"none"``: an instance with no network at all."""
    command: ExecCommand | None = None
    """The program of an exec function (None: a Python function)."""
    max_retries: int = 2
    """Async calls: how many times a call that ended in a 5xx or timed out is tried again."""
    schedule: str | None = None
    """A five-field cron expression in UTC (checked by ``tierfaas.calls.cron.parse``): the
    master runs the function as an async call at each tick. None: no schedule."""
    secrets: tuple[str, ...] = ()
    """Names of the secrets given to this function (and no other): whether they exist is
    checked by the node that loads the release, where the registry is."""

    @property
    def runtime(self) -> str:
        return "python" if self.command is None else "exec"

    def describe(self) -> dict[str, Any]:
        """The JSON-able settings shown by ``GET /v1/functions``."""
        command = self.command
        return {
            "name": self.name,
            "runtime": self.runtime,
            "handler": None if self.handler is None else str(self.handler),
            "init": None if self.init is None else str(self.init),
            "env": sorted(self.env),  # the names only: values may be credentials
            "command": None if command is None else list(command.argv),
            "protocol": None if command is None else command.protocol,
            "listen": None if command is None or command.protocol != "http" else command.listen,
            "pipeline": None if command is None or command.protocol != "http" else command.pipeline,
            "timeout_s": self.timeout_s,
            "memory_mb": self.memory_mb,
            "cpu": self.cpu,
            "pids": self.pids,
            "network": self.network,
            "concurrency": self.concurrency,
            "threads": self.threads,
            "max_instances": self.max_instances,
            "min_instances": self.min_instances,
            "keep_alive_s": self.keep_alive_s,
            "api_key": bool(self.api_keys),  # whether calls need a key (never the keys)
            "max_retries": self.max_retries,
            "schedule": self.schedule,
            "secrets": list(self.secrets),  # names only, never values
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
    build: tuple[str, ...] = ()
    """argv run once when a node loads the release, in its directory (empty: no build)."""


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
    _only_keys(where, "release", release, {"name", "version", "preload", "build"})
    name = _string(where, "release.name", release.get("name"))
    if not is_valid_name(name):
        raise ManifestError(where, "release.name", f"{_show(name)} is not a valid name")
    version = _string(where, "release.version", release.get("version"))
    if not _VERSION_RE.fullmatch(version):
        raise ManifestError(where, "release.version", f"{_show(version)}: use [A-Za-z0-9._+-]")

    preload = _preload(where, "release.preload", release.get("preload", []))
    build = _argv(where, "release.build", release["build"]) if "build" in release else ()

    defaults = _table(where, "defaults", data.get("defaults", {}))
    _only_keys(where, "defaults", defaults, _DEFAULT_KEYS)
    functions_table = _table(where, "functions", data.get("functions"))
    if not functions_table:
        raise ManifestError(where, "functions", "the release defines no function")
    functions = {}
    for fname, raw in functions_table.items():
        functions[fname] = _function(where, root, fname, raw, defaults)
    return Release(
        name=name, version=version, root=root, functions=functions, preload=preload, build=build
    )


def _function(
    where: str, root: Path, name: str, raw: Any, defaults: dict[str, Any]
) -> FunctionSpec:
    prefix = f"functions.{name[:80]}"
    if not is_valid_name(name):
        raise ManifestError(where, prefix, "a function name is 1-64 of [A-Za-z0-9._-]")
    table = _table(where, prefix, raw)
    _only_keys(where, prefix, table, _FUNCTION_KEYS | _EXEC_KEYS)
    runtime_field, runtime = _inherited(prefix, "runtime", table, defaults, "python")
    if runtime not in RUNTIMES:
        allowed = " or ".join(repr(r) for r in RUNTIMES)
        raise ManifestError(where, runtime_field, f"{_show(runtime)} is not {allowed}")
    handler = init = command = None
    if runtime == "python":
        for key in ("command", "protocol", "ready_path", "listen", "pipeline"):
            if key in table:
                raise ManifestError(
                    where, f"{prefix}.{key}", 'only an exec function has this (runtime = "exec")'
                )
        handler = _entry_point(where, root, f"{prefix}.handler", table.get("handler"))
        if "init" in table:
            init = _entry_point(where, root, f"{prefix}.init", table["init"])
    else:
        for key in ("handler", "init", "threads"):
            if key in table:
                raise ManifestError(
                    where,
                    f"{prefix}.{key}",
                    "an exec function has no Python handler, init or threads; its program is "
                    "its command",
                )
        command = _exec_command(where, prefix, table, defaults)
    limits = {}
    for key, (kind, default, low, high) in _LIMITS.items():
        value = table.get(key, defaults.get(key, default))
        if runtime == "exec" and key == "threads":
            value = default  # a [defaults] threads is for the Python functions
        limits[key] = _number(where, f"{prefix}.{key}", value, kind, low, high)
    if command is not None and command.pipeline > limits["concurrency"]:
        raise ManifestError(
            where,
            f"{prefix}.pipeline",
            f"{command.pipeline} is more than concurrency ({limits['concurrency']}), the calls "
            "an instance has in flight",
        )
    if limits["min_instances"] > limits["max_instances"]:
        where_min = (
            f"{prefix}.min_instances" if "min_instances" in table else "defaults.min_instances"
        )
        raise ManifestError(
            where,
            where_min,
            f"{limits['min_instances']} is more than max_instances ({limits['max_instances']})",
        )
    env = _env(where, f"{prefix}.env", table.get("env", {}))
    cpu_field, cpu = _inherited(prefix, "cpu", table, defaults, None)
    if cpu is not None:
        cpu = _number(where, cpu_field, cpu, float, *CPU_RANGE)
    network_field, network = _inherited(prefix, "network", table, defaults, "host")
    if network not in NETWORKS:
        allowed = " or ".join(repr(n) for n in NETWORKS)
        raise ManifestError(where, network_field, f"{_show(network)} is not {allowed}")
    http_on_port = command is not None and command.protocol == "http" and command.listen == "port"
    if http_on_port and network != "host":
        raise ManifestError(
            where,
            network_field,
            "an http function on a port listens on the node's loopback, so it needs "
            'network = "host"; without network it listens on a Unix socket '
            '(listen = "unix") or speaks protocol = "stdio"',
        )
    if "api_keys" in table:
        api_keys = _api_keys(where, f"{prefix}.api_keys", table["api_keys"])
    elif "api_keys" in defaults:
        api_keys = _api_keys(where, "defaults.api_keys", defaults["api_keys"])
    else:
        api_keys = ()
    schedule = (
        _schedule(where, f"{prefix}.schedule", table["schedule"]) if "schedule" in table else None
    )
    secrets = _secrets(where, f"{prefix}.secrets", table["secrets"]) if "secrets" in table else ()
    return FunctionSpec(
        name=name,
        handler=handler,
        init=init,
        env=env,
        api_keys=api_keys,
        cpu=cpu,
        network=network,
        command=command,
        schedule=schedule,
        secrets=secrets,
        **limits,
    )


def _schedule(where: str, fieldname: str, value: Any) -> str:
    """A cron expression (``tierfaas.calls.cron``), kept as written once it parses."""
    text = _string(where, fieldname, value)
    try:
        cron.parse(text)
    except ValueError as exc:
        raise ManifestError(where, fieldname, f"not a cron expression: {exc}") from None
    return text


def _secrets(where: str, fieldname: str, value: Any) -> tuple[str, ...]:
    """``["db", ...]``: names of secrets (the rule of function names), each once."""
    if not isinstance(value, list):
        raise ManifestError(where, fieldname, 'expected a list of secret names, e.g. ["db"]')
    if len(value) > MAX_SECRETS:
        raise ManifestError(where, fieldname, f"at most {MAX_SECRETS} secrets")
    names: list[str] = []
    for number, item in enumerate(value, 1):
        if not isinstance(item, str) or not is_valid_name(item):
            raise ManifestError(
                where,
                fieldname,
                f"entry {number}, {_show(item)}, is not a secret name (1-64 of [A-Za-z0-9._-])",
            )
        if item in names:
            raise ManifestError(where, fieldname, f"{item!r} is listed twice")
        names.append(item)
    return tuple(names)


def _exec_command(
    where: str, prefix: str, table: dict[str, Any], defaults: dict[str, Any]
) -> ExecCommand:
    if "command" not in table:
        raise ManifestError(
            where,
            f"{prefix}.command",
            'missing: an exec function names its program, e.g. ["node", "index.js"]',
        )
    argv = _argv(where, f"{prefix}.command", table["command"])
    protocol_field, protocol = _inherited(prefix, "protocol", table, defaults, None)
    if protocol is None:
        raise ManifestError(where, protocol_field, 'missing: "http" or "stdio"')
    if protocol not in PROTOCOLS:
        allowed = " or ".join(repr(x) for x in PROTOCOLS)
        raise ManifestError(where, protocol_field, f"{_show(protocol)} is not {allowed}")
    ready_path = None
    if "ready_path" in table:
        if protocol != "http":
            raise ManifestError(
                where, f"{prefix}.ready_path", "only an http function has a ready_path"
            )
        ready_path = _string(where, f"{prefix}.ready_path", table["ready_path"])
        if not _READY_PATH_RE.fullmatch(ready_path):
            raise ManifestError(
                where,
                f"{prefix}.ready_path",
                f"{_show(ready_path)} is not a URL path like '/healthz'",
            )
    listen = "port"
    if "listen" in table:
        if protocol != "http":
            raise ManifestError(where, f"{prefix}.listen", "only an http function has a listen")
        listen = table["listen"]
        if listen not in LISTENS:
            allowed = " or ".join(repr(x) for x in LISTENS)
            raise ManifestError(where, f"{prefix}.listen", f"{_show(listen)} is not {allowed}")
    pipeline = 1
    if "pipeline" in table:
        if protocol != "http":
            raise ManifestError(where, f"{prefix}.pipeline", "only an http function has a pipeline")
        pipeline = _number(where, f"{prefix}.pipeline", table["pipeline"], int, 1, MAX_PIPELINE)
    return ExecCommand(
        argv=argv, protocol=protocol, ready_path=ready_path, listen=listen, pipeline=pipeline
    )


def _argv(where: str, fieldname: str, value: Any) -> tuple[str, ...]:
    """``["program", "arg", ...]``: a non-empty list of strings, run without a shell."""
    if not isinstance(value, list) or not value:
        raise ManifestError(
            where, fieldname, 'expected a non-empty list of strings, e.g. ["node", "index.js"]'
        )
    if len(value) > MAX_ARGV:
        raise ManifestError(where, fieldname, f"at most {MAX_ARGV} arguments")
    for number, item in enumerate(value, 1):
        if not isinstance(item, str) or "\0" in item or len(item) > MAX_ARG_CHARS:
            raise ManifestError(
                where,
                fieldname,
                f"argument {number}, {_show(item)}, is not a string of at "
                f"most {MAX_ARG_CHARS} characters without NUL",
            )
    if not value[0]:
        raise ManifestError(where, fieldname, "the program (argument 1) is empty")
    return tuple(value)


def resolve_program(root: Path, program: str, path: str = DEFAULT_PATH) -> Path | None:
    """Where an exec command's program is: with a slash, relative to the release directory
    (or absolute); without one, the first executable file of that name on ``path``. None:
    nowhere (or not an executable file)."""
    if "/" in program:
        candidate = Path(program) if program.startswith("/") else root / program
        return candidate if _is_executable(candidate) else None
    for directory in path.split(":"):
        if directory:
            candidate = Path(directory) / program
            if _is_executable(candidate):
                return candidate
    return None


def _is_executable(path: Path) -> bool:
    try:
        return path.is_file() and os.access(path, os.X_OK)
    except OSError:
        return False


def check_commands(release: Release, path: str = DEFAULT_PATH) -> None:
    """Checks that every exec function's program exists and is executable, after the build.
    Raises ``ManifestError`` naming the first function whose program is missing."""
    where = str(release.root / MANIFEST_NAME)
    for spec in release.functions.values():
        if spec.command is None:
            continue
        program = spec.command.argv[0]
        if resolve_program(release.root, program, path) is None:
            if "/" in program:
                reason = f"program {_show(program)} is not an executable file in {release.root}"
            else:
                reason = f"program {_show(program)} is not found on PATH ({path})"
            if release.build:
                reason += " (after the release's build step)"
            raise ManifestError(where, f"functions.{spec.name}.command", reason)


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
