"""Log format for every tierfaas process: one line per event, with the time and the source."""

from __future__ import annotations

import logging


def setup_logging(level: str = "info") -> None:
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
