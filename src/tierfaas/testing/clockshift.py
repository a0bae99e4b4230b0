"""TEST ONLY: the environment of a process whose wall clock is off by a fixed offset.

A run's epoch is kinship's: the Unix ms of the process's wall clock when gossip starts, read
in kinship's native code, with no setting to choose it; gRPC computes deadlines from Python's
``time.time`` and checks them against the C library's clock. So a node with a skewed clock,
as on a host whose clock is wrong, is made by shifting the whole process's ``CLOCK_REALTIME``
for Python and C code alike: libfaketime (the ``libfaketime`` package of the dev
dependencies ships it prebuilt), preloaded. Monotonic clocks stay true, so timeouts behave as
on any host; the node's zygote and instances inherit the shift, as they share the host's
clock. Never use this outside tests.

    env = clock_shift_env(-5 * 60_000)   # five minutes behind
    node = cluster.add_node(env=env)
"""

from __future__ import annotations

import importlib.util
from pathlib import Path


class NoFaketime(RuntimeError):
    """The libfaketime package is not installed (``pip install -e '.[dev]'``)."""


def library() -> Path:
    """The path of the preloadable libfaketime library. Raises ``NoFaketime``."""
    spec = importlib.util.find_spec("libfaketime")
    if spec is None or spec.origin is None:
        raise NoFaketime("the libfaketime package is missing: pip install -e '.[dev]'")
    path = Path(spec.origin).parent / "vendor" / "libfaketime" / "src" / "libfaketime.so.1"
    if not path.exists():
        raise NoFaketime(f"the libfaketime package has no {path.name} at {path.parent}")
    return path


def clock_shift_env(offset_ms: int) -> dict[str, str]:
    """The environment for a process whose wall clock reads ``offset_ms`` off (negative:
    behind)."""
    return {
        "LD_PRELOAD": str(library()),
        "FAKETIME": f"{offset_ms / 1000:+.3f}",
        "FAKETIME_DONT_FAKE_MONOTONIC": "1",
    }
