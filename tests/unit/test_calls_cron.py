"""Five-field UTC cron: syntax, the Vixie day rule, and next_after against brute force."""

from __future__ import annotations

import calendar
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tierfaas.calls.cron import Cron, parse


def at(text: str) -> float:
    """Unix seconds of an ISO time in UTC, e.g. '2026-12-03T13:17'."""
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


def show(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%a %Y-%m-%dT%H:%M")


def ticks(expression: str, start: str, count: int) -> list[str]:
    cron = parse(expression)
    out, t = [], at(start)
    for _ in range(count):
        t = cron.next_after(t)
        out.append(show(t))
    return out


def test_every_five_minutes() -> None:
    assert ticks("*/5 * * * *", "2026-12-03T13:17", 3) == [
        "Thu 2026-12-03T13:20",
        "Thu 2026-12-03T13:25",
        "Thu 2026-12-03T13:30",
    ]


def test_next_after_is_strictly_after_a_tick() -> None:
    cron = parse("*/5 * * * *")
    assert cron.next_after(at("2026-12-03T13:20")) == at("2026-12-03T13:25")
    assert cron.next_after(at("2026-12-03T13:19:59.999")) == at("2026-12-03T13:20")
    assert cron.next_after(at("2026-12-03T13:20") + 0.001) == at("2026-12-03T13:25")


def test_the_hour_and_day_roll_over() -> None:
    assert ticks("30 23 * * *", "2026-12-31T23:45", 2) == [
        "Fri 2027-01-01T23:30",
        "Sat 2027-01-02T23:30",
    ]


def test_lists_ranges_and_steps_combine() -> None:
    cron = parse("0,15-20/5,59 8-10/2 * * *")
    assert cron.minutes == {0, 15, 20, 59}
    assert cron.hours == {8, 10}


def test_a_start_with_a_step_runs_to_the_fields_end() -> None:
    assert parse("10/20 * * * *").minutes == {10, 30, 50}


def test_month_and_weekday_names_in_any_case() -> None:
    cron = parse("0 12 * JAN-mar,Dec Mon-Fri")
    assert cron.months == {1, 2, 3, 12}
    assert cron.weekdays == {1, 2, 3, 4, 5}


def test_sunday_is_0_and_7() -> None:
    assert parse("0 0 * * 7").weekdays == {0}
    assert parse("0 0 * * 5-7").weekdays == {5, 6, 0}
    assert ticks("0 0 * * 7", "2026-12-03T00:00", 1) == ["Sun 2026-12-06T00:00"]


def test_weekdays_only() -> None:
    assert ticks("0 9 * * mon-fri", "2026-12-04T10:00", 2) == [  # a Friday, after 9
        "Mon 2026-12-07T09:00",
        "Tue 2026-12-08T09:00",
    ]


def test_day_of_month_or_day_of_week_when_both_are_restricted() -> None:
    # Vixie cron: the 13th of each month and every Friday.
    assert ticks("0 0 13 * fri", "2026-11-01T00:00", 5) == [
        "Fri 2026-11-06T00:00",
        "Fri 2026-11-13T00:00",
        "Fri 2026-11-20T00:00",
        "Fri 2026-11-27T00:00",
        "Fri 2026-12-04T00:00",
    ]
    assert ticks("0 0 13 * fri", "2026-12-04T00:00", 2) == [
        "Fri 2026-12-11T00:00",
        "Sun 2026-12-13T00:00",
    ]


def test_a_field_beginning_with_a_star_makes_the_day_rule_an_and() -> None:
    # Vixie's quirk: "*/2" counts as unrestricted, so this is odd days that are Mondays.
    assert ticks("0 0 */2 * mon", "2026-12-01T00:00", 3) == [
        "Mon 2026-12-07T00:00",
        "Mon 2026-12-21T00:00",
        "Mon 2027-01-11T00:00",
    ]


def test_day_of_month_alone() -> None:
    assert ticks("0 0 31 * *", "2026-01-31T00:00", 3) == [
        "Tue 2026-03-31T00:00",
        "Sun 2026-05-31T00:00",
        "Fri 2026-07-31T00:00",
    ]


def test_the_29th_of_february_waits_for_a_leap_year() -> None:
    assert ticks("0 0 29 2 *", "2026-01-01T00:00", 2) == [
        "Tue 2028-02-29T00:00",
        "Sun 2032-02-29T00:00",
    ]
    assert ticks("0 0 29 2 *", "2096-03-01T00:00", 1) == ["Fri 2104-02-29T00:00"]  # 2100 is not


@pytest.mark.parametrize(
    ("alias", "expression"),
    [
        ("@yearly", "0 0 1 1 *"),
        ("@annually", "0 0 1 1 *"),
        ("@monthly", "0 0 1 * *"),
        ("@weekly", "0 0 * * 0"),
        ("@daily", "0 0 * * *"),
        ("@midnight", "0 0 * * *"),
        ("@hourly", "0 * * * *"),
        ("@HOURLY", "0 * * * *"),
    ],
)
def test_aliases(alias: str, expression: str) -> None:
    start = at("2026-12-03T13:17")
    assert list(parse(alias).ticks(start, start + 400 * 86400)) == list(
        parse(expression).ticks(start, start + 400 * 86400)
    )


def test_ticks_are_the_half_open_interval() -> None:
    cron = parse("*/10 * * * *")
    start = at("2026-12-03T13:00")
    assert [show(t) for t in cron.ticks(start, start + 1800)] == [
        "Thu 2026-12-03T13:10",
        "Thu 2026-12-03T13:20",
        "Thu 2026-12-03T13:30",
    ]
    assert list(cron.ticks(start, start)) == []


@pytest.mark.parametrize(
    ("expression", "reason"),
    [
        ("", "has 0 fields"),
        ("* * * *", "has 4 fields"),
        ("* * * * * *", "has 6 fields"),
        ("60 * * * *", "minute: 60 is outside 0-59"),
        ("* 24 * * *", "hour: 24 is outside 0-23"),
        ("* * 0 * *", "day-of-month: 0 is outside 1-31"),
        ("* * * 13 *", "month: 13 is outside 1-12"),
        ("* * * * 8", "day-of-week: 8 is outside 0-7"),
        ("*/0 * * * *", "minute: step 0 is outside 1..60"),
        ("*/61 * * * *", "step 61"),
        ("*/x * * * *", "step 'x' is not a whole number"),
        ("5-1 * * * *", "runs backwards"),
        ("* * * * fri-mon", "runs backwards"),
        ("1,,2 * * * *", "empty list item"),
        ("mon * * * *", "minute: 'mon' is not a number"),
        ("* * * foo *", "not a number or a name"),
        ("-1 * * * *", "not a number"),
        ("+1 * * * *", "not a number"),
        ("\u0661 * * * *", "not a number"),  # an Arabic-Indic digit: isdecimal(), not ASCII
        ("@reboot", "is not one of"),
        ("@every 5m", "is not one of"),
        ("0 0 30 feb *", "never fires"),
        ("0 0 31 apr,jun *", "never fires"),
        ("x" * 300, "longer than"),
    ],
)
def test_bad_expressions_say_which_field_and_why(expression: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason.replace("(", r"\(").replace(".", r"\.")):
        parse(expression)


def test_a_rare_but_possible_day_is_accepted() -> None:
    # The 29th of February on a Sunday (the "*" day of week makes it an AND).
    cron = parse("0 0 29 feb */7")
    assert show(cron.next_after(at("2026-01-01T00:00"))) == "Sun 2032-02-29T00:00"


def test_extra_whitespace_is_fine() -> None:
    assert parse("  0\t12  *  * *  ").hours == {12}


def test_matches_is_true_on_ticks_only() -> None:
    cron = parse("0 12 * * mon")
    assert cron.matches(at("2026-12-07T12:00"))
    assert cron.matches(at("2026-12-07T12:00:59"))
    assert not cron.matches(at("2026-12-07T12:01"))
    assert not cron.matches(at("2026-12-08T12:00"))


# -- properties: next_after against a minute-by-minute reference --------------------------


def brute_next(cron: Cron, t: float, limit_minutes: int) -> float | None:
    """The first tick after ``t`` by looking at every minute (None past the limit)."""
    minute = (int(t // 60) + 1) * 60
    for _ in range(limit_minutes):
        moment = datetime.fromtimestamp(minute, UTC)
        if moment.minute in cron.minutes and moment.hour in cron.hours:
            dom = moment.day in cron.days
            dow = (calendar.weekday(moment.year, moment.month, moment.day) + 1) % 7 in (
                cron.weekdays
            )
            star = cron.days_star or cron.weekdays_star
            if moment.month in cron.months and ((dom and dow) if star else (dom or dow)):
                return float(minute)
        minute += 60
    return None


def item(low: int, high: int) -> st.SearchStrategy[str]:
    value = st.integers(low, high)
    return st.one_of(
        st.just("*"),
        value.map(str),
        st.tuples(value, value).map(lambda ab: f"{min(ab)}-{max(ab)}"),
        st.integers(1, high - low + 1).map(lambda s: f"*/{s}"),
        st.tuples(value, value, st.integers(1, 5)).map(
            lambda abs_: f"{min(abs_[:2])}-{max(abs_[:2])}/{abs_[2]}"
        ),
    )


def field(low: int, high: int) -> st.SearchStrategy[str]:
    return st.lists(item(low, high), min_size=1, max_size=3).map(",".join)


expressions = st.tuples(
    field(0, 59), field(0, 23), field(1, 31), st.just("*") | field(1, 12), field(0, 7)
).map(" ".join)
times = st.floats(at("1990-01-01T00:00"), at("2090-01-01T00:00"))


@settings(max_examples=150, deadline=None)
@given(expression=expressions, t=times)
def test_next_after_is_the_first_matching_minute(expression: str, t: float) -> None:
    try:
        cron = parse(expression)
    except ValueError as exc:
        assert "never fires" in str(exc)
        return
    found = cron.next_after(t)
    assert found > t
    assert found % 60 == 0
    assert cron.matches(found)
    gap_minutes = int((found - t) // 60) + 1
    expected = brute_next(cron, t, limit_minutes=min(20_000, gap_minutes))
    # A tick weeks away is checked as far as the reference looks: nothing before it.
    assert expected == (found if gap_minutes <= 20_000 else None)


@settings(max_examples=100, deadline=None)
@given(expression=expressions, t=times, span=st.floats(0, 3 * 86400))
def test_ticks_are_next_after_chained(expression: str, t: float, span: float) -> None:
    try:
        cron = parse(expression)
    except ValueError:
        return
    listed = list(cron.ticks(t, t + span))
    assert all(t < tick <= t + span for tick in listed)
    assert listed == sorted(set(listed))
    if listed:
        assert listed[0] == cron.next_after(t)
    else:
        assert cron.next_after(t) > t + span
