"""The capacity benchmark's figures, drawn from its results with matplotlib when it is
installed (the ``bench`` extra: ``pip install -e '.[bench]'``, or ``make bench``); the tierfaas
package never imports it.

    .venv/bin/python benchmarks/capacity_plots.py benchmarks/results/capacity.json   # redraw

- ``capacity-sim.png`` (``capacity-sim-measured.png`` with measured accounting): the
  simulation. Cold calls (as a share of the calls) and memory held (GiB·h, as the budget
  counted it) per policy, on one node and on the cluster with and without the cluster cache,
  each bar marked with its change against fixed 10 min + LRU on as many nodes; and each
  hour's cold share over the simulated day.
- ``capacity-cluster.png``: the real cluster. Each 10 s window's cold share and calls, with
  the first minute (not counted) shaded.

A full run's figures go to docs/, a quick run's to benchmarks/results/ (they must not replace
the documented ones). The series are taken from the results by pure functions (tested without
matplotlib); ``draw`` only lays them out.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import _common as c

POLICIES = ("fixed 10 min + LRU", "fixed 10 min + Greedy-Dual", "learned + Greedy-Dual")
BASELINE = POLICIES[0]
COLORS = ("#9e9e9e", "#1f77b4", "#d62728")
REFERENCE = "fixed 10 min, unbounded memory (reference)"


@dataclass(frozen=True, slots=True)
class Group:
    """A set of runs whose policies the figure compares: as many nodes, one cache setting."""

    label: str
    nodes: int
    cluster_cache: bool | None


def groups_of(results: Sequence[dict[str, Any]]) -> list[Group]:
    """The (nodes, cluster cache) combinations that ran, one node first."""
    seen: list[Group] = []
    for r in results:
        if "skipped" in r or r["variant"] not in POLICIES:
            continue
        cache = r["cluster_cache"]
        label = f"{r['nodes']} node" + ("s" if r["nodes"] > 1 else "")
        if cache is not None:
            label += f", cluster cache {'on' if cache else 'off'}"
        group = Group(label, r["nodes"], cache)
        if group not in seen:
            seen.append(group)
    return sorted(seen, key=lambda g: (g.nodes, g.cluster_cache is True))


def find(
    results: Sequence[dict[str, Any]], variant: str, nodes: int, cache: bool | None
) -> dict[str, Any] | None:
    for r in results:
        if (
            r["variant"] == variant
            and r["nodes"] == nodes
            and r["cluster_cache"] == cache
            and "skipped" not in r
        ):
            return r
    return None


def memory_key(accounting: str) -> str:
    """The GiB·h field of the accounting the budget used."""
    return "measured_gib_h" if accounting == "measured" else "declared_gib_h"


@dataclass(frozen=True, slots=True)
class Bar:
    """One policy's run in a group, and its change against the group's baseline (fixed 10
    min + LRU on as many nodes, cache off), as the table's *vs base* columns; None for the
    baseline itself."""

    cold_pct: float
    cold_calls: int
    gib_h: float
    cold_change_pct: float | None
    memory_change_pct: float | None


def bars(results: Sequence[dict[str, Any]], accounting: str) -> dict[str, dict[str, Bar]]:
    """For each group (by label), each policy's ``Bar`` in ``POLICIES`` order; a policy that
    did not run is absent. Memory is the GiB·h of ``accounting``."""
    key = memory_key(accounting)
    out: dict[str, dict[str, Bar]] = {}
    for group in groups_of(results):
        base = find(results, BASELINE, group.nodes, False if group.nodes > 1 else None)
        row: dict[str, Bar] = {}
        for policy in POLICIES:
            r = find(results, policy, group.nodes, group.cluster_cache)
            if r is None:
                continue
            cold = memory = None
            if base is not None and r is not base and base["cold_calls"] and base[key]:
                cold = 100.0 * (r["cold_calls"] / base["cold_calls"] - 1)
                memory = 100.0 * (r[key] / base[key] - 1)
            row[policy] = Bar(r["cold_pct"], r["cold_calls"], r[key], cold, memory)
        out[group.label] = row
    return out


def hourly(
    results: Sequence[dict[str, Any]], nodes: int, cache: bool | None
) -> dict[str, tuple[list[float], list[float]]]:
    """Each policy's (hour, cold %) over the simulated day on ``nodes`` nodes."""
    out: dict[str, tuple[list[float], list[float]]] = {}
    for policy in POLICIES:
        r = find(results, policy, nodes, cache)
        if r is not None and r.get("hourly"):
            out[policy] = (
                [h["hour"] + 0.5 for h in r["hourly"]],
                [h["cold_pct"] for h in r["hourly"]],
            )
    return out


