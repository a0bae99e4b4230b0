"""The instance process: runs in a child forked from the zygote and serves one function.

Start: apply the function's environment, working directory and memory limit, import the handler
from its file inside the release, run the optional init, then tell the node READY. Serve: read
CALL frames from the node's socket and answer each with a RESULT frame.

Concurrency: the node sends up to ``concurrency`` calls at once, pipelined on the socket. A
sync handler runs them inline, one after the other (no thread hand-offs: the fastest path),
unless the function asks for ``threads > 1`` (for handlers that block on I/O), in which case a
pool of that many threads runs them; an async handler runs each as a task on this process's own
event loop. The node enforces the limit and the deadline; this process only runs what it gets.

Failure: an exception becomes a RAISED result; a MemoryError (the address-space limit is hit)
becomes OUT_OF_MEMORY and the process exits, since its heap can't be trusted after that; a
handler that exits or crashes the process is seen by the node as a closed socket.
"""

from __future__ import annotations

import asyncio
import importlib.util
import inspect
import json
import os
import resource
import socket
import sys
import threading
import time
import traceback
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, NoReturn, cast

import msgpack

from tierfaas.runtime import protocol as p
from tierfaas.runtime.context import Context
from tierfaas.runtime.process.execute import exec_program

Handler = Callable[..., Any]


def run_instance(sock: socket.socket, spec: dict[str, Any]) -> NoReturn:
    """Never returns: the process exits when the node closes the socket (or, for an exec
    function, becomes its program)."""
    if spec.get("exec") is not None:
        exec_program(sock, spec)
    started = time.perf_counter()
    try:
        handler = _start(spec)
    except MemoryError:
        _send(sock, [p.START_FAILED, "MemoryError", "the instance ran out of memory during start"])
        os._exit(3)
    except BaseException as exc:
        detail = traceback.format_exc() if spec.get("debug") else f"{exc}"
        _send(sock, [p.START_FAILED, type(exc).__name__, detail[:4000]])
        os._exit(3)
    _send(sock, [p.READY, os.getpid(), time.perf_counter() - started, _takes_context(handler)])
    try:
        _serve(sock, handler, spec)
    finally:
        os._exit(0)


def _start(spec: dict[str, Any]) -> Handler:
    root = spec["root"]
    os.environ.update(spec.get("env", {}))
    os.chdir(root)
    sys.path.insert(0, root)
    threading.stack_size(THREAD_STACK_BYTES)
    if spec.get("sandbox") is None:  # sandboxed, the cgroup's memory limit holds it instead
        _limit_memory(int(spec["memory_mb"]), int(spec.get("threads", 1)))
    handler = _load(spec["handler"])
    if spec.get("init"):
        init = _load(spec["init"])
        outcome = init()
        if inspect.isawaitable(outcome):
            asyncio.run(_await(outcome))
    return handler


async def _await(awaitable: Any) -> Any:
    return await awaitable


THREAD_STACK_BYTES = 512 * 1024
"""Stack of each handler thread (``threads > 1``). Python's default of 8 MiB of address space
per thread would eat a small memory_mb budget in a handful of threads."""


