"""The typed HTTP errors of asynchronous calls (beside ``tierfaas.errors``)."""

from __future__ import annotations

from tierfaas import errors


class QueueFull(errors.Overloaded):
    """This node holds ``--async-queue-max`` unfinished calls: nothing was accepted."""

    code = "queue_full"


class NoSecondCopy(errors.ClusterError):
    """No live peer took the call's second copy: nothing was accepted; try again."""

    code = "unavailable"


class Conflict(errors.ClientError):
    """The call is not in a state the request can change (a retry of a call not dead)."""

    status = 409
    code = "conflict"


def refusal(status: int, code: str, message: str) -> errors.HttpError:
    """The error a peer answered with (status and code as it sent them)."""
    error = errors.HttpError(message)
    error.status = status
    error.code = code
    if status in (429, 503):
        error.retry_after_s = 1.0
    return error
