"""``tierfaas node``'s flags come from NodeConfig: every setting has its flag, with the same
default, and each flag sets its setting. Parsed with click, nothing runs."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest
import typer.main

from tierfaas.cli import app, node_config, node_flags
from tierfaas.config import Address, NodeConfig
from tierfaas.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _clean(monkeypatch: pytest.MonkeyPatch) -> None:
    """No TIERFAAS_* variable of the test's environment leaks into the flags; the default
    release (examples/demo) is relative to the repository."""
    for flag in node_flags():
        if flag.envvar:
            monkeypatch.delenv(flag.envvar, raising=False)
    monkeypatch.delenv("TIERFAAS_RELEASE_VERSION", raising=False)
    monkeypatch.chdir(REPO)


def parse(*argv: str) -> dict[str, Any]:
    """``tierfaas node ARGV``'s parameter values, as the command receives them."""
    node = typer.main.get_command(app).commands["node"]  # type: ignore[attr-defined]
    with node.make_context("node", list(argv)) as ctx:
        return dict(ctx.params)


def no_dns(seeds: Iterable[str]) -> tuple[str, ...]:
    return tuple(seeds)


def config(*argv: str) -> NodeConfig:
    values = parse(*argv)
    values.pop("release_version")
    return node_config(values, resolve=no_dns)


def test_no_flags_give_every_default() -> None:
    assert config() == NodeConfig()


def test_every_setting_has_one_flag_with_its_default() -> None:
    flags = {flag.setting: flag for flag in node_flags()}
    assert list(flags) == [f.name for f in dataclasses.fields(NodeConfig)]
    params = parse()
    for f in dataclasses.fields(NodeConfig):
        shown = params[flags[f.name].param]
        value = flags[f.name].to_setting(shown)
        assert value == f.default, f.name


