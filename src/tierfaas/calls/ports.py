"""What the call service needs of the rest of the node, as protocols: the router that runs a
call, the other nodes, the callback sender. Tests give fakes; the node gives ``Router.handle``,
``peers.RemotePeers`` and ``callbacks.CallbackSender``."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol

from tierfaas.calls.model import Call

Header = tuple[bytes, bytes]


class Reply(Protocol):
    status: int
    body: bytes
    headers: list[tuple[bytes, bytes]]


class RunCall(Protocol):
    """``Router.handle``: runs or forwards one call."""

    def __call__(
        self,
        name: str,
        body: bytes,
        *,
        request_id: str,
        method: str,
        query: str,
        headers: Sequence[Header],
        started: float,
        path: str = "/",
        call: tuple[str, int] | None = None,
    ) -> Awaitable[Reply]: ...


class Peers(Protocol):
    """The other nodes, as the calls need them (``peers.RemotePeers``; a fake in tests)."""

    def members(self) -> list[str]:
        """The live, unsuspected members that serve calls, this node included."""
        ...

    def newer_run(self, name: str, epoch: int) -> bool:
        """Whether a run of ``name`` newer than ``epoch`` is live."""
        ...

    def knows(self, name: str) -> bool:
        """Whether a run of ``name`` is live (alive or suspect) in this node's view."""
        ...

    def epoch(self) -> int:
        """This node's own run."""
        ...

    def copy(self, node: str, calls: list[Call]) -> asyncio.Future[None]:
        """Sends the second copies of ``calls``; the future resolves once ``node`` committed
        them (copies submitted during one turn of the loop share a frame)."""
        ...

    def outcomes(self, node: str, calls: list[Call]) -> asyncio.Future[None]:
        """Tells ``node`` (the calls' holder) how ``calls`` stand; the future resolves once
        it recorded them (a future, not a coroutine: the service needs no task)."""
        ...

    async def claim(self, node: str, origin: str, epoch: int, call_ids: list[str]) -> list[str]: ...

    async def accept(self, node: str, call: Call) -> tuple[str, bool]: ...

    async def get(self, node: str, call_id: str, retry: bool) -> dict[str, Any] | None: ...

    async def listed(
        self, node: str, state: str | None, function: str | None, limit: int
    ) -> list[dict[str, Any]]: ...

    async def close(self) -> None: ...


class CallbackSink(Protocol):
    """``callbacks.CallbackSender``'s part the service uses."""

    def send(
        self,
        url: str,
        call_id: str,
        state: str,
        payload: bytes,
        on_done: Callable[[str, int], None],
    ) -> None: ...

    async def close(self) -> None: ...
