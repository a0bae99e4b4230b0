"""Fakes shipped with tierfaas, shared by its tests, its benchmarks and users' own tests.

- ``FakeClock``: a monotonic clock that only moves when told to (keep-alives, TTLs, batches).
"""

from tierfaas.testing.clock import FakeClock

__all__ = ["FakeClock"]
