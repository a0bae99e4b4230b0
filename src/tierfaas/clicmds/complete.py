"""Shell completion of function names (``tierfaas --install-completion``): asked from the
node the command line names with ``--url`` (if typed before the name) or the default one,
within ``COMPLETION_TIMEOUT_S``; nothing is completed when it does not answer."""

from __future__ import annotations

import typer

DEFAULT_URL = "http://127.0.0.1:8080"
COMPLETION_TIMEOUT_S = 1.0


def complete_function(ctx: typer.Context, incomplete: str) -> list[str]:
    """The function names of the node's ``GET /v1/functions`` that start with
    ``incomplete``."""
    from tierfaas.calls.render import request

    url = ctx.params.get("url") or DEFAULT_URL
    try:
        answer = request(str(url), "/v1/functions", timeout=COMPLETION_TIMEOUT_S)
        listing = answer.json() if answer.status == 200 else {}
    except (OSError, ValueError):
        return []
    functions = listing.get("functions") if isinstance(listing, dict) else None
    names = [f.get("name") for f in functions or [] if isinstance(f, dict)]
    return sorted(n for n in names if isinstance(n, str) and n.startswith(incomplete))
