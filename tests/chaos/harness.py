"""Shared pieces of the chaos suite: the result schema every scenario writes.

Every scenario run writes one JSON file, ``test-artifacts/chaos/<scenario>.json``, and
``tests/chaos/report.py`` renders every such file into the table of docs/reliability.md.

The schema (all keys always present):

    scenario       str    the file's stem, e.g. "crash", "partition", "slow_node", "soak"
    mode           str    "short" (make test) or "long" (make chaos)
    sent           int    requests the client sent
    ok             int    answered 2xx
    typed_errors   int    answered with an HTTP error carrying the typed JSON body
                          ({"error", "message", "request_id"})
    failed         int    no answer at all: connection error, timeout, reset, or an
                          answer that is not a typed error
    failed_detail  dict   reason -> count, e.g. {"in_flight_on_killed": 3}
    recovery_s     float|null  the worst time until the cluster was right again
    extra          dict   scenario-specific figures (JSON-serialisable)
    notes          str    one or two sentences for the report

sent == ok + typed_errors + failed is checked by ``write_result``.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "test-artifacts" / "chaos"

Mode = Literal["short", "long"]


def chaos_mode() -> Mode:
    """Return "long" when TIERFAAS_CHAOS=long (make chaos), else "short" (make test)."""
    return "long" if os.environ.get("TIERFAAS_CHAOS", "").lower() == "long" else "short"


@dataclass
class ScenarioResult:
    scenario: str
    mode: Mode
    sent: int = 0
    ok: int = 0
    typed_errors: int = 0
    failed: int = 0
    failed_detail: dict[str, int] = field(default_factory=dict)
    recovery_s: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    notes: str = ""


def write_result(result: ScenarioResult | dict[str, Any], directory: Path | None = None) -> Path:
    """Write one scenario run to ``<directory>/<scenario>.json`` (default
    test-artifacts/chaos/) and return the path. Raises ValueError if the counts do not add
    up or a key is missing, so a broken file never reaches the report."""
    data = asdict(result) if isinstance(result, ScenarioResult) else dict(result)
    validate(data)
    out_dir = directory or ARTIFACTS
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{data['scenario']}.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    tmp.replace(path)
    return path


_KEYS: dict[str, tuple[type, ...]] = {
    "scenario": (str,),
    "mode": (str,),
    "sent": (int,),
    "ok": (int,),
    "typed_errors": (int,),
    "failed": (int,),
    "failed_detail": (dict,),
    "recovery_s": (float, int, type(None)),
    "extra": (dict,),
    "notes": (str,),
}


def validate(data: dict[str, Any]) -> None:
    """Raise ValueError unless ``data`` follows the schema above."""
    for key, types in _KEYS.items():
        if key not in data:
            raise ValueError(f"chaos result: missing key {key!r}")
        if not isinstance(data[key], types) or isinstance(data[key], bool):
            raise ValueError(f"chaos result: {key!r} has type {type(data[key]).__name__}")
    if data["mode"] not in ("short", "long"):
        raise ValueError(f"chaos result: mode must be short or long, not {data['mode']!r}")
    if not data["scenario"] or "/" in data["scenario"]:
        raise ValueError(f"chaos result: bad scenario name {data['scenario']!r}")
    total = data["ok"] + data["typed_errors"] + data["failed"]
    if total != data["sent"]:
        raise ValueError(
            f"chaos result: sent {data['sent']} != ok + typed_errors + failed ({total})"
        )
    if sum(data["failed_detail"].values()) > data["failed"]:
        raise ValueError("chaos result: failed_detail counts more than failed")