def _limit_memory(memory_mb: int, threads: int) -> None:
    """Caps the address space at what the process maps now plus the function's budget (and
    the stacks of its handler threads), so a handler that allocates past ``memory_mb`` gets a
    MemoryError instead of starving the host."""
    with open("/proc/self/statm") as statm:
        mapped = int(statm.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    threads = threads if threads > 1 else 0
    limit = mapped + memory_mb * 1024 * 1024 + threads * (THREAD_STACK_BYTES + 64 * 1024)
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def _load(entry: dict[str, str]) -> Handler:
    """Imports the module from its file inside the release (never from elsewhere on sys.path)."""
    module_name, attr, path = entry["module"], entry["attr"], entry["path"]
    module = sys.modules.get(module_name)
    if module is None or getattr(module, "__file__", None) != path:
        is_package = Path(path).name == "__init__.py"
        locations = [str(Path(path).parent)] if is_package else None
        spec = importlib.util.spec_from_file_location(
            module_name, path, submodule_search_locations=locations
        )
        if spec is None or spec.loader is None:
            raise ImportError(f"cannot load {module_name} from {path}")
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module
        spec.loader.exec_module(module)
    target = getattr(module, attr, None)
    if target is None:
        raise AttributeError(f"module {module_name!r} has no attribute {attr!r}")
    if not callable(target):
        raise TypeError(f"{module_name}:{attr} is not callable")
    return target  # type: ignore[no-any-return]


def _takes_context(handler: Handler) -> bool:
    try:
        params = inspect.signature(handler).parameters.values()
    except (TypeError, ValueError):
        return True
    positional = [
        x
        for x in params
        if x.kind in (x.POSITIONAL_ONLY, x.POSITIONAL_OR_KEYWORD, x.VAR_POSITIONAL)
    ]
    return len(positional) >= 2 or any(x.kind == x.VAR_POSITIONAL for x in positional)


def encode_result(value: Any) -> tuple[bytes, str]:
    """bytes as they are, str as UTF-8 text, None as an empty body, anything else as JSON.
    Raises TypeError/ValueError for values JSON can't represent."""
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value), "application/octet-stream"
    if isinstance(value, str):  # str.encode: a subclass's own encode() is not trusted
        return str.encode(value), "text/plain; charset=utf-8"
    if value is None:
        return b"", "text/plain; charset=utf-8"
    return json.dumps(value, separators=(",", ":"), allow_nan=False).encode(), "application/json"


