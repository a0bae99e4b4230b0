"""The local provider on networks of its own (``LocalSettings.hosts``): addresses handed out
in order, never twice, and a clear error once they are used up."""

from __future__ import annotations

from pathlib import Path

import pytest

from tierfaas.deploy.local import LocalProvider, LocalSettings
from tierfaas.deploy.provider import ProviderError


def test_listed_hosts_are_handed_out_in_order_once(tmp_path: Path) -> None:
    settings = LocalSettings(
        registry="r", key_file="k", cluster_port=7946, first_host="10.0.0.11", seeds=[],
        hosts=["10.0.0.11", "10.0.0.12"], launch_prefix=["wrap", "{host}"], http_port=8080,
    )  # fmt: skip
    provider = LocalProvider.create(tmp_path / "p", settings)
    assert provider.settings() == settings  # stored and read back
    assert provider._next_host(settings) == "10.0.0.11"
    assert provider._next_host(settings) == "10.0.0.12"
    with pytest.raises(ProviderError, match="all 2 addresses of hosts are used"):
        provider._next_host(settings)


def test_without_hosts_addresses_count_up_on_loopback(tmp_path: Path) -> None:
    settings = LocalSettings(
        registry="r", key_file="k", cluster_port=7946, first_host="127.0.9.254", seeds=[]
    )
    provider = LocalProvider.create(tmp_path / "p", settings)
    assert [provider._next_host(settings) for _ in range(2)] == ["127.0.9.254", "127.0.10.1"]
