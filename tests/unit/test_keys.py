import base64
import os
from pathlib import Path

import pytest

from tierfaas.errors import ConfigError
from tierfaas.keys import derive, generate_key, load_key, parse_key, write_key_file


def test_generated_keys_parse_and_differ() -> None:
    a, b = generate_key(), generate_key()
    assert a != b and len(parse_key(a)) == 32


@pytest.mark.parametrize("bad", ["not base64!", base64.b64encode(b"short").decode(), b"x" * 31])
def test_bad_keys_are_refused(bad: str | bytes) -> None:
    with pytest.raises(ConfigError, match="cluster_key"):
        parse_key(bad)


def test_key_file_round_trip_and_permissions(tmp_path: Path) -> None:
    path = tmp_path / "cluster.key"
    write_key_file(path)
    assert (path.stat().st_mode & 0o777) == 0o600
    assert len(load_key(path) or b"") == 32
    with pytest.raises(FileExistsError):
        write_key_file(path)
    os.chmod(path, 0o644)
    with pytest.raises(ConfigError, match="readable by others"):
        load_key(path)
    with pytest.raises(ConfigError, match="cannot read"):
        load_key(tmp_path / "missing")


def test_env_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TIERFAAS_CLUSTER_KEY", raising=False)
    assert load_key(None) is None
    key = generate_key()
    monkeypatch.setenv("TIERFAAS_CLUSTER_KEY", key)
    assert load_key(None) == base64.b64decode(key)


def test_derived_keys_differ_by_purpose() -> None:
    key = b"k" * 32
    assert derive(key, "grpc") != derive(key, "forward") and len(derive(key, "grpc")) == 32
