"""Authentication of control-plane calls with a credential derived from the cluster key.

What it protects: only holders of the cluster key (the same 32-byte key that authenticates
and encrypts gossip) can write to the routing table (Register, Unregister, Announce), read it
(Query, Subscribe, Info, the query lane) or list the service (reflection). A call without the
credential, or with a wrong one, gets ``UNAUTHENTICATED`` before any handler runs.

How: the credential is ``HMAC-SHA256(key, "tierfaas-grpc-v1")`` in hex, sent in the
``x-tierfaas-auth`` metadata of every gRPC call (and as the first frame of a query-lane
connection) and compared in constant time (``hmac.compare_digest``). Deriving it rather
than sending the key means a leaked credential does not expose the gossip key.

What it does not do: the credential is a static bearer token. Without TLS, anyone who can
sniff the network sees it and can replay it, and sees the table in the clear. On an untrusted
network run gRPC over mutual TLS (``grpc.ssl_server_credentials`` with client certificates
required) and the query lane over TLS, or keep the control port on a private network. A
cluster without a key (allowed on loopback only) uses a credential derived from an empty
key: it guards against accidents, not attackers.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Awaitable, Callable
from typing import Any, TypeAlias

import grpc
from grpc import aio

from tierfaas.control.constants import AUTH_HEADER

Handler: TypeAlias = "grpc.RpcMethodHandler[Any, Any]"
CONTEXT = b"tierfaas-grpc-v1"


def credential(key: bytes | None) -> str:
    """The credential every control call carries, for the cluster ``key`` (None: no key)."""
    return hmac.new(key or b"", CONTEXT, hashlib.sha256).hexdigest()


def verify(presented: str | bytes | None, expected: str) -> bool:
    """Constant-time check of a presented credential."""
    if presented is None:
        return False
    if isinstance(presented, str):
        presented = presented.encode("utf-8", "replace")
    return hmac.compare_digest(presented, expected.encode())


def call_metadata(key: bytes | None) -> tuple[tuple[str, str], ...]:
    """The metadata a client adds to every call."""
    return ((AUTH_HEADER, credential(key)),)


class AuthInterceptor(aio.ServerInterceptor):
    """Refuses every call that lacks the cluster credential with ``UNAUTHENTICATED``."""

    def __init__(self, key: bytes | None) -> None:
        self._expected = credential(key)
        self.refused = 0
        """Calls refused so far (for metrics and tests)."""

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler | None:
        presented = None
        for item in handler_call_details.invocation_metadata or ():
            if item[0] == AUTH_HEADER:
                presented = item[1]
                break
        if verify(presented, self._expected):
            return await continuation(handler_call_details)
        self.refused += 1
        handler = await continuation(handler_call_details)
        return _refusal(handler)


async def _deny(request: Any, context: aio.ServicerContext[Any, Any]) -> None:
    await context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or wrong cluster credential")


async def _deny_stream(request: Any, context: aio.ServicerContext[Any, Any]) -> Any:
    await context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or wrong cluster credential")
    yield  # pragma: no cover - makes this an async generator, as streaming handlers are


def _refusal(handler: Handler | None) -> Handler:
    """A handler of the same shape as ``handler`` that refuses the call without reading the
    request (the request bytes are never parsed: no deserializer)."""
    if handler is None or not (handler.request_streaming or handler.response_streaming):
        return grpc.unary_unary_rpc_method_handler(_deny)
    if handler.request_streaming and handler.response_streaming:
        return grpc.stream_stream_rpc_method_handler(_deny_stream)
    if handler.request_streaming:
        return grpc.stream_unary_rpc_method_handler(_deny)
    return grpc.unary_stream_rpc_method_handler(_deny_stream)
