"""The ``tierfaas`` command line. ``tierfaas --help`` lists the commands; each has ``--help``."""

from __future__ import annotations

import dataclasses
import functools
import inspect
import json
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, get_args, get_origin, get_type_hints

import typer
from rich.console import Console

from tierfaas import __version__, errors
from tierfaas.clicmds import functions as function_commands
from tierfaas.clicmds.options import AsJson as _AsJson
from tierfaas.clicmds.options import FunctionName, err
from tierfaas.clicmds.options import NodeUrl as _NodeUrl
from tierfaas.clicmds.options import TokenFile as _TokenFile
from tierfaas.clicmds.options import fail as _fail
from tierfaas.config import Address, NodeConfig
from tierfaas.logs import setup_logging
from tierfaas.secrets.cli import secret as secret_commands

app = typer.Typer(
    help="tierfaas: a self-organizing Function-as-a-Service engine.",
    no_args_is_help=True,
    add_completion=True,  # --install-completion, --show-completion (docs/operations.md)
    pretty_exceptions_enable=False,
)


def _doc(name: str) -> str:
    """The help of setting ``name``: its doc and unit, from ``NodeConfig``."""
    f = NodeConfig.__dataclass_fields__[name]
    # Escaped: rich would read "[s]" as markup and drop it from --help.
    unit = rf" \[{f.metadata['unit']}]" if f.metadata["unit"] else ""
    return f"{f.metadata['doc']}{unit}."


# -- tierfaas node: one flag per NodeConfig setting --------------------------------------------
#
# Each flag's type, default and help come from the setting (config.py), so a default lives in
# one place. What only the command line adds is here: a flag named otherwise than its setting,
# the settings also read from an environment variable, and a help prefix.

_FLAG_NAMES = {"release_dir": "release"}
_ENVVARS = frozenset(
    {
        "release_dir", "http", "http_unix", "name", "gossip", "rpc", "join", "key_file",
        "registry", "provider", "admin_token_file", "isolation",
    }
)  # fmt: skip
_HELP_PREFIX = {"join": "comma-separated "}


@dataclass(frozen=True)
class NodeFlag:
    """The ``tierfaas node`` flag of one ``NodeConfig`` setting."""

    setting: str
    param: str  # the flag is --PARAM with dashes for underscores
    cli_type: Any  # what the flag takes: Path, str, int, float, bool, or one of those | None
    default: Any  # as the flag takes and shows it
    help: str
    envvar: str | None
    to_setting: Callable[[Any], Any]  # the flag's value to the setting's

    def parameter(self) -> inspect.Parameter:
        option = typer.Option(help=self.help, envvar=self.envvar)
        return inspect.Parameter(
            self.param,
            inspect.Parameter.KEYWORD_ONLY,
            default=self.default,
            annotation=Annotated[self.cli_type, option],
        )


def _flag(f: dataclasses.Field[Any], hint: Any) -> NodeFlag:
    """How setting ``f`` (of type ``hint``) is given on the command line."""
    name = f.name
    optional = type(None) in get_args(hint)
    base = next((a for a in get_args(hint) if a is not type(None)), hint) if optional else hint
    default: Any = f.default
    to_setting: Callable[[Any], Any] = _same
    if base is Address:  # HOST:PORT, parsed into the setting's Address
        cli_type: Any = str
        default = None if default is None else str(default)
        to_setting = functools.partial(_address, name)
    elif get_origin(base) is tuple:  # a comma-separated list
        cli_type = str
        default = ",".join(default)
        to_setting = _split
    elif get_origin(base) is Literal:  # checked by NodeConfig, which names the choices
        cli_type = str
    else:
        cli_type = base
    param = _FLAG_NAMES.get(name, name)
    return NodeFlag(
        setting=name,
        param=param,
        cli_type=cli_type | None if optional else cli_type,
        default=default,
        help=_HELP_PREFIX.get(name, "") + _doc(name),
        envvar=f"TIERFAAS_{param.upper()}" if name in _ENVVARS else None,
        to_setting=to_setting,
    )


def _same(value: Any) -> Any:
    return value


def _address(name: str, text: str | None) -> Address | None:
    return None if text is None else Address.parse(text, name)


def _split(text: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in text.split(",") if item.strip())


