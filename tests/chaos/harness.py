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


# -- accounting: outcomes, kills and the ledger -> a result and its problems ---------------

# Typed errors that say the call did not run: the ledger must not hold their id.
DID_NOT_RUN = frozenset(
    {"overloaded", "draining", "not_warm", "busy", "bad_name", "unknown_function",
     "body_too_large", "not_found", "method_not_allowed", "hop_refused"}
)  # fmt: skip
# How close to a kill a forwarded call must have been sent to count as in flight on the
# victim (the client's clock and the kill are read in one process: only scheduling skew).
KILL_SKEW_S = 0.05


def in_flight_kill(outcome: Any, kills: list[Any]) -> Any | None:
    """The kill that explains a request without a successful answer, or None: the client had
    it on a victim when it died, or a survivor forwarded it there (``forward_failed`` naming
    the victim) and the client had sent it before the victim was reaped and had no answer at
    the kill; or,
    for the kill of an instance or zygote, the node answered ``instance_crashed`` for a call
    in flight at the kill."""
    for kill in kills:
        if kill.kind != "node":
            # A function process died under a node that lives on: the node answers each call
            # it had on that process with 502 instance_crashed (also when it was forwarded).
            if (
                outcome.code == "instance_crashed"
                and outcome.sent <= kill.at + KILL_SKEW_S
                and outcome.done >= kill.at
            ):
                return kill
            continue
        if outcome.rid in kill.in_flight:
            return kill
        # A survivor forwarded it to a victim whose sockets were still open: sent before the
        # victim was reaped (it closes its sockets last, after tearing its memory down).
        gone_at = kill.gone_at if kill.gone_at is not None else kill.at
        if (
            outcome.code == "forward_failed"
            and any(v in outcome.message for v in kill.victims)
            and outcome.sent <= gone_at + KILL_SKEW_S
            and outcome.done >= kill.at
        ):
            return kill
    return None


def account(
    scenario: str, mode: Mode, outcomes: list[Any], kills: list[Any], runs: Any
) -> tuple[ScenarioResult, list[str]]:
    """Counts ``outcomes`` (tests.chaos.load.Outcome) into a result, attributing each request
    without a 2xx to a kill if it was in flight on the victim (``kills``: cluster.Kill), and
    checks the ledger ``runs`` (request id -> times started). Returns the result (its extra
    holds ``per_kill``, ``typed_detail`` and ``exactly_once``) and the problems found: an
    unexplained failure or typed error, or a call that did not run exactly once."""
    result = ScenarioResult(scenario, mode, sent=len(outcomes))
    problems: list[str] = []
    per_kill = {id(k): {"failed": 0, "typed_errors": 0} for k in kills}
    typed: dict[str, int] = {}
    sent_ids = set()
    ran_once = ran_twice = errors_ran = errors_not_run = 0
    for o in outcomes:
        sent_ids.add(o.rid)
        times = runs.get(o.rid, 0)
        if times > 1:
            ran_twice += 1
            problems.append(f"{o.rid} ran {times} times (answer {o.status} {o.code})")
        if o.ok:
            result.ok += 1
            if times == 1:
                ran_once += 1
            elif times == 0:
                problems.append(f"{o.rid} answered {o.status} but never ran")
            continue
        kill = in_flight_kill(o, kills)
        if o.typed:
            result.typed_errors += 1
            typed[o.code] = typed.get(o.code, 0) + 1
            if o.code in DID_NOT_RUN and times:
                problems.append(f"{o.rid} answered {o.code} (did not run) but ran")
        else:
            result.failed += 1
            reason = "in_flight_on_killed" if kill is not None else f"unexplained_{o.code}"
            result.failed_detail[reason] = result.failed_detail.get(reason, 0) + 1
        if times:
            errors_ran += 1
        else:
            errors_not_run += 1
        if kill is not None:
            per_kill[id(kill)]["typed_errors" if o.typed else "failed"] += 1
        elif not (o.typed and o.code in DID_NOT_RUN and o.code != "draining"):
            problems.append(
                f"{o.rid} to {o.target} sent at {o.sent:.3f} done {o.done:.3f}: "
                f"{o.status} {o.code} {o.message[:160]}"
            )
    strangers = [rid for rid in runs if rid not in sent_ids]
    if strangers:
        problems.append(f"{len(strangers)} ids ran that the client never sent: {strangers[:5]}")
    result.extra["typed_detail"] = typed
    result.extra["per_kill"] = [
        {
            "kill": k.label,
            "victims": k.victims,
            "roles": k.roles,
            "in_flight_at_kill": len(k.in_flight) if k.kind == "node" else None,
            **per_kill[id(k)],
            "membership_s": None if k.membership_s is None else round(k.membership_s, 2),
            "recovery_s": None if k.recovery_s is None else round(k.recovery_s, 2),
        }
        for k in kills
    ]
    result.extra["exactly_once"] = {
        "ok_ran_once": ran_once,
        "ran_twice": ran_twice,
        "errors_that_ran": errors_ran,
        "errors_that_did_not_run": errors_not_run,
    }
    return result, problems
