"""The demo release's handlers. A handler takes the request body (bytes) and, optionally, a
context (function name, request id, method, query, headers, deadline); it returns bytes, str, or
anything JSON can encode."""

import asyncio
import hashlib
import time
from urllib.parse import parse_qs

from tierfaas.runtime.context import Context


def hello(body: bytes) -> str:
    name = body.decode(errors="replace").strip() or "world"
    return f"Hello, {name}!\n"


def sha256(body: bytes, ctx: Context) -> dict[str, object]:
    rounds = int(parse_qs(ctx.query).get("rounds", ["1000"])[0])
    digest = body
    for _ in range(max(1, min(rounds, 10_000_000))):
        digest = hashlib.sha256(digest).digest()
    return {"rounds": rounds, "sha256": digest.hex()}


MODEL: dict[str, float] = {}


def load_model() -> None:
    time.sleep(0.3)  # stands for importing a large library or loading weights
    MODEL["loaded_at"] = time.time()


def slowinit(body: bytes) -> dict[str, object]:
    return {"model_loaded_at": MODEL["loaded_at"], "input_bytes": len(body)}


async def sleep(body: bytes, ctx: Context) -> str:
    ms = int(parse_qs(ctx.query).get("ms", ["100"])[0])
    await asyncio.sleep(ms / 1000)
    return f"slept {ms} ms\n"


def boom(body: bytes) -> None:
    raise ValueError("boom: this function always fails")
