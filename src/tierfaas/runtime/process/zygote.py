"""The zygote: a template process that forks function instances (the SOCK paper's idea).

Started once per node with ``python -m tierfaas.runtime.process.zygote FD``, it imports the runtime
(msgpack, asyncio, uvloop, the instance code) once, then waits on the node's SEQPACKET socket
for spawn requests. Each request carries the instance spec and one file descriptor, the
instance's end of its socket to the node; the zygote forks, and the child becomes the instance.
Forking from a pre-imported parent costs a few milliseconds, against ~50 ms for a fresh
interpreter (shared/reference/loopback-limits.md).

Lifetime: the zygote asks the kernel to kill it when the node dies (PR_SET_PDEATHSIG) and gives
each child the same order about itself, so a ``kill -9`` of the node leaves no process behind.
When the node closes the socket (a clean shutdown) it kills its children and exits. It reaps
children as they exit and reports each exit status, so the node can say why an instance died.
It holds no threads and no cluster state: forking a process with either is unsafe.

Processes a handler forks: each instance leads its own process group, and whoever ends an
instance (the node on a timeout or eviction, the zygote when it reaps one or shuts down) kills
the whole group, so a handler's children and a fork bomb die with their instance. The zygote is
also a child subreaper, so those orphans are reaped here, not left as zombies for pid 1. (A
process that leaves the group with setsid() escapes this; only a cgroup would hold it.)
"""

from __future__ import annotations

import os
import select
import signal
import socket
import sys
from typing import Any

import msgpack

from tierfaas.procs import become_subreaper, killpg, set_parent_death_signal
from tierfaas.runtime import protocol as p

# Everything an instance needs, imported once here so that forked children start warm.
from tierfaas.runtime.process import child


def describe_status(status: int) -> str:
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        try:
            name = signal.Signals(sig).name
        except ValueError:
            name = "unknown"
        return f"killed by signal {sig} ({name})"
    if os.WIFEXITED(status):
        return f"exited with code {os.WEXITSTATUS(status)}"
    return f"ended with status {status}"


class Zygote:
    def __init__(self, control: socket.socket) -> None:
        self.control = control
        self.children: set[int] = set()
        self.wake_r, self.wake_w = os.pipe()
        os.set_blocking(self.wake_w, False)
        os.set_blocking(self.wake_r, False)

    def run(self) -> None:
        signal.signal(signal.SIGCHLD, lambda *_: None)
        signal.set_wakeup_fd(self.wake_w)
        self._send([p.ZYGOTE_READY, os.getpid()])
        while True:
            try:
                readable, _, _ = select.select([self.control.fileno(), self.wake_r], [], [])
            except InterruptedError:  # pragma: no cover - PEP 475 retries for us
                continue
            if self.wake_r in readable:
                self._drain_wakeups()
                self._reap()
            if self.control.fileno() in readable and not self._handle_request():
                break
        self._shutdown()

    def _handle_request(self) -> bool:
        try:
            data, fds, _, _ = socket.recv_fds(self.control, 1 << 20, 4)
        except ConnectionError:
            return False
        if not data:
            return False
        try:
            frame = msgpack.unpackb(data)
            kind, seq, spec = frame[0], frame[1], frame[2]
        except Exception:
            for fd in fds:
                os.close(fd)
            return True
        if kind != p.SPAWN or len(fds) != 1:
            for fd in fds:
                os.close(fd)
            self._send([p.SPAWN_FAILED, seq, "malformed spawn request"])
            return True
        self._spawn(seq, spec, fds[0])
        return True

    def _spawn(self, seq: int, spec: dict[str, Any], fd: int) -> None:
        try:
            pid = os.fork()
        except OSError as exc:
            os.close(fd)
            self._send([p.SPAWN_FAILED, seq, f"fork failed: {exc}"])
            return
        if pid == 0:
            self._become_instance(spec, fd)
        try:  # also done by the child: whichever runs first, the group exists before use
            os.setpgid(pid, pid)
        except OSError:
            pass
        os.close(fd)
        self.children.add(pid)
        self._send([p.SPAWNED, seq, pid])

    def _become_instance(self, spec: dict[str, Any], fd: int) -> None:
        try:
            os.setpgid(0, 0)  # lead a process group: the instance and all it forks
            signal.set_wakeup_fd(-1)
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            self.control.close()
            os.close(self.wake_r)
            os.close(self.wake_w)
            set_parent_death_signal(signal.SIGKILL)
            sock = socket.socket(fileno=fd)
        except BaseException:
            os._exit(2)
        child.run_instance(sock, spec)

    def _drain_wakeups(self) -> None:
        try:
            while os.read(self.wake_r, 512):
                pass
        except BlockingIOError:
            pass

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            if pid not in self.children:
                continue  # an orphan a handler forked, re-parented here: reaped, nothing more
            self.children.discard(pid)
            killpg(pid, signal.SIGKILL)  # what its handler forked and left running
            self._send([p.EXITED, pid, describe_status(status)])

    def _send(self, frame: list[Any]) -> None:
        try:
            self.control.send(msgpack.packb(frame))
        except OSError:
            pass  # the node is gone; the loop sees EOF next and shuts down

    def _shutdown(self) -> None:
        for pid in list(self.children):
            killpg(pid, signal.SIGKILL)
        for pid in list(self.children):
            try:
                os.waitpid(pid, 0)
            except ChildProcessError:
                pass


def main() -> None:
    set_parent_death_signal(signal.SIGKILL)
    become_subreaper()
    # Ctrl-C in a terminal reaches the whole process group; the node decides when we stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    control = socket.socket(fileno=int(sys.argv[1]))
    control.setblocking(True)
    Zygote(control).run()


if __name__ == "__main__":
    main()
