"""Nasty manifests: every one is a ManifestError naming the file, the field and the reason,
never a traceback, a hang or a read without end (tierfaas.manifest, docs/security.md)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tierfaas.errors import ManifestError
from tierfaas.manifest import MAX_MANIFEST_BYTES, load_release

HEAD = '[release]\nname = "r"\nversion = "1"\n'
KEY = "sha256:" + "ab" * 32


def release(tmp_path: Path, manifest: str | bytes, files: dict[str, str] | None = None) -> Path:
    root = tmp_path / "rel"
    root.mkdir(exist_ok=True)
    data = manifest.encode() if isinstance(manifest, str) else manifest
    (root / "tierfaas.toml").write_bytes(data)
    (root / "fns.py").write_text("def f(body):\n    return body\n")
    for name, text in (files or {}).items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def refused(root: Path) -> ManifestError:
    with pytest.raises(ManifestError) as raised:
        load_release(root)
    assert str(raised.value).startswith(str(root.resolve() / "tierfaas.toml"))
    assert len(str(raised.value)) < 600  # errors quote what they refuse, briefly
    return raised.value


def function(body: str) -> str:
    return HEAD + "[functions.f]\n" + body


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ('handler = "../fns:f"', "functions.f.handler"),
        ('handler = "..fns:f"', "functions.f.handler"),
        ('handler = "/etc/passwd:f"', "functions.f.handler"),
        ('handler = "fns:f:g"', "functions.f.handler"),
        ('handler = "fns"', "functions.f.handler"),
        ('handler = "os:system"', "functions.f.handler"),  # not a file of the release
        ('handler = "fns.x\\u0000:f"', "functions.f.handler"),
        ('handler = "' + "a" * 5000 + ':f"', "functions.f.handler"),  # a name too long
        ('handler = "' + ".".join(["a"] * 3000) + ':f"', "functions.f.handler"),
        ("handler = 5", "functions.f.handler"),
        ('handler = ["fns:f"]', "functions.f.handler"),
        ('handler = "fns:f"\ninit = "../x:y"', "functions.f.init"),
        ('handler = "fns:f"\ntimeout_s = "5"', "functions.f.timeout_s"),
        ('handler = "fns:f"\ntimeout_s = nan', "functions.f.timeout_s"),
        ('handler = "fns:f"\ntimeout_s = inf', "functions.f.timeout_s"),
        ('handler = "fns:f"\ntimeout_s = -1', "functions.f.timeout_s"),
        ('handler = "fns:f"\nmemory_mb = 1.5', "functions.f.memory_mb"),
        ('handler = "fns:f"\nmemory_mb = 99999999999999999999', "functions.f.memory_mb"),
        ('handler = "fns:f"\nconcurrency = true', "functions.f.concurrency"),
        ('handler = "fns:f"\nmax_instances = 0', "functions.f.max_instances"),
        ('handler = "fns:f"\nenv = "X=1"', "functions.f.env"),
        ('handler = "fns:f"\nenv = { "A-B" = "1" }', "functions.f.env.A-B"),
        ('handler = "fns:f"\nenv = { A = [1] }', "functions.f.env.A"),
        ('handler = "fns:f"\nenv = { A = true }', "functions.f.env.A"),
        ('handler = "fns:f"\napi_keys = []', "functions.f.api_keys"),
        ('handler = "fns:f"\napi_keys = "' + KEY + '"', "functions.f.api_keys"),
        ('handler = "fns:f"\napi_keys = ["a-plain-key-by-mistake"]', "functions.f.api_keys"),
        ('handler = "fns:f"\napi_keys = ["' + KEY.upper() + '"]', "functions.f.api_keys"),
        ('handler = "fns:f"\napi_keys = [' + ", ".join(['"' + KEY + '"'] * 65) + "]",
         "functions.f.api_keys"),
        ('handler = "fns:f"\ntypo_s = 1', "functions.f.typo_s"),
    ],
)  # fmt: skip
def test_bad_function_fields_are_refused_by_name(tmp_path: Path, body: str, field: str) -> None:
    assert refused(release(tmp_path, function(body))).field == field


def test_a_key_pasted_in_place_of_its_digest_is_not_repeated_in_the_error(tmp_path: Path) -> None:
    error = refused(release(tmp_path, function('handler = "fns:f"\napi_keys = ["s3cr3t-k3y"]')))
    assert "s3cr3t" not in str(error)


@pytest.mark.parametrize(
    "manifest",
    [
        b"\xff\xfe not utf-8",
        b"[release\nname = 1",
        b"a = 1\x00",
        b"a = " + b"[" * 100_000 + b"]" * 100_000,  # nested past any recursion limit
        b"a = " + b"{b = " * 20_000 + b"1" + b"}" * 20_000,
        b"x" * (MAX_MANIFEST_BYTES + 1),
        b"",
    ],
    ids=["not utf-8", "bad TOML", "NUL", "deep arrays", "deep tables", "too large", "empty"],
)
def test_files_that_are_not_a_manifest_are_refused(tmp_path: Path, manifest: bytes) -> None:
    assert refused(release(tmp_path, manifest)).field in ("(file)", "release")


@pytest.mark.parametrize(
    "manifest",
    [
        HEAD.replace('name = "r"', 'name = "../../etc"') + '[functions.f]\nhandler = "fns:f"\n',
        HEAD.replace('name = "r"', "name = " + '"' + "n" * 100_000 + '"')
        + '[functions.f]\nhandler = "fns:f"\n',
        HEAD.replace('version = "1"', 'version = "1\\n2"') + '[functions.f]\nhandler = "fns:f"\n',
        HEAD + '[functions."../x"]\nhandler = "fns:f"\n',
        HEAD + '[functions."' + "f" * 100_000 + '"]\nhandler = "fns:f"\n',
        HEAD + "[functions]\n",
        HEAD + 'functions = ["f"]\n',
        HEAD + '[functions.f]\nhandler = "fns:f"\n[defaults]\nhandler = "fns:f"\n',
        HEAD + '[functions.f]\nhandler = "fns:f"\n[extra]\n',
    ],
    ids=["traversal name", "huge name", "newline version", "traversal function",
         "huge function name", "no function", "functions not a table", "handler default",
         "unknown table"],
)  # fmt: skip
def test_bad_release_tables_are_refused(tmp_path: Path, manifest: str) -> None:
    refused(release(tmp_path, manifest))


def test_a_manifest_that_is_a_symlink_to_an_endless_file_is_read_no_further_than_the_limit(
    tmp_path: Path,
) -> None:
    root = tmp_path / "rel"
    root.mkdir()
    # /proc files report a size of 0 and can read on for gigabytes (pagemap: 8 bytes per
    # page of the address space): the size stat() gives is not to be trusted.
    (root / "tierfaas.toml").symlink_to("/proc/self/pagemap")
    assert refused(root).field == "(file)"


def test_a_manifest_that_is_a_fifo_or_a_device_is_refused_without_blocking(tmp_path: Path) -> None:
    root = tmp_path / "rel"
    root.mkdir()
    os.mkfifo(root / "tierfaas.toml")
    refused(root)
    (root / "tierfaas.toml").unlink()
    (root / "tierfaas.toml").symlink_to("/dev/zero")
    refused(root)


@pytest.mark.parametrize(
    ("layout", "handler"),
    [
        ({"link.py": "/etc/hostname"}, "link:f"),  # a module symlinked out of the release
        ({"pkg": "/usr/lib/python3"}, "pkg.os:f"),  # a package directory symlinked out
        ({"loop.py": "loop.py"}, "loop:f"),  # a symlink loop
    ],
    ids=["module link", "package link", "loop"],
)
def test_handlers_that_resolve_outside_the_release_are_refused(
    tmp_path: Path, layout: dict[str, str], handler: str
) -> None:
    root = release(tmp_path, function(f'handler = "{handler}"'))
    for name, target in layout.items():
        (root / name).symlink_to(target)
    assert refused(root).field == "functions.f.handler"


def test_api_keys_become_digests_and_defaults_apply(tmp_path: Path) -> None:
    manifest = (
        HEAD
        + f'[defaults]\napi_keys = ["{KEY}"]\n'
        + '[functions.f]\nhandler = "fns:f"\n'
        + '[functions.g]\nhandler = "fns:f"\napi_keys = ["sha256:'
        + "00" * 32
        + '"]\n'
    )
    loaded = load_release(release(tmp_path, manifest))
    assert loaded.functions["f"].api_keys == (bytes.fromhex("ab" * 32),)
    assert loaded.functions["g"].api_keys == (bytes(32),)
    assert loaded.functions["f"].describe()["api_key"] is True
    assert "ab" * 32 not in str(loaded.functions["f"].describe())
