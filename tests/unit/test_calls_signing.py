"""Signed callbacks: the header a sender with a key adds to each attempt, and its check."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import FIXTURES
from tests.unit.test_calls_callbacks import URL, Outcomes, Receiver, sender
from tierfaas.calls.signing import SIGNATURE_HEADER, sign, verify
from tierfaas.config import NodeConfig
from tierfaas.errors import ConfigError
from tierfaas.node.compose import _callback_key
from tierfaas.testing import FakeClock
from tierfaas.testing.clock import settle

TESTREL = FIXTURES / "testrel"

KEY = b"0123456789abcdef-callback-key"
BODY = b'{"call_id":"a~b~0123","state":"succeeded"}'
NOW = 1_764_000_000.0


def test_a_signature_verifies_with_its_key_body_and_time() -> None:
    header = sign(KEY, int(NOW), BODY)
    assert header.startswith(f"t={int(NOW)},v1=")
    assert verify(KEY, header, BODY, now=NOW + 299)


@pytest.mark.parametrize(
    "key, body, now",
    [
        (b"another-key-of-16-chars", BODY, NOW),  # forged: not the cluster's key
        (KEY, BODY.replace(b"succeeded", b"failed"), NOW),  # the body changed
        (KEY, BODY, NOW + 301),  # too old: a replay
        (KEY, BODY, NOW - 301),  # from the future, past the tolerance
    ],
)
def test_a_forged_changed_or_stale_signature_fails(key: bytes, body: bytes, now: float) -> None:
    assert not verify(key, sign(KEY, int(NOW), BODY), body, now=now)


@pytest.mark.parametrize(
    "header", ["", "t=abc,v1=00", "v1=00", f"t={int(NOW)}", f"t={int(NOW)},v1=", "garbage"]
)
def test_a_malformed_header_fails(header: str) -> None:
    assert not verify(KEY, header, BODY, now=NOW)


def test_the_time_is_part_of_what_is_signed() -> None:
    moved = sign(KEY, int(NOW), BODY).replace(f"t={int(NOW)}", f"t={int(NOW) + 1}")
    assert not verify(KEY, moved, BODY, now=NOW)


async def test_a_sender_with_a_key_signs_every_attempt_at_its_own_time() -> None:
    clock = FakeClock()
    wall = [NOW]
    post = Receiver(clock, 503, 200)
    done = Outcomes()
    callbacks = sender(clock, post, signing_key=KEY, wall_clock=lambda: wall[0])
    callbacks.send(URL, "a~b~0123", "succeeded", BODY, done)
    await settle()
    wall[0] = NOW + 42
    clock.advance(10.0)  # past the first retry's delay
    await settle()
    assert done == [("delivered", 2)]
    first, second = (seen[2][SIGNATURE_HEADER] for seen in post.seen)
    assert first == sign(KEY, int(NOW), BODY)
    assert second == sign(KEY, int(NOW) + 42, BODY)
    assert verify(KEY, second, BODY, now=NOW + 42)


async def test_a_sender_without_a_key_sends_no_signature() -> None:
    clock = FakeClock()
    post = Receiver(clock, 200)
    sender(clock, post).send(URL, "a~b~0123", "succeeded", BODY, Outcomes())
    await settle()
    assert SIGNATURE_HEADER not in post.seen[0][2]


def test_the_node_reads_its_callback_key_from_a_private_file(tmp_path: Path) -> None:
    key_file = tmp_path / "callback.key"
    key_file.write_text(KEY.decode() + "\n")
    key_file.chmod(0o600)
    assert _callback_key(NodeConfig(release_dir=TESTREL, callback_key_file=key_file)) == KEY
    assert _callback_key(NodeConfig(release_dir=TESTREL)) is None


@pytest.mark.parametrize(
    "text, mode, reason",
    [
        (KEY.decode(), 0o644, "readable by others"),
        ("short", 0o600, "16-4096 characters"),
        ("has a space in it ok", 0o600, "no spaces"),
    ],
)
def test_a_callback_key_file_that_cannot_serve_stops_the_node(
    tmp_path: Path, text: str, mode: int, reason: str
) -> None:
    key_file = tmp_path / "callback.key"
    key_file.write_text(text)
    key_file.chmod(mode)
    with pytest.raises(ConfigError, match=reason) as caught:
        _callback_key(NodeConfig(release_dir=TESTREL, callback_key_file=key_file))
    assert caught.value.field == "callback_key_file"
    assert text not in str(caught.value)  # the key never shows in an error
