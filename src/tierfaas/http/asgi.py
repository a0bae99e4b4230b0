"""Small ASGI helpers: read a bounded body, send a response. No framework on the hot path:
the node serves few routes, and every microsecond here is taken from warm throughput."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from tierfaas import errors

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
Headers = list[tuple[bytes, bytes]]


class ClientDisconnected(Exception):
    pass


def header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope["headers"]:
        if key == name:
            return value  # type: ignore[no-any-return]
    return None


async def read_body(scope: Scope, receive: Receive, limit: int) -> bytes:
    """The whole body, or ``BodyTooLarge`` as soon as it is known to be over ``limit``."""
    declared = header(scope, b"content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise errors.BodyTooLarge(
            f"the body is {int(declared)} bytes; this node accepts at most {limit}"
        )
    return await read_body_rest(await receive(), receive, limit)


async def read_body_rest(message: Message, receive: Receive, limit: int) -> bytes:
    """The whole body, starting from the first ``message`` received (see ``read_body``)."""
    if message["type"] == "http.disconnect":
        raise ClientDisconnected
    body: bytes = message.get("body", b"")
    if not message.get("more_body", False):
        if len(body) > limit:
            raise errors.BodyTooLarge(f"the body is over the limit of {limit} bytes")
        return body
    chunks = [body]
    size = len(body)
    if size > limit:
        raise errors.BodyTooLarge(f"the body is over the limit of {limit} bytes")
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnected
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise errors.BodyTooLarge(f"the body is over the limit of {limit} bytes")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


async def respond(
    send: Send, status: int, body: bytes, content_type: bytes, headers: Headers
) -> None:
    headers = [
        (b"content-type", content_type),
        (b"content-length", str(len(body)).encode()),
        *headers,
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def respond_raw(send: Send, status: int, body: bytes, headers: Headers) -> None:
    """``headers`` must include the content type; the length is added here."""
    headers.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def respond_json(send: Send, status: int, value: Any, headers: Headers) -> None:
    body = json.dumps(value, separators=(",", ":")).encode()
    await respond(send, status, body, b"application/json", headers)


def error_body(error: errors.HttpError, request_id: str) -> dict[str, Any]:
    return {"error": error.code, "message": error.message, "request_id": request_id}


async def respond_error(send: Send, error: errors.HttpError, request_id: str) -> None:
    headers = error_headers(error, request_id)
    await respond_json(send, error.status, error_body(error, request_id), headers)


def error_headers(error: errors.HttpError, request_id: str) -> Headers:
    """The headers of the answer to ``error`` (its body is ``error_body``)."""
    headers: Headers = [(b"x-request-id", request_id.encode())]
    if error.retry_after_s is not None:
        headers.append((b"retry-after", str(max(1, round(error.retry_after_s))).encode()))
    if isinstance(error, errors.Unauthorized):
        headers.append((b"www-authenticate", error.challenge.encode()))
    elif isinstance(error, errors.MethodNotAllowed):
        headers.append((b"allow", error.allow.encode()))
    elif isinstance(error, errors.HopRefused):
        # For a forwarding node: nothing ran (try elsewhere, or retry with the token if stale).
        headers.append((b"x-tierfaas-reject", error.reject.encode()))
        headers.append((b"x-tierfaas-hop-token", error.token.encode()))
    if error.close_connection:
        headers.append((b"connection", b"close"))
    return headers
