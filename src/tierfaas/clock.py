"""The clock type every timer in tierfaas is written against (see tierfaas.testing.FakeClock)."""

from __future__ import annotations

import time
from collections.abc import Callable

Clock = Callable[[], float]
"""Returns monotonic seconds. Production code passes ``time.monotonic``."""

monotonic: Clock = time.monotonic
