"""The directory registry: versions are immutable, invalid releases are refused."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tierfaas.deploy.registry import DirectoryRegistry, FailedVersions, RegistryError, digest_of

DEMO = Path(__file__).parents[2] / "examples" / "demo"


def release(tmp_path: Path, version: str, greeting: str = "Hello") -> Path:
    folder = tmp_path / f"src-{version}-{greeting}"
    shutil.rmtree(folder, ignore_errors=True)
    shutil.copytree(DEMO, folder)
    toml = folder / "tierfaas.toml"
    toml.write_text(toml.read_text().replace('version = "1.0.0"', f'version = "{version}"'))
    handlers = folder / "handlers.py"
    handlers.write_text(handlers.read_text().replace('f"Hello,', f'f"{greeting},'))
    return folder


def test_publish_stores_a_version_and_marks_it_desired(tmp_path: Path) -> None:
    registry = DirectoryRegistry(tmp_path / "reg")
    info, new = registry.publish(release(tmp_path, "1.0.0"))
    assert new and info.version == "1.0.0" and info.name == "demo"
    assert registry.desired() == "1.0.0"
    assert registry.load("1.0.0").version == "1.0.0"
    assert (registry.release_dir("1.0.0") / "handlers.py").exists()


def test_the_same_content_again_is_accepted_other_content_is_refused(tmp_path: Path) -> None:
    registry = DirectoryRegistry(tmp_path / "reg")
    registry.publish(release(tmp_path, "1.0.0"))
    _, new = registry.publish(release(tmp_path, "1.0.0"), make_desired=False)
    assert not new
    with pytest.raises(RegistryError, match="immutable"):
        registry.publish(release(tmp_path, "1.0.0", greeting="Howdy"))


def test_caches_do_not_change_the_digest(tmp_path: Path) -> None:
    folder = release(tmp_path, "1.0.0")
    before = digest_of(folder)
    (folder / "__pycache__").mkdir()
    (folder / "__pycache__" / "handlers.cpython-311.pyc").write_bytes(b"\0")
    assert digest_of(folder) == before


def test_an_invalid_release_is_refused_and_nothing_is_stored(tmp_path: Path) -> None:
    folder = release(tmp_path, "1.0.0")
    (folder / "tierfaas.toml").write_text("[release]\nname = 'x'\n")
    registry = DirectoryRegistry(tmp_path / "reg")
    with pytest.raises(RegistryError, match="not published"):
        registry.publish(folder)
    assert registry.desired() is None


def test_unknown_versions_and_missing_registries_say_what_to_do(tmp_path: Path) -> None:
    registry = DirectoryRegistry(tmp_path / "nowhere")
    with pytest.raises(RegistryError, match="tierfaas publish"):
        registry.release_dir("1.0.0")
    registry.publish(release(tmp_path, "1.0.0"))
    with pytest.raises(RegistryError, match="not in the registry"):
        registry.set_desired("9.9.9")


def test_status_and_failed_versions_round_trip(tmp_path: Path) -> None:
    registry = DirectoryRegistry(tmp_path / "reg")
    assert registry.read_status() is None
    registry.write_status({"phase": "idle"})
    assert registry.read_status() == {"phase": "idle"}
    failed = FailedVersions(registry.root)
    failed.mark("2.0.0", "canary not ready")
    assert failed.all() == {"2.0.0": "canary not ready"}
