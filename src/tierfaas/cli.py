"""The ``tierfaas`` command line. ``tierfaas --help`` lists the commands; each has ``--help``."""

from __future__ import annotations

import json
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from tierfaas import __version__, errors
from tierfaas.config import Address, NodeConfig
from tierfaas.logs import setup_logging

app = typer.Typer(
    help="tierfaas: a self-organizing Function-as-a-Service engine.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
err = Console(stderr=True)

_DEFAULTS = NodeConfig.__dataclass_fields__


def _doc(name: str) -> str:
    f = _DEFAULTS[name]
    unit = f" [{f.metadata['unit']}]" if f.metadata["unit"] else ""
    return f"{f.metadata['doc']}{unit}."


def _fail(message: str, code: int = 2) -> typer.Exit:
    err.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    return typer.Exit(code)


@app.command()
def node(
    release: Annotated[
        Path, typer.Option(help=_doc("release_dir"), envvar="TIERFAAS_RELEASE")
    ] = Path("examples/demo"),
    http: Annotated[str, typer.Option(help=_doc("http"), envvar="TIERFAAS_HTTP")] = (
        "127.0.0.1:8080"
    ),
    http_unix: Annotated[
        Path | None, typer.Option(help=_doc("http_unix"), envvar="TIERFAAS_HTTP_UNIX")
    ] = None,
    name: Annotated[str, typer.Option(help=_doc("name"), envvar="TIERFAAS_NAME")] = "",
    gossip: Annotated[
        str | None, typer.Option(help=_doc("gossip"), envvar="TIERFAAS_GOSSIP")
    ] = None,
    rpc: Annotated[str | None, typer.Option(help=_doc("rpc"), envvar="TIERFAAS_RPC")] = None,
    join: Annotated[
        str, typer.Option(help="comma-separated " + _doc("join"), envvar="TIERFAAS_JOIN")
    ] = "",
    gossip_preset: Annotated[str, typer.Option(help=_doc("gossip_preset"))] = "lan",
    replicas: Annotated[str, typer.Option(help=_doc("replicas"))] = "sqrt",
    hop_limit: Annotated[int, typer.Option(help=_doc("hop_limit"))] = 1,
    cold_starts: Annotated[str, typer.Option(help=_doc("cold_starts"))] = "local",
    batch_window_s: Annotated[float, typer.Option(help=_doc("batch_window_s"))] = 0.1,
    hot_forwards_per_s: Annotated[float, typer.Option(help=_doc("hot_forwards_per_s"))] = 100.0,
    route_cache_ttl_s: Annotated[float, typer.Option(help=_doc("route_cache_ttl_s"))] = 5.0,
    key_file: Annotated[
        Path | None, typer.Option(help=_doc("key_file"), envvar="TIERFAAS_KEY_FILE")
    ] = None,
    max_body_bytes: Annotated[int, typer.Option(help=_doc("max_body_bytes"))] = 6 * 1024 * 1024,
    max_response_bytes: Annotated[int, typer.Option(help=_doc("max_response_bytes"))] = (
        6 * 1024 * 1024
    ),
    queue_max: Annotated[int, typer.Option(help=_doc("queue_max"))] = 256,
    queue_timeout_s: Annotated[float, typer.Option(help=_doc("queue_timeout_s"))] = 2.0,
    memory_budget_mb: Annotated[int, typer.Option(help=_doc("memory_budget_mb"))] = 2048,
    start_timeout_s: Annotated[float, typer.Option(help=_doc("start_timeout_s"))] = 30.0,
    drain_timeout_s: Annotated[float, typer.Option(help=_doc("drain_timeout_s"))] = 30.0,
    drain_quiet_s: Annotated[float, typer.Option(help=_doc("drain_quiet_s"))] = 0.5,
    registry: Annotated[
        Path | None, typer.Option(help=_doc("registry"), envvar="TIERFAAS_REGISTRY")
    ] = None,
    release_version: Annotated[
        str | None,
        typer.Option(
            help="with --registry: the version to serve (default: the registry's desired one)",
            envvar="TIERFAAS_RELEASE_VERSION",
        ),
    ] = None,
    generation: Annotated[int, typer.Option(help=_doc("generation"))] = 0,
    provider: Annotated[
        str, typer.Option(help=_doc("provider"), envvar="TIERFAAS_PROVIDER")
    ] = "none",
    provider_state: Annotated[Path | None, typer.Option(help=_doc("provider_state"))] = None,
    registry_poll_s: Annotated[float, typer.Option(help=_doc("registry_poll_s"))] = 2.0,
    canaries: Annotated[int, typer.Option(help=_doc("canaries"))] = 2,
    canary_timeout_s: Annotated[float, typer.Option(help=_doc("canary_timeout_s"))] = 60.0,
    debug: Annotated[bool, typer.Option(help=_doc("debug"))] = False,
    log_level: Annotated[str, typer.Option(help=_doc("log_level"))] = "info",
    max_header_bytes: Annotated[int, typer.Option(help=_doc("max_header_bytes"))] = 64 * 1024,
    header_timeout_s: Annotated[float, typer.Option(help=_doc("header_timeout_s"))] = 10.0,
    body_timeout_s: Annotated[float, typer.Option(help=_doc("body_timeout_s"))] = 60.0,
    send_timeout_s: Annotated[float, typer.Option(help=_doc("send_timeout_s"))] = 60.0,
    admin_token_file: Annotated[
        Path | None,
        typer.Option(help=_doc("admin_token_file"), envvar="TIERFAAS_ADMIN_TOKEN_FILE"),
    ] = None,
) -> None:
    """Run one node: serve the release's functions over HTTP until SIGTERM or Ctrl-C.

    With --registry the node serves a version from the registry (--release-version, else the
    desired one); with --provider too, it deploys new versions whenever it is master."""
    from tierfaas.deploy.kubernetes import resolve_seeds
    from tierfaas.deploy.provider import ProviderError
    from tierfaas.node import run_node

    try:
        if registry is not None:
            release = _release_from_registry(registry, release_version)
        elif release_version is not None:
            raise errors.ConfigError("release_version", "needs --registry")
        config = NodeConfig(
            release_dir=release,
            http=Address.parse(http, "http"),
            http_unix=http_unix,
            name=name,
            gossip=None if gossip is None else Address.parse(gossip, "gossip"),
            rpc=None if rpc is None else Address.parse(rpc, "rpc"),
            join=resolve_seeds(seed.strip() for seed in join.split(",") if seed.strip()),
            gossip_preset=gossip_preset,  # type: ignore[arg-type]  # validated by NodeConfig
            replicas=replicas,
            key_file=key_file,
            hop_limit=hop_limit,
            cold_starts=cold_starts,  # type: ignore[arg-type]  # validated by NodeConfig
            batch_window_s=batch_window_s,
            hot_forwards_per_s=hot_forwards_per_s,
            route_cache_ttl_s=route_cache_ttl_s,
            max_body_bytes=max_body_bytes,
            max_response_bytes=max_response_bytes,
            queue_max=queue_max,
            queue_timeout_s=queue_timeout_s,
            memory_budget_mb=memory_budget_mb,
            start_timeout_s=start_timeout_s,
            drain_timeout_s=drain_timeout_s,
            drain_quiet_s=drain_quiet_s,
            registry=registry,
            generation=generation,
            provider=provider,  # type: ignore[arg-type]  # validated by NodeConfig
            provider_state=provider_state,
            registry_poll_s=registry_poll_s,
            canaries=canaries,
            canary_timeout_s=canary_timeout_s,
            debug=debug,
            log_level=log_level,  # type: ignore[arg-type]  # validated by NodeConfig
            max_header_bytes=max_header_bytes,
            header_timeout_s=header_timeout_s,
            body_timeout_s=body_timeout_s,
            send_timeout_s=send_timeout_s,
            admin_token_file=admin_token_file,
        )
        setup_logging(config.log_level)
        code = run_node(config)
    except (errors.ConfigError, errors.ManifestError, ProviderError) as exc:
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
    function: Annotated[str, typer.Argument(help="the function's name")],
    data: Annotated[
        str, typer.Option("--data", "-d", help="request body; '@FILE' reads a file, '-' stdin")
    ] = "",
    url: Annotated[str, typer.Option(help="a node or the front door")] = "http://127.0.0.1:8080",
    timeout: Annotated[float, typer.Option(help="seconds to wait for the answer")] = 60.0,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="print the headers")] = False,
) -> None:
    """Call a function and print its answer; exits 1 on an error answer."""
    if data == "-":
        body = sys.stdin.buffer.read()
    elif data.startswith("@"):
        body = Path(data[1:]).read_bytes()
    else:
        body = data.encode()
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
    admin_token_file: Annotated[
        Path | None,
        typer.Option(
            help="the admin token (mode 600), else $TIERFAAS_ADMIN_TOKEN; needed for "
            "nodes that listen off loopback with a token"
        ),
    ] = None,
) -> None:
    """Show the cluster as one node sees it: members, roles, replicas, versions, uptime."""
    from tierfaas.http.auth import load_admin_token
    from tierfaas.status import fetch_cluster, render_cluster

    try:
        view = fetch_cluster(url, token=load_admin_token(admin_token_file))
    except errors.ConfigError as exc:
        raise _fail(str(exc)) from None
    except OSError as exc:
        raise _fail(f"cannot reach {url}: {getattr(exc, 'reason', exc)}", 1) from None
    if as_json:
        print(json.dumps(view, indent=2))
    else:
        Console().print(render_cluster(view))


# -- releases and rollouts -----------------------------------------------------------------------

rollout = typer.Typer(help="Follow or stop the rollout of the desired release version.")
app.add_typer(rollout, name="rollout")


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
    release: Annotated[Path, typer.Option(help=_doc("release_dir"))] = Path("examples/demo"),
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
    drain_timeout_s: Annotated[float, typer.Option(help=_doc("drain_timeout_s"))] = 30.0,
    log_level: Annotated[str, typer.Option(help="the nodes' " + _doc("log_level"))] = "info",
    registry: Annotated[
        Path | None,
        typer.Option(
            help="a registry folder to follow (default: one of its own in the state folder, "
            "seeded with --release); 'tierfaas publish' rolls the cluster to a new version"
        ),
    ] = None,
    registry_poll_s: Annotated[float, typer.Option(help=_doc("registry_poll_s"))] = 2.0,
    canaries: Annotated[int, typer.Option(help=_doc("canaries"))] = 2,
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
