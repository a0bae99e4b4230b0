from __future__ import annotations

import os
import shutil
import tempfile
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


# `make test` runs the suite on several pytest-xdist workers (--dist loadgroup). Each test
# module is one group, so a module's tests and its module-scoped cluster stay on one worker
# (each module already has its own loopback hosts). The fault scenarios (tests/chaos) and the
# tests that fill both cores with busy loops (marked `serial`) form one group more: they run
# one after another on one worker, so no two of them load the machine at once.
SERIAL_GROUP = "serial"
_STATE_HOME = tempfile.mkdtemp(prefix="tierfaas-test-state-")


def pytest_configure(config: pytest.Config) -> None:
    # A node started without --data-dir keeps its call store under $XDG_STATE_HOME/tierfaas/
    # NAME: each test process (each xdist worker) gets a folder of its own, so the suite never
    # writes to the user's home and two tests' nodes of the same name never share a store.
    os.environ["XDG_STATE_HOME"] = _STATE_HOME
    config.addinivalue_line(
        "markers",
        "serial: loads the whole machine (CPU hogs); runs in the serial group under xdist",
    )


def pytest_unconfigure(config: pytest.Config) -> None:
    shutil.rmtree(_STATE_HOME, ignore_errors=True)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    serial: set[str] = set()
    for item in items:
        if item.get_closest_marker("xdist_group") is not None:
            continue
        module = item.nodeid.split("::", 1)[0]
        if module.startswith("tests/chaos/") or item.get_closest_marker("serial"):
            serial.add(item.nodeid)
        item.add_marker(pytest.mark.xdist_group(SERIAL_GROUP if item.nodeid in serial else module))
    if config.getoption("dist", "no") != "no":
        # The serial group is the longest: handed out first, it runs beside all the others
        # instead of after them.
        items.sort(key=lambda item: item.nodeid not in serial)


@pytest.fixture
def testrel() -> Path:
    return FIXTURES / "testrel"


@pytest.fixture
def demo() -> Path:
    return REPO / "examples" / "demo"
