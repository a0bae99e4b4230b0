"""The sandbox's manifest keys: ``cpu``, ``pids`` and ``network`` per function (or in
``[defaults]``) and ``[release] preload`` (tierfaas.manifest, issue #16)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tierfaas.errors import ManifestError
from tierfaas.manifest import MAX_PRELOAD, load_release

HEAD = '[release]\nname = "r"\nversion = "1"\n'
FUNCTION = '[functions.f]\nhandler = "fns:f"\n'


def release(tmp_path: Path, manifest: str) -> Path:
    (tmp_path / "tierfaas.toml").write_text(manifest)
    (tmp_path / "fns.py").write_text("def f(body):\n    return body\n")
    return tmp_path


def refused(tmp_path: Path, manifest: str) -> ManifestError:
    with pytest.raises(ManifestError) as raised:
        load_release(release(tmp_path, manifest))
    assert str(raised.value).startswith(str(tmp_path.resolve() / "tierfaas.toml"))
    return raised.value


def test_the_defaults_are_no_cpu_quota_64_pids_and_the_host_network(tmp_path: Path) -> None:
    loaded = load_release(release(tmp_path, HEAD + FUNCTION))
    spec = loaded.functions["f"]
    assert (spec.cpu, spec.pids, spec.network) == (None, 64, "host")
    assert loaded.preload == ()
    shown = spec.describe()
    assert (shown["cpu"], shown["pids"], shown["network"]) == (None, 64, "host")


def test_a_function_sets_its_own_limits(tmp_path: Path) -> None:
    manifest = HEAD + FUNCTION + 'cpu = 0.25\npids = 8\nnetwork = "none"\n'
    spec = load_release(release(tmp_path, manifest)).functions["f"]
    assert (spec.cpu, spec.pids, spec.network) == (0.25, 8, "none")
    assert {k: spec.describe()[k] for k in ("cpu", "pids", "network")} == {
        "cpu": 0.25,
        "pids": 8,
        "network": "none",
    }


def test_whole_cores_are_a_float(tmp_path: Path) -> None:
    spec = load_release(release(tmp_path, HEAD + FUNCTION + "cpu = 2\n")).functions["f"]
    assert spec.cpu == 2.0 and isinstance(spec.cpu, float)


def test_defaults_apply_to_every_function_and_a_function_overrides_them(tmp_path: Path) -> None:
    manifest = (
        HEAD
        + '[defaults]\ncpu = 0.5\npids = 16\nnetwork = "none"\n'
        + FUNCTION
        + '[functions.g]\nhandler = "fns:f"\ncpu = 1.5\npids = 100\nnetwork = "host"\n'
    )
    functions = load_release(release(tmp_path, manifest)).functions
    assert (functions["f"].cpu, functions["f"].pids, functions["f"].network) == (0.5, 16, "none")
    assert (functions["g"].cpu, functions["g"].pids, functions["g"].network) == (1.5, 100, "host")


@pytest.mark.parametrize("cpu", ["0.01", "1024", "1"])
def test_the_cpu_range_bounds_are_accepted(tmp_path: Path, cpu: str) -> None:
    spec = load_release(release(tmp_path, HEAD + FUNCTION + f"cpu = {cpu}\n")).functions["f"]
    assert spec.cpu == float(cpu)


@pytest.mark.parametrize(
    ("line", "field", "reason"),
    [
        ("cpu = 0", "functions.f.cpu", "outside 0.01..1024"),
        ("cpu = 0.001", "functions.f.cpu", "outside 0.01..1024"),
        ("cpu = 1025", "functions.f.cpu", "outside 0.01..1024"),
        ("cpu = -1", "functions.f.cpu", "outside 0.01..1024"),
        ("cpu = nan", "functions.f.cpu", "outside 0.01..1024"),
        ("cpu = inf", "functions.f.cpu", "outside 0.01..1024"),
        ('cpu = "0.5"', "functions.f.cpu", "expected a number"),
        ("cpu = true", "functions.f.cpu", "expected a number"),
        ("pids = 0", "functions.f.pids", "outside 1..65536"),
        ("pids = 65537", "functions.f.pids", "outside 1..65536"),
        ("pids = 1.5", "functions.f.pids", "whole number"),
        ('pids = "64"', "functions.f.pids", "expected a number"),
        ('network = "bridge"', "functions.f.network", "'bridge' is not 'host' or 'none'"),
        ('network = "Host"', "functions.f.network", "is not 'host' or 'none'"),
        ('network = ""', "functions.f.network", "is not 'host' or 'none'"),
        ("network = false", "functions.f.network", "is not 'host' or 'none'"),
        ('network = ["none"]', "functions.f.network", "is not 'host' or 'none'"),
    ],
)
def test_bad_limits_are_refused_by_name(tmp_path: Path, line: str, field: str, reason: str) -> None:
    error = refused(tmp_path, HEAD + FUNCTION + line + "\n")
    assert error.field == field
    assert reason in error.reason


@pytest.mark.parametrize(
    ("line", "field"),
    [("cpu = 0", "defaults.cpu"), ('network = "bridge"', "defaults.network")],
)
def test_a_bad_default_names_the_defaults_table(tmp_path: Path, line: str, field: str) -> None:
    assert refused(tmp_path, HEAD + f"[defaults]\n{line}\n" + FUNCTION).field == field


def test_preload_lists_dotted_modules_in_order(tmp_path: Path) -> None:
    manifest = HEAD + 'preload = ["json", "xml.etree.ElementTree", "_private"]\n' + FUNCTION
    loaded = load_release(release(tmp_path, manifest))
    assert loaded.preload == ("json", "xml.etree.ElementTree", "_private")


def test_preload_is_not_imported_nor_looked_for(tmp_path: Path) -> None:
    """Loading a manifest never runs code: a module that does not exist, or one that would
    fail on import, passes here (the zygote imports them)."""
    (tmp_path / "explodes.py").write_text("raise SystemExit('imported')\n")
    manifest = HEAD + 'preload = ["explodes", "no_such_module_anywhere"]\n' + FUNCTION
    assert load_release(release(tmp_path, manifest)).preload == (
        "explodes",
        "no_such_module_anywhere",
    )


def test_preload_may_hold_the_most_modules_allowed(tmp_path: Path) -> None:
    names = ", ".join(f'"m{i}"' for i in range(MAX_PRELOAD))
    loaded = load_release(release(tmp_path, HEAD + f"preload = [{names}]\n" + FUNCTION))
    assert len(loaded.preload) == MAX_PRELOAD


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ('"json"', "expected a list of module names"),
        ("{ a = 1 }", "expected a list of module names"),
        ('["os.path", "../etc"]', "entry 2, '../etc', is not a dotted module name"),
        ('["json:loads"]', "is not a dotted module name"),
        ('["a..b"]', "is not a dotted module name"),
        ('["1abc"]', "is not a dotted module name"),
        ('[""]', "is not a dotted module name"),
        ('["a b"]', "is not a dotted module name"),
        ("[5]", "entry 1, 5, is not a dotted module name"),
        ('["' + "a" * 256 + '"]', "is not a dotted module name"),
        ('["json", "json"]', "'json' is listed twice"),
        ("[" + ", ".join(f'"m{i}"' for i in range(MAX_PRELOAD + 1)) + "]", "at most 64 modules"),
    ],
)
def test_bad_preloads_are_refused(tmp_path: Path, value: str, reason: str) -> None:
    error = refused(tmp_path, HEAD + f"preload = {value}\n" + FUNCTION)
    assert error.field == "release.preload"
    assert reason in error.reason
    assert len(str(error)) < 600  # a long entry is quoted briefly


@pytest.mark.parametrize("table", ["defaults", "functions.f"])
def test_preload_belongs_to_the_release_table_only(tmp_path: Path, table: str) -> None:
    if table == "defaults":
        manifest = HEAD + '[defaults]\npreload = ["json"]\n' + FUNCTION
    else:
        manifest = HEAD + FUNCTION + 'preload = ["json"]\n'
    error = refused(tmp_path, manifest)
    assert error.field == f"{table}.preload"
    assert "unknown key" in error.reason
