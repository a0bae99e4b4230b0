"""What every command of ``tierfaas`` shares: the error exit, and the options of the commands
that read a node (its URL, the admin token, ``--json``)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from tierfaas.clicmds.complete import complete_function

err = Console(stderr=True)

TokenFile = Annotated[
    Path | None,
    typer.Option(
        help="the admin token (mode 600), else $TIERFAAS_ADMIN_TOKEN; needed for nodes that "
        "listen off loopback with a token"
    ),
]
"""The admin token option of every command that reads a node's admin endpoints."""
NodeUrl = Annotated[str, typer.Option("--url", help="any node of the cluster")]
AsJson = Annotated[bool, typer.Option("--json", help="print the raw JSON")]
FunctionName = Annotated[
    str, typer.Argument(help="the function's name", autocompletion=complete_function)
]
"""A function's name, completed from a node's function list."""


def fail(message: str, code: int = 2) -> typer.Exit:
    """Prints ``error: message`` on stderr; the exit (with ``code``) to raise."""
    err.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    return typer.Exit(code)