def node_flags() -> list[NodeFlag]:
    """One flag per ``NodeConfig`` setting, in the settings' order."""
    hints = get_type_hints(NodeConfig)
    return [_flag(f, hints[f.name]) for f in dataclasses.fields(NodeConfig)]


def node_config(
    values: Mapping[str, Any],
    resolve: Callable[[Iterable[str]], tuple[str, ...]] | None = None,
) -> NodeConfig:
    """The ``NodeConfig`` that flag ``values`` (by parameter name, as ``node`` gets them)
    describe. ``resolve`` turns ``--join`` seeds into addresses (default: DNS names become
    every address they have; see ``resolve_seeds``). Raises ``ConfigError``."""
    if resolve is None:
        from tierfaas.deploy.kubernetes.seeds import resolve_seeds

        resolve = resolve_seeds
    settings = {flag.setting: flag.to_setting(values[flag.param]) for flag in node_flags()}
    settings["join"] = resolve(settings["join"])
    return NodeConfig(**settings)


_RELEASE_VERSION = inspect.Parameter(
    "release_version",
    inspect.Parameter.KEYWORD_ONLY,
    default=None,
    annotation=Annotated[
        str | None,
        typer.Option(
            help="with --registry: the version to serve (default: the registry's desired one)",
            envvar="TIERFAAS_RELEASE_VERSION",
        ),
    ],
)


def _with_node_flags(command: Callable[..., None]) -> Callable[..., None]:
    """Gives ``command(**values)`` a flag per setting (and --release-version after
    --registry), which typer reads from its signature."""
    params = []
    for flag in node_flags():
        params.append(flag.parameter())
        if flag.setting == "registry":
            params.append(_RELEASE_VERSION)
    command.__signature__ = inspect.Signature(params, return_annotation=None)  # type: ignore[attr-defined]
    return command


@app.command()
@_with_node_flags
def node(**values: Any) -> None:
    """Run one node: serve the release's functions over HTTP until SIGTERM or Ctrl-C.

    With --registry the node serves a version from the registry (--release-version, else the
    desired one); with --provider too, it deploys new versions whenever it is master."""
    from tierfaas.deploy.provider import ProviderError
    from tierfaas.node import run_node
    from tierfaas.runtime.zygote_client import ZygoteError

    registry: Path | None = values["registry"]
    release_version: str | None = values.pop("release_version")
    try:
        if registry is not None:
            values["release"] = _release_from_registry(registry, release_version)
        elif release_version is not None:
            raise errors.ConfigError("release_version", "needs --registry")
        config = node_config(values)
        setup_logging(config.log_level)
        code = run_node(config)
    except (
        errors.ConfigError,
        errors.ManifestError,
        errors.BuildFailed,
        errors.SandboxUnavailable,
        ProviderError,
        ZygoteError,
    ) as exc:
        raise _fail(str(exc)) from None
    if code:
        raise typer.Exit(code)


def _release_from_registry(registry: Path, version: str | None) -> Path:
    from tierfaas.deploy.registry import DirectoryRegistry, RegistryError

    store = DirectoryRegistry(registry)
    try:
        version = version or store.desired()
        if version is None:
            raise _fail(f"the registry {registry} has no desired version: tierfaas publish first")
        return store.release_dir(version)
    except RegistryError as exc:
        raise _fail(str(exc)) from None


