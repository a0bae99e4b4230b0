"""``tierfaas load``: a small open-loop load generator for trying a cluster out.

Open loop: request *i* is due at ``start + i / rps`` whether or not the earlier ones have
answered, so a slow cluster shows up as latency (measured from the due time, which avoids
coordinated omission) instead of as a politely lower rate. It is bounded in count
(``rps x duration`` requests) and in time (the send window, then at most one request timeout
for the stragglers); past ``max_in_flight`` requests in flight a due request is not sent and
counts as *dropped*. Functions are taken in turn. The summary counts answers by status,
connection errors and timeouts, latency percentiles and the ``X-Tierfaas-Route`` kinds.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class LoadSpec:
    url: str
    rps: float
    duration_s: float
    functions: list[str]
    body: bytes = b"world"
    max_in_flight: int = 512
    timeout_s: float = 10.0

    @property
    def total(self) -> int:
        return max(1, math.ceil(self.rps * self.duration_s))


@dataclass
class LoadSummary:
    planned: int = 0
    sent: int = 0
    ok: int = 0
    dropped: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)  # "200", "503", "timeout", ...
    routes: Counter[str] = field(default_factory=Counter)
    latencies_s: dict[str, list[float]] = field(default_factory=dict)  # per function
    elapsed_s: float = 0.0

    @property
    def errors(self) -> int:
        return self.sent - self.ok

    def percentile(self, pct: float, function: str | None = None) -> float:
        values = sorted(
            self.latencies_s.get(function, [])
            if function
            else [v for vs in self.latencies_s.values() for v in vs]
        )
        if not values:
            return math.nan
        rank = min(len(values) - 1, max(0, math.ceil(pct / 100 * len(values)) - 1))
        return values[rank]


async def _one(
    session: Any, spec: LoadSpec, function: str, due: float, summary: LoadSummary
) -> None:
    import aiohttp

    url = f"{spec.url.rstrip('/')}/function/{function}"
    try:
        async with session.post(url, data=spec.body) as response:
            await response.read()
            status = response.status
            route = response.headers.get("X-Tierfaas-Route")
    except TimeoutError:
        summary.outcomes["timeout"] += 1
        return
    except aiohttp.ClientError as exc:
        summary.outcomes[f"error: {exc.__class__.__name__}"] += 1
        return
    elapsed = time.perf_counter() - due
    summary.outcomes[str(status)] += 1
    if status == 200:
        summary.ok += 1
        summary.latencies_s.setdefault(function, []).append(elapsed)
    if route:
        summary.routes[route] += 1


async def generate(spec: LoadSpec, on_progress: Any = None) -> LoadSummary:
    """Runs the load; ``on_progress(done, in_flight)`` is called about ten times a second."""
    import aiohttp

    summary = LoadSummary(planned=spec.total)
    connector = aiohttp.TCPConnector(limit=spec.max_in_flight, force_close=False)
    timeout = aiohttp.ClientTimeout(total=spec.timeout_s)
    tasks: set[asyncio.Task[None]] = set()
    done = 0

    def finished(task: asyncio.Task[None]) -> None:
        nonlocal done
        tasks.discard(task)
        done += 1

    began = time.perf_counter()
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        last_report = 0.0
        for i in range(spec.total):
            due = began + i / spec.rps
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            if len(tasks) >= spec.max_in_flight:
                summary.dropped += 1
                done += 1
                continue
            function = spec.functions[i % len(spec.functions)]
            task = asyncio.get_running_loop().create_task(
                _one(session, spec, function, due, summary)
            )
            tasks.add(task)
            task.add_done_callback(finished)
            summary.sent += 1
            now = time.perf_counter()
            if on_progress is not None and now - last_report > 0.1:
                last_report = now
                on_progress(done, len(tasks))
        while tasks:
            await asyncio.wait(set(tasks), timeout=0.1)
            if on_progress is not None:
                on_progress(done, len(tasks))
    summary.elapsed_s = time.perf_counter() - began
    if on_progress is not None:
        on_progress(done, len(tasks))
    return summary


def render(spec: LoadSpec, summary: LoadSummary) -> Any:
    from rich.markup import escape
    from rich.table import Table

    def ms(value: float) -> str:
        return "-" if math.isnan(value) else f"{value * 1e3:.1f} ms"

    table = Table(
        title=(
            f"{escape(spec.url)}: {summary.sent} requests in {summary.elapsed_s:.1f} s "
            f"({summary.sent / max(summary.elapsed_s, 1e-9):.0f}/s, asked {spec.rps:g}/s)"
        ),
        title_justify="left",
    )
    table.add_column("")
    table.add_column("value", justify="right")
    table.add_row("requests sent", str(summary.sent))
    table.add_row("ok (200)", f"[green]{summary.ok}[/]")
    table.add_row("errors", f"[red]{summary.errors}[/]" if summary.errors else "0")
    for outcome, count in sorted(summary.outcomes.items()):
        if outcome != "200":
            table.add_row(f"  {escape(outcome)}", str(count))
    if summary.dropped:
        table.add_row("dropped (too many in flight)", f"[yellow]{summary.dropped}[/]")
    table.add_row("latency p50 / p99 (all)", f"{ms(summary.percentile(50))} / "
                  f"{ms(summary.percentile(99))}")  # fmt: skip
    for function in spec.functions:
        table.add_row(
            f"  {escape(function)}",
            f"{ms(summary.percentile(50, function))} / {ms(summary.percentile(99, function))}",
        )
    for route, count in summary.routes.most_common():
        table.add_row(f"route {escape(route)}", str(count))
    return table


def run_load(spec: LoadSpec, console: Any) -> LoadSummary:
    """Runs ``spec`` with a progress bar on ``console``, then prints the summary table."""
    import uvloop
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    with Progress(
        TextColumn("[bold]load[/] {task.fields[target]}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("in flight {task.fields[in_flight]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=False,
    ) as progress:
        task = progress.add_task("load", total=spec.total, target=spec.url, in_flight=0)

        def on_progress(done: int, in_flight: int) -> None:
            progress.update(task, completed=done, in_flight=in_flight)

        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            summary = runner.run(generate(spec, on_progress))
    console.print(render(spec, summary))
    return summary
