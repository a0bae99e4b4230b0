"""The committed gRPC modules must match tierfaas.proto (regenerate: python -m
tierfaas.control.generate)."""

from __future__ import annotations

from pathlib import Path

from tierfaas.control import generate


def test_generated_code_is_current(tmp_path: Path) -> None:
    fresh = generate.generate(tmp_path)
    stale = [p.name for p in fresh if p.read_bytes() != (generate.HERE / p.name).read_bytes()]
    assert not stale, f"stale generated files {stale}: run python -m tierfaas.control.generate"


def test_the_proto_declares_itself_append_only() -> None:
    assert "ONLY APPEND" in generate.PROTO.read_text()
