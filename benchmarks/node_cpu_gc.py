"""Runs ``tierfaas node ...`` counting the CPU its garbage collector takes: on SIGUSR1 it writes
``STAMP SECONDS`` (the GC's thread CPU seconds so far) to OUT. ``benchmarks/node_cpu.py``
starts its nodes through this.

    python benchmarks/node_cpu_gc.py OUT node --release ... (the node's arguments)
"""

from __future__ import annotations

import gc
import os
import signal
import sys
import time
from types import FrameType
from typing import Any


def main() -> None:
    out = sys.argv[1]
    sys.argv = ["tierfaas", *sys.argv[2:]]
    from tierfaas.cli import main as cli_main

    spent = [0.0, 0.0]  # seconds so far, when the current collection started

    def on_gc(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            spent[1] = time.thread_time()
        else:
            spent[0] += time.thread_time() - spent[1]

    def report(signum: int, frame: FrameType | None) -> None:
        with open(out + ".tmp", "w") as file:
            file.write(f"{time.time()} {spent[0]}\n")
        os.replace(out + ".tmp", out)

    gc.callbacks.append(on_gc)
    signal.signal(signal.SIGUSR1, report)
    cli_main()


if __name__ == "__main__":
    main()
