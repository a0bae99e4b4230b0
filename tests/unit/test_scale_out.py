"""Scale-out: a warm function whose instances are busy waits a moment for a slot before a
new instance starts (``scale_out_wait_s``)."""

from __future__ import annotations

import asyncio

from tests.unit.test_runtime import make


async def test_a_busy_warm_function_waits_briefly_for_a_slot_before_starting_another() -> None:
    rt = await make(scale_out_wait_s=0.5)
    try:
        await rt.call("pair", b"0")  # warm: one instance
        short = await asyncio.gather(*(rt.call("pair", b"0.05") for _ in range(2)))
        assert all(r.body == b"done" for r in short)
        # The second call took the first one's slot after 50 ms instead of a cold start.
        assert rt.runtime.pools["pair"].stats()["instances"] == 1
        long = await asyncio.gather(*(rt.call("pair", b"1.0") for _ in range(2)))
        assert all(r.body == b"done" for r in long)
        assert rt.runtime.pools["pair"].stats()["instances"] == 2  # no slot freed in time
    finally:
        await rt.runtime.close()


async def test_with_no_scale_out_wait_a_busy_function_starts_another_at_once() -> None:
    rt = await make(scale_out_wait_s=0)
    try:
        await rt.call("pair", b"0")
        await asyncio.gather(*(rt.call("pair", b"0.05") for _ in range(2)))
        assert rt.runtime.pools["pair"].stats()["instances"] == 2
    finally:
        await rt.runtime.close()
