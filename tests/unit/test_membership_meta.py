"""The node metadata on the gossip wire: the cohort key, and the size budget."""

from __future__ import annotations

import pytest

from tierfaas.config import Address
from tierfaas.errors import ConfigError
from tierfaas.membership.meta import (
    COHORT_PENDING,
    KEY_COHORT,
    META_BUDGET,
    encode_meta,
    encoded_size,
    parse_meta,
)


def test_a_run_publishes_its_cohort_as_pending_until_it_settles_it() -> None:
    meta = encode_meta(version="1", http=None, rpc=None)
    assert meta[KEY_COHORT] == COHORT_PENDING
    parsed = parse_meta(meta)
    assert parsed.cohort is None and parsed.cohort_pending and not parsed.problems
    settled = parse_meta(encode_meta(version="1", http=None, rpc=None, cohort=7))
    assert (settled.cohort, settled.cohort_pending) == (7, False)


def test_a_run_of_a_release_before_cohorts_has_none_and_is_not_pending() -> None:
    parsed = parse_meta({"v": "1"})
    assert parsed.cohort is None and not parsed.cohort_pending


@pytest.mark.parametrize("text", ["-1", "01", "1e3", "x", "1" * 16, ""])
def test_a_forged_cohort_ranks_the_run_as_still_joining(text: str) -> None:
    parsed = parse_meta({KEY_COHORT: text, "http": "127.0.0.1:80"})
    assert parsed.cohort is None and parsed.cohort_pending
    assert parsed.problems and parsed.http is None


def test_a_cohort_a_peer_would_refuse_is_not_published() -> None:
    with pytest.raises(ConfigError):
        encode_meta(version="1", http=None, rpc=None, cohort=-1)
    with pytest.raises(ConfigError):
        encode_meta(version="1", http=None, rpc=None, cohort=10**15)


def test_the_largest_metadata_fits_the_budget() -> None:
    widest = Address.parse("[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:65535", "http")
    meta = encode_meta(
        version="v" * 64,
        http=widest,
        rpc=widest,
        since=10**16 - 1,
        generation=10**9 - 1,
        cohort=10**15 - 1,
    )
    assert encoded_size(meta) <= META_BUDGET < 512  # kinship refuses more than 512 bytes
    assert not parse_meta(meta).problems
