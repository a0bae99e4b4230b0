"""``tierfaas logs``: asks one node for the members (``/v1/cluster``), then every node (or the
one ``--node`` names) for its lines (``/v1/logs``), and prints them merged in time order. With
``--follow`` it keeps a streaming request open to each node (a thread each): the lines the nodes
had already are merged by time, then new lines are printed as they arrive, interleaved.
Standard library only: the command line starts fast."""

from __future__ import annotations

import json
import queue
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from tierfaas.funclogs.line import LogLine


class LogsError(Exception):
    """A node answered with an error (its ``error_line``) or could not be reached."""


@dataclass(frozen=True, slots=True)
class Target:
    node: str
    url: str


def _open(url: str, token: str | None, timeout: float | None) -> Any:
    request = urllib.request.Request(url)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        return urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        body = exc.read()
        try:
            detail = json.loads(body)
            raise LogsError(f"{exc.code} {detail.get('error')}: {detail.get('message')}") from None
        except (ValueError, AttributeError):
            raise LogsError(f"{exc.code}: {body[:200]!r}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise LogsError(f"cannot reach {url}: {getattr(exc, 'reason', exc)}") from None


def targets(url: str, token: str | None, node: str | None, timeout: float = 10.0) -> list[Target]:
    """The nodes to ask: every member ``url`` knows with an HTTP address (``url`` itself for
    a standalone node), or only ``node``. ``LogsError`` if ``node`` is not a member."""
    with _open(url.rstrip("/") + "/v1/cluster", token, timeout) as response:
        view = json.loads(response.read())
    found = []
    for member in view.get("members", []):
        name = str(member.get("name"))
        if member.get("state", "alive") not in ("alive", "suspect"):
            continue
        if view.get("standalone") or (name == view.get("self") and not member.get("http")):
            found.append(Target(name, url.rstrip("/")))
        elif member.get("http"):
            found.append(Target(name, f"http://{member['http']}"))
    if node is not None:
        found = [target for target in found if target.node == node]
        if not found:
            raise LogsError(f"no live node {node!r} in the cluster {url} sees")
    return found


def logs_url(target: Target, query: dict[str, str | int | None]) -> str:
    params = {key: str(value) for key, value in query.items() if value is not None}
    return f"{target.url}/v1/logs?{urllib.parse.urlencode(params)}"


def read_lines(raw: Iterator[bytes]) -> Iterator[LogLine | dict[str, Any]]:
    """The log lines of an ndjson answer; a note (``{"missed": N, ...}``) as a dict."""
    for chunk in raw:
        if not chunk.strip():
            continue
        value = json.loads(chunk)
        yield value if "missed" in value else LogLine.from_json(value)


def fetch(
    found: list[Target], query: dict[str, str | int | None], token: str | None, timeout: float
) -> tuple[list[list[LogLine]], dict[str, str]]:
    """Each node's lines (concurrently) and the error of each node that failed, by name."""

    def one(target: Target) -> list[LogLine]:
        with _open(logs_url(target, query), token, timeout) as response:
            return [line for line in read_lines(response) if isinstance(line, LogLine)]

    failures: dict[str, str] = {}
    results: list[list[LogLine]] = []
    with ThreadPoolExecutor(max_workers=min(16, max(1, len(found)))) as pool:
        futures = [(target, pool.submit(one, target)) for target in found]
        for target, future in futures:
            try:
                results.append(future.result())
            except (LogsError, ValueError) as exc:
                failures[target.node] = str(exc)
    return results, failures


SETTLE_S = 0.3
"""After every stream has answered (or ``CONNECT_S`` passed), how long ``follow`` still gathers
before it prints: the lines each node had already come in that time, merged by time."""
CONNECT_S = 5.0


def follow(
    found: list[Target],
    query: dict[str, str | int | None],
    token: str | None,
    emit: Callable[[LogLine | dict[str, Any]], None],
    stop: threading.Event,
) -> dict[str, str]:
    """Streams every node's lines (``follow=true``) to ``emit`` until ``stop`` is set or every
    stream ended; returns the errors of nodes that failed. The lines each node had already
    (its answer's first part) are merged by time; new ones are emitted as they arrive."""
    Item = LogLine | dict[str, Any] | Exception | None
    arrived: queue.Queue[tuple[str, Item | str]] = queue.Queue()

    def reader(target: Target) -> None:
        try:
            with _open(logs_url(target, {**query, "follow": "true"}), token, None) as response:
                arrived.put((target.node, "connected"))
                for line in read_lines(response):
                    arrived.put((target.node, line))
                    if stop.is_set():
                        break
            arrived.put((target.node, None))
        except (LogsError, ValueError, OSError) as exc:
            arrived.put((target.node, exc))

    for target in found:
        threading.Thread(target=reader, args=(target,), daemon=True).start()
    open_streams = len(found)
    waiting = {target.node for target in found}  # not connected yet
    began = time.monotonic()
    settled_at: float | None = None
    held: list[LogLine | dict[str, Any]] = []  # gathered until settled
    failures: dict[str, str] = {}
    while open_streams and not stop.is_set():
        now = time.monotonic()
        if settled_at is None and (not waiting or now > began + CONNECT_S):
            settled_at = now + SETTLE_S
        if settled_at is not None and now >= settled_at and held:
            _emit_in_order(held, emit)
            held = []
        try:
            node, item = arrived.get(timeout=0.05)
        except queue.Empty:
            continue
        if isinstance(item, str):
            waiting.discard(node)
        elif item is None or isinstance(item, Exception):
            open_streams -= 1
            waiting.discard(node)
            if item is not None:
                failures[node] = str(item)
        elif settled_at is None or time.monotonic() < settled_at:
            held.append(item)
        else:
            emit(item)
    _emit_in_order(held, emit)  # every stream ended before it settled
    return failures


def _emit_in_order(
    held: list[LogLine | dict[str, Any]], emit: Callable[[LogLine | dict[str, Any]], None]
) -> None:
    """Notes first, then the lines by time (each node's lines come in order already)."""
    for note in held:
        if not isinstance(note, LogLine):
            emit(note)
    for line in sorted((x for x in held if isinstance(x, LogLine)), key=lambda x: x.time):
        emit(line)
