"""Runs ``tierfaas node ...`` with cProfile on its event loop's thread between two signals:
SIGUSR1 starts profiling, SIGUSR2 stops it and writes the stats to OUT (so the start-up and
the warm-up are not in them). ``benchmarks/async.py --profile DIR`` starts its nodes through
this to show where an async call's CPU goes.

    python benchmarks/profiled_node.py OUT.prof node --release ... (the node's arguments)
"""

from __future__ import annotations

import cProfile
import signal
import sys
import time
from types import FrameType


def main() -> None:
    out = sys.argv[1]
    sys.argv = ["tierfaas", *sys.argv[2:]]
    from tierfaas.cli import main as cli_main

    # CPU time of the loop's thread, not wall time: on a loaded machine wall time would
    # charge a function for the time the OS gave other processes.
    profile = cProfile.Profile(time.thread_time)

    def start(signum: int, frame: FrameType | None) -> None:
        profile.enable()

    def stop(signum: int, frame: FrameType | None) -> None:
        profile.disable()
        profile.dump_stats(out)

    signal.signal(signal.SIGUSR1, start)
    signal.signal(signal.SIGUSR2, stop)
    cli_main()


if __name__ == "__main__":
    main()
