"""How many accepts per second a call store commits: the node's append-only log (``CallLog``)
and the SQLite store it replaced (``CallStore``, still used to import an older node's
``calls.db``), each with synchronous NORMAL and FULL.

Each accept is one call (a 200-byte body) written through ``CallStore.insert`` and awaited
until committed, ``--concurrency`` accepts in flight at once (the group commit puts the ones
that arrive while a transaction commits into the next one). Prints a table and writes
benchmarks/results/call_store.json.

    python benchmarks/call_store.py [--seconds 3] [--concurrency 64] [--quick]

A full run takes ~13 s; ``--quick`` (1 s per mode) ~5 s.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
import time
from pathlib import Path

from tierfaas.calls.logstore import CallLog
from tierfaas.calls.model import Call, Request
from tierfaas.calls.store import CallStore, Synchronous

STORES: dict[str, type[CallLog] | type[CallStore]] = {"log": CallLog, "sqlite": CallStore}


async def _run(
    kind: str, sync: Synchronous, seconds: float, concurrency: int, folder: Path
) -> dict[str, float]:
    store = STORES[kind](folder / f"calls-{kind}-{sync}", synchronous=sync)
    store.open()
    latencies: list[float] = []
    deadline = time.monotonic() + seconds

    async def accept_loop(worker: int) -> None:
        n = 0
        while time.monotonic() < deadline:
            n += 1
            call = Call(
                call_id=f"a~b~{worker:04x}{n:012x}",
                function="echo",
                accepted_at=time.time(),
                request=Request(body=os.urandom(100).hex().encode()),
            )
            began = time.perf_counter()
            await store.insert([call])
            latencies.append(time.perf_counter() - began)

    began = time.monotonic()
    await asyncio.gather(*(accept_loop(w) for w in range(concurrency)))
    elapsed = time.monotonic() - began
    groups = store.groups
    store.close()
    latencies.sort()
    return {
        "accepts_per_s": len(latencies) / elapsed,
        "p50_ms": latencies[len(latencies) // 2] * 1000,
        "p99_ms": latencies[int(len(latencies) * 0.99)] * 1000,
        "calls_per_group": len(latencies) / max(1, groups),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--dir", type=Path, default=None, help="where the files go (a disk)")
    parser.add_argument("--quick", action="store_true", help="1 s per mode instead of --seconds")
    args = parser.parse_args()
    if args.quick:
        args.seconds = 1.0
    results = {}
    with tempfile.TemporaryDirectory(dir=args.dir) as folder:
        for kind in STORES:
            for sync in ("NORMAL", "FULL"):
                results[f"{kind} {sync}"] = asyncio.run(
                    _run(kind, sync, args.seconds, args.concurrency, Path(folder))
                )
    print(f"{'store':<12} {'accepts/s':>10} {'p50 ms':>8} {'p99 ms':>8} {'calls/group':>12}")
    for name, r in results.items():
        print(
            f"{name:<12} {r['accepts_per_s']:>10.0f} {r['p50_ms']:>8.2f} {r['p99_ms']:>8.2f} "
            f"{r['calls_per_group']:>12.1f}"
        )
    out = Path(__file__).parent / "results" / "call_store.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"concurrency": args.concurrency, "results": results}, indent=2))


if __name__ == "__main__":
    main()
