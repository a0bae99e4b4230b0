"""``tierfaas calls ...`` and ``tierfaas invoke --async``: the node's answers, for people.

The HTTP contract is the node's (docs/openapi.yaml): ``GET /v1/calls/{id}``, ``GET
/v1/calls``, ``GET /v1/dead-letters``, ``POST /v1/calls/{id}/retry`` and ``POST
/async-function/{name}``. ``request`` makes one exchange (stdlib only: the CLI starts fast);
the ``render_*`` functions turn the JSON into rich tables and are pure (the time of "now" is
a parameter), so their tests need no node.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from rich.console import Group, RenderableType
from rich.markup import escape
from rich.table import Table
from rich.text import Text

STATE_STYLE = {
    "queued": "cyan",
    "running": "yellow",
    "succeeded": "green",
    "failed": "red",
    "dead": "bold red",
}
STATES = tuple(STATE_STYLE)
FINAL_STATES = ("succeeded", "failed", "dead")
MAX_SHOWN_BODY = 2000
"""Characters of a result's body ``calls show`` prints (``--json`` prints it all)."""


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    headers: dict[str, str]  # lower-case names
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    def error_line(self) -> str:
        """``STATUS code: message`` of an error answer (or its first bytes if not JSON)."""
        try:
            detail = self.json()
            return f"{self.status} {detail.get('error')}: {detail.get('message')}"
        except (ValueError, AttributeError):
            return f"{self.status}: {self.body[:500]!r}"


def request(
    url: str,
    path: str,
    *,
    method: str = "GET",
    query: dict[str, str | int | None] | None = None,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    token: str | None = None,
    timeout: float = 10.0,
) -> Answer:
    """One exchange with the node at ``url``; an HTTP error status is an ``Answer`` too.
    Raises ``OSError`` (``urllib.error.URLError``) when the node cannot be reached."""
    params = {key: str(value) for key, value in (query or {}).items() if value is not None}
    target = url.rstrip("/") + path + (f"?{urllib.parse.urlencode(params)}" if params else "")
    sent = urllib.request.Request(target, data=body, method=method, headers=headers or {})
    if token:  # nodes bound off loopback with an admin token require it (docs/security.md)
        sent.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(sent, timeout=timeout) as response:
            got = dict(response.headers.items())
            return Answer(response.status, {k.lower(): v for k, v in got.items()}, response.read())
    except urllib.error.HTTPError as exc:
        got = dict(exc.headers.items()) if exc.headers else {}
        return Answer(exc.code, {k.lower(): v for k, v in got.items()}, exc.read())


def call_path(call_id: str) -> str:
    """``/v1/calls/{id}`` with the id quoted (ids are URL-safe; this keeps a typo harmless)."""
    return "/v1/calls/" + urllib.parse.quote(call_id, safe="~")


def when(t: float | None) -> str:
    """A Unix time as UTC ``YYYY-MM-DD HH:MM:SS`` (``-`` for none)."""
    if t is None:
        return "-"
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M:%S")


