"""Whether this node takes invocations (``GET /readyz``), and why not."""

from __future__ import annotations

import logging
from pathlib import Path

from tierfaas.membership.base import Membership
from tierfaas.supervision import Supervisor

log = logging.getLogger(__name__)


class Readiness:
    """Not ready while the release is being checked (``check_release``: a node that follows
    a registry checks that its release imports before it says it is ready, so a rollout to a
    broken release stops at its canaries), for good once the check failed (``fatal``), and
    while ``membership`` (if any) has not joined its cluster, and while ``tasks`` (the node's
    background tasks, if given) report one crash-looping or a one-shot task crashed."""

    def __init__(
        self,
        *,
        check_release: bool,
        membership: Membership | None = None,
        tasks: Supervisor | None = None,
    ) -> None:
        self.problem: str | None = None
        """Why the release cannot be served (it does not build or import); None if it can."""
        self.checked = not check_release
        self._membership = membership
        self._tasks = tasks

    def reason(self) -> str | None:
        """Why this node is not ready; None when it is."""
        if self.problem is not None:
            return self.problem
        if not self.checked:
            return "checking that the release imports"
        if self._membership is not None and not self._membership.joined:
            return f"not joined to the cluster: {self._membership.join_reason}"
        return self._tasks.not_ready_reason() if self._tasks is not None else None

    def fail(self, problem: str) -> None:
        """The release cannot be served (its build failed): not ready for good, and no import
        check."""
        self.problem = problem
        self.checked = True
        log.error("this node cannot serve its release: %s", problem)

    def fatal(self) -> bool:
        """This node will never be ready: its release does not build or import."""
        return self.problem is not None

    async def check_release(self, root: Path) -> None:
        """Imports the release at ``root`` in a separate process and keeps the verdict."""
        from tierfaas.deploy.preflight import run_preflight

        self.problem = await run_preflight(root)
        self.checked = True
        if self.problem:
            log.error("this node cannot serve its release: %s", self.problem)
