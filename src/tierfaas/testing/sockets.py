"""Real sockets that misbehave on purpose, for integration tests of the network code."""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Iterator


@contextlib.contextmanager
def blackhole() -> Iterator[tuple[str, int]]:
    """A listening port whose accept queue is full: Linux drops further SYNs, so a connect
    to it hangs as one into a partition does."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(0)
    address = server.getsockname()
    fillers = []
    try:
        for _ in range(4):  # fill the queue (backlog 0 still takes one or two)
            filler = socket.socket()
            filler.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                filler.connect(address)
            fillers.append(filler)
        # The fillers' handshakes complete on loopback within microseconds; until they have,
        # the queue has room. Their sockets cannot tell which of them got in, so: a margin.
        time.sleep(0.1)
        yield address
    finally:
        for filler in fillers:
            filler.close()
        server.close()
