"""``GrpcPeers``: the other nodes as the calls need them, over ``tierfaas.v1.Control``.

Who is live comes from the ClusterManager's ``MemberView`` alone (alive, not suspect, with a
control address): a suspect may only be slow, but a copy sent to it may wait out a partition,
and a second copy is worth having only on a node that answers. Copies and outcomes to one
peer travel in batches (``replication.Batcher``); every call carries the cluster credential.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

from grpc import aio

from tierfaas.calls import wire
from tierfaas.calls.errors import refusal
from tierfaas.calls.model import Call
from tierfaas.calls.replication import Batcher
from tierfaas.cluster.state import MemberView
from tierfaas.control import rpc
from tierfaas.control import tierfaas_pb2 as pb
from tierfaas.control.auth import call_metadata
from tierfaas.control.transport import Channels
from tierfaas.membership.base import MemberState

COPY_TIMEOUT_S = 2.0
"""Longest the accept waits for a holder's commit before it tries the next one. Calls wait
for the channel to be ready within their timeout (``wait_for_ready``): a channel in its
reconnect backoff (the peer was not up yet when it was first used) is not a failure."""
COPY_COMPANY_LINGER_S = 0.001
"""A copy that starts a batch waits this long for the copies of the other accepts in flight
(under load only: one round trip of Python gRPC costs ~1 ms of CPU over the two nodes, a
batch of 32 ~0.1 ms a call)."""
OUTCOME_TIMEOUT_S = 5.0
OUTCOME_LINGER_S = 0.05
"""Outcomes are off every caller's path: they wait this long to travel together."""
CLAIM_TIMEOUT_S = 5.0
ACCEPT_TIMEOUT_S = 5.0
READ_TIMEOUT_S = 2.0


class GrpcPeers:
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
        self._metadata = call_metadata(key)
        self._stubs: dict[str, tuple[aio.Channel, rpc.ControlStub]] = {}
        self._members_of: MemberView | None = None
        self._members: list[str] = []
        self._copy_streams: dict[
            str,
            tuple[rpc.ControlStub, aio.StreamStreamCall[pb.CopyCallsRequest, pb.CopyCallsReply]],
        ] = {}
        self.copies: Batcher[Call] = Batcher(
            self._send_copies,
            wire.size,
            company_linger_s=COPY_COMPANY_LINGER_S,
        )
        self.outcomes: Batcher[Call] = Batcher(
            self._send_outcomes, wire.size, linger_s=OUTCOME_LINGER_S
        )

    def members(self) -> list[str]:
        view = self._view()
        if view is self._members_of:  # a view never changes: a change publishes a new one
            return self._members
        runs = view.runs
        live = {m.name for m in runs.values() if m.state is MemberState.ALIVE and m.rpc is not None}
        live.add(self.name)
        self._members_of, self._members = view, sorted(live)
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

    async def _send_copies(self, node: str, calls: list[Call]) -> None:
        """One batch on the node's copy stream (opened on first use, and again after any
        failure); its reply means the holder committed the batch. The batcher sends one
        batch at a time per node, so requests and replies alternate on the stream. A stream
        that had served before and fails (its holder restarted on the same address) is
        replaced once at once: a copy sent twice is kept once (its id is its key)."""
        request = pb.CopyCallsRequest(origin=self.name, calls=[wire.to_pb(c) for c in calls])
        async with asyncio.timeout(COPY_TIMEOUT_S):
            stub = self._stub(node)
            stream = self._copy_streams.get(node)
            if stream is not None and stream[0] is stub and not stream[1].done():
                try:
                    await self._exchange(node, stream[1], request)
                    return
                except aio.AioRpcError:
                    pass  # a stale stream: a fresh one below
            call = stub.CopyStream(metadata=self._metadata, wait_for_ready=True)
            self._copy_streams[node] = (stub, call)
            await self._exchange(node, call, request)

    async def _exchange(
        self,
        node: str,
        call: aio.StreamStreamCall[pb.CopyCallsRequest, pb.CopyCallsReply],
        request: pb.CopyCallsRequest,
    ) -> None:
        try:
            await call.write(request)
            reply = await call.read()
            if reply is aio.EOF:
                raise ConnectionError(f"{node} closed the copy stream")
        except BaseException:
            # Where the stream stands is unknown: the next batch gets a new one.
            if self._copy_streams.get(node, (None, None))[1] is call:
                del self._copy_streams[node]
            call.cancel()
            raise

    async def _send_outcomes(self, node: str, calls: list[Call]) -> None:
        records = [wire.to_pb(c, with_request=False) for c in calls]
        request = pb.CopyCallsRequest(origin=self.name, calls=records)
        await self._stub(node).CallOutcomes(
            request, metadata=self._metadata, wait_for_ready=True, timeout=OUTCOME_TIMEOUT_S
        )

    async def copy(self, node: str, call: Call, *, company: bool = False) -> None:
        await self.copies.submit(node, call, company=company)

    def outcome(self, node: str, call: Call) -> asyncio.Future[None]:
        return self.outcomes.submit(node, call)

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
        await self.copies.close()
        await self.outcomes.close()
        for _, call in self._copy_streams.values():
            call.cancel()
        self._copy_streams.clear()
