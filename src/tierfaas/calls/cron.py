"""Five-field cron expressions, in UTC: when a function's ``schedule`` fires.

    minute hour day-of-month month day-of-week
    0-59   0-23 1-31         1-12  0-7 (0 and 7 are Sunday)

Each field is ``*`` or a comma-separated list of items ``N``, ``A-B``, ``*/S``, ``A-B/S`` or
``A/S`` (from A to the field's end, every S). Months take ``jan``..``dec`` and days of the
week ``sun``..``sat`` (any case) wherever they take a number. ``@yearly`` (``@annually``),
``@monthly``, ``@weekly``, ``@daily`` (``@midnight``) and ``@hourly`` stand for the usual
expressions; ``@reboot`` has no meaning for a cluster and is refused.

Day of month and day of week follow Vixie cron (and cronie, which Linux distributions ship):
when both are restricted, a day matches if *either* matches (``0 9 1 * mon``: the 1st and
every Monday); when either field begins with ``*`` the day must match both, which makes the
``*`` one irrelevant, and so ``*/2`` in one of them also counts as unrestricted for this
rule (a Vixie quirk kept so that an expression means here what it means in a crontab).

An expression that can never fire (``0 0 30 feb *``) is refused by ``parse``: the Gregorian
calendar repeats every 400 years, so a search of one such cycle finds every expression's
next tick or proves there is none. Times are Unix seconds; ticks fall on whole minutes.
"""

from __future__ import annotations

import calendar
import math
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

MAX_EXPRESSION_CHARS = 256
_CYCLE_YEARS = 400
"""The Gregorian calendar's period (146097 days, a whole number of weeks)."""

ALIASES = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}

_MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
_WEEKDAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")


@dataclass(frozen=True, slots=True)
class _Field:
    name: str
    low: int
    high: int
    names: dict[str, int]


_FIELDS = (
    _Field("minute", 0, 59, {}),
    _Field("hour", 0, 23, {}),
    _Field("day-of-month", 1, 31, {}),
    _Field("month", 1, 12, {name: number for number, name in enumerate(_MONTHS, 1)}),
    _Field("day-of-week", 0, 7, {name: number for number, name in enumerate(_WEEKDAYS)}),
)


@dataclass(frozen=True, slots=True)
class Cron:
    """A parsed expression: the allowed values of each field (``weekdays`` 0-6, Sunday 0),
    and whether day of month / day of week begin with ``*`` (the Vixie day rule)."""

    expression: str
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]
    days_star: bool
    weekdays_star: bool

    def matches(self, t: float) -> bool:
        """Whether the minute holding Unix time ``t`` is a tick."""
        moment = datetime.fromtimestamp(math.floor(t / 60) * 60, UTC)
        return (
            moment.minute in self.minutes
            and moment.hour in self.hours
            and moment.month in self.months
            and self._day_matches(moment.year, moment.month, moment.day)
        )

    def next_after(self, t: float) -> float:
        """The first tick strictly after Unix time ``t`` (UTC), in Unix seconds."""
        found = self._search(t)
        if found is None:  # parse() refuses expressions that never fire
            raise ValueError(f"{self.expression!r} never fires")
        return found

    def ticks(self, start: float, end: float) -> Iterator[float]:
        """Every tick with ``start < tick <= end``, in order."""
        tick = self.next_after(start)
        while tick <= end:
            yield tick
            tick = self.next_after(tick)

    def _day_matches(self, year: int, month: int, day: int) -> bool:
        in_days = day in self.days
        # datetime's weekday() is Monday 0; cron's is Sunday 0.
        in_weekdays = (calendar.weekday(year, month, day) + 1) % 7 in self.weekdays
        if self.days_star or self.weekdays_star:
            return in_days and in_weekdays
        return in_days or in_weekdays

    def _search(self, t: float) -> float | None:
        # The next whole minute strictly after t, then the first (month, day, hour, minute)
        # at or after it, field by field; only the first candidate of each level is bounded
        # below by the start, the later ones start at the field's beginning.
        start = datetime.fromtimestamp(math.floor(t / 60) * 60 + 60, UTC)
        months = sorted(self.months)
        hours = sorted(self.hours)
        minutes = sorted(self.minutes)
        for year in range(start.year, start.year + _CYCLE_YEARS + 1):
            for month in months:
                if (year, month) < (start.year, start.month):
                    continue
                first_day = start.day if (year, month) == (start.year, start.month) else 1
                for day in range(first_day, calendar.monthrange(year, month)[1] + 1):
                    if not self._day_matches(year, month, day):
                        continue
                    today = (year, month, day) == (start.year, start.month, start.day)
                    for hour in hours:
                        if today and hour < start.hour:
                            continue
                        this_hour = today and hour == start.hour
                        for minute in minutes:
                            if this_hour and minute < start.minute:
                                continue
                            return datetime(year, month, day, hour, minute, tzinfo=UTC).timestamp()
        return None


