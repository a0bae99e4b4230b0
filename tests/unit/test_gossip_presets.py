"""The gossip presets as kinship receives them: ``large`` is ``lan`` probing twice as often
with half the suspicion multiplier and room for 50,000 members, and ``max_members`` passes
through on any preset. Building a kinship ``Config`` opens no socket."""

from __future__ import annotations

import kinship
import pytest

from tierfaas.config import Address
from tierfaas.errors import ConfigError
from tierfaas.membership.kinship_adapter import (
    LARGE_MAX_MEMBERS,
    GossipSettings,
    KinshipMembership,
)

BIND = Address("127.0.0.1", 0)


def config(settings: GossipSettings) -> kinship.Config:
    return KinshipMembership(settings, name="n1")._config()


def test_large_is_lan_probing_twice_as_often_with_half_the_suspicion() -> None:
    lan = config(GossipSettings.lan(bind=BIND, key=None))
    large = config(GossipSettings.large(bind=BIND, key=None))
    assert (large.probe_interval, large.probe_timeout) == (0.5, 0.25)
    assert (lan.probe_interval, lan.probe_timeout) == (1.0, 0.5)
    assert (large.suspicion_mult, lan.suspicion_mult) == (2, 4)
    assert large.max_members == LARGE_MAX_MEMBERS > lan.max_members == 8192
    # A shorter pause may be a death: the run believes a peer's word sooner.
    assert GossipSettings.large(bind=BIND, key=None).pause_suspect_s == 2.0
    for same in ("suspicion_max_mult", "gossip_interval", "gossip_nodes", "push_pull_interval",
                 "retransmit_mult", "indirect_checks", "expected_confirmations"):  # fmt: skip
        assert getattr(large, same) == getattr(lan, same), same


def test_max_members_passes_through_on_every_preset() -> None:
    for make in (GossipSettings.lan, GossipSettings.large):
        assert config(make(bind=BIND, key=None, max_members=12_000)).max_members == 12_000
    assert config(GossipSettings.local(bind=BIND, max_members=300)).max_members == 300


def test_bad_presets_and_limits_are_refused_by_name() -> None:
    with pytest.raises(ConfigError, match="gossip_preset"):
        GossipSettings(bind=BIND, preset="huge")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="gossip_max_members"):
        GossipSettings.lan(bind=BIND, key=None, max_members=1)