def sample(tmp: Path) -> dict[str, tuple[list[str], Any]]:
    """For every setting: the flags that set it to a value other than its default, and that
    value. Together they make a valid config."""
    (tmp / "release").mkdir()
    return {
        "release_dir": (["--release", str(tmp / "release")], tmp / "release"),
        "http": (["--http", "127.0.0.9:9000"], Address("127.0.0.9", 9000)),
        "http_unix": (["--http-unix", str(tmp / "n.sock")], tmp / "n.sock"),
        "name": (["--name", "n1"], "n1"),
        "gossip": (["--gossip", "127.0.0.9:7000"], Address("127.0.0.9", 7000)),
        "rpc": (["--rpc", "127.0.0.9:7100"], Address("127.0.0.9", 7100)),
        "join": (
            ["--join", "127.0.0.9:7000, 127.0.0.10:7000"],
            ("127.0.0.9:7000", "127.0.0.10:7000"),
        ),
        "gossip_preset": (["--gossip-preset", "local"], "local"),
        "gossip_max_members": (["--gossip-max-members", "20000"], 20000),
        "replicas": (["--replicas", "3"], "3"),
        "query_lane": (["--query-lane", "127.0.0.9:7200"], Address("127.0.0.9", 7200)),
        "batch_window_s": (["--batch-window-s", "0.25"], 0.25),
        "hop_limit": (["--hop-limit", "0"], 0),
        "cold_starts": (["--cold-starts", "home"], "home"),
        "hot_forwards_per_s": (["--hot-forwards-per-s", "0"], 0.0),
        "cluster_cache": (["--no-cluster-cache"], False),
        "route_cache_size": (["--route-cache-size", "10"], 10),
        "route_cache_ttl_s": (["--route-cache-ttl-s", "1.5"], 1.5),
        "key_file": (["--key-file", str(tmp / "key")], tmp / "key"),
        "max_body_bytes": (["--max-body-bytes", "1000"], 1000),
        "max_response_bytes": (["--max-response-bytes", "2000"], 2000),
        "queue_max": (["--queue-max", "0"], 0),
        "queue_timeout_s": (["--queue-timeout-s", "0.5"], 0.5),
        "retry_after_s": (["--retry-after-s", "3"], 3),
        "max_header_bytes": (["--max-header-bytes", "4096"], 4096),
        "header_timeout_s": (["--header-timeout-s", "3"], 3.0),
        "body_timeout_s": (["--body-timeout-s", "4"], 4.0),
        "send_timeout_s": (["--send-timeout-s", "5"], 5.0),
        "admin_token_file": (["--admin-token-file", str(tmp / "token")], tmp / "token"),
        "scale_out_wait_s": (["--scale-out-wait-s", "0"], 0.0),
        "memory_budget_mb": (["--memory-budget-mb", "512"], 512),
        "memory_reserve_mb": (["--memory-reserve-mb", "300"], 300),
        "memory_accounting": (["--memory-accounting", "declared"], "declared"),
        "eviction": (["--eviction", "lru"], "lru"),
        "memory_pressure_pct": (["--memory-pressure-pct", "0"], 0.0),
        "memory_sample_s": (["--memory-sample-s", "0.5"], 0.5),
        "reap_interval_s": (["--reap-interval-s", "2"], 2.0),
        "keep_alive_policy": (["--keep-alive-policy", "fixed"], "fixed"),
        "cold_start_worth_mb_s": (["--cold-start-worth-mb-s", "1000"], 1000.0),
        "start_timeout_s": (["--start-timeout-s", "9"], 9.0),
        "isolation": (["--isolation", "process"], "process"),
        "sandbox_uid_base": (["--sandbox-uid-base", "300000"], 300000),
        "sandbox_uid_count": (["--sandbox-uid-count", "1000"], 1000),
        "sandbox_tmp_mb": (["--sandbox-tmp-mb", "16"], 16),
        "cgroup_root": (["--cgroup-root", str(tmp / "cgroup")], tmp / "cgroup"),
        "output_bytes_per_s": (["--output-bytes-per-s", "1000"], 1000),
        "output_burst_bytes": (["--output-burst-bytes", "5000"], 5000),
        "logs_lines": (["--logs-lines", "50"], 50),
        "logs_file_bytes": (["--logs-file-bytes", "100000"], 100000),
        "logs_files": (["--logs-files", "0"], 0),
        "otlp_endpoint": (
            ["--otlp-endpoint", "http://127.0.0.1:4318"],
            "http://127.0.0.1:4318",
        ),
        "trace_sample": (["--trace-sample", "0.25"], 0.25),
        "data_dir": (["--data-dir", str(tmp / "data")], tmp / "data"),
        "async_queue_max": (["--async-queue-max", "50"], 50),
        "async_share": (["--async-share", "0.25"], 0.25),
        "calls_keep_s": (["--calls-keep-s", "60"], 60.0),
        "calls_keep_max": (["--calls-keep-max", "70"], 70),
        "idempotency_window_s": (["--idempotency-window-s", "80"], 80.0),
        "retry_base_s": (["--retry-base-s", "0.5"], 0.5),
        "retry_cap_s": (["--retry-cap-s", "9"], 9.0),
        "callback_allow": (
            ["--callback-allow", "10.0.0.0/8,*.example.com"],
            "10.0.0.0/8,*.example.com",
        ),
        "callback_retries": (["--callback-retries", "0"], 0),
        "callback_timeout_s": (["--callback-timeout-s", "1.5"], 1.5),
        "callback_key_file": (["--callback-key-file", str(tmp / "cb.key")], tmp / "cb.key"),
        "drain_timeout_s": (["--drain-timeout-s", "0"], 0.0),
        "drain_quiet_s": (["--drain-quiet-s", "0.1"], 0.1),
        "registry": (["--registry", str(tmp / "registry")], tmp / "registry"),
        "generation": (["--generation", "4"], 4),
        "provider": (["--provider", "local"], "local"),
        "provider_state": (["--provider-state", str(tmp / "state")], tmp / "state"),
        "registry_poll_s": (["--registry-poll-s", "0.5"], 0.5),
        "secrets_poll_s": (["--secrets-poll-s", "0.25"], 0.25),
        "canaries": (["--canaries", "1"], 1),
        "canary_timeout_s": (["--canary-timeout-s", "7"], 7.0),
        "build_timeout_s": (["--build-timeout-s", "30"], 30.0),
        "debug": (["--debug"], True),
        "log_level": (["--log-level", "debug"], "debug"),
    }


