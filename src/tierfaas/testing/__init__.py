"""Fakes and helpers shipped with tierfaas, shared by its tests, benchmarks and users' tests.

- ``FakeClock``: a monotonic clock that only moves when told to, and a scheduler whose
  timers fire as it moves (keep-alives, TTLs, batches, queue timeouts); ``settle()``.
- ``FakeSpawner`` / ``FakeInstance`` / ``FakeProbe`` / ``RuntimeHarness``: the runtime with
  instances that are not processes, starting and answering on the fake clock, their memory
  use and the memory pressure set by the test (``tierfaas.testing.runtime``);
  ``FakeHolder``: a pool as a ``MemoryBudget`` sees it.
- ``FakeNetwork`` / ``FakeMembership``: in-memory gossip membership (join, kill, leave,
  pause/resume, partitions), deterministic and socket-free.
- ``tierfaas.testing.nodes`` / ``tierfaas.testing.cluster``: real node processes on loopback.
"""

from tierfaas.testing.clock import FakeClock, settle
from tierfaas.testing.membership import FakeMembership, FakeNetwork
from tierfaas.testing.runtime import (
    FakeHolder,
    FakeInstance,
    FakeProbe,
    FakeSpawner,
    RuntimeHarness,
    fake_release,
)

__all__ = [
    "FakeClock",
    "FakeHolder",
    "FakeInstance",
    "FakeMembership",
    "FakeNetwork",
    "FakeProbe",
    "FakeSpawner",
    "RuntimeHarness",
    "fake_release",
    "settle",
]
