"""Seeded synthetic FaaS traces shaped like the Azure Functions 2019 characterization.

    .venv/bin/python benchmarks/traces.py --describe                 # 200 functions, one day
    .venv/bin/python benchmarks/traces.py --functions 60 --hours 6 --describe --seed 3

Nothing is downloaded: every number comes from a ``random.Random(seed)``, so one seed gives
one trace, byte for byte. The shape follows "Serverless in the Wild" (Shahrad et al., USENIX
ATC '20); the parameters below are read off its published figures and fits, as recalled, and
are stated here so that anyone can change them:

- **Invocation rate.** log10 of a function's daily calls is a normal (mean -1.1, sd 2.9)
  truncated to [0, 6.3], fitted so that 45 % of functions are called at most once an hour and
  81 % at most once a minute on average, the two points the paper quotes of its Figure 5
  (which spans 8 decades; the truncation keeps 6.3 of them, 1 to 2 million calls a day).
  Rates are placed on the distribution's quantiles (stratified, then shuffled), so that even a
  small trace covers the whole range: the slowest function is called once a day, the
  busiest 2 million times.
- **Triggers.** 16 % of functions are timers (the paper: 15.6 % of functions have a timer
  trigger) with a fixed period of 1, 5, 15 or 60 minutes (weights 3:3:2:2), a random phase and
  a Gaussian jitter of 1 % of the period (at most 1 s); their rate is their period's. 55 % are
  HTTP functions (55.0 % in the paper), bursty: an on/off-modulated Poisson process (on
  periods exponential with a mean log-uniform in 1-10 min, a duty cycle uniform in 5-50 %),
  whose inter-arrival times have a coefficient of variation above 1 as most of the paper's
  non-timer applications do. The rest (queue, event, storage triggers) are plain Poisson.
- **Execution time.** Each function's mean is lognormal with log-mean -0.38 and sigma 2.36
  (seconds): the paper's fit of per-function average execution times (Figure 7: a median of
  ~0.7 s, about half under 1 s, ~96 % under a minute), clipped to [1 ms, 60 s]; each call
  draws around that mean (lognormal, sigma 0.5). A function's mean is also capped so that its
  offered load (calls per second x mean seconds, within a burst) stays at most 1 instance:
  this trace is about keep-alive and memory, not scale-out, and an unbounded load would only
  measure queueing.
- **Memory.** A measured working set per function from the paper's Burr XII fit of allocated
  memory (c 11.652, k 0.221, lambda 107.083 MB; median ~140 MB), clipped to [16, 480] MB; the
  declared ``memory_mb`` is the smallest of 128, 256, 512 at least 1.2 x that.
- **Cold start.** Each function's start cost is lognormal (median 150 ms, sigma 0.6), clipped
  to [50, 500] ms (a forked Python instance with an import and an ``init``).

``events(profiles, duration_s, seed, max_daily_calls)`` emits the calls sorted by time. A
function busier than ``max_daily_calls`` is *thinned*: it emits that many calls a day, each
standing for ``weight`` real ones and lasting ``weight`` times longer, so that the instances it
keeps busy (and the memory they hold) are those of the real rate, while a simulator replays a
day of many functions in seconds. ``zipf_events`` is the real-cluster workload: Poisson
arrivals whose function is drawn with Zipf popularity over N functions.
"""

from __future__ import annotations

import argparse
import bisect
import itertools
import json
import math
import random
import statistics
import sys
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal, NamedTuple

DAY_S = 86_400.0

