"""An instance's deadline heap stays bounded: answered calls behind a slow one do not pile
up in it, and the slow one still times out at its deadline."""

from __future__ import annotations

import asyncio
from typing import Any, cast

import pytest

from tierfaas import errors
from tierfaas.runtime import protocol as p
from tierfaas.runtime.instance import DEADLINE_HEAP_SLACK, Instance
from tierfaas.runtime.zygote_client import ZygoteClient
from tierfaas.testing import FakeClock
from tierfaas.testing.runtime import fake_release


class Transport:
    """Takes what the instance writes; nothing reaches a process."""

    def __init__(self) -> None:
        self.closed = False

    def write(self, data: bytes) -> None:
        pass

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True


def answer(instance: Instance, number: int) -> None:
    instance._on_result([p.RESULT, number, p.OK, b"ok", "application/json", ""])


async def test_answered_calls_behind_a_slow_one_do_not_pile_up() -> None:
    clock = FakeClock()
    spec = fake_release({"f": {}}).functions["f"]
    instance = Instance(1, spec, cast(ZygoteClient, object()), clock)
    instance.transport = cast(Any, Transport())
    slow = instance.call(b"", None, timeout_s=300.0)  # call 1: never answered
    largest = 0
    for number in range(2, 20_002):
        future = instance.call(b"", None, timeout_s=300.0)
        answer(instance, number)
        assert future.done()
        largest = max(largest, len(instance.deadlines))
    assert largest <= 2 * 2 + DEADLINE_HEAP_SLACK  # two calls in flight at most
    assert not slow.done()
    await clock.run_for(300.0)
    with pytest.raises(errors.FunctionTimeout):
        await slow
    await asyncio.sleep(0)
