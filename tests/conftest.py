from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import settings

FIXTURES = Path(__file__).parent / "fixtures"
REPO = Path(__file__).parent.parent

# Property tests check what a function returns, never how fast: hypothesis's default deadline
# (200 ms per example) is a wall-clock assertion, and fails an example that a loaded 2-core
# machine happens to pause. Per-test @settings still apply on top of this profile.
settings.register_profile("tierfaas", deadline=None)
settings.load_profile("tierfaas")


@pytest.fixture
def testrel() -> Path:
    return FIXTURES / "testrel"


@pytest.fixture
def demo() -> Path:
    return REPO / "examples" / "demo"
