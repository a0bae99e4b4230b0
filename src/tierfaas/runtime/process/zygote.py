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
process that leaves the group with setsid() escapes this; only the sandbox's cgroup holds it.)

Sandboxed (the default): the first frame from the node carries the release's sandbox plan, and
this process enters it before anything else (``tierfaas.sandbox.enter``): it becomes the
launcher, and the zygote proper runs as pid 1 of the release's namespaces, in the release's
root. Each instance then enters its own namespaces and cgroup on the way out of the fork. The
release's ``preload`` modules are imported here, after the sandbox is entered, so that every
instance starts with them loaded (the SOCK paper's import cache).
"""

from __future__ import annotations

import contextlib
import importlib
import os
import select
import signal
import socket
import sys
from typing import Any, NoReturn

import msgpack

from tierfaas.procs import become_subreaper, killpg, set_parent_death_signal
from tierfaas.runtime import protocol as p

# Everything an instance needs, imported once here so that forked children start warm.
from tierfaas.runtime.process import child
from tierfaas.sandbox.enter import (
    InstanceForker,
    InstanceSandbox,
    ReleaseSandbox,
    become_function,
    enter_release,
    finish_instance,
    settle,
)


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


MAX_SPAWN_FDS = 16  # socket, stdout, stderr and one join file per cgroup hierarchy


class Zygote:
    def __init__(self, control: socket.socket, sandboxed: bool) -> None:
        self.control = control
        self.sandboxed = sandboxed
        self.forker = InstanceForker() if sandboxed else None
        self.children: set[int] = set()
        self.reapers: dict[int, int] = {}  # sandboxed: instance pid -> its namespace's reaper
        # Sandboxed: an instance forked ahead, settled in its cgroup, waiting for its function
        # on the other end of ``link``: (reaper pid, pid, link).
        self.prepared: tuple[int, int, socket.socket] | None = None
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
            data, fds, _, _ = socket.recv_fds(self.control, 1 << 20, MAX_SPAWN_FDS)
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
        if kind == p.PREPARE and self.forker is not None and isinstance(spec, dict):
            self._prepare(seq, spec, fds)
            return True
        expected = 3 + (spec.get("cgroup_fds", 0) if isinstance(spec, dict) else 0)
        if kind != p.SPAWN or not isinstance(spec, dict) or len(fds) != expected:
            for fd in fds:
                os.close(fd)
            self._send([p.SPAWN_FAILED, seq, "malformed spawn request"])
            return True
        self._spawn(seq, spec, fds)
        return True

    def _prepare(self, seq: int, box: dict[str, Any], fds: list[int]) -> None:
        """Forks an instance that settles in its cgroup now and takes its function later."""
        assert self.forker is not None
        self._drop_prepared()
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            sandbox = InstanceSandbox(uid=0, network="host", hostname="instance", **box)
            reaper, pid = self.forker.fork(sandbox, fds)
        except Exception as exc:
            for fd in fds:
                os.close(fd)
            ours.close()
            theirs.close()
            self._send([p.SPAWN_FAILED, seq, f"fork failed: {exc}"])
            return
        if pid == 0:
            ours.close()
            self._become_prepared(theirs, fds)
        theirs.close()
        for fd in fds:
            os.close(fd)
        self.prepared = (reaper, pid, ours)
        self._send([p.SPAWNED, seq, pid])

    def _drop_prepared(self) -> None:
        if self.prepared is not None:
            reaper, _, link = self.prepared
            self.prepared = None
            link.close()
            with contextlib.suppress(ProcessLookupError):
                os.kill(reaper, signal.SIGKILL)

    def _assign(self, seq: int, spec: dict[str, Any], fds: list[int]) -> None:
        """Gives the prepared instance its function: the spec and its three descriptors."""
        prepared, self.prepared = self.prepared, None
        try:
            if prepared is None:
                raise OSError("no prepared instance")
            reaper, pid, link = prepared
            socket.send_fds(link, [msgpack.packb(spec)], fds)
        except OSError as exc:
            if prepared is not None:
                self.prepared = prepared
                self._drop_prepared()
            self._send([p.SPAWN_FAILED, seq, f"the prepared instance is gone: {exc}"])
        else:
            link.close()
            self.children.add(pid)
            self.reapers[pid] = reaper
            self._send([p.SPAWNED, seq, pid])
        finally:
            for fd in fds:
                os.close(fd)

    def _spawn(self, seq: int, spec: dict[str, Any], fds: list[int]) -> None:
        if spec.get("prepared"):
            self._assign(seq, spec, fds)
            return
        try:
            if self.forker is not None:
                box = InstanceSandbox(**spec["sandbox"])
                reaper, pid = self.forker.fork(box, fds[3:])
            else:
                reaper, pid = 0, os.fork()
        except Exception as exc:
            for fd in fds:
                os.close(fd)
            self._send([p.SPAWN_FAILED, seq, f"fork failed: {exc}"])
            return
        if pid == 0:
            self._become_instance(spec, fds)
        if self.forker is None:
            try:  # also done by the child: whichever runs first, the group exists before use
                os.setpgid(pid, pid)
            except OSError:
                pass
        else:
            self.reapers[pid] = reaper
        for fd in fds:
            os.close(fd)
        self.children.add(pid)
        self._send([p.SPAWNED, seq, pid])

    def _become_instance(self, spec: dict[str, Any], fds: list[int]) -> NoReturn:
        sock_fd, out_fd, err_fd, *cgroup_fds = fds
        try:
            self._leave_zygote()
            _redirect_output(out_fd, err_fd)
            box = spec.get("sandbox")
            if box is not None:
                finish_instance(InstanceSandbox(**box), cgroup_fds, keep_fds=[sock_fd])
            else:
                os.setpgid(0, 0)  # lead a process group: the instance and all it forks
                for fd in cgroup_fds:
                    os.close(fd)
                set_parent_death_signal(signal.SIGKILL)
            sock = socket.socket(fileno=sock_fd)
        except BaseException as exc:
            _refuse(sock_fd, exc)
        child.run_instance(sock, spec)

    def _become_prepared(self, link: socket.socket, cgroup_fds: list[int]) -> NoReturn:
        fds: list[int] = []
        try:
            self._leave_zygote()
            settle(cgroup_fds)
            link.setblocking(True)
            data, fds, _, _ = socket.recv_fds(link, 1 << 20, 3)
            link.close()
            if not data or len(fds) != 3:
                os._exit(0)  # the zygote dropped this prepared instance
            spec = msgpack.unpackb(data)
        except BaseException:
            os._exit(2)
        self._run_instance(spec, fds)

    def _leave_zygote(self) -> None:
        """What a forked child of the zygote first lets go of."""
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        self.control.close()
        os.close(self.wake_r)
        os.close(self.wake_w)
        if self.prepared is not None:
            self.prepared[2].close()

    def _run_instance(self, spec: dict[str, Any], fds: list[int]) -> NoReturn:
        sock_fd, out_fd, err_fd = fds
        try:
            _redirect_output(out_fd, err_fd)
            become_function(InstanceSandbox(**spec["sandbox"]), keep_fds=[sock_fd])
            sock = socket.socket(fileno=sock_fd)
        except BaseException as exc:
            _refuse(sock_fd, exc)
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
            if self.prepared is not None and pid == self.prepared[1]:
                self._drop_prepared()  # it died before it was given a function
                continue
            if pid not in self.children:
                continue  # an orphan a handler forked, or a reaper: reaped, nothing more
            self.children.discard(pid)
            reaper = self.reapers.pop(pid, None)
            if reaper is not None:  # its namespace ends with its reaper
                with contextlib.suppress(ProcessLookupError):
                    os.kill(reaper, signal.SIGKILL)
            else:
                killpg(pid, signal.SIGKILL)  # what its handler forked and left running
            self._send([p.EXITED, pid, describe_status(status)])

    def _send(self, frame: list[Any]) -> None:
        try:
            self.control.send(msgpack.packb(frame))
        except OSError:
            pass  # the node is gone; the loop sees EOF next and shuts down

    def _shutdown(self) -> None:
        self._drop_prepared()
        for pid in list(self.children):
            reaper = self.reapers.get(pid)
            if reaper is not None:  # the whole namespace: the instance and all it started
                with contextlib.suppress(ProcessLookupError):
                    os.kill(reaper, signal.SIGKILL)
            else:
                killpg(pid, signal.SIGKILL)
        for pid in list(self.children):
            try:
                os.waitpid(pid, 0)
            except ChildProcessError:
                pass


def _redirect_output(out_fd: int, err_fd: int) -> None:
    """The instance's stdout and stderr are its pipes to the node; stdin reads nothing."""
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.dup2(out_fd, 1)
    os.dup2(err_fd, 2)
    for fd in (null, out_fd, err_fd):
        if fd > 2:
            os.close(fd)
    # Line by line: a handler's print reaches the log before its call ends, and nothing is
    # left in a buffer when the instance is killed.
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(AttributeError, ValueError):
            stream.reconfigure(line_buffering=True)  # type: ignore[union-attr]


def _refuse(sock_fd: int, exc: BaseException) -> NoReturn:
    """The instance could not be set up: say why on its socket, then exit."""
    with contextlib.suppress(BaseException):
        message = f"the instance's sandbox could not be set up: {exc}"
        os.write(sock_fd, msgpack.packb([p.START_FAILED, type(exc).__name__, message]))
    os._exit(2)


def _setup(control: socket.socket) -> dict[str, Any]:
    data = control.recv(1 << 20)
    frame = msgpack.unpackb(data) if data else None
    if not isinstance(frame, list) or len(frame) != 2 or frame[0] != p.ZYGOTE_SETUP:
        sys.exit(2)  # not our node: nothing to say it to
    setup: dict[str, Any] = frame[1]
    return setup


def _preload(root: str, modules: list[str]) -> None:
    try:
        os.chdir(root)
    except PermissionError:
        raise PermissionError(
            f"the release directory {root} is not readable by the functions' uids: make it "
            "and its files readable by others (chmod -R o+rX), or use --isolation process"
        ) from None
    sys.path.insert(0, root)
    for module in modules:
        try:
            importlib.import_module(module)
        except BaseException as exc:
            raise RuntimeError(
                f"preload of {module!r} failed: {type(exc).__name__}: {exc}"
            ) from exc


def main() -> None:
    set_parent_death_signal(signal.SIGKILL)
    become_subreaper()
    # Ctrl-C in a terminal reaches the whole process group; the node decides when we stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    control = socket.socket(fileno=int(sys.argv[1]))
    control.setblocking(True)
    setup = _setup(control)
    sandbox = setup.get("sandbox")
    try:
        if sandbox is not None:
            enter_release(ReleaseSandbox.from_wire(sandbox), launcher_fds=[control.fileno()])
        _preload(setup["root"], list(setup.get("preload", [])))
    except BaseException as exc:
        with contextlib.suppress(OSError):
            control.send(msgpack.packb([p.ZYGOTE_FAILED, str(exc)[:4000]]))
        os._exit(1)
    Zygote(control, sandboxed=sandbox is not None).run()


if __name__ == "__main__":
    main()
