"""Where the master keeps a function's ``min_instances`` warm (issue 19.5): a pure plan.

Every placement round (``PLACEMENT_PERIOD_S``) the master plans, from its table and its view
of the members, which nodes keep how many instances of each function with ``min_instances``
pinned, and sends each node its share (``Prewarm``, a lease it renews every round). The plan:

- only live, routable nodes take pins; a function asks for ``min_instances`` in the cluster,
  one per node first (an instance on each of two nodes survives either node), more per node
  only when there are fewer nodes than it asks for, never more than ``max_instances``;
- stable: a node that held a pin in the last plan and is still live keeps it, so instances
  are not moved around; a dead node's pins go elsewhere in the next round;
- new pins go first to a node where the function is warm already (no start needed), then to
  the least loaded node: the fewest warm functions in the table plus pins already placed in
  this plan (so functions spread), ties by name (every master plans the same).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

PLACEMENT_PERIOD_S = 1.0
"""How often the master plans and renews the pins: a dead node's share moves within about
this long of the master's gossip declaring it dead."""
PIN_LEASE_S = 5.0
"""How long a node keeps a pin unless renewed: a few rounds, so a late or lost round costs
nothing, while the pins of a master that died lapse soon (its successor places anew)."""

Plan = dict[str, dict[str, int]]
"""function -> node -> instances pinned there."""


@dataclass(frozen=True, slots=True)
class Wanted:
    """A function's ``min_instances`` (in the cluster) and ``max_instances`` (per node)."""

    min_instances: int
    max_instances: int


def place(
    wanted: Mapping[str, Wanted],
    nodes: Sequence[str],
    warm: Mapping[str, Collection[str]],
    previous: Mapping[str, Mapping[str, int]] | None = None,
) -> Plan:
    """The pins of every function of ``wanted`` over the live ``nodes``, given where the
    table says each function is warm (``warm``: function -> node names) and the last plan."""
    live = sorted(set(nodes))
    load: Counter[str] = Counter()
    for holders in warm.values():
        load.update(n for n in holders if n in live)
    plan: Plan = {}
    for function in sorted(wanted):
        want = wanted[function]
        if want.min_instances <= 0 or not live:
            continue
        before = {
            node: count
            for node, count in (previous or {}).get(function, {}).items()
            if node in live and count > 0
        }
        warm_here = set(warm.get(function, ()))
        order = sorted(live, key=lambda n: (n not in before, n not in warm_here, load[n], n))
        pins = _spread(want, order, before)
        for node, count in pins.items():
            if node not in warm_here:
                load[node] += count
        plan[function] = pins
    return plan


def _spread(want: Wanted, order: Sequence[str], before: Mapping[str, int]) -> dict[str, int]:
    """``want.min_instances`` over ``order``: each node in turn one more, up to its cap, the
    last plan's counts kept where they fit an even spread."""
    cap = max(1, want.max_instances)
    level = min(cap, -(-want.min_instances // len(order)))  # an even share, rounded up
    pins = {node: min(count, level) for node, count in before.items()}
    total = sum(pins.values())
    while total > want.min_instances:  # asks for fewer now: drop from the fullest, last first
        node = max(reversed(order), key=lambda n: pins.get(n, 0))
        pins[node] -= 1
        total -= 1
        if not pins[node]:
            del pins[node]
    while total < want.min_instances:
        # One more on the first node with the fewest pins that has room: spread before stacking.
        room = [n for n in order if pins.get(n, 0) < cap]
        if not room:
            break  # every node holds max_instances: as many as the cluster can
        node = min(room, key=lambda n: pins.get(n, 0))  # min keeps the order among equals
        pins[node] = pins.get(node, 0) + 1
        total += 1
    return pins


def by_node(plan: Plan) -> dict[str, dict[str, int]]:
    """``plan`` per node: node -> function -> instances (what one ``Prewarm`` carries)."""
    nodes: dict[str, dict[str, int]] = {}
    for function, pins in plan.items():
        for node, count in pins.items():
            nodes.setdefault(node, {})[function] = count
    return nodes