def cluster_windows(cluster: dict[str, Any]) -> tuple[list[float], list[float], list[int]]:
    """The real cluster's (window start s, cold %, calls) per window."""
    windows = cluster.get("windows", [])
    return (
        [w["from_s"] for w in windows],
        [w["cold_pct"] for w in windows],
        [w["calls"] for w in windows],
    )


def target_dir(quick: bool) -> Path:
    return c.REPO_ROOT / ("benchmarks/results" if quick else "docs")


def draw(report: dict[str, Any], out_dir: Path | None = None) -> list[str]:
    """Draws the figures ``report`` (capacity.json's content) has data for, into ``out_dir``
    (default: ``target_dir``); returns what was written, or why nothing was."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return ["matplotlib is not installed: no plot (pip install -e '.[bench]')"]
    out_dir = out_dir or target_dir(bool(report.get("quick")))
    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[str] = []
    when = str(report.get("when", ""))[:16].replace("T", " ")
    commit = str(report.get("commit") or "")[:7]
    sim = report.get("simulation")
    if sim and sim.get("results"):
        results = sim["results"]
        accounting = sim.get("memory_accounting", "declared")
        by_group = bars(results, accounting)
        fig, axes = plt.subplots(1, 3, figsize=(17, 4.8), width_ratios=(1, 1, 1.3))
        width = 0.8 / len(POLICIES)
        for index, title in enumerate(
            ("cold calls (% of calls)", f"memory held (GiB·h, {accounting} accounting)")
        ):
            ax = axes[index]
            for p, (policy, color) in enumerate(zip(POLICIES, COLORS, strict=True)):
                xs, ys, notes = [], [], []
                for g, row in enumerate(by_group.values()):
                    if policy not in row:
                        continue
                    bar = row[policy]
                    xs.append(g + (p - 1) * width)
                    if index == 0:
                        ys.append(bar.cold_pct)
                        note = f"{bar.cold_pct:.2f} %\n{bar.cold_calls:,}"
                        change = bar.cold_change_pct
                    else:
                        ys.append(bar.gib_h)
                        note = f"{bar.gib_h:,.0f}"
                        change = bar.memory_change_pct
                    notes.append(note + ("" if change is None else f"\n{change:+.0f} %"))
                drawn = ax.bar(xs, ys, width, color=color, label=policy)
                for rect, note in zip(drawn, notes, strict=True):
                    ax.annotate(
                        note,
                        (rect.get_x() + rect.get_width() / 2, rect.get_height()),
                        ha="center",
                        va="bottom",
                        fontsize=6.5,
                    )
            reference = find(results, REFERENCE, 1, None)
            if reference is not None:
                value = reference["cold_pct"] if index == 0 else reference[memory_key(accounting)]
                ax.axhline(value, color="black", linestyle=":", linewidth=1)
                ax.annotate(
                    "1 node, unbounded memory",
                    (-0.45, value),
                    ha="left",
                    va="bottom",
                    fontsize=7,
                )
            ax.set_xticks(range(len(by_group)), list(by_group), fontsize=8)
            ax.set_title(title, fontsize=10)
            ax.margins(y=0.25)
        axes[0].legend(fontsize=8, loc="upper right")
        ax = axes[2]
        styles = ((1, None, "-"), (3, True, "--"))
        for nodes, cache, style in styles:
            for policy, (hours, cold) in hourly(results, nodes, cache).items():
                color = COLORS[POLICIES.index(policy)]
                suffix = "1 node" if nodes == 1 else f"{nodes} nodes, cache on"
                ax.plot(hours, cold, style, color=color, label=f"{policy} ({suffix})", lw=1.2)
        ax.set_xlabel("hour of the simulated day", fontsize=9)
        ax.set_title("cold calls per hour (% of the hour's calls)", fontsize=10)
        ax.legend(fontsize=6.5)
        trace = sim.get("trace", {})
        fig.suptitle(
            f"tierfaas capacity, simulation: {trace.get('functions')} functions, "
            f"{trace.get('hours'):g} h of an Azure-shaped trace (seed {trace.get('seed')}), "
            f"{accounting} memory accounting, cold starts {sim.get('cold_starts', 'local')}, "
            f"{sim.get('budget_mb_one_node'):,} MiB on one node, "
            f"{sim.get('budget_mb_per_cluster_node'):,} MiB per cluster node "
            f"({when}, {commit})",
            fontsize=10,
        )
        fig.tight_layout()
        name = "capacity-sim" + ("-measured" if accounting == "measured" else "")
        name += "-home" if sim.get("cold_starts") == "home" else ""
        path = out_dir / (name + ("-quick" if report.get("quick") else "") + ".png")
        fig.savefig(path, dpi=90)
        plt.close(fig)
        written.append(f"plot: {path}")
    cluster = report.get("cluster")
    if cluster and cluster.get("windows"):
        starts, cold, calls = cluster_windows(cluster)
        fig, ax = plt.subplots(figsize=(10, 3.8))
        width = starts[1] - starts[0] if len(starts) > 1 else 10.0
        twin = ax.twinx()
        twin.bar(starts, calls, width * 0.9, align="edge", color="#c6dbef", label="calls")
        twin.set_ylabel("calls per window", fontsize=9)
        ax.set_zorder(twin.get_zorder() + 1)
        ax.patch.set_visible(False)
        ax.step([*starts, starts[-1] + width], [*cold, cold[-1]], where="post", color="#d62728")
        ax.set_ylabel("cold calls (% of the window's)", fontsize=9)
        ax.set_xlabel("seconds since the replay began", fontsize=9)
        warmup = float(cluster.get("warmup_s", 0.0))
        twin.axvspan(0, warmup, color="#dddddd", alpha=0.5, zorder=0, label="not counted")
        ax.set_ylim(bottom=0)
        after = cluster.get("cold_pct_after_warmup")
        ax.annotate(
            f"after the first {warmup:g} s: {after:.2f} % cold",
            (warmup, max(cold) * 0.9 if cold else 1.0),
            xytext=(8, 0),
            textcoords="offset points",
            fontsize=9,
        )
        ax.set_title(
            f"tierfaas capacity, real cluster: {cluster.get('nodes')} nodes, "
            f"{cluster.get('functions')} functions, Zipf 1.0, {cluster.get('rate_per_s'):g} "
            f"calls/s, default settings ({when}, {commit})",
            fontsize=10,
        )
        fig.tight_layout()
        path = out_dir / ("capacity-cluster" + ("-quick" if report.get("quick") else "") + ".png")
        fig.savefig(path, dpi=90)
        plt.close(fig)
        written.append(f"plot: {path}")
    return written or ["no plot: the results hold neither simulation nor cluster runs"]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "results",
        nargs="+",
        type=Path,
        help="capacity.json files; a later one's simulation or cluster part replaces an "
        "earlier one's (a simulation and a cluster run made apart draw together)",
    )
    args = parser.parse_args(argv)
    report: dict[str, Any] = {}
    for path in args.results:
        report.update({k: v for k, v in json.loads(path.read_text()).items() if v is not None})
    print("\n".join(draw(report)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
