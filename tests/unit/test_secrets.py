"""Secrets without a node: sealing (tierfaas.secrets.crypto), the registry's store, the
node's delivery folder, redaction, the manifest key and ``Context.secret``. Files in the
test's temporary folder; no sockets, no sleep, no fork."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from tierfaas.errors import ManifestError
from tierfaas.keys import derive, parse_key
from tierfaas.manifest import load_release
from tierfaas.runtime.context import Context
from tierfaas.runtime.output import InstanceOutput, OutputBudget, OutputLimits, OutputLine
from tierfaas.secrets.crypto import seal, secrets_key, unseal
from tierfaas.secrets.delivery import SecretsDelivery
from tierfaas.secrets.errors import (
    BadSecretName,
    EmptySecret,
    SecretTooLarge,
    SecretUnreadable,
    UnknownSecret,
    WrongKey,
)
from tierfaas.secrets.redact import MASK, Redactor
from tierfaas.secrets.store import MAX_SECRET_BYTES, SecretStore
from tierfaas.testing import FakeClock

CLUSTER_KEY = bytes(range(32))
OTHER_KEY = bytes(range(1, 33))
KEY = secrets_key(CLUSTER_KEY)
VALUE = b"correct-horse-battery-staple"


# -- sealing ----------------------------------------------------------------------------------


def test_the_secrets_key_is_derived_never_the_cluster_key_itself() -> None:
    assert derive(CLUSTER_KEY, "secrets") == KEY
    assert KEY != CLUSTER_KEY and derive(CLUSTER_KEY, "forward") != KEY


def test_a_sealed_value_opens_with_its_key_name_and_version_only() -> None:
    blob = seal(KEY, "db", 3, VALUE)
    assert VALUE not in blob
    assert unseal(KEY, "db", 3, blob) == VALUE
    wrong = [
        (secrets_key(OTHER_KEY), "db", 3),  # another cluster's key
        (KEY, "api", 3),  # copied to another secret
        (KEY, "db", 2),  # passed off as another version
    ]
    for key, name, version in wrong:
        with pytest.raises(SecretUnreadable) as caught:
            unseal(key, name, version, blob)
        assert VALUE.decode() not in str(caught.value)


def test_any_changed_byte_is_refused() -> None:
    blob = bytearray(seal(KEY, "db", 1, VALUE))
    for where in (0, 5, 20, len(blob) - 1):
        changed = bytearray(blob)
        changed[where] ^= 0x01
        with pytest.raises(SecretUnreadable):
            unseal(KEY, "db", 1, bytes(changed))
    with pytest.raises(SecretUnreadable):
        unseal(KEY, "db", 1, bytes(blob[:10]))


def test_two_seals_of_one_value_differ() -> None:
    assert seal(KEY, "db", 1, VALUE) != seal(KEY, "db", 1, VALUE)  # a fresh nonce each time


# -- the store --------------------------------------------------------------------------------


def test_versions_are_added_kept_and_the_newest_is_read(tmp_path: Path) -> None:
    store = SecretStore(tmp_path, KEY)
    assert store.create("db", b"one") == 1
    assert store.create("db", b"two!") == 2
    assert store.read("db") == (2, b"two!")
    assert store.read("db", 1) == (1, b"one")
    info = store.info("db")
    assert (info.versions, info.version, info.size) == (2, 2, 4)
    assert info.created_ms >= info.first_ms > 0
    assert store.names() == ["db"]
    assert [s.name for s in store.listing()] == ["db"]
    leftovers = [p.name for p in (tmp_path / "secrets" / "db").iterdir()]
    assert sorted(leftovers) == ["1", "2"]  # no temporary file stays
    assert os.stat(tmp_path / "secrets").st_mode & 0o077 == 0


def test_listing_and_removing_need_no_key(tmp_path: Path) -> None:
    SecretStore(tmp_path, KEY).create("db", VALUE)
    keyless = SecretStore(tmp_path)
    assert keyless.info("db").size == len(VALUE)
    assert keyless.remove("db") == 1
    assert keyless.names() == [] and not (tmp_path / "secrets" / "db").exists()
    with pytest.raises(UnknownSecret, match="no secret 'db'"):
        keyless.remove("db")


@pytest.mark.parametrize("name", ["", "../etc", "a/b", ".hidden", "-x", "a b", "x" * 65, "é"])
def test_a_name_that_is_not_plain_is_refused(tmp_path: Path, name: str) -> None:
    store = SecretStore(tmp_path, KEY)
    with pytest.raises(BadSecretName):
        store.create(name, VALUE)
    with pytest.raises(BadSecretName):
        store.remove(name)
    assert not (tmp_path / "secrets").exists() or store.names() == []


def test_the_size_cap_and_an_empty_value(tmp_path: Path) -> None:
    store = SecretStore(tmp_path, KEY)
    assert store.create("big", b"x" * MAX_SECRET_BYTES) == 1
    with pytest.raises(SecretTooLarge, match=f"limit of {MAX_SECRET_BYTES} bytes"):
        store.create("big", b"x" * (MAX_SECRET_BYTES + 1))
    with pytest.raises(EmptySecret):
        store.create("empty", b"")
    assert store.info("big").versions == 1


def test_another_key_cannot_add_to_a_registry_sealed_with_one(tmp_path: Path) -> None:
    SecretStore(tmp_path, KEY).create("db", VALUE)
    with pytest.raises(WrongKey, match="another cluster key"):
        SecretStore(tmp_path, secrets_key(OTHER_KEY)).create("api", b"token")
    assert SecretStore(tmp_path).names() == ["db"]


# -- redaction ----------------------------------------------------------------------------------


def test_every_known_value_is_masked_and_nothing_else() -> None:
    redactor = Redactor()
    assert redactor.text("pw hunter2") == "pw hunter2"  # nothing learned: unchanged
    redactor.learn([b"hunter2\n", b"hunter2-long"])
    assert redactor.text("pw hunter2 and hunter2-long.") == f"pw {MASK} and {MASK}."
    assert redactor.text("nothing here") == "nothing here"


def test_a_value_of_several_lines_is_masked_line_by_line() -> None:
    pem = b"-----BEGIN KEY-----\nMIIEvQIBADANBgkqhkiG9w0B\nAQEFAASC\n-----END KEY-----\n"
    redactor = Redactor()
    redactor.learn([pem])
    assert redactor.text("MIIEvQIBADANBgkqhkiG9w0B") == MASK
    assert redactor.text("AQEFAASC") == MASK


def test_output_lines_are_masked_before_any_sink_or_the_stderr_tail() -> None:
    redactor = Redactor()
    redactor.learn([VALUE])
    seen: list[OutputLine] = []

    async def run() -> list[str]:
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        budget = OutputBudget(OutputLimits(bytes_per_s=1 << 20, burst_bytes=1 << 20), FakeClock())
        output = InstanceOutput("f", 1, out_r, err_r, budget, seen.append, redact=redactor)
        os.write(out_w, b"password " + VALUE + b"\n")
        os.write(err_w, b"oops " + VALUE + b"\n")
        for fd in (out_w, err_w):
            os.close(fd)
        tail = output.stderr_tail()
        output.close()
        return tail

    tail = asyncio.run(run())
    texts = [line.text for line in seen]
    assert sorted(texts) == [f"oops {MASK}", f"password {MASK}"]
    assert tail == [f"oops {MASK}"]


# -- the node's delivery folder -----------------------------------------------------------------


def _release(tmp_path: Path, lists: str = '["db"]') -> Path:
    folder = tmp_path / "release"
    folder.mkdir()
    (folder / "fns.py").write_text("def f(body, ctx):\n    return body\n")
    (folder / "tierfaas.toml").write_text(
        '[release]\nname = "r"\nversion = "1"\n\n'
        f'[functions.reader]\nhandler = "fns:f"\nsecrets = {lists}\n\n'
        '[functions.other]\nhandler = "fns:f"\n'
    )
    return folder


def _delivery(tmp_path: Path, store: SecretStore, redactor: Redactor) -> SecretsDelivery:
    private = tmp_path / "private"
    private.mkdir()
    release = load_release(_release(tmp_path))
    return SecretsDelivery(store, release, private, redactor=redactor, poll_s=0.5)


def test_delivery_writes_listed_secrets_for_their_functions_only(tmp_path: Path) -> None:
    store = SecretStore(tmp_path / "registry", KEY)
    store.create("db", VALUE)
    store.create("unlisted", b"not for anyone here")
    redactor = Redactor()
    delivery = _delivery(tmp_path, store, redactor)
    delivery.start()
    reader = delivery.function_dir("reader")
    assert (reader / "db").read_bytes() == VALUE
    assert sorted(os.listdir(delivery.folder)) == ["reader"]  # other lists none
    assert os.stat(delivery.folder).st_mode & 0o777 == 0o700
    assert os.stat(reader / "db").st_mode & 0o777 == 0o400
    assert redactor.text(VALUE.decode()) == MASK
    delivery.close()
    assert not delivery.folder.exists()


def test_a_missing_or_unopenable_secret_fails_the_start_naming_function_and_secret(
    tmp_path: Path,
) -> None:
    store = SecretStore(tmp_path / "registry", KEY)
    delivery = _delivery(tmp_path, store, Redactor())
    with pytest.raises(ManifestError) as caught:
        delivery.start()
    assert caught.value.field == "functions.reader.secrets"
    assert "'db' does not exist" in caught.value.reason
    SecretStore(tmp_path / "registry", secrets_key(OTHER_KEY)).create("db", VALUE)
    with pytest.raises(ManifestError, match="does not open with this cluster key") as again:
        delivery.start()
    assert VALUE.decode() not in str(again.value)


def test_a_refresh_delivers_new_versions_taught_first_and_withdraws_removed_ones(
    tmp_path: Path,
) -> None:
    store = SecretStore(tmp_path / "registry", KEY)
    store.create("db", b"first-value")
    redactor = Redactor()
    delivery = _delivery(tmp_path, store, redactor)
    delivery.start()
    assert delivery.refresh() == 0  # nothing new
    store.create("db", b"second-value")
    assert delivery.refresh() == 1
    assert (delivery.function_dir("reader") / "db").read_bytes() == b"second-value"
    assert redactor.text("first-value second-value") == f"{MASK} {MASK}"  # both remembered
    store.remove("db")
    assert delivery.refresh() == 1
    assert not (delivery.function_dir("reader") / "db").exists()
    delivery.close()


def test_an_unreadable_new_version_keeps_the_last_good_value(tmp_path: Path) -> None:
    store = SecretStore(tmp_path / "registry", KEY)
    store.create("db", VALUE)
    delivery = _delivery(tmp_path, store, Redactor())
    delivery.start()
    (store.root / "db" / "2").write_bytes(b"TFS1" + b"\0" * 40)  # a damaged version
    assert delivery.refresh() == 0
    assert (delivery.function_dir("reader") / "db").read_bytes() == VALUE
    delivery.close()


def test_follow_polls_on_the_given_sleep(tmp_path: Path) -> None:
    store = SecretStore(tmp_path / "registry", KEY)
    store.create("db", b"old-value")
    delivery = _delivery(tmp_path, store, Redactor())
    delivery.start()
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)
        if len(slept) == 1:
            store.create("db", b"new-value")
        if len(slept) == 3:
            raise asyncio.CancelledError

    with pytest.raises(asyncio.CancelledError):
        asyncio.run(delivery.follow(sleep))
    assert slept == [0.5, 0.5, 0.5]
    assert (delivery.function_dir("reader") / "db").read_bytes() == b"new-value"
    delivery.close()


# -- the manifest and the handler's context -----------------------------------------------------


def test_the_manifest_lists_names_and_shows_them_never_values(tmp_path: Path) -> None:
    release = load_release(_release(tmp_path, '["db", "api.v2"]'))
    assert release.functions["reader"].secrets == ("db", "api.v2")
    assert release.functions["reader"].describe()["secrets"] == ["db", "api.v2"]
    assert release.functions["other"].describe()["secrets"] == []


@pytest.mark.parametrize("lists", ['"db"', '["../db"]', '["db", "db"]', "[1]", '["a b"]'])
def test_a_bad_secrets_list_is_a_manifest_error(tmp_path: Path, lists: str) -> None:
    with pytest.raises(ManifestError) as caught:
        load_release(_release(tmp_path, lists))
    assert caught.value.field == "functions.reader.secrets"


def test_context_secret_reads_the_current_file_each_time(tmp_path: Path) -> None:
    (tmp_path / "db").write_bytes(b"v1")
    ctx = Context(function="f", request_id="r", secrets_dir=str(tmp_path))
    assert ctx.secret("db") == b"v1"
    (tmp_path / "db").write_bytes(b"v2")
    assert ctx.secret("db") == b"v2"
    for name in ("nope", "../db", ""):
        with pytest.raises(KeyError):
            ctx.secret(name)
    with pytest.raises(KeyError):
        Context(function="f", request_id="r").secret("db")


def test_parse_key_round_trip_is_what_the_cli_seals_with() -> None:
    import base64

    assert secrets_key(parse_key(base64.b64encode(CLUSTER_KEY).decode())) == KEY


def test_the_folders_of_dead_nodes_are_swept_and_live_ones_kept(tmp_path: Path) -> None:
    from tierfaas.secrets.delivery import sweep_stale

    dead = tmp_path / "tierfaas-secrets-999999999-abc"  # no such pid
    mine = tmp_path / f"tierfaas-secrets-{os.getpid()}-abc"
    other = tmp_path / "unrelated-999999999"
    for folder in (dead, mine, other):
        folder.mkdir()
    sweep_stale(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([mine.name, other.name])


def test_up_makes_its_own_registry_afresh_but_keeps_its_secrets(tmp_path: Path) -> None:
    from tierfaas.up.supervisor import _empty_but_secrets

    SecretStore(tmp_path, KEY).create("db", VALUE)
    (tmp_path / "versions" / "1.0").mkdir(parents=True)
    (tmp_path / "desired").write_text("1.0\n")
    _empty_but_secrets(tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["secrets"]
    assert SecretStore(tmp_path, KEY).read("db") == (1, VALUE)


def test_a_handler_error_naming_a_value_reaches_the_node_masked() -> None:
    from typing import cast

    from tierfaas import errors
    from tierfaas.manifest import EntryPoint, FunctionSpec
    from tierfaas.runtime import protocol as p
    from tierfaas.runtime.instance import Instance
    from tierfaas.runtime.zygote_client import ZygoteClient

    redactor = Redactor()
    redactor.learn([VALUE])
    spec = FunctionSpec(name="f", handler=EntryPoint("m", "f", Path("/nowhere/m.py")))

    async def run() -> BaseException | None:
        instance = Instance(1, spec, cast(ZygoteClient, None), FakeClock())
        instance.redact = redactor
        future = asyncio.get_running_loop().create_future()
        instance.calls[7] = future
        text = VALUE.decode()
        instance._on_result([p.RESULT, 7, p.RAISED, b"", "ValueError", f"with {text}!"])
        return future.exception()

    error = asyncio.run(run())
    assert isinstance(error, errors.HandlerFailed)
    assert VALUE.decode() not in str(error) and f"with {MASK}!" in str(error)
