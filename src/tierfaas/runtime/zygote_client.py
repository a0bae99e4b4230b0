"""The node's handle on its zygote process: start it, ask it to fork instances, hear exits.

One SEQPACKET socket carries both directions. Spawn replies are matched to requests by a
sequence number; exit reports (``EXITED pid description``) are kept briefly so that an instance
whose socket closed can say how its process ended. If the zygote dies (it should not: it runs
no user code), the next spawn starts a new one.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import subprocess
import sys
from collections import OrderedDict
from typing import Any

import msgpack

from tierfaas.errors import TierfaasError
from tierfaas.procs import spawn_in_session
from tierfaas.runtime import protocol as p

log = logging.getLogger(__name__)

_EXIT_MEMORY = 1024


class ZygoteError(TierfaasError, RuntimeError):
    """The zygote could not start (the message says why: a sandbox the host refused, a
    release its uids cannot read, a failed preload) or is gone."""


# What a sandboxed zygote keeps of the node's environment: the node's own variables may hold
# credentials (a cloud token, a proxy password) that are none of the functions' business.
_SANDBOX_ENV = ("PATH", "LANG", "LANGUAGE", "TZ", "PYTHONPATH", "PYTHONHASHSEED")


def zygote_environment(environ: dict[str, str], sandboxed: bool) -> dict[str, str]:
    """The environment the zygote (and so every instance) starts with."""
    if sandboxed:
        env = {k: v for k, v in environ.items() if k in _SANDBOX_ENV or k.startswith("LC_")}
        env.setdefault("PATH", "/usr/local/bin:/usr/bin:/bin")
        env["HOME"] = "/tmp"
    else:
        # The node's own settings, the cluster key above all, are not the functions'
        # business: instances inherit the zygote's environment.
        env = {k: v for k, v in environ.items() if not k.startswith("TIERFAAS_")}
    # Few malloc arenas: each thread's arena would otherwise reserve 64 MiB of address
    # space and eat the instance's RLIMIT_AS budget.
    env.setdefault("MALLOC_ARENA_MAX", "2")
    return env


class ZygoteClient:
    def __init__(self, setup: dict[str, Any], start_timeout_s: float = 30.0) -> None:
        """``setup``: the ZYGOTE_SETUP frame's content (the sandbox plan or None, the release
        root, the modules to preload)."""
        self.setup = setup
        self.start_timeout_s = start_timeout_s
        self.process: subprocess.Popen[bytes] | None = None
        self.sock: socket.socket | None = None
        self.seq = 0
        self.pending: dict[int, asyncio.Future[int]] = {}
        self.exits: OrderedDict[int, str] = OrderedDict()
        self.exit_waiters: dict[int, asyncio.Future[str]] = {}
        self.ready: asyncio.Future[int] | None = None
        self.starting: asyncio.Lock | None = None

    @property
    def pid(self) -> int | None:
        return None if self.process is None else self.process.pid

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        if self.starting is None:
            self.starting = asyncio.Lock()
        async with self.starting:
            if self.sock is not None:
                return
            ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
            env = zygote_environment(dict(os.environ), self.setup.get("sandbox") is not None)
            self.process = spawn_in_session(
                [sys.executable, "-m", "tierfaas.runtime.process.zygote", str(theirs.fileno())],
                pass_fds=[theirs.fileno()],
                env=env,
            )
            theirs.close()
            ours.send(msgpack.packb([p.ZYGOTE_SETUP, self.setup]))
            ours.setblocking(False)
            self.sock = ours
            self.ready = loop.create_future()
            loop.add_reader(ours.fileno(), self._on_readable)
            try:
                await asyncio.wait_for(asyncio.shield(self.ready), self.start_timeout_s)
            except TimeoutError:
                self._lost("the zygote did not start in time")
                raise ZygoteError("the zygote process did not start in time") from None
            except ZygoteError as exc:
                self._lost(str(exc))
                raise

    async def spawn(self, spec: dict[str, Any], fds: list[int]) -> tuple[int, socket.socket]:
        """Forks an instance, handing it ``fds`` after its socket (its output pipes and cgroup
        join files; the caller keeps and closes its copies). Returns the instance's pid, as the
        zygote sees it, and the node's end of its socket."""
        if self.sock is None:
            await self.start()
        assert self.sock is not None
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        self.seq += 1
        seq = self.seq
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self.pending[seq] = future
        try:
            frame = msgpack.packb([p.SPAWN, seq, spec])
            socket.send_fds(self.sock, [frame], [theirs.fileno(), *fds])
        except OSError as exc:
            self.pending.pop(seq, None)
            ours.close()
            self._lost(f"the zygote socket failed: {exc}")
            raise ZygoteError(f"cannot reach the zygote: {exc}") from None
        finally:
            theirs.close()
        try:
            pid = await future
        except BaseException:
            ours.close()
            raise
        return pid, ours

    async def prepare(self, box: dict[str, Any], cgroup_fds: list[int]) -> int:
        """Forks a prepared instance (see protocol.PREPARE) that joins the cgroup of
        ``cgroup_fds`` now; returns its pid. A SPAWN with ``"prepared": true`` uses it."""
        if self.sock is None:
            await self.start()
        assert self.sock is not None
        self.seq += 1
        seq = self.seq
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self.pending[seq] = future
        try:
            socket.send_fds(self.sock, [msgpack.packb([p.PREPARE, seq, box])], cgroup_fds)
        except OSError as exc:
            self.pending.pop(seq, None)
            self._lost(f"the zygote socket failed: {exc}")
            raise ZygoteError(f"cannot reach the zygote: {exc}") from None
        return await future

    async def exit_status(self, pid: int, wait_s: float) -> str | None:
        """How process ``pid`` ended, waiting up to ``wait_s`` for the zygote's report."""
        if pid in self.exits:
            return self.exits[pid]
        future = self.exit_waiters.get(pid)
        if future is None:
            future = asyncio.get_running_loop().create_future()
            self.exit_waiters[pid] = future
        try:
            return await asyncio.wait_for(asyncio.shield(future), wait_s)
        except TimeoutError:
            return None
        finally:
            self.exit_waiters.pop(pid, None)

    def _on_readable(self) -> None:
        assert self.sock is not None
        while True:
            try:
                data = self.sock.recv(65536)
            except BlockingIOError:
                return
            except OSError as exc:
                self._lost(f"zygote socket error: {exc}")
                return
            if not data:
                self._lost("the zygote exited")
                return
            self._on_frame(msgpack.unpackb(data))

    def _on_frame(self, frame: list[Any]) -> None:
        kind = frame[0]
        if kind == p.ZYGOTE_READY and self.ready is not None and not self.ready.done():
            self.ready.set_result(frame[1])
        elif kind == p.ZYGOTE_FAILED:
            if self.ready is not None and not self.ready.done():
                self.ready.set_exception(ZygoteError(f"the zygote could not start: {frame[1]}"))
        elif kind == p.SPAWNED:
            future = self.pending.pop(frame[1], None)
            if future is not None and not future.done():
                future.set_result(frame[2])
        elif kind == p.SPAWN_FAILED:
            future = self.pending.pop(frame[1], None)
            if future is not None and not future.done():
                future.set_exception(ZygoteError(frame[2]))
        elif kind == p.EXITED:
            pid, description = frame[1], frame[2]
            self.exits[pid] = description
            while len(self.exits) > _EXIT_MEMORY:
                self.exits.popitem(last=False)
            waiter = self.exit_waiters.get(pid)
            if waiter is not None and not waiter.done():
                waiter.set_result(description)

    def _lost(self, reason: str) -> None:
        if self.sock is None:
            return
        log.warning("zygote lost: %s", reason)
        loop = asyncio.get_event_loop()
        loop.remove_reader(self.sock.fileno())
        self.sock.close()
        self.sock = None
        for future in self.pending.values():
            if not future.done():
                future.set_exception(ZygoteError(reason))
        self.pending.clear()
        if self.ready is not None and not self.ready.done():
            self.ready.set_exception(ZygoteError(reason))
        self._reap_process(timeout=0)

    def _reap_process(self, timeout: float) -> None:
        process = self.process
        if process is None:
            return
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        self.process = None

    async def close(self) -> None:
        """Closes the socket: the zygote kills every instance it forked, then exits."""
        sock = self.sock
        if sock is not None:
            asyncio.get_running_loop().remove_reader(sock.fileno())
            sock.close()
            self.sock = None
        process = self.process
        if process is not None:
            for _ in range(100):
                if process.poll() is not None:
                    break
                await asyncio.sleep(0.02)
            self._reap_process(timeout=0)
