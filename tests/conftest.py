from __future__ import annotations

from pathlib import Path

import pytest

FIXTURES = Path(__file__).parent / "fixtures"
REPO = Path(__file__).parent.parent


@pytest.fixture
def testrel() -> Path:
    return FIXTURES / "testrel"


@pytest.fixture
def demo() -> Path:
    return REPO / "examples" / "demo"
