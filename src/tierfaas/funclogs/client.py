"""``tierfaas logs``: asks one node for the members (``/v1/cluster``), then every node (or the
one ``--node`` names) for its lines (``/v1/logs``), and prints them merged in time order. With
``--follow`` it keeps a streaming request open to each node (a thread each) and prints lines as
they arrive, interleaved. Standard library only: the command line starts fast."""

from __future__ import annotations

import json
import queue
import threading
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


def follow(
    found: list[Target],
    query: dict[str, str | int | None],
    token: str | None,
    emit: Callable[[LogLine | dict[str, Any]], None],
    stop: threading.Event,
) -> dict[str, str]:
    """Streams every node's lines (``follow=true``) to ``emit`` in arrival order until
    ``stop`` is set or every stream ended; returns the errors of nodes that failed."""
    arrived: queue.Queue[tuple[str, LogLine | dict[str, Any] | Exception | None]] = queue.Queue()

    def reader(target: Target) -> None:
        try:
            with _open(logs_url(target, {**query, "follow": "true"}), token, None) as response:
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
    failures: dict[str, str] = {}
    while open_streams and not stop.is_set():
        try:
            node, item = arrived.get(timeout=0.2)
        except queue.Empty:
            continue
        if item is None:
            open_streams -= 1
        elif isinstance(item, Exception):
            open_streams -= 1
            failures[node] = str(item)
        else:
            emit(item)
    return failures
