"""Every error tierfaas answers with, split by who is at fault.

- ``ClientError`` (4xx): the caller's request is wrong; the message says how to fix it.
- ``FunctionError`` (5xx): the user's function failed (raised, crashed, timed out, ran out of
  memory); the message says which and the request id ties it to the node's log.
- ``ClusterError`` (503): the node or cluster cannot take the request now; retry later.
- ``ConfigError`` / ``ManifestError``: bad settings or a bad release, found at start-up.
- ``BuildFailed``: the release's build step (``[release] build``) failed when a node loaded it.
- ``SandboxUnavailable``: the host cannot isolate functions as asked, found at start-up.

Each HTTP-facing error carries its status, a stable ``code`` (the JSON ``error`` field) and,
where a retry helps, ``retry_after_s``.
"""

from __future__ import annotations


class TierfaasError(Exception):
    """Base class of every tierfaas error."""


class ConfigError(TierfaasError, ValueError):
    """A setting holds an unusable value. ``field`` names it."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"invalid setting {field!r}: {reason}")
        self.field = field
        self.reason = reason


class ManifestError(TierfaasError, ValueError):
    """A release manifest is unusable: names the file, the field and the reason."""

    def __init__(self, path: str, field: str, reason: str) -> None:
        super().__init__(f"{path}: {field}: {reason}")
        self.path = path
        self.field = field
        self.reason = reason


class BuildFailed(TierfaasError):
    """The release's build step failed: it exited nonzero, was killed, ran past its timeout
    or could not start. ``status`` says which; ``tail`` holds the last lines of its output."""

    def __init__(self, release: str, argv: tuple[str, ...], status: str, tail: tuple[str, ...]):
        self.release = release
        self.argv = argv
        self.status = status
        self.tail = tail
        shown = "\n".join(f"  | {line}" for line in tail) if tail else "  (no output)"
        super().__init__(
            f"release {release}: build {list(argv)} failed ({status}); the last lines of its "
            f"output:\n{shown}"
        )

    def summary(self, limit: int = 480) -> str:
        """One line of at most ``limit`` characters for /readyz and the rollout status: the
        status, then as many of the last lines as fit, the latest kept."""
        head = f"release {self.release}: build failed ({self.status})"
        kept: list[str] = []
        room = limit - len(head) - len(": ")
        for raw in reversed(self.tail):
            line = raw.strip()
            if not line:
                continue
            cost = len(line) + (len(" | ") if kept else 0)
            if cost > room:
                if not kept:  # the very last line alone is too long: keep its end
                    kept.append("..." + line[-max(0, room - 3) :])
                break
            kept.append(line)
            room -= cost
        return f"{head}: {' | '.join(reversed(kept))}" if kept else head


class SandboxUnavailable(TierfaasError):
    """The node is asked to sandbox its functions (``--isolation sandbox``) on a host that
    cannot: the message names each missing piece and how to accept plain processes."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class HttpError(TierfaasError):
    """An error with an HTTP status, sent to the client as JSON ``{error, message, request_id}``."""

    status = 500
    code = "internal_error"
    retry_after_s: float | None = None
    close_connection = False
    """Whether the answer closes the connection (the rest of the request was not read)."""

    def __init__(self, message: str, *, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.message = message
        if retry_after_s is not None:
            self.retry_after_s = retry_after_s


# -- the caller's fault --------------------------------------------------------------------


class ClientError(HttpError):
    status = 400
    code = "bad_request"


class BadRequest(ClientError):
    """The request is not valid HTTP (garbage request line, bad Content-Length, broken
    chunked encoding): answered by the connection itself, which is then closed."""

    code = "bad_request"
    close_connection = True


class BadName(ClientError):
    status = 400
    code = "bad_name"


class NotFound(ClientError):
    status = 404
    code = "not_found"


class UnknownFunction(NotFound):
    code = "unknown_function"


class BadCallback(ClientError):
    """An async call's ``X-Callback-Url`` is malformed or names a target the node may not
    call back (``--callback-allow``); nothing was accepted."""

    status = 400
    code = "bad_callback"


class MethodNotAllowed(ClientError):
    status = 405
    code = "method_not_allowed"

    def __init__(self, message: str, *, allow: str = "GET, HEAD") -> None:
        super().__init__(message)
        self.allow = allow
        """The ``Allow`` header of the answer: the methods the path takes."""


class BodyTooLarge(ClientError):
    status = 413
    code = "body_too_large"
    close_connection = True  # the rest of the body is not read


class Unauthorized(ClientError):
    """The function (or admin endpoint) needs a key or token the request did not carry."""

    status = 401
    code = "unauthorized"

    def __init__(self, message: str, *, challenge: str = 'Bearer realm="tierfaas"') -> None:
        super().__init__(message)
        self.challenge = challenge
        """The ``WWW-Authenticate`` header of the answer."""


class RequestTimeout(ClientError):
    """The client did not send the request's head or body in time (slow or stalled)."""

    status = 408
    code = "request_timeout"
    close_connection = True


class HeadersTooLarge(ClientError):
    """The request line and headers are over ``max_header_bytes``."""

    status = 431
    code = "headers_too_large"
    close_connection = True


class Overloaded(ClientError):
    """Every instance is busy and the wait queue is full or the wait ran out."""

    status = 429
    code = "overloaded"


class NotWarm(ClientError):
    """A forwarded call reached a node with no instance of the function (any more). The
    sender drops the route and tries elsewhere; the call did not start here."""

    status = 409
    code = "not_warm"


class Busy(ClientError):
    """A forwarded call reached a node whose instances are all busy; it did not start."""

    status = 429
    code = "busy"


class HopRefused(ClientError):
    """The request carries tierfaas hop headers (the ones nodes add when they forward a call)
    that do not check out: unsigned, malformed, forged, stale or replayed. It is neither run
    nor routed: such headers come from a node or from nobody, never from a client.
    ``reason`` says which check failed; ``token`` is this node's current hop token, which a
    forwarding node with a stale one signs its retry with (docs/security.md)."""

    status = 403
    code = "hop_refused"

    def __init__(self, message: str, *, reason: str, token: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.token = token

    @property
    def reject(self) -> str:
        """The ``X-Tierfaas-Reject`` of the answer: nothing ran, and a stale token is worth
        one retry with ``token`` (``hop_stale``); nothing else is (``hop_refused``)."""
        return "hop_stale" if self.reason == "stale" else "hop_refused"


# -- the function's fault ------------------------------------------------------------------


class FunctionError(HttpError):
    status = 500
    code = "function_error"


class HandlerFailed(FunctionError):
    """The handler raised. ``code`` is the exception's type name, as users expect to see it."""

    status = 500

    def __init__(self, error_type: str, message: str) -> None:
        super().__init__(message)
        self.code = error_type


class InstanceCrashed(FunctionError):
    status = 502
    code = "instance_crashed"


class OutOfMemory(InstanceCrashed):
    code = "out_of_memory"


class ProtocolError(InstanceCrashed):
    """The instance sent the node something that is not its protocol (a malformed frame, an
    unreadable HTTP answer): it was stopped, and the next call gets a new one."""

    code = "protocol_error"


class StartFailed(FunctionError):
    """The instance could not start: its import or init raised."""

    status = 502
    code = "start_failed"


class ResponseTooLarge(FunctionError):
    status = 502
    code = "response_too_large"


class ForwardFailed(FunctionError):
    """The node a call was forwarded to failed after it may have started the call, so the
    call is not retried (it must never run twice)."""

    status = 502
    code = "forward_failed"


class FunctionTimeout(FunctionError):
    status = 504
    code = "timeout"


# -- the node's or cluster's state ---------------------------------------------------------


class ClusterError(HttpError):
    status = 503
    code = "unavailable"
    retry_after_s = 1.0


class Draining(ClusterError):
    code = "draining"
