"""``RemotePeers``: the other nodes as the calls need them.

Copies and outcomes, on every call's path, travel on the calls lane (``lane.py``: raw TCP,
msgpack, pipelined, one frame per peer per loop turn), to the lane address each peer's
``Info`` publishes. The rare requests (a keyed accept forwarded to its home, a claim after a
restart, reads) are gRPC calls of ``tierfaas.v1.Control``. Every connection carries the
cluster credential.

Who is live comes from the ClusterManager's ``MemberView`` alone (alive, not suspect, with a
control address): a suspect may only be slow, but a copy sent to it may wait out a partition,
and a second copy is worth having only on a node that answers.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

from grpc import aio

from tierfaas.calls import wire
from tierfaas.calls.errors import refusal
from tierfaas.calls.lane import LaneError, LaneLink
from tierfaas.calls.model import Call
from tierfaas.cluster.state import MemberView
from tierfaas.config import Address
from tierfaas.control import rpc
from tierfaas.control import tierfaas_pb2 as pb
from tierfaas.control.auth import call_metadata
from tierfaas.control.lane import CALL_COPIES, CALL_OUTCOMES
from tierfaas.control.transport import Channels
from tierfaas.membership.base import MemberState

COPY_TIMEOUT_S = 2.0
"""Longest the accept waits for a holder's commit before it tries the next one."""
OUTCOME_TIMEOUT_S = 5.0
INFO_TIMEOUT_S = 1.0
"""Longest a first copy to a peer waits for its ``Info`` (the lane's address)."""
CLAIM_TIMEOUT_S = 5.0
ACCEPT_TIMEOUT_S = 5.0
READ_TIMEOUT_S = 2.0


class RemotePeers:
    def __init__(
        self,
        *,
        name: str,
        view: Callable[[], MemberView],
        epoch: Callable[[], int],
        channels: Channels,
        key: bytes | None,
    ) -> None:
        self.name = name
        self._view = view
        self._epoch = epoch
        self._channels = channels
        self._key = key
        self._metadata = call_metadata(key)
        self._stubs: dict[str, tuple[aio.Channel, rpc.ControlStub]] = {}
        self._members_of: MemberView | None = None
        self._members: list[str] = []
        self._rpc_of: dict[str, str] = {}
        self._links: dict[str, tuple[LaneLink, LaneLink]] = {}
        """By the peer's control address (a restarted peer has a new one): its links for
        copies and for outcomes (their acks have different timeouts)."""

    def members(self) -> list[str]:
        view = self._view()
        if view is self._members_of:  # a view never changes: a change publishes a new one
            return self._members
        runs = view.runs
        live = {m.name for m in runs.values() if m.state is MemberState.ALIVE and m.rpc is not None}
        live.add(self.name)
        self._members_of, self._members = view, sorted(live)
        self._rpc_of = {m.name: str(m.rpc) for m in runs.values() if m.rpc is not None}
        self._forget_gone()
        return self._members

    def newer_run(self, name: str, epoch: int) -> bool:
        member = self._view().runs.get(name)
        return member is not None and member.epoch > epoch

    def knows(self, name: str) -> bool:
        return name in self._view().runs

    def epoch(self) -> int:
        return self._epoch()

    def _stub(self, node: str) -> rpc.ControlStub:
        address = self._view().rpc_of(node)
        if address is None:
            raise ConnectionError(f"{node} is not live (no control address in the view)")
        channel = self._channels.get(address).channel
        cached = self._stubs.get(address)
        if cached is None or cached[0] is not channel:
            cached = self._stubs[address] = (channel, rpc.stub(channel))
        return cached[1]

    # -- the calls lane ------------------------------------------------------------------------

    def _link(self, node: str, kind: int) -> LaneLink:
        if self._view() is not self._members_of:
            self.members()  # the addresses of the current view
        address = self._rpc_of.get(node)
        if address is None:
            raise LaneError(f"{node} is not live (no control address in the view)")
        links = self._links.get(address)
        if links is None:

            async def resolve() -> Address:
                info = await self._channels.get(address).info(timeout_s=INFO_TIMEOUT_S)
                if not info.query_lane:
                    raise LaneError(f"{node} serves no lane")
                return Address.parse(info.query_lane, "query_lane")

            links = self._links[address] = (
                LaneLink(self.name, resolve, key=self._key, timeout_s=COPY_TIMEOUT_S),
                LaneLink(self.name, resolve, key=self._key, timeout_s=OUTCOME_TIMEOUT_S),
            )
        return links[0] if kind == CALL_COPIES else links[1]

    def _forget_gone(self) -> None:
        """Closes the links to addresses no run in the view has any more."""
        live = set(self._rpc_of.values())
        for address in [a for a in self._links if a not in live]:
            for link in self._links.pop(address):
                self._channels.close_later(link.close())

    @property
    def frames(self) -> int:
        """Frames of copies and outcomes sent so far."""
        return sum(link.frames for links in self._links.values() for link in links)

    def copy(self, node: str, calls: list[Call]) -> asyncio.Future[None]:
        try:
            return self._link(node, CALL_COPIES).submit(CALL_COPIES, calls)
        except LaneError as exc:
            return _failed(exc)

    def outcomes(self, node: str, calls: list[Call]) -> asyncio.Future[None]:
        try:
            return self._link(node, CALL_OUTCOMES).submit(CALL_OUTCOMES, calls)
        except LaneError as exc:
            return _failed(exc)

    # -- gRPC: the rare requests ---------------------------------------------------------------

    async def claim(self, node: str, origin: str, epoch: int, call_ids: list[str]) -> list[str]:
        request = pb.ClaimCallsRequest(origin=origin, epoch=epoch, call_ids=call_ids)
        reply = await self._stub(node).ClaimCalls(
            request, metadata=self._metadata, wait_for_ready=True, timeout=CLAIM_TIMEOUT_S
        )
        return list(reply.taken)

    async def accept(self, node: str, call: Call) -> tuple[str, bool]:
        record = wire.to_pb(call)
        reply = await self._stub(node).AcceptCall(
            record, metadata=self._metadata, wait_for_ready=True, timeout=ACCEPT_TIMEOUT_S
        )
        if reply.status:
            raise refusal(reply.status, reply.error, reply.message)
        return reply.call_id, reply.replay

    async def get(self, node: str, call_id: str, retry: bool) -> dict[str, Any] | None:
        request = pb.GetCallRequest(call_id=call_id, retry=retry)
        reply = await self._stub(node).GetCall(
            request, metadata=self._metadata, wait_for_ready=True, timeout=READ_TIMEOUT_S
        )
        if reply.status:
            raise refusal(reply.status, reply.error, reply.message)
        if not reply.view_json:
            return None
        found: dict[str, Any] = json.loads(reply.view_json)
        return found

    async def listed(
        self, node: str, state: str | None, function: str | None, limit: int
    ) -> list[dict[str, Any]]:
        request = pb.ListCallsRequest(state=state or "", function=function or "", limit=limit)
        reply = await self._stub(node).ListCalls(
            request, metadata=self._metadata, wait_for_ready=True, timeout=READ_TIMEOUT_S
        )
        calls: list[dict[str, Any]] = json.loads(reply.calls_json or b"[]")
        return calls

    async def close(self) -> None:
        links, self._links = self._links, {}
        for pair in links.values():
            for link in pair:
                await link.close()


def _failed(error: Exception) -> asyncio.Future[None]:
    future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    future.set_exception(error)
    return future