LOG10_DAILY_MEAN = -1.1
LOG10_DAILY_SD = 2.9
LOG10_DAILY_RANGE = (0.0, 6.3)
TIMER_SHARE = 0.16
HTTP_SHARE = 0.55
TIMER_PERIODS_S = (60.0, 300.0, 900.0, 3600.0)
TIMER_PERIOD_WEIGHTS = (3, 3, 2, 2)
TIMER_JITTER = 0.01  # of the period, at most TIMER_JITTER_MAX_S
TIMER_JITTER_MAX_S = 1.0
BURST_ON_MEAN_S = (60.0, 600.0)  # log-uniform
BURST_DUTY = (0.05, 0.5)
EXEC_LOG_MEAN = -0.38
EXEC_LOG_SIGMA = 2.36
EXEC_RANGE_S = (0.001, 60.0)
EXEC_CALL_SIGMA = 0.5
MAX_OFFERED_LOAD = 1.0
BURR_C, BURR_K, BURR_LAMBDA = 11.652, 0.221, 107.083
MEASURED_RANGE_MB = (16, 480)
DECLARED_SIZES_MB = (128, 256, 512)
DECLARED_HEADROOM = 1.2
START_MEDIAN_S = 0.15
START_SIGMA = 0.6
START_RANGE_S = (0.05, 0.5)

Trigger = Literal["timer", "http", "other"]


@dataclass(frozen=True, slots=True)
class FunctionProfile:
    """One function of a trace: how often and how it is called, and what it costs."""

    name: str
    trigger: Trigger
    daily_calls: float  # expected calls a day (a timer's: its period's)
    period_s: float | None  # timers only
    burst_on_s: float  # HTTP: mean length of an on period (0 for others)
    burst_duty: float  # HTTP: share of time on (1 for others)
    mean_duration_s: float
    start_s: float  # the cold start's cost
    memory_mb: int  # declared (the instance's limit)
    measured_mb: int  # the working set it actually uses


class Event(NamedTuple):
    """One call: when (seconds from the trace's start), of what, how long it runs, and how
    many real calls it stands for (more than 1 for a thinned busy function)."""

    time: float
    function: str
    duration: float
    weight: float = 1.0


def _truncated_normal_quantile(q: float, mean: float, sd: float, low: float, high: float) -> float:
    normal = statistics.NormalDist(mean, sd)
    lo, hi = normal.cdf(low), normal.cdf(high)
    p = lo + q * (hi - lo)
    return min(high, max(low, normal.inv_cdf(min(max(p, 1e-12), 1 - 1e-12))))


def _burr_xii(rng: random.Random) -> float:
    u = rng.random()
    tail = math.pow(1.0 - u, -1.0 / BURR_K) - 1.0
    return BURR_LAMBDA * math.pow(tail, 1.0 / BURR_C)


def _declared(measured_mb: int) -> int:
    for size in DECLARED_SIZES_MB:
        if size >= measured_mb * DECLARED_HEADROOM:
            return size
    return DECLARED_SIZES_MB[-1]


def generate_profiles(functions: int, seed: int) -> list[FunctionProfile]:
    """``functions`` functions (named f000...), deterministic given ``seed``."""
    if functions < 2:
        raise ValueError("a trace needs at least 2 functions")
    rng = random.Random(seed)
    low, high = LOG10_DAILY_RANGE
    log_rates = [
        _truncated_normal_quantile(i / (functions - 1), LOG10_DAILY_MEAN, LOG10_DAILY_SD, low, high)
        for i in range(functions)
    ]
    rng.shuffle(log_rates)
    order = list(range(functions))
    rng.shuffle(order)
    timers = set(order[: round(functions * TIMER_SHARE)])
    http = set(order[len(timers) : len(timers) + round(functions * HTTP_SHARE)])
    # The extremes of the rate range stay Poisson/HTTP (a timer's rate is its period's).
    extremes = {log_rates.index(min(log_rates)), log_rates.index(max(log_rates))}
    for index in sorted(timers & extremes):
        spare = next(i for i in order if i not in timers and i not in extremes)
        timers.discard(index)
        timers.add(spare)
        http.discard(spare)
    profiles = []
    for index in range(functions):
        trigger: Trigger = "timer" if index in timers else "http" if index in http else "other"
        period_s: float | None = None
        daily = 10.0 ** log_rates[index]
        burst_on_s, duty = 0.0, 1.0
        if trigger == "timer":
            period_s = rng.choices(TIMER_PERIODS_S, TIMER_PERIOD_WEIGHTS)[0]
            daily = DAY_S / period_s
        elif trigger == "http":
            burst_on_s = math.exp(rng.uniform(*map(math.log, BURST_ON_MEAN_S)))
            duty = rng.uniform(*BURST_DUTY)
        mean_s = math.exp(rng.gauss(EXEC_LOG_MEAN, EXEC_LOG_SIGMA))
        mean_s = min(max(mean_s, EXEC_RANGE_S[0]), EXEC_RANGE_S[1])
        # The offered load while on (a burst runs at the rate / duty): at most one instance.
        mean_s = min(mean_s, MAX_OFFERED_LOAD * duty * DAY_S / daily)
        start_s = math.exp(rng.gauss(math.log(START_MEDIAN_S), START_SIGMA))
        measured = round(min(max(_burr_xii(rng), MEASURED_RANGE_MB[0]), MEASURED_RANGE_MB[1]))
        profiles.append(
            FunctionProfile(
                name=f"f{index:03d}",
                trigger=trigger,
                daily_calls=daily,
                period_s=period_s,
                burst_on_s=burst_on_s,
                burst_duty=duty,
                mean_duration_s=mean_s,
                start_s=min(max(start_s, START_RANGE_S[0]), START_RANGE_S[1]),
                memory_mb=_declared(measured),
                measured_mb=measured,
            )
        )
    return profiles


