from pathlib import Path
from typing import Any

import pytest

from tierfaas.config import Address, NodeConfig
from tierfaas.errors import ConfigError

DEMO = Path(__file__).parent.parent.parent / "examples" / "demo"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("max_body_bytes", 0),
        ("max_body_bytes", -5),
        ("queue_timeout_s", float("nan")),
        ("memory_budget_mb", 0),
        ("memory_budget_mb", 1.5),
        ("memory_reserve_mb", -1),
        ("memory_accounting", "guessed"),
        ("eviction", "random"),
        ("memory_pressure_pct", -1.0),
        ("memory_pressure_pct", 101.0),
        ("memory_sample_s", 0),
        ("queue_max", -1),
        ("drain_timeout_s", -1.0),
        ("log_level", "loud"),
        ("keep_alive_policy", "lru"),
        ("name", "bad name!"),
        ("release_dir", Path("/nonexistent/release")),
        ("isolation", "container"),
        ("isolation", ""),
        ("sandbox_uid_base", 0),
        ("sandbox_uid_base", -1),
        ("sandbox_uid_base", 1.5),
        ("sandbox_uid_base", True),
        ("sandbox_uid_base", 2**32 - 1),
        ("sandbox_uid_count", 1),
        ("sandbox_uid_count", 0),
        ("sandbox_uid_count", 2**32),
        ("sandbox_tmp_mb", 0),
        ("sandbox_tmp_mb", 65537),
        ("sandbox_tmp_mb", 8.0),
        ("cgroup_root", Path("sys/fs/cgroup")),
        ("output_bytes_per_s", 0),
        ("output_bytes_per_s", -1),
        ("output_burst_bytes", 0),
        ("output_burst_bytes", "big"),
    ],
)
def test_bad_setting_names_the_field(field: str, value: object) -> None:
    with pytest.raises(ConfigError) as info:
        NodeConfig(**{"release_dir": DEMO, field: value})  # type: ignore[arg-type]
    assert info.value.field == field
    assert field in str(info.value)


def test_defaults_are_valid() -> None:
    config = NodeConfig(release_dir=DEMO)
    assert config.max_body_bytes == 6 * 1024 * 1024
    assert str(config.http) == "127.0.0.1:8080"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:80", ("127.0.0.1", 80)),
        ("localhost:9", ("127.0.0.1", 9)),
        ("[::1]:7", ("::1", 7)),
    ],
)
def test_address_parse(text: str, expected: tuple[str, int]) -> None:
    address = Address.parse(text)
    assert (address.host, address.port) == expected


@pytest.mark.parametrize("text", ["nohost", ":80", "1.2.3.4:99999", "example.com:80", "1.2.3.4:x"])
def test_address_parse_rejects(text: str) -> None:
    with pytest.raises(ConfigError):
        Address.parse(text, "http")


def test_describe_lists_every_setting_with_doc() -> None:
    rows = NodeConfig.describe()
    assert {row[0] for row in rows} >= {"max_body_bytes", "drain_timeout_s", "memory_budget_mb"}
    assert all(row[3] for row in rows)


def test_the_isolation_defaults() -> None:
    config = NodeConfig(release_dir=DEMO)
    assert config.isolation == "sandbox"
    assert (config.sandbox_uid_base, config.sandbox_uid_count) == (200000, 65536)
    assert config.sandbox_tmp_mb == 64
    assert config.cgroup_root == Path("/sys/fs/cgroup")
    assert (config.output_bytes_per_s, config.output_burst_bytes) == (65536, 262144)


def test_the_uid_range_must_end_at_the_largest_id() -> None:
    last = 2**32 - 2  # 2**32 - 1 is (uid_t) -1
    fits = NodeConfig(release_dir=DEMO, sandbox_uid_base=last - 1, sandbox_uid_count=2)
    assert fits.sandbox_uid_base + fits.sandbox_uid_count - 1 == last
    with pytest.raises(ConfigError) as info:
        NodeConfig(release_dir=DEMO, sandbox_uid_base=last, sandbox_uid_count=2)
    assert info.value.field == "sandbox_uid_count"
    assert "runs past the largest id" in info.value.reason


def test_process_isolation_is_a_valid_choice() -> None:
    assert NodeConfig(release_dir=DEMO, isolation="process").isolation == "process"


def test_async_call_settings_are_checked(tmp_path: Path) -> None:
    release = tmp_path / "r"
    release.mkdir()
    cases: list[tuple[str, Any]] = [
        ("async_share", 0.0), ("async_share", 1.5), ("async_queue_max", 0),
        ("calls_keep_max", 0), ("calls_keep_s", 0.0), ("retry_base_s", -1.0),
        ("retry_cap_s", 0.5), ("data_dir", tmp_path / "r" / "file"),
    ]  # fmt: skip
    for field, value in cases:
        (tmp_path / "r" / "file").write_text("")
        with pytest.raises(ConfigError) as caught:
            NodeConfig(release_dir=release, **{field: value})
        assert caught.value.field == field
    config = NodeConfig(release_dir=release, name="n1")
    assert config.state_dir.parts[-2:] == ("tierfaas", "n1")
    assert NodeConfig(release_dir=release, data_dir=tmp_path / "d").state_dir == tmp_path / "d"
