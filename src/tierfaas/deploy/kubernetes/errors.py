"""API failures as ``KubernetesError``: a reason to branch on and a message saying what to fix.

``api_call`` turns the client library's exceptions (lightkube's ``ApiError``, httpx's
transport errors) into that one type, so the provider and its callers never see them.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Literal, TypeAlias

from tierfaas.deploy.provider import ProviderError

ErrorReason: TypeAlias = Literal[
    "no_config", "unreachable", "unauthorized", "forbidden", "not_found", "exists", "invalid",
    "not_ready", "api",
]  # fmt: skip


class KubernetesError(ProviderError):
    """The Kubernetes API refused a call or could not be reached. ``reason`` says which
    (``forbidden``, ``not_found``, ``unreachable``, ...); ``status`` is the HTTP status."""

    def __init__(self, message: str, reason: ErrorReason, status: int | None = None) -> None:
        super().__init__(message)
        self.reason: ErrorReason = reason
        self.status = status


def api_error(
    action: str, status: int, message: str, *, namespace: str, creating: bool = False
) -> KubernetesError:
    """The error to raise when the API answered ``status`` to ``action``."""
    message = message or "no message"
    if status == 401:
        return KubernetesError(
            f"{action}: the Kubernetes API does not accept our credentials (401): {message}; "
            "check the service account token or KUBECONFIG",
            "unauthorized",
            status,
        )
    if status == 403:
        return KubernetesError(
            f"{action}: forbidden by RBAC (403): {message}; the service account needs get, "
            f"list, watch, create and delete on pods in namespace {namespace!r} "
            "(deploy/kubernetes/rbac.yaml)",
            "forbidden",
            status,
        )
    if status == 404 and creating:
        return KubernetesError(
            f"{action}: namespace {namespace!r} not found (404): {message}; create it "
            "(deploy/kubernetes/namespace.yaml) or set TIERFAAS_K8S_NAMESPACE",
            "not_found",
            status,
        )
    if status == 404:
        return KubernetesError(f"{action}: not found (404): {message}", "not_found", status)
    if status == 409:
        return KubernetesError(f"{action}: the name is taken (409): {message}", "exists", status)
    if status == 422:
        return KubernetesError(
            f"{action}: the API server refused the object as invalid (422): {message}",
            "invalid",
            status,
        )
    return KubernetesError(
        f"{action}: the Kubernetes API answered {status}: {message}", "api", status
    )


@contextlib.contextmanager
def api_call(action: str, namespace: str, server: str, *, creating: bool = False) -> Iterator[None]:
    """Turns the client library's exceptions into ``KubernetesError`` for ``action``."""
    import httpx2
    from lightkube import ApiError

    try:
        yield
    except ApiError as exc:
        status = exc.status.code or exc.response.status_code
        message = exc.status.message or ""
        raise api_error(action, status, message, namespace=namespace, creating=creating) from None
    except httpx2.HTTPStatusError as exc:  # an answer that is no Kubernetes Status (a proxy's)
        status, text = exc.response.status_code, exc.response.text[:200]
        raise api_error(action, status, text, namespace=namespace, creating=creating) from None
    except httpx2.HTTPError as exc:
        raise KubernetesError(
            f"{action}: cannot reach the Kubernetes API at {server}: {exc or type(exc).__name__}",
            "unreachable",
        ) from None
