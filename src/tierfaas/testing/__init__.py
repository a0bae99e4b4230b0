"""Fakes and helpers shipped with tierfaas, shared by its tests, benchmarks and users' tests.

- ``FakeClock``: a monotonic clock that only moves when told to (keep-alives, TTLs, batches).
- ``FakeNetwork`` / ``FakeMembership``: in-memory gossip membership (join, kill, leave,
  pause/resume, partitions), deterministic and socket-free.
- ``tierfaas.testing.nodes`` / ``tierfaas.testing.cluster``: real node processes on loopback.
"""

from tierfaas.testing.clock import FakeClock
from tierfaas.testing.membership import FakeMembership, FakeNetwork

__all__ = ["FakeClock", "FakeMembership", "FakeNetwork"]
