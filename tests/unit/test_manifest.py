import os
from pathlib import Path

import pytest

from tierfaas.errors import ManifestError
from tierfaas.manifest import load_release

GOOD = """
[release]
name = "r"
version = "1.0"

[functions.f]
handler = "mod:fn"
"""


def write(tmp_path: Path, manifest: str, files: dict[str, str] | None = None) -> Path:
    (tmp_path / "tierfaas.toml").write_text(manifest)
    for name, text in (files or {"mod.py": "def fn(b):\n    return b\n"}).items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return tmp_path


def test_loads_with_defaults(tmp_path: Path) -> None:
    release = load_release(write(tmp_path, GOOD))
    spec = release.functions["f"]
    assert (release.name, release.version) == ("r", "1.0")
    assert spec.handler is not None and spec.handler.path == (tmp_path / "mod.py").resolve()
    assert (spec.timeout_s, spec.memory_mb, spec.concurrency) == (30.0, 256, 1)
    assert (spec.max_instances, spec.keep_alive_s, spec.init, spec.env) == (4, 300.0, None, {})


def test_defaults_table_and_overrides(tmp_path: Path) -> None:
    manifest = GOOD.replace("[functions.f]", "[defaults]\ntimeout_s = 3\n\n[functions.f]")
    manifest += 'concurrency = 5\nenv = { A = "x", B = 2 }\ninit = "mod:fn"\n'
    spec = load_release(write(tmp_path, manifest)).functions["f"]
    assert (spec.timeout_s, spec.concurrency, spec.env) == (3.0, 5, {"A": "x", "B": "2"})
    assert spec.init is not None and spec.init.attr == "fn"


def test_min_instances_defaults_to_none_and_is_shown(tmp_path: Path) -> None:
    spec = load_release(write(tmp_path, GOOD)).functions["f"]
    assert spec.min_instances == 0 and spec.describe()["min_instances"] == 0
    manifest = GOOD.replace("[functions.f]", "[defaults]\nmin_instances = 2\n[functions.f]")
    spec = load_release(write(tmp_path, manifest)).functions["f"]
    assert spec.min_instances == 2 and spec.describe()["min_instances"] == 2


def test_the_demo_release_is_valid(demo: Path) -> None:
    release = load_release(demo)
    assert {"hello", "sha256", "slowinit", "sleep", "boom"} <= set(release.functions)


@pytest.mark.parametrize(
    ("manifest", "field", "reason"),
    [
        ("this is = not [toml", "(file)", "not valid TOML"),
        (GOOD.replace('name = "r"', 'name = "bad name"'), "release.name", "not a valid name"),
        (GOOD.replace('version = "1.0"\n', ""), "release.version", "missing"),
        (GOOD + "memroy_mb = 5\n", "functions.f.memroy_mb", "unknown key"),
        (GOOD + "timeout_s = -1\n", "functions.f.timeout_s", "outside"),
        (GOOD + "concurrency = 1.5\n", "functions.f.concurrency", "whole number"),
        (GOOD + 'memory_mb = "lots"\n', "functions.f.memory_mb", "expected a number"),
        (GOOD + "max_instances = true\n", "functions.f.max_instances", "expected a number"),
        (GOOD + "min_instances = -1\n", "functions.f.min_instances", "outside"),
        (GOOD + "min_instances = 5\n", "functions.f.min_instances", "more than max_instances"),
        (
            GOOD.replace("[functions.f]", "[defaults]\nmin_instances = 2\n[functions.f]")
            + "max_instances = 1\n",
            "defaults.min_instances",
            "more than max_instances",
        ),
        (GOOD.replace('"mod:fn"', '"mod.fn"'), "functions.f.handler", "not 'module:callable'"),
        (GOOD.replace('"mod:fn"', '"../etc:fn"'), "functions.f.handler", "not 'module:callable'"),
        (GOOD.replace('"mod:fn"', '"missing:fn"'), "functions.f.handler", "not found"),
        (GOOD.replace("[functions.f]", "[functions.'a/b']"), "functions.a/b", "function name"),
        (GOOD + 'env = { "1X" = "y" }\n', "functions.f.env.1X", "variable name"),
        ('[release]\nname = "r"\nversion = "1"\n', "functions", "missing"),
        ('[release]\nname = "r"\nversion = "1"\n[functions]\n', "functions", "no function"),
    ],
)
def test_errors_name_file_field_and_reason(
    tmp_path: Path, manifest: str, field: str, reason: str
) -> None:
    with pytest.raises(ManifestError) as info:
        load_release(write(tmp_path, manifest))
    assert info.value.field == field
    assert reason in info.value.reason
    assert str(tmp_path / "tierfaas.toml") in str(info.value)


def test_missing_manifest(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match=r"no tierfaas\.toml"):
        load_release(tmp_path)


def test_handler_symlinked_outside_the_release_is_refused(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "evil.py").write_text("def fn(b):\n    return b\n")
    release = tmp_path / "release"
    release.mkdir()
    (release / "tierfaas.toml").write_text(GOOD.replace("mod:fn", "evil:fn"))
    os.symlink(outside / "evil.py", release / "evil.py")
    with pytest.raises(ManifestError, match="outside the release directory"):
        load_release(release)


def test_package_handler(tmp_path: Path) -> None:
    files = {"pkg/__init__.py": "", "pkg/mod.py": "def fn(b):\n    return b\n"}
    release = load_release(write(tmp_path, GOOD.replace("mod:fn", "pkg.mod:fn"), files))
    handler = release.functions["f"].handler
    assert handler is not None and handler.path.name == "mod.py"
