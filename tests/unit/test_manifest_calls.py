"""The async-call keys of a function: ``max_retries`` and ``schedule`` (issue #20)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tierfaas.errors import ManifestError
from tierfaas.manifest import load_release

HEAD = '[release]\nname = "r"\nversion = "1"\n'
FUNCTION = '[functions.f]\nhandler = "fns:f"\n'


def release(tmp_path: Path, manifest: str) -> Path:
    (tmp_path / "tierfaas.toml").write_text(manifest)
    (tmp_path / "fns.py").write_text("def f(body):\n    return body\n")
    return tmp_path


def refused(tmp_path: Path, manifest: str) -> ManifestError:
    with pytest.raises(ManifestError) as raised:
        load_release(release(tmp_path, manifest))
    return raised.value


def test_two_retries_and_no_schedule_by_default(tmp_path: Path) -> None:
    spec = load_release(release(tmp_path, HEAD + FUNCTION)).functions["f"]
    assert (spec.max_retries, spec.schedule) == (2, None)
    shown = spec.describe()
    assert (shown["max_retries"], shown["schedule"]) == (2, None)


def test_a_function_sets_both(tmp_path: Path) -> None:
    manifest = HEAD + FUNCTION + 'max_retries = 0\nschedule = "*/5 * * * *"\n'
    spec = load_release(release(tmp_path, manifest)).functions["f"]
    assert (spec.max_retries, spec.schedule) == (0, "*/5 * * * *")
    assert spec.describe()["schedule"] == "*/5 * * * *"


def test_an_alias_is_kept_as_written(tmp_path: Path) -> None:
    spec = load_release(release(tmp_path, HEAD + FUNCTION + 'schedule = "@hourly"\n'))
    assert spec.functions["f"].schedule == "@hourly"


def test_an_exec_function_may_have_a_schedule(tmp_path: Path) -> None:
    manifest = (
        HEAD
        + '[functions.x]\nruntime = "exec"\ncommand = ["./x"]\nprotocol = "stdio"\n'
        + 'schedule = "0 3 * * mon-fri"\nmax_retries = 5\n'
    )
    spec = load_release(release(tmp_path, manifest)).functions["x"]
    assert (spec.schedule, spec.max_retries) == ("0 3 * * mon-fri", 5)


def test_defaults_give_every_function_its_retries(tmp_path: Path) -> None:
    manifest = HEAD + "[defaults]\nmax_retries = 7\n" + FUNCTION
    manifest += '[functions.g]\nhandler = "fns:f"\nmax_retries = 1\n'
    functions = load_release(release(tmp_path, manifest)).functions
    assert (functions["f"].max_retries, functions["g"].max_retries) == (7, 1)


@pytest.mark.parametrize(
    ("extra", "field", "reason"),
    [
        ("max_retries = 21\n", "functions.f.max_retries", "outside 0..20"),
        ("max_retries = -1\n", "functions.f.max_retries", "outside 0..20"),
        ("max_retries = 1.5\n", "functions.f.max_retries", "whole number"),
        ('max_retries = "3"\n', "functions.f.max_retries", "expected a number"),
        ('schedule = "*/5 * * *"\n', "functions.f.schedule", "has 4 fields"),
        ('schedule = "61 * * * *"\n', "functions.f.schedule", "minute: 61 is outside 0-59"),
        ('schedule = "0 0 30 feb *"\n', "functions.f.schedule", "never fires"),
        ('schedule = "@reboot"\n', "functions.f.schedule", "not one of"),
        ("schedule = 5\n", "functions.f.schedule", "non-empty string"),
        ('schedule = ""\n', "functions.f.schedule", "non-empty string"),
    ],
)
def test_bad_values_name_the_field(tmp_path: Path, extra: str, field: str, reason: str) -> None:
    error = refused(tmp_path, HEAD + FUNCTION + extra)
    assert error.field == field
    assert reason in error.reason


def test_a_schedule_is_per_function_not_a_default(tmp_path: Path) -> None:
    error = refused(tmp_path, HEAD + '[defaults]\nschedule = "* * * * *"\n' + FUNCTION)
    assert error.field == "defaults.schedule"
    assert "unknown key" in error.reason
