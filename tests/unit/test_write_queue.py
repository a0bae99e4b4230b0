"""WriteQueue against a fake master: nothing the runtime reports is ever lost."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from tierfaas.control.write_queue import WriteQueue


class FlakyMaster:
    """Refuses the first ``fail`` announces, then records what it is sent."""

    def __init__(self, fail: int) -> None:
        self.fail = fail
        self.announced: list[list[str]] = []
        self.registered: list[str] = []

    async def announce(self, node: str, epoch: int, functions: Sequence[str], **_: Any) -> None:
        if self.fail:
            self.fail -= 1
            raise ConnectionError("refused")
        self.announced.append(list(functions))

    async def register(self, writes: Sequence[Any], **_: Any) -> None:
        self.registered += [w.function for w in writes]

    async def unregister(self, writes: Sequence[Any], **_: Any) -> None:
        pass


class OneChannel:
    def __init__(self, client: FlakyMaster) -> None:
        self.client = client

    def get(self, address: str) -> FlakyMaster:
        return self.client


async def no_wait(_: float) -> None:
    """The queue's backoff: yields to the event loop, lets no time pass."""
    await asyncio.sleep(0)


async def settle() -> None:
    """Lets every ready task run until it waits again (no time passes)."""
    for _ in range(50):
        await asyncio.sleep(0)


async def run_queue(master: FlakyMaster) -> None:
    queue = WriteQueue(
        "n", 1, master=lambda: "m:1", channels=OneChannel(master),  # type: ignore[arg-type]
        sleep=no_wait,
    )  # fmt: skip
    queue.announce([])
    queue.start()
    await asyncio.sleep(0)  # the first announce fails; the queue backs off
    queue.warm("f02")  # leaves with the second announce, which fails too
    await settle()
    assert queue.pending == 0 and master.fail == 0
    await queue.stop()


def test_a_write_sent_with_a_failed_announce_is_not_lost() -> None:
    master = FlakyMaster(fail=2)
    asyncio.run(run_queue(master))
    assert "f02" in master.registered or any("f02" in a for a in master.announced)