def _arrivals(
    profile: FunctionProfile, duration_s: float, daily: float, rng: random.Random
) -> list[float]:
    """Call times in [0, duration_s) at ``daily`` calls a day (maybe thinned)."""
    if profile.period_s is not None:
        period = profile.period_s
        jitter = min(TIMER_JITTER * period, TIMER_JITTER_MAX_S)
        t = rng.uniform(0.0, period)
        times = []
        while t < duration_s:
            times.append(max(0.0, t + rng.gauss(0.0, jitter)))
            t += period
        return times
    rate = daily / DAY_S
    if profile.trigger != "http":
        return _poisson(rate, 0.0, duration_s, rng)
    on_mean = profile.burst_on_s
    off_mean = on_mean * (1.0 - profile.burst_duty) / profile.burst_duty
    on_rate = rate / profile.burst_duty
    times = []
    t = 0.0
    on = rng.random() < profile.burst_duty
    while t < duration_s:
        length = rng.expovariate(1.0 / (on_mean if on else off_mean))
        if on:
            times += _poisson(on_rate, t, min(t + length, duration_s), rng)
        t += length
        on = not on
    return times


def _poisson(rate: float, start: float, end: float, rng: random.Random) -> list[float]:
    times = []
    t = start + rng.expovariate(rate)
    while t < end:
        times.append(t)
        t += rng.expovariate(rate)
    return times


def events(
    profiles: Sequence[FunctionProfile],
    duration_s: float = DAY_S,
    seed: int = 0,
    max_daily_calls: float | None = None,
) -> list[Event]:
    """Every call of ``profiles`` in ``duration_s`` seconds, sorted by time. Functions busier
    than ``max_daily_calls`` are thinned to it (see the module's doc)."""
    out: list[Event] = []
    for index, profile in enumerate(profiles):
        rng = random.Random(seed * 1_000_003 + index)
        daily = profile.daily_calls
        weight = 1.0
        if max_daily_calls is not None and daily > max_daily_calls:
            weight = daily / max_daily_calls
            daily = max_daily_calls
        mu = math.log(profile.mean_duration_s) - EXEC_CALL_SIGMA**2 / 2
        for t in _arrivals(profile, duration_s, daily, rng):
            duration = min(math.exp(rng.gauss(mu, EXEC_CALL_SIGMA)), EXEC_RANGE_S[1])
            out.append(Event(t, profile.name, duration * weight, weight))
    out.sort()
    return out