def parse(expression: str) -> Cron:
    """Parses a five-field cron expression or an ``@`` alias (see the module's doc). Raises
    ``ValueError`` whose message names the field and the reason."""
    if not isinstance(expression, str):
        raise ValueError(f"expected a string, got {type(expression).__name__}")
    if len(expression) > MAX_EXPRESSION_CHARS:
        raise ValueError(f"longer than {MAX_EXPRESSION_CHARS} characters")
    text = expression.strip()
    if text.startswith("@"):
        alias = ALIASES.get(text.lower())
        if alias is None:
            known = ", ".join(sorted(ALIASES))
            raise ValueError(f"{_show(text)} is not one of {known}")
        text = alias
    parts = text.split()
    if len(parts) != len(_FIELDS):
        raise ValueError(
            f"{_show(expression)} has {len(parts)} fields, a cron expression has 5: "
            "minute hour day-of-month month day-of-week"
        )
    minutes, hours, days, months, weekdays = (
        _parse_field(part, spec) for part, spec in zip(parts, _FIELDS, strict=True)
    )
    cron = Cron(
        expression=expression,
        minutes=minutes,
        hours=hours,
        days=days,
        months=months,
        weekdays=frozenset(day % 7 for day in weekdays),  # 7 is Sunday too
        days_star=parts[2].startswith("*"),
        weekdays_star=parts[4].startswith("*"),
    )
    if cron._search(0.0) is None:
        raise ValueError(f"{_show(expression)} never fires (no such day in any year)")
    return cron


def _parse_field(text: str, spec: _Field) -> frozenset[int]:
    values: set[int] = set()
    for item in text.split(","):
        if not item:
            raise ValueError(f"{spec.name}: {_show(text)} has an empty list item")
        values.update(_parse_item(item, spec))
    return frozenset(values)


def _parse_item(item: str, spec: _Field) -> range:
    span, slash, step_text = item.partition("/")
    step = 1
    if slash:
        if not step_text.isdecimal() or not step_text.isascii():
            raise ValueError(f"{spec.name}: step {_show(step_text)} is not a whole number")
        step = int(step_text)
        if not 1 <= step <= spec.high - spec.low + 1:
            raise ValueError(f"{spec.name}: step {step} is outside 1..{spec.high - spec.low + 1}")
    if span == "*":
        low, high = spec.low, spec.high
    elif "-" in span:
        first, _, last = span.partition("-")
        low, high = _value(first, spec), _value(last, spec)
        if low > high:
            raise ValueError(
                f"{spec.name}: range {_show(span)} runs backwards (write it as two ranges)"
            )
    else:
        low = _value(span, spec)
        high = spec.high if slash else low  # "A/S": from A to the field's end, every S
    return range(low, high + 1, step)


def _value(text: str, spec: _Field) -> int:
    named = spec.names.get(text.lower())
    if named is not None:
        return named
    if not text.isdecimal() or not text.isascii() or len(text) > 4:
        if spec.names:
            raise ValueError(
                f"{spec.name}: {_show(text)} is not a number or a name ({', '.join(spec.names)})"
            )
        raise ValueError(f"{spec.name}: {_show(text)} is not a number")
    value = int(text)
    if not spec.low <= value <= spec.high:
        raise ValueError(f"{spec.name}: {value} is outside {spec.low}-{spec.high}")
    return value


def _show(value: str, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else f"{text[: limit - 3]}..."
