"""``AntiEntropyMetrics``: what a node's anti-entropy does, in /metrics (docs/operations.md).

The write queue checks the table's digest of this run about once a period and re-announces its
warm set when the master's differs (``digest.py``). A repair is the system working, but a node
that repairs every period, or whose checks keep failing or waiting, points at a fault the
table hides from its users (writes lost on the way, a master that does not see the node alive):
an operator sees it here rather than in INFO logs.

Label values are fixed (the verdicts and ``failed``), and every series exists at 0 from the
start, so a rate over them is defined before the first check.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter

from tierfaas.control.digest import Verdict

FAILED = "failed"
"""A check nobody answered: no master known, or it could not be reached."""

ANSWERS = (*(v.value for v in Verdict), FAILED)


class AntiEntropyMetrics:
    """The anti-entropy counters of one node, in ``registry`` (a private one if None)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        r = registry if registry is not None else CollectorRegistry()
        self.checks = Counter(
            "tierfaas_anti_entropy_checks",
            "Digest checks of this run's table entries, by answer: agree, confirm (a replica's "
            "copy differs: the master is asked), announce (the master's differs: repaired), "
            "wait (the answerer does not hold this run alive yet), failed (nobody answered)",
            ["answer"],
            registry=r,
        )
        for answer in ANSWERS:
            self.checks.labels(answer)
        self.repairs = Counter(
            "tierfaas_anti_entropy_repairs",
            "Re-announces of this node's warm set because the master's entries differed",
            registry=r,
        )
        self.writes_rejected = Counter(
            "tierfaas_writes_rejected",
            "Register/Unregister/Announce pairs the master refused (it did not hold this run "
            "alive); each makes the next check come within the retry delay",
            registry=r,
        )

    def checked(self, outcome: Verdict | None) -> None:
        """A check ended with ``outcome`` (None: nobody answered)."""
        self.checks.labels(FAILED if outcome is None else outcome.value).inc()
