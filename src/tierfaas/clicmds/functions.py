"""``tierfaas functions`` and ``tierfaas describe``: what is deployed and how it does, for the
whole cluster, asked on any node (``tierfaas.funcstats``: the nodes' stats, their merge and
its rendering)."""

from __future__ import annotations

import json
import urllib.parse
from pathlib import Path

import typer
from rich.console import Console

from tierfaas import errors
from tierfaas.clicmds.complete import DEFAULT_URL
from tierfaas.clicmds.options import AsJson, FunctionName, NodeUrl, TokenFile, fail
from tierfaas.funcstats.client import Gathered


def _gather(url: str, path: str, token_file: Path | None) -> Gathered:
    from tierfaas.funclogs.client import LogsError
    from tierfaas.funcstats.client import gather
    from tierfaas.http.auth import load_admin_token

    try:
        token = load_admin_token(token_file)
        return gather(url, path, token)
    except errors.ConfigError as exc:
        raise fail(str(exc)) from None
    except (LogsError, ValueError) as exc:
        raise fail(str(exc), 1) from None


def functions(
    url: NodeUrl = DEFAULT_URL,
    as_json: AsJson = False,
    admin_token_file: TokenFile = None,
) -> None:
    """Every function of the cluster: runtime, release version, the nodes it is warm on and
    its instances, calls/s and p99 over the last minute, and calls, errors and cold starts
    since the nodes started. Asks every live node; names the ones that did not answer."""
    from tierfaas.funcstats.cluster import merge_listings
    from tierfaas.funcstats.render import render_functions

    gathered = _gather(url, "/v1/functions", admin_token_file)
    rows = merge_listings(gathered.answers)
    if as_json:
        answer = {
            "functions": rows,
            "nodes": sorted(gathered.answers),
            "unanswered": gathered.unanswered,
        }
        print(json.dumps(answer, indent=2))
    else:
        Console().print(render_functions(rows, gathered.unanswered))
    if not gathered.answers:
        raise typer.Exit(1)


def describe(
    function: FunctionName,
    url: NodeUrl = DEFAULT_URL,
    as_json: AsJson = False,
    admin_token_file: TokenFile = None,
) -> None:
    """One function: its settings, isolation, env and secret names (never values), the nodes
    it is warm on, its stats, and its recent errors on every node, newest first."""
    from tierfaas.funcstats.cluster import merge_describe
    from tierfaas.funcstats.render import render_describe

    path = "/v1/functions/" + urllib.parse.quote(function, safe="")
    gathered = _gather(url, path, admin_token_file)
    if not gathered.answers:
        if gathered.not_found:
            raise fail(f"no function named {function!r} in the cluster {url} sees", 1)
        reasons = "; ".join(f"{n}: {r}" for n, r in sorted(gathered.unanswered.items()))
        raise fail(f"no node answered ({reasons})", 1)
    view = merge_describe(function, gathered.answers)
    if as_json:
        print(json.dumps({**view, "unanswered": gathered.unanswered}, indent=2))
    else:
        Console().print(render_describe(view, gathered.unanswered))


def register(app: typer.Typer) -> None:
    """Adds the commands to ``app`` (``tierfaas.cli``'s)."""
    app.command()(functions)
    app.command()(describe)