def test_every_setting_is_set_by_its_flag(tmp_path: Path) -> None:
    table = sample(tmp_path)
    assert sorted(table) == sorted(f.name for f in dataclasses.fields(NodeConfig))
    defaults = NodeConfig()
    argv = [arg for flags, _ in table.values() for arg in flags]
    got = config(*argv)
    for name, (_, expected) in table.items():
        assert expected != getattr(defaults, name), f"{name}: the sample is the default"
        assert getattr(got, name) == expected, name


def test_environment_variables_set_the_same_settings(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("TIERFAAS_HTTP", "127.0.0.9:9001")
    monkeypatch.setenv("TIERFAAS_GOSSIP", "127.0.0.9:7001")
    monkeypatch.setenv("TIERFAAS_JOIN", "127.0.0.9:7001")
    monkeypatch.setenv("TIERFAAS_KEY_FILE", str(tmp_path / "key"))
    got = config("--http", "127.0.0.9:9002")  # a flag wins over its variable
    assert got.http == Address("127.0.0.9", 9002)
    assert got.gossip == Address("127.0.0.9", 7001)
    assert got.join == ("127.0.0.9:7001",)
    assert got.key_file == tmp_path / "key"
    assert got.gossip_preset == "lan"  # no variable for this one: the default


def test_the_isolation_is_accepted_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """What the node's refusal to start tells a host that cannot sandbox to set."""
    assert config().isolation == "sandbox"
    monkeypatch.setenv("TIERFAAS_ISOLATION", "process")
    assert config().isolation == "process"
    assert config("--isolation", "sandbox").isolation == "sandbox"


def test_join_seeds_are_resolved_before_the_config_checks_them() -> None:
    def lookup(seeds: Iterable[str]) -> tuple[str, ...]:
        assert list(seeds) == ["gossip.example:7000"]
        return ("10.0.0.1:7000", "10.0.0.2:7000")

    values = parse("--gossip", "127.0.0.9:7000", "--join", "gossip.example:7000")
    values.pop("release_version")
    got = node_config(values, resolve=lookup)
    assert got.join == ("10.0.0.1:7000", "10.0.0.2:7000")


@pytest.mark.parametrize(
    ("argv", "setting"),
    [
        (["--http", "nowhere"], "http"),
        (["--hop-limit", "2"], "hop_limit"),
        (["--cold-starts", "anywhere"], "cold_starts"),
        (["--isolation", "container"], "isolation"),
        (["--sandbox-uid-count", "1"], "sandbox_uid_count"),
        (["--join", "127.0.0.9:7000"], "join"),  # without --gossip
        (["--provider", "local", "--registry", "/r"], "provider_state"),
    ],
)
def test_bad_values_fail_naming_the_setting(argv: list[str], setting: str) -> None:
    with pytest.raises(ConfigError) as caught:
        config(*argv)
    assert caught.value.field == setting


def test_the_settings_read_from_the_environment() -> None:
    assert {flag.envvar for flag in node_flags() if flag.envvar} == {
        "TIERFAAS_RELEASE",
        "TIERFAAS_HTTP",
        "TIERFAAS_HTTP_UNIX",
        "TIERFAAS_NAME",
        "TIERFAAS_GOSSIP",
        "TIERFAAS_RPC",
        "TIERFAAS_JOIN",
        "TIERFAAS_KEY_FILE",
        "TIERFAAS_REGISTRY",
        "TIERFAAS_PROVIDER",
        "TIERFAAS_ADMIN_TOKEN_FILE",
        "TIERFAAS_ISOLATION",
    }
