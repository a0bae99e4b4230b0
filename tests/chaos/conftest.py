from __future__ import annotations

import pytest


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "chaos: a fault-injection scenario (tests/chaos); short by default, long with "
        "TIERFAAS_CHAOS=long (make chaos)",
    )