def ago(t: float | None, now: float) -> str:
    """How long before ``now``: ``42s``, ``5m``, ``3h``, ``2d`` (``-`` for none)."""
    if t is None:
        return "-"
    seconds = max(0.0, now - t)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{int(seconds // size)}{unit}"
    return f"{int(seconds)}s"


def state_text(state: str) -> Text:
    return Text(state, style=STATE_STYLE.get(state, ""))


def outcome(call: dict[str, Any]) -> str:
    """One short line on how the call ended: ``200``, ``504 timeout: ...``, or ``-``."""
    error = call.get("error")
    result = call.get("result")
    if error:
        message = str(error.get("message", ""))
        short = message if len(message) <= 60 else message[:57] + "..."
        status = f"{result['status']} " if result and "status" in result else ""
        return f"{status}{error.get('error')}: {short}"
    if result:
        return str(result.get("status", "-"))
    return "-"


WIDE = 180
"""Terminal columns from which ``render_calls`` adds the took, node and callback columns."""


def render_calls(
    calls: list[dict[str, Any]],
    *,
    now: float,
    title: str,
    unanswered: list[str] | None = None,
    width: int = WIDE,
) -> RenderableType:
    """The table of ``calls list`` and ``calls dead``: newest first, as the node sends them.
    Narrower than ``WIDE`` columns, it leaves out took, node and callback (``calls show``
    has them) so that the id, state and outcome stay readable."""
    wide = width >= WIDE
    table = Table(title=title, title_justify="left", show_edge=False, pad_edge=False)
    # Ids are long (two node names and 16 hex digits): on a narrow terminal they fold onto
    # two lines rather than squeezing the other columns to nothing.
    table.add_column("call id", overflow="fold", min_width=20)
    table.add_column("function", overflow="fold", min_width=8)
    table.add_column("state", min_width=9, no_wrap=True)
    table.add_column("tries", justify="right", no_wrap=True)
    table.add_column("accepted", no_wrap=True)
    if wide:
        table.add_column("took", justify="right", no_wrap=True)
        table.add_column("node", overflow="fold")
    table.add_column("outcome", no_wrap=True, overflow="ellipsis", max_width=40 if wide else 24)
    if wide:
        table.add_column("callback", no_wrap=True)
    for call in calls:
        accepted = call.get("accepted_at")
        finished = call.get("finished_at")
        took = "-"
        if accepted is not None and finished is not None:
            took = f"{max(0.0, finished - accepted):.2f}s"
        callback = call.get("callback")
        row: list[RenderableType] = [
            escape(str(call.get("call_id", "?"))),
            escape(str(call.get("function", "?"))),
            state_text(str(call.get("state", "?"))),
            str(call.get("attempts", "-")),
            f"{ago(accepted, now)} ago" if accepted is not None else "-",
        ]
        if wide:
            row += [took, escape(str(call.get("node") or "-"))]
        row.append(escape(outcome(call)))
        if wide:
            row.append(escape(str(callback.get("state"))) if callback else "-")
        table.add_row(*row)
    parts: list[RenderableType] = [table]
    if not calls:
        parts.append(Text("no calls", style="dim"))
    if unanswered:
        parts.append(
            Text(
                f"not answered in time (their dead letters are missing): {', '.join(unanswered)}",
                style="yellow",
            )
        )
    return Group(*parts)


def render_call(call: dict[str, Any]) -> RenderableType:
    """``calls show``: every field, the result's body (cut at ``MAX_SHOWN_BODY``) and error."""
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold")
    table.add_column()
    table.add_row("call id", escape(str(call.get("call_id"))))
    table.add_row("function", escape(str(call.get("function"))))
    table.add_row("state", state_text(str(call.get("state"))))
    table.add_row("attempts", str(call.get("attempts")))
    table.add_row("accepted", when(call.get("accepted_at")) + " UTC")
    finished = call.get("finished_at")
    table.add_row("finished", when(finished) + (" UTC" if finished is not None else ""))
    table.add_row("node", escape(str(call.get("node") or "-")))
    callback = call.get("callback")
    if callback:
        table.add_row(
            "callback",
            escape(
                f"{callback.get('url')}: {callback.get('state')} "
                f"({callback.get('attempts')} attempts)"
            ),
        )
    error = call.get("error")
    if error:
        table.add_row("error", Text(f"{error.get('error')}: {error.get('message')}", style="red"))
    result = call.get("result")
    parts: list[RenderableType] = [table]
    if result:
        table.add_row("status", str(result.get("status")))
        table.add_row("content type", escape(str(result.get("content_type") or "-")))
        if "body" in result:
            body = str(result["body"])
            cut = len(body) > MAX_SHOWN_BODY
            shown = body[:MAX_SHOWN_BODY]
            parts.append(Text(shown + ("\n..." if cut else ""), no_wrap=False))
            if cut:
                parts.append(Text(f"({len(body)} characters; --json shows them all)", style="dim"))
        elif "body_base64" in result:
            parts.append(Text("(a binary body: --json shows it in base64)", style="dim"))
    return Group(*parts)


def render_accepted(answer: dict[str, Any], replay: bool) -> str:
    """The stderr line of ``invoke --async`` (stdout gets the bare id, for scripts)."""
    call_id = answer.get("call_id")
    state = answer.get("state")
    if replay:
        return (
            f"already accepted with this Idempotency-Key: {call_id} ({state}); nothing new "
            f"runs. Follow it: tierfaas calls show {call_id}"
        )
    return f"accepted: {call_id} ({state}). Follow it: tierfaas calls show {call_id}"
