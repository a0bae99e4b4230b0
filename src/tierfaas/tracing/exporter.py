"""The OTLP/HTTP span exporter: a bounded queue on the call path, batches posted from a task.

Theory of operation. ``add`` is all a call pays: it appends the finished span to a deque, or,
when ``max_queue`` spans already wait, drops it and counts the drop
(``tierfaas_trace_spans_total{outcome="dropped"}``); it never waits and never fails. A
background task (started by the first span) takes up to ``max_batch`` spans whenever that many
wait or ``interval_s`` has passed since the last post, encodes them (``otlp.py``, in a worker
thread so that a large batch does not hold the loop) and posts them to the collector, one post
at a time, each bounded by ``timeout_s``. A post that fails or times out loses its batch (it
is counted, and logged at most once a minute): a collector that is down or slow costs the
node one bounded request at a time and a full queue, never a call's time. ``close`` posts
what is left once, within ``timeout_s``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Mapping

import aiohttp
from prometheus_client import CollectorRegistry, Counter

from tierfaas.tracing import otlp
from tierfaas.tracing.spans import Attribute, Span

log = logging.getLogger(__name__)

SCOPE = ("tierfaas", "0.1.0")
_WARN_EVERY_S = 60.0


class TraceMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        spans = Counter(
            "tierfaas_trace_spans",
            "Spans this node recorded, by outcome: exported (the collector took them), "
            "dropped (the export queue was full), failed (their post failed or timed out)",
            ["outcome"],
            registry=registry,
        )
        self.exported = spans.labels("exported")
        self.dropped = spans.labels("dropped")
        self.failed = spans.labels("failed")


class OtlpExporter:
    """Posts spans to ``endpoint`` (the full URL, ``.../v1/traces``) in OTLP/HTTP protobuf.
    ``resource``: the attributes of this node, sent with every batch; ``offset_ns``: Unix
    nanoseconds less the spans' clock nanoseconds (``Tracer.wall_offset_ns``)."""

    def __init__(
        self,
        endpoint: str,
        resource: Mapping[str, Attribute],
        metrics: TraceMetrics,
        *,
        offset_ns: int,
        max_queue: int = 2048,
        max_batch: int = 512,
        interval_s: float = 1.0,
        timeout_s: float = 2.0,
    ) -> None:
        self.endpoint = endpoint
        self.resource = dict(resource)
        self.metrics = metrics
        self.offset_ns = offset_ns
        self.max_queue = max_queue
        self.max_batch = max_batch
        self.interval_s = interval_s
        self.timeout_s = timeout_s
        self.queue: deque[Span] = deque()
        self.task: asyncio.Task[None] | None = None
        self.wake: asyncio.Event | None = None
        self.closed = False
        self._warned_at = -_WARN_EVERY_S

    # -- the call path -------------------------------------------------------------------------

    def add(self, span: Span) -> None:
        """Queues one finished span (or drops and counts it when the queue is full)."""
        queue = self.queue
        if len(queue) >= self.max_queue or self.closed:
            self.metrics.dropped.inc()
            return
        queue.append(span)
        if self.task is None:
            self._start()
        elif len(queue) >= self.max_batch and self.wake is not None:
            self.wake.set()

    # -- the background ------------------------------------------------------------------------

    def take_batch(self) -> list[Span]:
        """Up to ``max_batch`` of the oldest queued spans, out of the queue."""
        queue = self.queue
        return [queue.popleft() for _ in range(min(len(queue), self.max_batch))]

    def encode(self, batch: list[Span]) -> bytes:
        return otlp.export_request(batch, self.resource, SCOPE, self.offset_ns)

    def _start(self) -> None:
        self.wake = asyncio.Event()
        self.task = asyncio.get_running_loop().create_task(self._run(), name="otlp-exporter")

    async def _run(self) -> None:
        assert self.wake is not None
        timeout = aiohttp.ClientTimeout(total=self.timeout_s)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            while not self.closed:
                if len(self.queue) < self.max_batch:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self.wake.wait(), self.interval_s)
                self.wake.clear()
                while self.queue and not self.closed:
                    await self._post(session, self.take_batch())
                    if len(self.queue) < self.max_batch:
                        break

    async def _post(self, session: aiohttp.ClientSession, batch: list[Span]) -> None:
        try:
            body = await asyncio.to_thread(self.encode, batch)
            async with session.post(
                self.endpoint,
                data=body,
                headers={"Content-Type": "application/x-protobuf"},
            ) as answer:
                await answer.read()
                if answer.status >= 300:
                    raise RuntimeError(f"the collector answered {answer.status}")
        except asyncio.CancelledError:
            self.metrics.failed.inc(len(batch))
            raise
        except Exception as exc:  # the collector's trouble is never the node's
            self.metrics.failed.inc(len(batch))
            now = time.monotonic()
            if now - self._warned_at >= _WARN_EVERY_S:
                self._warned_at = now
                log.warning("exporting %d spans to %s failed: %s", len(batch), self.endpoint, exc)
            return
        self.metrics.exported.inc(len(batch))

    async def close(self) -> None:
        """Stops the task and posts what is queued, once, within ``timeout_s``."""
        if self.closed:
            return
        self.closed = True
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
        if not self.queue:
            return
        timeout = aiohttp.ClientTimeout(total=self.timeout_s)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            while self.queue:
                await self._post(session, self.take_batch())
