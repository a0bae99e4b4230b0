"""The generated wiring of ``tierfaas.v1.Control`` (``tierfaas_pb2_grpc.py``), typed, in one
place: ``stub(channel)`` for the caller (``transport.ControlClient``), ``add_servicer()`` for the
server (``server.ControlServer``, a ``ControlServicer``). The generated module holds the method
paths and the message type of each call; nothing else writes them down.

Requests reach the servicer undecoded. ``add_servicer`` registers the generated handlers
without their request deserializers, so the servicer parses each body itself (``wire.decode``)
and answers one that is not a valid message, or over the size limit, with ``INVALID_ARGUMENT``
and keeps serving. With the generated deserializer a bad body would raise inside gRPC, which
ends the call with an opaque ``UNKNOWN`` before the servicer sees it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any, Protocol, TypeAlias, cast

import grpc
from grpc import aio

from tierfaas.control import tierfaas_pb2 as pb
from tierfaas.control import tierfaas_pb2_grpc as generated

SERVICE: str = pb.DESCRIPTOR.services_by_name["Control"].full_name
"""``tierfaas.v1.Control``: the service name on the wire (and in reflection)."""

Handler: TypeAlias = "grpc.RpcMethodHandler[Any, Any]"


class ControlStub(Protocol):
    """The generated ``ControlStub``'s callables with their message types."""

    Register: aio.UnaryUnaryMultiCallable[pb.RegisterRequest, pb.WriteReply]
    Unregister: aio.UnaryUnaryMultiCallable[pb.UnregisterRequest, pb.WriteReply]
    Announce: aio.UnaryUnaryMultiCallable[pb.AnnounceRequest, pb.WriteReply]
    Query: aio.UnaryUnaryMultiCallable[pb.QueryRequest, pb.QueryReply]
    QueryStream: aio.StreamStreamMultiCallable[pb.QueryRequest, pb.QueryReply]
    Subscribe: aio.UnaryStreamMultiCallable[pb.SubscribeRequest, pb.TableUpdate]
    Info: aio.UnaryUnaryMultiCallable[pb.InfoRequest, pb.InfoReply]
    Handover: aio.StreamUnaryMultiCallable[pb.HandoverChunk, pb.HandoverReply]
    Digest: aio.UnaryUnaryMultiCallable[pb.DigestRequest, pb.DigestReply]
    Prewarm: aio.UnaryUnaryMultiCallable[pb.PrewarmRequest, pb.PrewarmReply]
    ClaimCalls: aio.UnaryUnaryMultiCallable[pb.ClaimCallsRequest, pb.ClaimCallsReply]
    AcceptCall: aio.UnaryUnaryMultiCallable[pb.CallRecord, pb.AcceptCallReply]
    GetCall: aio.UnaryUnaryMultiCallable[pb.GetCallRequest, pb.GetCallReply]
    ListCalls: aio.UnaryUnaryMultiCallable[pb.ListCallsRequest, pb.ListCallsReply]


def stub(channel: aio.Channel) -> ControlStub:
    """The generated stub on ``channel``."""
    made = generated.ControlStub(channel)  # type: ignore[no-untyped-call]  # generated, untyped
    return cast(ControlStub, made)


ControlServicer = generated.ControlServicer
"""The generated servicer base class; its methods receive the request bytes (see above)."""


def add_servicer(servicer: generated.ControlServicer, server: aio.Server) -> None:
    """Registers ``servicer`` on ``server`` with the generated ``add_ControlServicer_to_server``,
    requests undecoded."""
    generated.add_ControlServicer_to_server(  # type: ignore[no-untyped-call]  # generated
        servicer, _Undecoded(server)
    )


def method_path(method: str) -> str:
    """``/tierfaas.v1.Control/<method>``, for tests that send raw bytes as a hostile peer
    would; raises ``KeyError`` for a method the service does not have."""
    descriptor = pb.DESCRIPTOR.services_by_name["Control"].methods_by_name[method]
    return f"/{SERVICE}/{descriptor.name}"


class _Undecoded:
    """The part of ``aio.Server`` the generated registration calls, passing every handler on
    without its request deserializer."""

    def __init__(self, server: aio.Server) -> None:
        self._server = server

    def add_generic_rpc_handlers(self, handlers: Iterable[grpc.GenericRpcHandler]) -> None:
        self._server.add_generic_rpc_handlers([_UndecodedGeneric(h) for h in handlers])

    def add_registered_method_handlers(self, service: str, handlers: Mapping[str, Handler]) -> None:
        undecoded = {name: _undecoded(h) for name, h in handlers.items()}
        self._server.add_registered_method_handlers(service, undecoded)


class _UndecodedGeneric(grpc.GenericRpcHandler):
    def __init__(self, inner: grpc.GenericRpcHandler) -> None:
        self._inner = inner

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> Handler | None:
        handler = self._inner.service(handler_call_details)
        return _undecoded(handler) if handler is not None else None


_MAKERS: dict[tuple[bool, bool], Callable[..., Handler]] = {
    (False, False): grpc.unary_unary_rpc_method_handler,
    (False, True): grpc.unary_stream_rpc_method_handler,
    (True, False): grpc.stream_unary_rpc_method_handler,
    (True, True): grpc.stream_stream_rpc_method_handler,
}


def _undecoded(handler: Handler) -> Handler:
    """``handler`` with the same behaviour and response serializer, and no deserializer."""
    shape = (handler.request_streaming, handler.response_streaming)
    behaviour: Callable[..., Any] | None = (
        handler.unary_unary or handler.unary_stream or handler.stream_unary or handler.stream_stream
    )
    return _MAKERS[shape](behaviour, None, handler.response_serializer)
