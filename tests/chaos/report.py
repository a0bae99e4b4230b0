"""Renders the chaos suite's results into docs/reliability.md.

    python -m tests.chaos.report [--dir test-artifacts/chaos] [--out docs/reliability.md]

Reads every ``*.json`` in ``--dir`` (one per scenario run, the schema of
tests/chaos/harness.py), and replaces what lies between the two markers below in ``--out``
with a summary table (one row per scenario) and a detail section per scenario. The prose
around the markers is kept, so the page's method and findings are written by hand and the
figures by this script. Prints the generated part too. Exit 1 if a file breaks the schema.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

if not __package__:  # run as a path: python tests/chaos/report.py
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.chaos.harness import ARTIFACTS, REPO, validate

BEGIN = "<!-- chaos-results:begin (written by python -m tests.chaos.report) -->"
END = "<!-- chaos-results:end -->"
# By prefix; others last.
ORDER = ("crash", "partition", "loss", "slow_node", "suspect_replica", "frozen", "soak")
SKELETON = f"""# Reliability

The chaos suite (`tests/chaos/`, `make chaos`) and what it found.

{BEGIN}
{END}
"""


def load_results(directory: Path) -> list[dict[str, Any]]:
    results = []
    for path in sorted(directory.glob("*.json")):
        data = json.loads(path.read_text())
        validate(data)
        results.append(data)

    def rank(r: dict[str, Any]) -> tuple[int, str]:
        prefixes = [i for i, name in enumerate(ORDER) if r["scenario"].startswith(name)]
        return (prefixes[0] if prefixes else len(ORDER), r["scenario"])

    return sorted(results, key=rank)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.2f}"
    if isinstance(value, dict):
        return ", ".join(f"{k} {v}" for k, v in value.items()) or "-"
    if isinstance(value, list):
        return ", ".join(_cell(v) for v in value) or "-"
    return str(value).replace("|", "\\|").replace("\n", " ")


def table(header: list[str], rows: list[list[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    lines += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in rows]
    return lines


def summary(results: list[dict[str, Any]]) -> list[str]:
    rows = []
    for r in results:
        typed = r["extra"].get("typed_detail") or {}
        rows.append(
            [
                r["scenario"],
                r["mode"],
                r["sent"],
                r["ok"],
                f"{r['typed_errors']}" + (f" ({_cell(typed)})" if typed else ""),
                r["failed"],
                r["failed_detail"],
                r["recovery_s"],
            ]
        )
    header = ["scenario", "mode", "sent", "2xx", "typed errors", "failed (no answer)",
              "failed, why", "recovery s"]  # fmt: skip
    return table(header, rows)


def details(r: dict[str, Any]) -> list[str]:
    """The scenario's notes, then its extra: known lists as tables, the rest as a list."""
    out = [f"### {r['scenario']} ({r['mode']})", ""]
    if r["notes"]:
        out += [r["notes"], ""]
    extra = dict(r["extra"])
    extra.pop("typed_detail", None)
    per_kill = extra.pop("per_kill", None)
    if per_kill:
        rows = [
            [k["kill"], k["roles"], k["in_flight_at_kill"], k["failed"], k["typed_errors"],
             k.get("membership_s"), k["recovery_s"]]
            for k in per_kill
        ]  # fmt: skip
        header = ["kill", "role(s)", "client calls in flight on it", "failed (no answer)",
                  "typed errors", "members agree s", "tables right s"]  # fmt: skip
        out += [*table(header, rows), ""]
    checks = extra.pop("checks", None)
    if checks:
        rows = [
            [c["what"], c.get("events") or "none", len(c.get("new_departures", [])),
             "yes" if c.get("agreement_kept") else "NO",
             c.get("backlog_s", c.get("p99_s"))]
            for c in checks
        ]  # fmt: skip
        header = ["fault", "membership events (all nodes)", "declared dead",
                  "roles unchanged", "backlog s / p99 s"]  # fmt: skip
        out += [*table(header, rows), ""]
    phases = extra.pop("phases", None)
    if phases:  # suspect_replica: calls to a worker before and while its replica is suspect
        rows = [
            [p["round"], when, f["calls"], f["median_ms"], f["p99_ms"], f["max_ms"],
             f["lookups"], f["lookup_median_le_ms"], f["lookup_p99_le_ms"],
             f["lookups_over_100ms"], f["lookups_failed"]]
            for p in phases
            for when, f in (("not suspect", p["not_suspect"]), ("suspect", p["suspect"]))
        ]  # fmt: skip
        header = ["round", "replica", "calls", "call median ms", "call p99 ms", "call max ms",
                  "lookups", "lookup median ms (<=)", "lookup p99 ms (<=)",
                  "lookups > 100 ms", "lookups failed"]  # fmt: skip
        out += [*table(header, rows), ""]
    freezes = extra.pop("freezes", None)
    if freezes:
        rows = [
            [f"{f['victim']} ({f.get('role', 'worker')})", f["functions"], f["frozen_s"],
             f.get("declared"), f["rejoin_s"],
             f["back_after_alive_s"], f["back_after_sigcont_s"]]
            for f in freezes
        ]  # fmt: skip
        header = ["frozen node", "its warm functions", "frozen s", "declared",
                  "alive again after SIGCONT s", "back in every table after alive s",
                  "after SIGCONT s"]  # fmt: skip
        out += [*table(header, rows), ""]
    growth = extra.pop("growth", None)
    if growth:
        rows = [
            [name, g["rss_base_mib"], g["rss_end_mib"], g["rss_peak_mib"], g["rss_growth_mib"],
             g["fds_base"], g["fds_end"], g["fds_peak"], g["fd_growth"]]
            for name, g in growth.items()
        ]  # fmt: skip
        header = ["never-killed node", "RSS MiB after warm-up", "at end", "peak", "growth",
                  "fds after warm-up", "at end", "peak", "growth"]  # fmt: skip
        out += [*table(header, rows), ""]
    for key, value in extra.items():
        shown = value if isinstance(value, str | int | float) else json.dumps(value)
        out.append(f"- {key}: {shown}")
    if extra:
        out.append("")
    return out


def render(results: list[dict[str, Any]]) -> str:
    commit = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
        capture_output=True, text=True, check=False,
    ).stdout.strip() or "unknown"  # fmt: skip
    stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    lines = [
        f"Generated {stamp} at commit {commit} on {os.cpu_count()} CPUs from "
        f"{len(results)} result files (`test-artifacts/chaos/*.json`).",
        "",
    ]
    if not results:
        return "\n".join([*lines, "No results yet: run `make chaos`."])
    lines += [*summary(results), ""]
    for r in results:
        lines += details(r)
    return "\n".join(lines).rstrip()


def splice(page: str, generated: str) -> str:
    """``page`` with what lies between the markers replaced by ``generated``."""
    if BEGIN not in page or END not in page:
        page = page.rstrip() + "\n\n" + BEGIN + "\n" + END + "\n"
    head, rest = page.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{BEGIN}\n{generated}\n{END}{tail}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, default=ARTIFACTS)
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "reliability.md")
    args = parser.parse_args(argv)
    try:
        results = load_results(args.dir) if args.dir.is_dir() else []
    except ValueError as exc:
        print(f"report: {exc}", file=sys.stderr)
        return 1
    generated = render(results)
    page = args.out.read_text() if args.out.exists() else SKELETON
    args.out.write_text(splice(page, generated))
    print(generated)
    print(f"\nwrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