@app.command()
def invoke(
    function: FunctionName,
    data: Annotated[
        str, typer.Option("--data", "-d", help="request body; '@FILE' reads a file, '-' stdin")
    ] = "",
    url: Annotated[str, typer.Option(help="a node or the front door")] = "http://127.0.0.1:8080",
    timeout: Annotated[float, typer.Option(help="seconds to wait for the answer")] = 60.0,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="print the headers")] = False,
    async_call: Annotated[
        bool,
        typer.Option(
            "--async",
            help="queue the call (POST /async-function/NAME) and print its call id once the "
            "cluster has kept it; follow it with 'tierfaas calls show ID'",
        ),
    ] = False,
    callback_url: Annotated[
        str | None,
        typer.Option(
            help="with --async: where the node POSTs the call's outcome when it ends (must be "
            "allowed by the nodes' --callback-allow)"
        ),
    ] = None,
    idempotency_key: Annotated[
        str | None,
        typer.Option(
            help="with --async: a repeat with the same key (1-128 printable ASCII) within the "
            "window returns the first call's id and runs nothing"
        ),
    ] = None,
) -> None:
    """Call a function and print its answer; exits 1 on an error answer. With --async, queue
    it instead and print its call id."""
    if data == "-":
        body = sys.stdin.buffer.read()
    elif data.startswith("@"):
        body = Path(data[1:]).read_bytes()
    else:
        body = data.encode()
    if not async_call and (callback_url is not None or idempotency_key is not None):
        raise _fail("--callback-url and --idempotency-key go with --async")
    if async_call:
        _invoke_async(function, body, url, timeout, verbose, callback_url, idempotency_key)
        return
    request = urllib.request.Request(
        f"{url.rstrip('/')}/function/{function}", data=body, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            status, headers, answer = response.status, response.headers, response.read()
    except urllib.error.HTTPError as exc:
        status, headers, answer = exc.code, exc.headers, exc.read()
    except (urllib.error.URLError, OSError) as exc:
        raise _fail(f"cannot reach {url}: {getattr(exc, 'reason', exc)}", 1) from None
    if verbose:
        err.print(f"HTTP {status}", highlight=False)
        for key, value in headers.items():
            err.print(f"{key}: {value}", highlight=False)
    if status >= 400:
        try:
            detail = json.loads(answer)
            message = f"{status} {detail.get('error')}: {detail.get('message')}"
        except ValueError:
            message = f"{status}: {answer[:500]!r}"
        raise _fail(message, 1)
    sys.stdout.buffer.write(answer)
    sys.stdout.flush()


def _invoke_async(
    function: str,
    body: bytes,
    url: str,
    timeout: float,
    verbose: bool,
    callback_url: str | None,
    idempotency_key: str | None,
) -> None:
    from tierfaas.calls.render import render_accepted, request

    headers = {"Content-Type": "application/octet-stream"}
    if callback_url is not None:
        headers["X-Callback-Url"] = callback_url
    if idempotency_key is not None:
        headers["Idempotency-Key"] = idempotency_key
    path = "/async-function/" + urllib.parse.quote(function, safe="")
    try:
        answer = request(url, path, method="POST", body=body, headers=headers, timeout=timeout)
    except OSError as exc:
        raise _fail(f"cannot reach {url}: {getattr(exc, 'reason', exc)}", 1) from None
    if verbose:
        err.print(f"HTTP {answer.status}", highlight=False)
        for key, value in answer.headers.items():
            err.print(f"{key}: {value}", highlight=False)
    if answer.status != 202:
        raise _fail(answer.error_line(), 1)
    accepted = answer.json()
    replay = answer.headers.get("x-idempotent-replay") == "true"
    err.print(render_accepted(accepted, replay), highlight=False, soft_wrap=True)
    print(accepted["call_id"])


@app.command()
def keygen(
    out: Annotated[
        Path | None, typer.Option(help="write the key to this new file (mode 600)")
    ] = None,
) -> None:
    """Make a new cluster key (base64). Give every node of a cluster the same one."""
    from tierfaas.keys import generate_key, write_key_file

    if out is None:
        print(generate_key())
        return
    try:
        write_key_file(out)
    except FileExistsError:
        raise _fail(f"{out} exists; refusing to overwrite a key") from None
    err.print(f"wrote a new cluster key to {out}", highlight=False)


@app.command()
def status(
    url: Annotated[str, typer.Option(help="any node of the cluster")] = "http://127.0.0.1:8080",
    as_json: Annotated[bool, typer.Option("--json", help="print the raw JSON")] = False,
    admin_token_file: _TokenFile = None,
) -> None:
    """Show the cluster as one node sees it (members, roles, replicas, versions, uptime, and
    each node's memory used of its budget and evictions in the last minute) and that node's
    functions: how each is isolated (sandbox or process), its limits, instances."""
    from tierfaas.http.auth import load_admin_token
    from tierfaas.status import fetch_cluster, fetch_functions, render_cluster, render_functions

    try:
        token = load_admin_token(admin_token_file)
        view = fetch_cluster(url, token=token)
    except errors.ConfigError as exc:
        raise _fail(str(exc)) from None
    except OSError as exc:
        raise _fail(f"cannot reach {url}: {getattr(exc, 'reason', exc)}", 1) from None
    functions = fetch_functions(url, token=token)
    if as_json:
        print(json.dumps({**view, "functions": functions}, indent=2))
    else:
        Console().print(render_cluster(view))
        if functions is not None:
            Console().print(render_functions(functions))


@app.command()
def logs(
    function: FunctionName,
    follow_: Annotated[
        bool, typer.Option("--follow", "-f", help="keep printing new lines until Ctrl-C")
    ] = False,
    since: Annotated[
        str | None,
        typer.Option(help="only lines since: a duration (30s, 5m, 2h) or an RFC 3339 time"),
    ] = None,
    request: Annotated[
        str | None, typer.Option(help="only the lines of this request id (X-Request-Id)")
    ] = None,
    node: Annotated[str | None, typer.Option(help="only this node's lines")] = None,
    limit: Annotated[
        int, typer.Option(min=1, max=10000, help="at most this many lines (the newest)")
    ] = 1000,
    url: Annotated[str, typer.Option(help="any node of the cluster")] = "http://127.0.0.1:8080",
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON object a line")] = False,
    admin_token_file: _TokenFile = None,
) -> None:
    """What a function printed (stdout and stderr), from every node of the cluster merged in
    time order, each line with its node, instance and request id."""
    import threading
    import time

    from tierfaas.funclogs import client
    from tierfaas.funclogs.line import LogLine
    from tierfaas.funclogs.merge import merge, render
    from tierfaas.funclogs.since import parse_since
    from tierfaas.http.auth import load_admin_token

    if since is not None:
        try:
            parse_since(since, time.time())
        except ValueError as exc:
            raise _fail(str(exc)) from None
    try:
        token = load_admin_token(admin_token_file)
        found = client.targets(url, token, node)
    except errors.ConfigError as exc:
        raise _fail(str(exc)) from None
    except (client.LogsError, ValueError) as exc:
        raise _fail(str(exc), 1) from None
    query: dict[str, str | int | None] = {
        "function": function, "since": since, "request": request, "limit": limit,
    }  # fmt: skip

    def emit(item: LogLine | dict[str, Any]) -> None:
        if isinstance(item, dict):
            note = f"({item.get('node')}: {item.get('missed')} lines missed, reading too slowly)"
            print(json.dumps(item) if as_json else note, flush=True)
        else:
            print(json.dumps(item.to_json()) if as_json else render(item), flush=True)

    if follow_:
        stop = threading.Event()
        try:
            failures = client.follow(found, query, token, emit, stop)
        except KeyboardInterrupt:
            stop.set()
            return
    else:
        per_node, failures = client.fetch(found, query, token, timeout=30.0)
        for line in merge(per_node, limit):
            emit(line)
    for name, reason in failures.items():
        err.print(f"[yellow]{name}:[/] {reason}", highlight=False, soft_wrap=True)
    if failures and len(failures) == len(found):
        raise typer.Exit(1)


# What is deployed and how it does: functions, describe (tierfaas.clicmds.functions).
function_commands.register(app)

# -- asynchronous calls --------------------------------------------------------------------------

calls = typer.Typer(
    help="Asynchronous calls (tierfaas invoke --async): list, show, retry, dead letters."
)
app.add_typer(calls, name="calls")

_FunctionFilter = Annotated[str | None, typer.Option("--function", help="only this function")]
_Limit = Annotated[int, typer.Option(min=1, max=1000, help="at most this many (1..1000)")]


def _calls_request(
    url: str,
    path: str,
    token_file: Path | None,
    *,
    method: str = "GET",
    query: dict[str, str | int | None] | None = None,
) -> Any:
    """The JSON answer of the node's calls API, or a clear exit on an error answer."""
    from tierfaas.calls.render import request
    from tierfaas.http.auth import load_admin_token

    try:
        token = load_admin_token(token_file)
        answer = request(url, path, method=method, query=query, token=token, body=None)
    except errors.ConfigError as exc:
        raise _fail(str(exc)) from None
    except OSError as exc:
        raise _fail(f"cannot reach {url}: {getattr(exc, 'reason', exc)}", 1) from None
    if answer.status == 404 and path.startswith("/v1/calls/"):
        raise _fail(f"{answer.error_line()} (unknown, or expired: see --calls-keep-s)", 1)
    if answer.status >= 400:
        raise _fail(answer.error_line(), 1)
    try:
        return answer.json()
    except ValueError:
        raise _fail(
            f"{url} answered {answer.status} with no JSON: {answer.body[:200]!r}", 1
        ) from None


@calls.command("list")
def calls_list(
    state: Annotated[
        str | None,
        typer.Option(help="only calls in this state: queued, running, succeeded, failed, dead"),
    ] = None,
    function: _FunctionFilter = None,
    limit: _Limit = 100,
    url: _NodeUrl = "http://127.0.0.1:8080",
    as_json: _AsJson = False,
    admin_token_file: _TokenFile = None,
) -> None:
    """The calls this node owns, newest first (each node lists its own)."""
    import time

    from tierfaas.calls.render import STATES, render_calls

    if state is not None and state not in STATES:
        raise _fail(f"--state must be one of {', '.join(STATES)}")
    query: dict[str, str | int | None] = {"state": state, "function": function, "limit": limit}
    answer = _calls_request(url, "/v1/calls", admin_token_file, query=query)
    if as_json:
        print(json.dumps(answer, indent=2))
        return
    node = answer.get("node", url)
    title = f"calls on {node}" + (f" ({state})" if state else "")
    console = Console()
    calls = answer.get("calls", [])
    console.print(render_calls(calls, now=time.time(), title=title, width=console.width))


@calls.command("show")
def calls_show(
    call_id: Annotated[str, typer.Argument(help="the call id (from invoke --async)")],
    url: _NodeUrl = "http://127.0.0.1:8080",
    as_json: _AsJson = False,
    admin_token_file: _TokenFile = None,
    wait: Annotated[
        bool,
        typer.Option(
            "--wait",
            help="wait until the call is final (succeeded, failed or dead); then exit 0 only "
            "if it succeeded",
        ),
    ] = False,
    timeout: Annotated[
        float, typer.Option(min=0.0, help="with --wait: give up after this many seconds (exit 1)")
    ] = 300.0,
) -> None:
    """One call: its state, attempts, result or error, and its callback."""
    import time

    from tierfaas.calls.render import FINAL_STATES, call_path, render_call

    answer = _calls_request(url, call_path(call_id), admin_token_file)
    deadline = time.monotonic() + timeout
    pause = 0.1
    while wait and answer.get("state") not in FINAL_STATES:
        if time.monotonic() + pause > deadline:
            raise _fail(f"{call_id} is still {answer.get('state')} after {timeout:g} s", 1)
        time.sleep(pause)
        pause = min(2.0, pause * 1.5)  # quick for short calls, gentle on the node for long
        answer = _calls_request(url, call_path(call_id), admin_token_file)
    if as_json:
        print(json.dumps(answer, indent=2))
    else:
        Console().print(render_call(answer))
    if wait and answer.get("state") != "succeeded":
        raise typer.Exit(1)


@calls.command("retry")
def calls_retry(
    call_id: Annotated[str, typer.Argument(help="a dead or failed call's id")],
    url: _NodeUrl = "http://127.0.0.1:8080",
    admin_token_file: _TokenFile = None,
) -> None:
    """Queue a dead (or failed) call again, its attempts counted from zero."""
    from tierfaas.calls.render import call_path

    answer = _calls_request(url, call_path(call_id) + "/retry", admin_token_file, method="POST")
    Console().print(
        f"{answer.get('call_id', call_id)} is {answer.get('state', 'queued')} again "
        f"(follow it: tierfaas calls show {call_id})",
        highlight=False,
    )


@calls.command("dead")
def calls_dead(
    function: _FunctionFilter = None,
    limit: _Limit = 100,
    url: _NodeUrl = "http://127.0.0.1:8080",
    as_json: _AsJson = False,
    admin_token_file: _TokenFile = None,
) -> None:
    """The dead letters of every live node (calls whose last attempt failed with a 5xx or
    timed out), newest first; retry one with 'tierfaas calls retry ID'."""
    import time

    from tierfaas.calls.render import render_calls

    query: dict[str, str | int | None] = {"function": function, "limit": limit}
    answer = _calls_request(url, "/v1/dead-letters", admin_token_file, query=query)
    if as_json:
        print(json.dumps(answer, indent=2))
        return
    console = Console()
    console.print(
        render_calls(
            answer.get("calls", []),
            now=time.time(),
            title="dead letters",
            unanswered=answer.get("unanswered"),
            width=console.width,
        )
    )


# -- releases and rollouts -----------------------------------------------------------------------

rollout = typer.Typer(help="Follow or stop the rollout of the desired release version.")
app.add_typer(rollout, name="rollout")
app.add_typer(secret_commands, name="secret")


def _registry_help() -> str:
    return (
        "the registry folder [default: $TIERFAAS_REGISTRY, else the one 'tierfaas up' keeps "
        "in its state folder]"
    )


def _registry(path: Path | None) -> Path:
    from tierfaas.up import default_state_dir

    return path or default_state_dir() / "registry"


@app.command()
def publish(
    release: Annotated[Path, typer.Argument(help="the release folder (with tierfaas.toml)")],
    registry: Annotated[
        Path | None, typer.Option(help=_registry_help(), envvar="TIERFAAS_REGISTRY")
    ] = None,
    desired: Annotated[
        bool, typer.Option(help="mark it desired: the cluster rolls to it within a poll")
    ] = True,
) -> None:
    """Store a release version in the registry (versions are immutable) and mark it desired."""
    from tierfaas.deploy.registry import DirectoryRegistry, RegistryError

    store = DirectoryRegistry(_registry(registry))
    try:
        info, new = store.publish(release, make_desired=desired)
    except RegistryError as exc:
        raise _fail(str(exc)) from None
    verb = "published" if new else "already published (same content)"
    tail = "; it is now the desired version" if desired else ""
    Console().print(f"{info.name} {info.version} {verb} in {store.root}{tail}", highlight=False)


@rollout.command("status")
def rollout_status(
    registry: Annotated[
        Path | None, typer.Option(help=_registry_help(), envvar="TIERFAAS_REGISTRY")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the raw JSON")] = False,
) -> None:
    """The rollout phase, the nodes of each version, the current step and the history."""
    from tierfaas.deploy.registry import DirectoryRegistry
    from tierfaas.deploy.status_view import render_status

    store = DirectoryRegistry(_registry(registry))
    status = store.read_status()
    if status is None:
        raise _fail(f"no rollout status in {store.root}: is a cluster following it?", 1)
    if as_json:
        print(json.dumps({**status, "desired": store.desired()}, indent=2))
    else:
        Console().print(render_status(status, store.desired()))


@rollout.command("abort")
def rollout_abort(
    registry: Annotated[
        Path | None, typer.Option(help=_registry_help(), envvar="TIERFAAS_REGISTRY")
    ] = None,
) -> None:
    """Stop the running rollout and roll back: the previous version becomes desired again and
    the aborted one is not tried again (publish a new version to retry)."""
    from tierfaas.deploy.registry import DirectoryRegistry, FailedVersions, RegistryError

    store = DirectoryRegistry(_registry(registry))
    status = store.read_status() or {}
    current = status.get("rollout") if status.get("phase") == "rolling" else None
    if not current:
        raise _fail("no rollout is running", 1)
    to, back = str(current["to"]), str(current["from"])
    FailedVersions(store.root).mark(to, "aborted by the operator (tierfaas rollout abort)")
    try:
        store.set_desired(back)
    except RegistryError as exc:
        raise _fail(str(exc)) from None
    Console().print(
        f"aborted the rollout to {to}; {back} is desired again and the master rolls back "
        "within a poll (see: tierfaas rollout status)",
        highlight=False,
    )


# -- a local cluster, its front door and load balancers ------------------------------------------


def _state_dir_help() -> str:
    return (
        "where the state file, cluster key and logs go "
        "[default: $XDG_STATE_HOME/tierfaas or ~/.local/state/tierfaas]"
    )


@app.command()
def up(
    nodes: Annotated[int, typer.Option(help="how many node processes")] = 5,
    release: Annotated[Path, typer.Option(help=_doc("release_dir"))] = NodeConfig.default_of(
        "release_dir"
    ),
    port: Annotated[int, typer.Option(help="the front door's port")] = 8080,
    host: Annotated[str, typer.Option(help="the front door's address")] = "127.0.0.1",
    lb: Annotated[
        str, typer.Option(help="the front door: builtin (L4 round-robin) or nginx")
    ] = "builtin",
    detach: Annotated[
        bool, typer.Option("--detach", help="run in the background; stop with tierfaas down")
    ] = False,
    state_dir: Annotated[Path | None, typer.Option(help=_state_dir_help())] = None,
    first_host: Annotated[
        str, typer.Option(help="the first node's loopback address; the others count up")
    ] = "127.0.0.101",
    ready_timeout_s: Annotated[
        float, typer.Option(help="how long to wait for the cluster to be ready [s]")
    ] = 60.0,
    drain_timeout_s: Annotated[
        float, typer.Option(help=_doc("drain_timeout_s"))
    ] = NodeConfig.default_of("drain_timeout_s"),
    log_level: Annotated[
        str, typer.Option(help="the nodes' " + _doc("log_level"))
    ] = NodeConfig.default_of("log_level"),
    registry: Annotated[
        Path | None,
        typer.Option(
            help="a registry folder to follow (default: one of its own in the state folder, "
            "seeded with --release); 'tierfaas publish' rolls the cluster to a new version"
        ),
    ] = None,
    registry_poll_s: Annotated[
        float, typer.Option(help=_doc("registry_poll_s"))
    ] = NodeConfig.default_of("registry_poll_s"),
    canaries: Annotated[int, typer.Option(help=_doc("canaries"))] = NodeConfig.default_of(
        "canaries"
    ),
    isolation: Annotated[
        str, typer.Option(help=_doc("isolation"), envvar="TIERFAAS_ISOLATION")
    ] = NodeConfig.default_of("isolation"),
    detached_child: Annotated[bool, typer.Option(hidden=True)] = False,
) -> None:
    """Start a local cluster: N nodes on loopback, a fresh key and a front door; Ctrl-C stops it."""
    from tierfaas.up import UpError, UpOptions, default_state_dir, run_up, say_to
    from tierfaas.up import detach as start_detached

    options = UpOptions(
        release=release,
        nodes=nodes,
        port=port,
        host=host,
        lb=lb,
        state_dir=state_dir or default_state_dir(),
        first_host=first_host,
        ready_timeout_s=ready_timeout_s,
        drain_timeout_s=drain_timeout_s,
        log_level=log_level,
        registry=registry,
        registry_poll_s=registry_poll_s,
        canaries=canaries,
        isolation=isolation,
    )
    say = say_to(Console())
    try:
        if detach:
            code = start_detached(options, say)
        else:
            code = run_up(options, say, detached=detached_child)
    except UpError as exc:
        raise _fail(str(exc), exc.code) from None
    if code:
        raise typer.Exit(code)


@app.command()
def down(
    state_dir: Annotated[Path | None, typer.Option(help=_state_dir_help())] = None,
    timeout: Annotated[float, typer.Option(help="seconds to wait for the nodes to drain")] = 60.0,
) -> None:
    """Stop a cluster started with tierfaas up --detach; checks every process is gone."""
    from tierfaas.up import UpError, default_state_dir, say_to
    from tierfaas.up import down as stop_cluster

    try:
        stop_cluster(state_dir or default_state_dir(), say_to(Console()), timeout)
    except UpError as exc:
        raise _fail(str(exc), exc.code) from None


@app.command("lb-config")
def lb_config(
    kind: Annotated[str, typer.Argument(help="the load balancer: nginx")] = "nginx",
    state_dir: Annotated[
        Path | None, typer.Option(help="take the nodes of the cluster running from this dir")
    ] = None,
    nodes: Annotated[
        str,
        typer.Option(
            help="comma-separated HTTP address of every node: HOST:PORT, or unix:PATH for a "
            "node on this machine serving on --http-unix"
        ),
    ] = "",
    listen: Annotated[str, typer.Option(help="where nginx listens")] = "127.0.0.1:8080",
    prefix: Annotated[
        Path, typer.Option(help="nginx's runtime dir (pid, error log, temp files)")
    ] = Path("/tmp/tierfaas-nginx"),
    workers: Annotated[int, typer.Option(help="nginx worker processes")] = 1,
    mode: Annotated[
        str,
        typer.Option(
            help="stream: L4, each connection to the next node (needs libnginx-mod-stream; "
            "the nodes route requests themselves); http: L7, requests parsed and retried"
        ),
    ] = "stream",
) -> None:
    """Print an nginx.conf (a whole one: daemon off, files in --prefix) in front of the nodes."""
    from tierfaas.up import default_state_dir, read_state
    from tierfaas.up.frontdoor import parse_hostport
    from tierfaas.up.nginx_config import nginx_config

    if kind != "nginx":
        raise _fail(f"unknown load balancer {kind!r}: only nginx is supported")
    if mode not in ("stream", "http"):
        raise _fail(f"--mode must be stream or http, not {mode!r}")
    if nodes:
        backends = [seed.strip() for seed in nodes.split(",") if seed.strip()]
    else:
        directory = state_dir or default_state_dir()
        state = read_state(directory)
        if state is None:
            raise _fail(f"no cluster is running from {directory}: give --nodes or --state-dir")
        backends = [n["http"] for n in state["nodes"]]
    try:
        parse_hostport(listen)
        for backend in backends:
            if backend.startswith("unix:"):
                # a node on nginx's machine, serving on --http-unix (mode 600: nginx's
                # workers must run as the node's user)
                if not backend[len("unix:") :].startswith("/"):
                    raise ValueError(f"{backend!r}: a Unix socket needs an absolute path")
            else:
                parse_hostport(backend)
    except ValueError as exc:
        raise _fail(str(exc)) from None
    text = nginx_config(
        backends,
        listen=listen,
        prefix=prefix.resolve(),
        worker_processes=workers,
        mode=mode,  # type: ignore[arg-type]  # checked above
    )
    print(text)


@app.command()
def frontdoor(
    backends: Annotated[str, typer.Option(help="comma-separated HOST:PORT of the nodes")],
    listen: Annotated[str, typer.Option(help="where to listen")] = "127.0.0.1:8080",
) -> None:
    """Run the built-in L4 round-robin front door alone, in front of nodes started elsewhere."""
    from tierfaas.up import frontdoor as fd

    try:
        listen_at = fd.parse_hostport(listen)
        targets = [fd.parse_hostport(b) for b in backends.split(",") if b.strip()]
        if not targets:
            raise ValueError("--backends is empty")
        fd.bind_listener(*listen_at).close()
    except ValueError as exc:
        raise _fail(str(exc)) from None
    except OSError as exc:
        raise _fail(f"cannot listen on {listen}: {exc.strerror or exc}") from None
    setup_logging("info")
    fd.run(listen_at, targets)


@app.command()
def load(
    url: Annotated[str, typer.Option(help="the front door or a node")] = "http://127.0.0.1:8080",
    rps: Annotated[float, typer.Option(help="requests started per second (open loop)")] = 200.0,
    duration: Annotated[float, typer.Option(help="seconds to send for")] = 30.0,
    functions: Annotated[str, typer.Option(help="comma-separated functions, taken in turn")] = (
        "hello,sha256"
    ),
    data: Annotated[str, typer.Option("--data", "-d", help="the request body")] = "world",
    max_in_flight: Annotated[
        int, typer.Option(help="requests in flight at most; past it a send is counted dropped")
    ] = 512,
    timeout: Annotated[float, typer.Option(help="seconds per request")] = 10.0,
) -> None:
    """Send an open-loop load (fixed rate) and print requests, errors, p50/p99, route kinds."""
    from tierfaas.loadgen import LoadSpec, run_load

    names = [f.strip() for f in functions.split(",") if f.strip()]
    if rps <= 0 or duration <= 0 or not names or max_in_flight < 1:
        raise _fail("--rps and --duration must be positive and --functions not empty")
    spec = LoadSpec(url, rps, duration, names, data.encode(), max_in_flight, timeout)
    summary = run_load(spec, Console())
    if summary.sent == 0 or summary.ok == 0:
        raise typer.Exit(1)


@app.command()
def version() -> None:
    """Print the tierfaas version."""
    print(__version__)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
