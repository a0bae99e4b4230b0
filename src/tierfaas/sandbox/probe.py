"""Can this host sandbox functions? Asked once, when a node (or ``tierfaas up``) starts.

The sandbox needs two things of the host (issue #16, docs/security.md):

- user namespaces: each release's zygote lives in one (as root, mapping the configured uid
  range; otherwise mapping the node's own uid), so it holds capabilities there and none on
  the host;
- a cgroup the node may write, to hold each instance to its memory, CPU and process limits
  and to kill all of it at once (v2 or v1: ``tierfaas.sandbox.cgroups.detect`` decides).

``gather_facts`` is the thin shell that reads them (the node's euid, a few sysctls under
``/proc/sys``, the cgroup detector); ``sandbox_refusal`` is the pure decision, so every
combination is tested without a special host. A host that cannot sandbox makes a node asked
for ``--isolation sandbox`` refuse to start with a message that names each missing piece and
how to accept plain processes instead: running functions unsandboxed is the operator's
explicit choice, never a silent fallback.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tierfaas.errors import SandboxUnavailable
from tierfaas.sandbox import cgroups

log = logging.getLogger("tierfaas.sandbox")

PROC = Path("/proc")
MAX_USER_NAMESPACES = "sys/user/max_user_namespaces"
UNPRIVILEGED_USERNS_CLONE = "sys/kernel/unprivileged_userns_clone"
"""Debian's and older Ubuntu kernels: 0 keeps users other than root out of user namespaces."""
APPARMOR_RESTRICT_USERNS = "sys/kernel/apparmor_restrict_unprivileged_userns"
"""Ubuntu 23.10 and later: 1 gives the user namespaces of users other than root no rights."""

ACCEPT_PROCESS = (
    "accept unsandboxed functions explicitly with --isolation process "
    "(TIERFAAS_ISOLATION=process): they then run as plain processes of the node's user and "
    "can read what it can, the cluster key included"
)


@dataclass(frozen=True)
class HostFacts:
    """What the host offers the sandbox."""

    is_root: bool
    """The node runs as root (euid 0): it may give functions uids of its range."""
    user_namespaces: bool
    """The node may make user namespaces (for a node that is not root, its only way to give
    functions an identity of their own)."""
    cgroups: str | None
    """None when there is a cgroup the node may write; else why not, as the detector says."""
    userns_reason: str | None = None
    """Why user namespaces are unusable, naming the setting (when ``user_namespaces`` is
    False), e.g. ``user namespaces are disabled (/proc/sys/user/max_user_namespaces is 0)``."""


def sandbox_refusal(facts: HostFacts) -> str | None:
    """None when a host with ``facts`` can sandbox functions; else the node's reason to refuse
    to start: each missing piece, how to supply it, and how to accept plain processes."""
    missing: list[str] = []
    fixes: list[str] = []
    if facts.cgroups is not None:
        missing.append(f"no writable cgroup ({facts.cgroups})")
        fixes.append(
            "give the node a cgroup it may write (the cgroup file system mounted read-write, "
            "or a subtree delegated to its user) at --cgroup-root"
        )
    if not facts.user_namespaces:
        userns = facts.userns_reason or "user namespaces are not available"
        missing.append(userns)
        fixes.append(
            "enable user namespaces"
            if facts.is_root
            else "run the node as root or enable user namespaces"
        )
    if not missing:
        return None
    return (
        f"this host cannot sandbox functions: {'; '.join(missing)}. "
        f"To sandbox them, {' and '.join(fixes)}; or {ACCEPT_PROCESS}"
    )


def gather_facts(
    cgroup_root: Path,
    *,
    proc: Path = PROC,
    euid: int | None = None,
    detect: Callable[[Path], object] | None = None,
) -> HostFacts:
    """Reads what this host offers the sandbox: the node's euid (``euid``, default
    ``os.geteuid()``), the user-namespace sysctls under ``proc`` and, for the cgroups,
    ``detect(cgroup_root)`` (default ``tierfaas.sandbox.cgroups.detect``), which returns a
    layout when there is a cgroup the node may write and the reason as a string when not."""
    is_root = (os.geteuid() if euid is None else euid) == 0
    userns_reason = _userns_reason(proc, is_root)
    return HostFacts(
        is_root=is_root,
        user_namespaces=userns_reason is None,
        cgroups=_cgroup_reason(cgroup_root, detect),
        userns_reason=userns_reason,
    )


def check_isolation(
    isolation: str, cgroup_root: Path, gather: Callable[[Path], HostFacts] = gather_facts
) -> None:
    """Raises ``SandboxUnavailable`` when ``isolation`` is ``"sandbox"`` and the host cannot
    sandbox (the facts are read by ``gather(cgroup_root)``); reads nothing for ``"process"``."""
    if isolation != "sandbox":
        log.warning(
            "--isolation %s: functions run unsandboxed, as processes of the node's user",
            isolation,
        )
        return
    refusal = sandbox_refusal(gather(cgroup_root))
    if refusal is not None:
        raise SandboxUnavailable(refusal)


def _userns_reason(proc: Path, is_root: bool) -> str | None:
    """Why the node cannot make user namespaces, naming the setting; None when it can."""
    path = proc / MAX_USER_NAMESPACES
    limit = _read(path)
    if limit is None:
        return f"this kernel has no user namespaces ({path} is missing)"
    if limit == "0":
        return f"user namespaces are disabled ({path} is 0)"
    if not limit.isdigit():
        return f"user namespaces are not usable ({path} reads {limit[:40]!r})"
    if is_root:
        return None  # the two below bind only users other than root
    path = proc / UNPRIVILEGED_USERNS_CLONE
    if _read(path) == "0":
        return f"user namespaces are disabled for users other than root ({path} is 0)"
    path = proc / APPARMOR_RESTRICT_USERNS
    if _read(path) == "1":
        return f"AppArmor gives user namespaces of users other than root no rights ({path} is 1)"
    return None


def _read(path: Path) -> str | None:
    """A sysctl's value, stripped; None when it does not exist or cannot be read."""
    try:
        return path.read_text().strip()
    except OSError:
        return None


def _cgroup_reason(cgroup_root: Path, detect: Callable[[Path], object] | None) -> str | None:
    found = (detect or cgroups.detect)(cgroup_root)
    return found if isinstance(found, str) else None
