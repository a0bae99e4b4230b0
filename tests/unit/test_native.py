"""``tierfaas.native``: when the compiled call path is loaded in place of its sources, and how."""

from __future__ import annotations

import importlib.machinery
import json
import sys
from pathlib import Path
from typing import Any

import pytest

import tierfaas
from tierfaas import native

TAG = "cpython-311 3.11.7"
GROUP_MODULE = f"{native.GROUP}__mypyc"


def built(root: Path, digests: dict[str, str | None], tag: str = TAG) -> dict[str, Any]:
    """A build in ``root``: an empty file for each module, and its manifest."""
    files = {}
    for module in (*native.HOT_MODULES, GROUP_MODULE):
        relative = module.replace(".", "/") + ".so"
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        (root / relative).write_bytes(b"")
        files[module] = relative
    return {"format": native.FORMAT, "runtime": tag, "modules": dict(digests), "files": files}


def sources() -> dict[str, str | None]:
    return {module: f"digest of {module}" for module in native.HOT_MODULES}


def test_a_build_of_exactly_these_sources_is_loaded(tmp_path: Path) -> None:
    state = native.decide(None, built(tmp_path, sources()), sources(), TAG, tmp_path)
    assert state.active
    assert set(state.files) == {*native.HOT_MODULES, GROUP_MODULE}
    assert state.files["tierfaas.runtime.pool"] == tmp_path / "tierfaas/runtime/pool.so"
    assert state.describe() == f"compiled (mypyc, {len(native.HOT_MODULES)} modules)"


@pytest.mark.parametrize("setting", ["0", "off", " OFF ", "false", "no"])
def test_the_setting_turns_it_off(tmp_path: Path, setting: str) -> None:
    state = native.decide(setting, built(tmp_path, sources()), sources(), TAG, tmp_path)
    assert not state.active
    assert state.describe() == f"interpreted (TIERFAAS_NATIVE={setting})"


@pytest.mark.parametrize("setting", [None, "1", "on", ""])
def test_other_settings_leave_it_on(tmp_path: Path, setting: str | None) -> None:
    assert native.decide(setting, built(tmp_path, sources()), sources(), TAG, tmp_path).active


def test_no_build_is_interpreted_and_says_how_to_build(tmp_path: Path) -> None:
    state = native.decide(None, None, sources(), TAG, tmp_path)
    assert not state.active
    assert "python -m tierfaas.native.build" in state.reason


def test_a_source_changed_since_the_build_loads_none_of_it(tmp_path: Path) -> None:
    manifest = built(tmp_path, sources())
    now = {**sources(), "tierfaas.runtime.meter": "another digest"}
    state = native.decide(None, manifest, now, TAG, tmp_path)
    assert not state.active
    assert state.files == {}  # not the others either: they call each other directly
    assert state.reason == "tierfaas.runtime.meter changed since the build: rebuild it"


def test_a_build_with_a_module_no_longer_compiled_loads_none_of_it(tmp_path: Path) -> None:
    manifest = built(tmp_path, {**sources(), "tierfaas.runtime.budget": "its digest"})
    state = native.decide(None, manifest, sources(), TAG, tmp_path)
    assert not state.active
    assert state.reason == "the build has tierfaas.runtime.budget, no longer compiled: rebuild it"


def test_a_source_gone_loads_none_of_it(tmp_path: Path) -> None:
    now = {**sources(), "tierfaas.runtime.pool": None}
    assert not native.decide(None, built(tmp_path, sources()), now, TAG, tmp_path).active


def test_a_build_for_another_python_is_not_loaded(tmp_path: Path) -> None:
    manifest = built(tmp_path, sources(), tag="cpython-312 3.12.1")
    state = native.decide(None, manifest, sources(), TAG, tmp_path)
    assert not state.active
    assert "another Python" in state.reason
    manifest = {**built(tmp_path, sources()), "format": native.FORMAT + 1}
    assert not native.decide(None, manifest, sources(), TAG, tmp_path).active


def test_a_build_missing_a_module_or_its_file_is_not_loaded(tmp_path: Path) -> None:
    manifest = built(tmp_path, sources())
    del manifest["modules"]["tierfaas.http.app"]
    state = native.decide(None, manifest, sources(), TAG, tmp_path)
    assert state.reason == "the build has no tierfaas.http.app: rebuild it"

    manifest = built(tmp_path, sources())
    del manifest["files"][GROUP_MODULE]
    state = native.decide(None, manifest, sources(), TAG, tmp_path)
    assert state.reason == "the build has no shared library: rebuild it"

    manifest = built(tmp_path, sources())
    (tmp_path / "tierfaas/runtime/exec_http.so").unlink()
    state = native.decide(None, manifest, sources(), TAG, tmp_path)
    assert not state.active
    assert "tierfaas.runtime.exec_http" in state.reason


def test_the_finder_finds_only_the_built_modules(tmp_path: Path) -> None:
    finder = native.NativeFinder({"tierfaas.runtime.pool": tmp_path / "pool.so"})
    spec = finder.find_spec("tierfaas.runtime.pool", None)
    assert spec is not None
    assert spec.origin == str(tmp_path / "pool.so")
    assert isinstance(spec.loader, importlib.machinery.ExtensionFileLoader)
    assert finder.find_spec("tierfaas.runtime.budget", None) is None


def test_activate_hooks_the_imports_when_the_build_matches(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "meta_path", [f for f in sys.meta_path if not isinstance(
        f, native.NativeFinder)])  # fmt: skip
    monkeypatch.setattr(native, "STATE", native.STATE)
    monkeypatch.delenv(native.ENV, raising=False)
    package = Path(tierfaas.__file__).resolve().parent
    digests: dict[str, str | None] = {
        m: native.digest(native.source_path(package, m)) for m in native.HOT_MODULES
    }
    manifest = built(tmp_path, digests, tag=native.runtime_tag())
    (tmp_path / native.MANIFEST).write_text(json.dumps(manifest))

    state = native.activate(package, root=tmp_path)
    assert state.active and native.STATE is state
    finders = [f for f in sys.meta_path if isinstance(f, native.NativeFinder)]
    assert len(finders) == 1 and sys.meta_path[0] is finders[0]
    assert finders[0].files["tierfaas.runtime.pool"] == tmp_path / "tierfaas/runtime/pool.so"

    monkeypatch.setenv(native.ENV, "0")
    assert not native.activate(package, root=tmp_path).active


def test_activate_without_a_build_or_with_a_broken_manifest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(native.ENV, raising=False)
    package = Path(tierfaas.__file__).resolve().parent
    before = list(sys.meta_path)
    saved = native.STATE
    try:
        state = native.activate(package, root=tmp_path)
        assert not state.active and "not built" in state.reason
        for garbage in ("{not json", "[1, 2]", '{"files": {"m": 3}}', '{"files": [1]}'):
            (tmp_path / native.MANIFEST).write_text(garbage)
            state = native.activate(package, root=tmp_path)
            assert not state.active and state.reason.startswith("unreadable manifest"), garbage
    finally:
        native.STATE = saved
    assert sys.meta_path == before


def test_every_hot_module_has_a_source() -> None:
    package = Path(tierfaas.__file__).resolve().parent
    for module in native.HOT_MODULES:
        assert native.source_path(package, module).is_file(), module
