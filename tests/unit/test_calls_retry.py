"""The retry decision of asynchronous calls: 5xx only, full jitter, bounded attempts."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tierfaas.calls.retry import RetryPolicy, retryable


@pytest.mark.parametrize("status", [500, 502, 503, 504, 599])
def test_server_and_node_failures_are_retryable(status: int) -> None:
    assert retryable(status)


@pytest.mark.parametrize("status", [200, 202, 204, 301, 400, 401, 404, 409, 413, 429, 499, 600])
def test_answers_that_repeat_the_same_on_retry_are_not(status: int) -> None:
    assert not retryable(status)


def test_the_default_is_three_attempts_one_then_two_seconds_at_most() -> None:
    policy = RetryPolicy()
    assert policy.max_attempts == 3
    assert policy.delay_s(1, 500, 0.999) == pytest.approx(0.999)
    assert policy.delay_s(2, 504, 0.5) == pytest.approx(1.0)
    assert policy.delay_s(3, 500, 0.5) is None  # the last attempt


def test_a_4xx_or_2xx_is_never_retried_even_with_attempts_left() -> None:
    policy = RetryPolicy(max_retries=20)
    assert policy.delay_s(1, 404, 0.5) is None
    assert policy.delay_s(1, 429, 0.5) is None
    assert policy.delay_s(1, 200, 0.5) is None


def test_no_retries_means_one_attempt() -> None:
    assert RetryPolicy(max_retries=0).delay_s(1, 503, 0.5) is None


def test_the_backoff_doubles_up_to_the_cap() -> None:
    policy = RetryPolicy(max_retries=20, base_s=1.0, cap_s=300.0)
    ceilings = [policy.ceiling_s(attempt) for attempt in range(1, 12)]
    assert ceilings == [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300]
    assert policy.ceiling_s(10_000) == 300.0  # no overflow however many attempts


def test_a_zero_draw_retries_at_once() -> None:
    assert RetryPolicy().delay_s(1, 500, 0.0) == 0.0


@pytest.mark.parametrize("draw", [-0.1, 1.0, 2.0, float("nan")])
def test_a_draw_outside_the_unit_interval_is_a_bug(draw: float) -> None:
    with pytest.raises(ValueError, match="draw"):
        RetryPolicy().delay_s(1, 500, draw)


def test_attempts_count_from_one() -> None:
    with pytest.raises(ValueError, match="from 1"):
        RetryPolicy().delay_s(0, 500, 0.5)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"max_retries": -1}, "max_retries"),
        ({"max_retries": 21}, "max_retries"),
        ({"base_s": 0.0}, "base_s"),
        ({"base_s": 10.0, "cap_s": 5.0}, "cap_s"),
    ],
)
def test_a_policy_out_of_bounds_is_refused(kwargs: dict[str, float], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        RetryPolicy(**kwargs)  # type: ignore[arg-type]


@given(
    max_retries=st.integers(0, 20),
    base=st.floats(0.001, 10.0),
    cap_extra=st.floats(0.0, 1000.0),
    attempt=st.integers(1, 40),
    status=st.integers(100, 599),
    draw=st.floats(0.0, 1.0, exclude_max=True),
)
def test_a_delay_is_within_the_jitter_window_and_only_for_retryable_attempts(
    max_retries: int, base: float, cap_extra: float, attempt: int, status: int, draw: float
) -> None:
    policy = RetryPolicy(max_retries=max_retries, base_s=base, cap_s=base + cap_extra)
    delay = policy.delay_s(attempt, status, draw)
    if status >= 500 and attempt <= max_retries:
        assert delay is not None
        assert 0.0 <= delay < policy.ceiling_s(attempt) or delay == 0.0
        assert policy.ceiling_s(attempt) <= policy.cap_s
    else:
        assert delay is None
