"""An instance's start timeout covers the zygote's fork too: a zygote that never answers a
spawn request fails the start at the deadline instead of holding it forever."""

from __future__ import annotations

import asyncio
from typing import Any, cast

import pytest

from tierfaas import errors
from tierfaas.runtime.instance import Instance
from tierfaas.runtime.zygote_client import ZygoteClient
from tierfaas.testing import FakeClock
from tierfaas.testing.runtime import fake_release


class SilentZygote:
    """Takes spawn requests and never answers them."""

    def __init__(self) -> None:
        self.asked = 0
        self.cancelled = 0

    async def spawn(self, spec: dict[str, Any], fds: list[int]) -> Any:
        self.asked += 1
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.cancelled += 1
            raise


async def test_a_zygote_that_never_forks_fails_the_start_at_its_deadline() -> None:
    clock = FakeClock()
    spec = fake_release({"f": {}}).functions["f"]
    zygote = SilentZygote()
    instance = Instance(1, spec, cast(ZygoteClient, zygote), clock)
    start = asyncio.ensure_future(instance.start({}, timeout_s=5.0))
    await clock.run_for(4.9)
    assert not start.done() and zygote.asked == 1
    await clock.run_for(0.2)
    with pytest.raises(errors.StartFailed, match="did not start an instance of 'f' within 5 s"):
        await start
    assert zygote.cancelled == 1  # the request is dropped, not left waiting
    assert instance.dead and instance.death_reason == "start_failed"


async def test_a_start_cancelled_by_its_caller_is_cancelled_not_failed() -> None:
    clock = FakeClock()
    spec = fake_release({"f": {}}).functions["f"]
    instance = Instance(1, spec, cast(ZygoteClient, SilentZygote()), clock)
    start = asyncio.ensure_future(instance.start({}, timeout_s=5.0))
    await clock.run_for(1.0)
    start.cancel()
    with pytest.raises(asyncio.CancelledError):
        await start
    assert clock.pending() == 0  # its deadline went with it