class _Server(asyncio.Protocol):
    def __init__(self, handler: Handler, spec: dict[str, Any], done: asyncio.Future[None]) -> None:
        self.handler = handler
        self.with_context = _takes_context(handler)
        self.is_async = inspect.iscoroutinefunction(handler)
        self.name = spec["name"]
        self.secrets_dir = str(spec.get("secrets_dir") or "")
        self.debug = bool(spec.get("debug"))
        self.max_response = int(spec["max_response_bytes"])
        threads = int(spec.get("threads", 1))
        self.pool = ThreadPoolExecutor(threads) if threads > 1 else None
        self.unpacker = msgpack.Unpacker(max_buffer_size=p.MAX_FRAME_BYTES)
        self.packer = msgpack.Packer()  # reused: packb builds a new one for every frame
        self.done = done
        self.transport: asyncio.Transport | None = None
        self.loop = asyncio.get_running_loop()
        self.batch: list[bytes] | None = None  # answers to send at the end of data_received

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_result(None)

    def data_received(self, data: bytes) -> None:
        # Calls that arrive together are answered with one write: under load the node
        # pipelines many, and a syscall per answer would cost more than the handler.
        self.batch = []
        self.unpacker.feed(data)
        for frame in self.unpacker:
            if frame[0] == p.CALL:
                self._call(frame[1], frame[2], frame[3])
        batch, self.batch = self.batch, None
        if batch and self.transport is not None and not self.transport.is_closing():
            self.transport.write(b"".join(batch))

    def _call(self, number: int, body: bytes, ctx: dict[str, Any] | None) -> None:
        # The node sends no context (nil) to a handler that takes none (READY told it so).
        if self.with_context:
            args: tuple[Any, ...] = (
                body,
                _context(self.name, ctx or _NO_CONTEXT, self.secrets_dir),
            )
        else:
            args = (body,)
        if self.is_async:
            task = self.loop.create_task(self._run_async(number, args))
            task.add_done_callback(_ignore)
        elif self.pool is None:
            self._reply(number, self._run_sync(args))
        else:
            try:
                future = self.loop.run_in_executor(self.pool, self._run_sync, args)
            except RuntimeError as exc:  # no thread could be started (memory limit)
                self._reply(number, [p.RAISED, b"", "ResourceError", f"no handler thread: {exc}"])
                return
            future.add_done_callback(lambda f: self._reply(number, f.result()))

    async def _run_async(self, number: int, args: tuple[Any, ...]) -> None:
        try:
            value = await self.handler(*args)
            outcome = self._finish(value)
        except BaseException as exc:
            outcome = self._failed(exc)
        self._reply(number, outcome)

    def _run_sync(self, args: tuple[Any, ...]) -> list[Any]:
        try:
            return self._finish(self.handler(*args))
        except BaseException as exc:
            return self._failed(exc)

    def _finish(self, value: Any) -> list[Any]:
        try:
            body, content_type = encode_result(value)
        except (TypeError, ValueError, RecursionError) as exc:
            kind = type(value).__name__[:100]
            return [
                p.BAD_RESULT,
                b"",
                "UnserializableResult",
                f"the handler returned a {kind}: {exc}",
            ]
        if len(body) > self.max_response:
            size = len(body)
            return [
                p.TOO_LARGE,
                b"",
                "ResponseTooLarge",
                f"the result is {size} bytes, over the limit of {self.max_response}",
            ]
        return [p.OK, body, content_type, ""]

    def _failed(self, exc: BaseException) -> list[Any]:
        if isinstance(exc, MemoryError):
            return [p.OUT_OF_MEMORY, b"", "MemoryError", "the instance ran out of memory"]
        if not isinstance(exc, Exception):  # SystemExit, KeyboardInterrupt: the handler quit
            os._exit(4)
        kind = type(exc).__name__[:128]
        try:
            message = str(exc)[:4000]
            if self.debug:
                message = "".join(traceback.format_exception(exc))[-8000:]
        except Exception:  # an exception that can't be printed must not stop the answer
            message = f"(a {kind} whose message could not be printed)"
        if type(message) is not str:  # a str subclass from __str__
            message = str.__str__(message)
        return [p.RAISED, b"", kind, message]

    def _reply(self, number: int, outcome: list[Any]) -> None:
        assert self.transport is not None
        try:
            frame = self.packer.pack([p.RESULT, number, *outcome])
        except MemoryError:
            outcome = [p.OUT_OF_MEMORY, b"", "MemoryError", "the instance ran out of memory"]
            frame = msgpack.packb([p.RESULT, number, *outcome])
        if self.batch is not None and outcome[0] != p.OUT_OF_MEMORY:
            self.batch.append(frame)
            return
        if self.batch:
            self.transport.write(b"".join(self.batch))
            self.batch.clear()
        self.transport.write(frame)
        if outcome[0] == p.OUT_OF_MEMORY:
            # Stop taking calls and exit once this answer is flushed: the heap is not to be
            # trusted after a MemoryError. The node fails the other calls in flight with 502.
            self.transport.close()
            self.loop.call_later(1.0, os._exit, 5)


_NO_CONTEXT = {"request_id": ""}


def _context(name: str, ctx: dict[str, Any], secrets_dir: str = "") -> Context:
    """The handler's context; an async call's id and attempt come from the headers its node
    set (a request from outside cannot send them: the router removes them)."""
    headers = ctx.get("headers")
    call_id = headers.get("x-call-id") if headers else None
    if call_id is None:
        return Context(function=name, **ctx, secrets_dir=secrets_dir)
    attempt = headers.get("x-call-attempt", "") if headers else ""
    return Context(
        function=name,
        **ctx,
        call_id=call_id,
        attempt=int(attempt) if attempt.isdigit() else 0,
        secrets_dir=secrets_dir,
    )


def _ignore(task: asyncio.Task[None]) -> None:
    if not task.cancelled():
        task.exception()


def _serve(sock: socket.socket, handler: Handler, spec: dict[str, Any]) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()
        await loop.create_unix_connection(lambda: _Server(handler, spec, done), sock=sock)
        await done

    try:
        import uvloop

        uvloop.run(main())
    except ImportError:  # pragma: no cover - uvloop is a dependency; stay runnable without it
        asyncio.run(main())


def _send(sock: socket.socket, frame: list[Any]) -> None:
    sock.setblocking(True)
    sock.sendall(msgpack.packb(frame))
