"""One line a function printed, as the node keeps it and ``GET /v1/logs`` sends it.

A line is stamped with the node's wall clock (UTC) when the node reads it from the instance's
pipe: times from different nodes compare as well as their clocks agree (NTP), which is what
a merged view across nodes can rely on. Each line is one JSON object; the files hold the same
objects, one a line (ndjson), so a file is read back without a second format.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

Stream = Literal["stdout", "stderr"]


def iso(at: float) -> str:
    """``at`` (Unix time) as RFC 3339 text in UTC, to the microsecond: ``...T14:30:00.123456Z``."""
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True, slots=True)
class LogLine:
    time: float
    """Unix time (UTC) at which the node read the line."""
    function: str
    node: str
    instance: int
    stream: Stream
    request: str | None
    """The request id of the call the instance ran when it printed the line: set only when it
    ran exactly one (see ``runtime/instance.py``), else None."""
    text: str

    def to_json(self) -> dict[str, Any]:
        return {
            "time": self.time,
            "time_iso": iso(self.time),
            "function": self.function,
            "node": self.node,
            "instance": self.instance,
            "stream": self.stream,
            "request": self.request,
            "text": self.text,
        }

    def encode(self) -> bytes:
        """One ndjson line (with its newline): compact, non-ASCII escaped."""
        return json.dumps(self.to_json(), separators=(",", ":")).encode() + b"\n"

    @classmethod
    def from_json(cls, value: Any) -> LogLine:
        """The line a JSON object describes; ``ValueError`` if it is not one."""
        try:
            stream = value["stream"]
            if stream not in ("stdout", "stderr"):
                raise ValueError(f"stream {stream!r}")
            request = value.get("request")
            return cls(
                time=float(value["time"]),
                function=str(value["function"]),
                node=str(value["node"]),
                instance=int(value["instance"]),
                stream=stream,
                request=None if request is None else str(request),
                text=str(value["text"]),
            )
        except (KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"not a log line: {exc}") from None
