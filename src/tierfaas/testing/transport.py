"""A TCP transport that goes nowhere, for driving an HTTP protocol in process (unit tests of
the node's answer path, and the front's own benchmark)."""

from __future__ import annotations

from typing import Any


class FakeTransport:
    """What a protocol asks of a TCP transport: ``writes`` keeps what was written (nothing
    when ``keep`` is false, for a long run), ``count`` counts the writes."""

    def __init__(self, *, keep: bool = True) -> None:
        self.keep = keep
        self.writes: list[bytes] = []
        self.count = 0
        self.closed = False

    def write(self, data: bytes) -> None:
        self.count += 1
        if self.keep:
            self.writes.append(bytes(data))

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 50000), "sockname": ("127.0.0.1", 8080)}.get(
            name, default
        )

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        self.closed = True