def zipf_events(
    functions: Sequence[str],
    duration_s: float,
    rate_per_s: float,
    seed: int,
    exponent: float = 1.0,
    call_s: float = 0.0,
) -> list[Event]:
    """Poisson arrivals at ``rate_per_s``; each call's function drawn with Zipf(``exponent``)
    popularity (the i-th of ``functions`` has weight 1 / i**exponent)."""
    rng = random.Random(seed)
    cumulative: list[float] = []
    total = 0.0
    for rank in range(1, len(functions) + 1):
        total += 1.0 / rank**exponent
        cumulative.append(total)
    out = []
    t = rng.expovariate(rate_per_s)
    while t < duration_s:
        pick = bisect.bisect_left(cumulative, rng.random() * total)
        out.append(Event(t, functions[min(pick, len(functions) - 1)], call_s))
        t += rng.expovariate(rate_per_s)
    return out


def _cv(times: Sequence[float]) -> float | None:
    gaps = [b - a for a, b in itertools.pairwise(times)]
    if len(gaps) < 2:
        return None
    mean = statistics.fmean(gaps)
    return statistics.pstdev(gaps) / mean if mean > 0 else None


def describe(
    profiles: Sequence[FunctionProfile], trace: Sequence[Event], duration_s: float
) -> dict[str, Any]:
    """The trace's distribution: rate decades, trigger shares, execution time and memory."""
    rates = sorted(p.daily_calls for p in profiles)
    by_function: dict[str, list[float]] = {}
    calls: Counter[str] = Counter()
    for event in trace:
        by_function.setdefault(event.function, []).append(event.time)
        calls[event.function] += 1
    triggers = Counter(p.trigger for p in profiles)
    cvs = {
        trigger: [
            cv
            for p in profiles
            if p.trigger == trigger and (cv := _cv(by_function.get(p.name, []))) is not None
        ]
        for trigger in ("timer", "http", "other")
    }
    means = sorted(p.mean_duration_s for p in profiles)
    real_calls = sum(e.weight for e in trace)
    decades = Counter(min(int(math.log10(r)), 6) for r in rates)
    return {
        "functions": len(profiles),
        "duration_s": duration_s,
        "daily_calls": {
            "min": rates[0],
            "median": statistics.median(rates),
            "max": rates[-1],
            "decades_covered": math.log10(rates[-1] / rates[0]),
            "functions_per_decade": {f"1e{d}-1e{d + 1}": decades[d] for d in sorted(decades)},
            "at_most_hourly_share": sum(r <= 24 for r in rates) / len(rates),
            "at_most_per_minute_share": sum(r <= 1440 for r in rates) / len(rates),
        },
        "trigger_share": {k: triggers[k] / len(profiles) for k in ("timer", "http", "other")},
        "timer_periods_s": dict(Counter(p.period_s for p in profiles if p.period_s is not None)),
        "interarrival_cv_median": {k: statistics.median(v) if v else None for k, v in cvs.items()},
        "mean_duration_s": {
            "median": statistics.median(means),
            "under_1s_share": sum(m < 1.0 for m in means) / len(means),
            "max": means[-1],
        },
        "declared_mb": dict(sorted(Counter(p.memory_mb for p in profiles).items())),
        "measured_mb": {
            "median": statistics.median(p.measured_mb for p in profiles),
            "p90": sorted(p.measured_mb for p in profiles)[int(0.9 * (len(profiles) - 1))],
        },
        "start_s_median": statistics.median(p.start_s for p in profiles),
        "events": len(trace),
        "real_calls": real_calls,
        "thinned_functions": len({e.function for e in trace if e.weight > 1.0}),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--functions", type=int, default=200)
    parser.add_argument("--hours", type=float, default=24.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--max-daily-calls",
        type=float,
        default=2000.0,
        help="thin functions busier than this (calls a day) to it; 0: no thinning",
    )
    parser.add_argument("--describe", action="store_true", help="print the distribution")
    parser.add_argument("--profiles", action="store_true", help="print each function")
    args = parser.parse_args(argv)
    profiles = generate_profiles(args.functions, args.seed)
    duration = args.hours * 3600.0
    trace = events(profiles, duration, args.seed, args.max_daily_calls or None)
    if args.profiles:
        for profile in profiles:
            print(json.dumps(asdict(profile)))
    if args.describe or not args.profiles:
        print(json.dumps(describe(profiles, trace, duration), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
