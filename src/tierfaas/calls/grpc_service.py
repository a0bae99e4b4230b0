"""The calls' part of the ``tierfaas.v1.Control`` servicer: ClaimCalls, AcceptCall, GetCall
and ListCalls, over the node's ``CallService``, and the handlers of the calls lane (copies
and outcomes travel there, not over gRPC: ``calls/lane.py``).

``ControlServer`` inherits it; like its other methods, each gets the request's bytes and
decodes them itself (a bad message is ``INVALID_ARGUMENT``). A node with no call service yet
(still starting) answers ``UNAVAILABLE``, which the sender treats as any unreachable peer.
A forwarded accept may carry a body of up to the node's body limit, so these requests may
be up to twice the control API's usual message limit (gRPC's own cap).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, NoReturn

import grpc
from grpc import aio

from tierfaas import errors
from tierfaas.calls import lane as calls_lane  # a module: it imports the control package
from tierfaas.calls import wire
from tierfaas.calls.model import STATES
from tierfaas.control import tierfaas_pb2 as pb
from tierfaas.control import wire as control_wire
from tierfaas.control.constants import ERROR_DETAIL_CHARS, MAX_MESSAGE_BYTES
from tierfaas.control.lane import FrameHandler
from tierfaas.names import is_valid_name

if TYPE_CHECKING:
    from tierfaas.calls.service import CallService

Context = aio.ServicerContext[bytes, bytes]
MAX_CALL_MESSAGE_BYTES = 2 * MAX_MESSAGE_BYTES
MAX_LIST = 1000


async def _abort(context: Context, code: grpc.StatusCode, reason: str) -> NoReturn:
    await context.abort(code, reason[:ERROR_DETAIL_CHARS])


class CallsServicer:
    """Mixed into ``ControlServer``; ``calls`` is set by the node once its service exists."""

    calls: CallService | None = None

    async def _calls_decode(
        self, context: Context, kind: type[control_wire.M], data: bytes
    ) -> tuple[CallService, control_wire.M]:
        if self.calls is None:
            await _abort(context, grpc.StatusCode.UNAVAILABLE, "this node takes no calls yet")
        if len(data) > MAX_CALL_MESSAGE_BYTES:
            await _abort(context, grpc.StatusCode.INVALID_ARGUMENT, "request over the limit")
        try:
            return self.calls, control_wire.decode(kind, data)
        except control_wire.BadMessage as exc:
            await _abort(context, grpc.StatusCode.INVALID_ARGUMENT, str(exc))

    def lane_frames(self) -> dict[int, FrameHandler]:
        """The holder's side of the calls lane (copies and outcomes: ``calls/lane.py``), for
        the node's lane server; each frame finds the call service as it is then."""
        return calls_lane.holder_frames(lambda: self.calls)

    async def ClaimCalls(self, data: bytes, context: Context) -> pb.ClaimCallsReply:
        service, request = await self._calls_decode(context, pb.ClaimCallsRequest, data)
        if len(request.call_ids) > 1_000_000:
            await _abort(context, grpc.StatusCode.INVALID_ARGUMENT, "too many call ids")
        try:
            origin = control_wire.check_name(request.origin, "origin")
            epoch = control_wire.check_epoch(request.epoch)
        except control_wire.BadMessage as exc:
            await _abort(context, grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        taken = await service.claim(origin, epoch, list(request.call_ids))
        return pb.ClaimCallsReply(taken=taken)

    async def AcceptCall(self, data: bytes, context: Context) -> pb.AcceptCallReply:
        service, record = await self._calls_decode(context, pb.CallRecord, data)
        try:
            probe = wire.from_pb(record, with_id=False)
        except control_wire.BadMessage as exc:
            await _abort(context, grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        if probe.function not in service.functions:
            return pb.AcceptCallReply(status=404, error="not_found", message="no such function")
        try:
            accepted = await service.accept(
                probe.function,
                probe.request,
                idem_key=probe.idem_key,
                callback_url=probe.callback_url,
                forwarded=True,
            )
        except errors.HttpError as exc:
            return pb.AcceptCallReply(status=exc.status, error=exc.code, message=exc.message)
        return pb.AcceptCallReply(call_id=accepted.call_id, replay=accepted.replay)

    async def GetCall(self, data: bytes, context: Context) -> pb.GetCallReply:
        service, request = await self._calls_decode(context, pb.GetCallRequest, data)
        try:
            found = await service.get_here(request.call_id, request.retry)
        except errors.HttpError as exc:
            return pb.GetCallReply(status=exc.status, error=exc.code, message=exc.message)
        return pb.GetCallReply(view_json=b"" if found is None else json.dumps(found).encode())

    async def ListCalls(self, data: bytes, context: Context) -> pb.ListCallsReply:
        service, request = await self._calls_decode(context, pb.ListCallsRequest, data)
        state = request.state or None
        if state is not None and state not in STATES:
            await _abort(context, grpc.StatusCode.INVALID_ARGUMENT, "not a call state")
        if request.function and not is_valid_name(request.function):
            await _abort(context, grpc.StatusCode.INVALID_ARGUMENT, "not a function name")
        limit = min(max(request.limit, 1), MAX_LIST)
        calls = service.listed(state, request.function or None, limit)
        return pb.ListCallsReply(calls_json=json.dumps(calls).encode())
