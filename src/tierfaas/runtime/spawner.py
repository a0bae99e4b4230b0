"""``ZygoteSpawner``: instances of the release's functions, forked by the release's zygote.

Under ``isolation = "sandbox"`` (the default) the zygote lives in the release's sandbox
(``tierfaas.sandbox.enter``) and each instance gets, from here, a cgroup of its own with the
function's limits (``memory_mb``, ``cpu``, ``pids``); under ``"process"`` instances are plain
processes of the node's user. Either way each instance's stdout and stderr come back to the
node through pipes and reach its log at a bounded rate (``runtime/output.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import re
import shutil
import signal
import socket
import tempfile
import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from tierfaas.clock import Scheduler
from tierfaas.config import NodeConfig
from tierfaas.errors import ConfigError, SandboxUnavailable
from tierfaas.manifest import EntryPoint, FunctionSpec, Release
from tierfaas.runtime.exec_instance import HttpInstance, StdioInstance
from tierfaas.runtime.instance import Instance
from tierfaas.runtime.output import (
    InstanceOutput,
    OutputBudget,
    OutputLimits,
    OutputLine,
    log_sink,
    tee,
)
from tierfaas.runtime.zygote_client import ZygoteClient, ZygoteError
from tierfaas.sandbox import identity
from tierfaas.sandbox.cgroups import (
    CgroupError,
    CgroupTree,
    InstanceCgroup,
    Limits,
    detect,
    open_tree,
)
from tierfaas.sandbox.enter import SECRETS_MOUNT, ReleaseSandbox
from tierfaas.sandbox.filesystem import Bind, gather_hidden, gather_sources, plan_root

if TYPE_CHECKING:
    from tierfaas.secrets.delivery import SecretsDelivery

log = logging.getLogger(__name__)
output_log = logging.getLogger("tierfaas.functions")

MIB = 1024 * 1024
_trees = itertools.count(1)
# How long a dead instance's cgroup may stay busy (its processes not yet reaped) before the
# node gives up removing it until shutdown, and the pauses between tries.
_REMOVE_DELAYS_S = (0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0)


def release_identities(release: Release, config: NodeConfig) -> identity.Identities:
    """Raises ConfigError when the configured uid range cannot hold the release."""
    try:
        return identity.assign(
            list(release.functions),
            node_uid=os.geteuid(),
            base=config.sandbox_uid_base,
            count=config.sandbox_uid_count,
        )
    except identity.IdentityError as exc:
        raise ConfigError("sandbox_uid_count", str(exc)) from None


def release_sandbox(
    release: Release, config: NodeConfig, ids: identity.Identities, secrets_dir: str = ""
) -> ReleaseSandbox:
    """The plan of the release's sandbox: its identities, its root directory and the node's
    folder of its functions' secrets ("" for none)."""
    hidden = gather_hidden(
        [config.key_file, config.admin_token_file, config.registry, config.provider_state]
    )
    ops = plan_root(gather_sources(release.root), hidden)
    hostname = re.sub(r"[^A-Za-z0-9.-]", "-", release.name)[:63] or "tierfaas"
    return ReleaseSandbox(ids.uid_map, os.geteuid() == 0, ops, hostname, secrets_dir)


SANDBOXED_SOCKET = "/tmp/.tierfaas-http.sock"
"""Where a sandboxed http function with ``listen = "unix"`` listens: its private /tmp."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now, for an http exec instance. (Another
    process may take it before the instance binds it: that instance then exits during its
    start, and the call that waited for it answers 502 start_failed.)"""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _discard_now(cgroup: InstanceCgroup, closing: threading.Event) -> None:
    """One SIGKILL to what is in it (its reaper's death ends its pid namespace), then rmdir
    until the kernel has reaped it all; the blocking kill for what outlives the namespace.
    ``closing`` set: the spawner's close removes the whole tree, so this stops waiting."""
    with contextlib.suppress(CgroupError):
        cgroup.signal_all(signal.SIGKILL)
    for delay in (0.0, *_REMOVE_DELAYS_S):
        if closing.wait(delay):
            return
        with contextlib.suppress(OSError):
            if cgroup.remove():
                return
    with contextlib.suppress(CgroupError):
        cgroup.kill()
    with contextlib.suppress(OSError):
        if cgroup.remove():
            return
    log.warning("cgroup %s still busy; it is removed when the node stops", cgroup.name)


class ZygoteSpawner:
    """Asks the zygote (``process/zygote.py``) for a process per instance, then waits for
    the instance's READY (import and init), at most ``start_timeout_s``."""

    def __init__(
        self,
        release: Release,
        config: NodeConfig,
        scheduler: Scheduler,
        output_sinks: Sequence[Callable[[OutputLine], None]] = (),
        secrets: SecretsDelivery | None = None,
    ) -> None:
        """``output_sinks``: who gets the instances' output lines besides the node's log.
        ``secrets``: the node's copy of the secrets its functions list (None: none do); what
        instances write is masked with its redactor before it reaches anyone."""
        self.release = release
        self.secrets = secrets
        self.redact: Callable[[str], str] | None = None if secrets is None else secrets.redactor
        self.config = config
        self.scheduler = scheduler
        self.sandboxed = config.isolation == "sandbox"
        # Under process isolation the uid range is not used, so it is not checked either.
        self.identities = release_identities(release, config) if self.sandboxed else None
        secrets_dir = "" if secrets is None else str(secrets.folder)
        plan = (
            None
            if self.identities is None
            else release_sandbox(release, config, self.identities, secrets_dir)
        )
        self.tmp_binds = (
            []
            if plan is None
            else [
                op.path for op in plan.ops if isinstance(op, Bind) and op.path.startswith("/tmp/")
            ]
        )
        self.zygote = ZygoteClient(
            {
                "sandbox": None if plan is None else plan.to_wire(),
                "root": str(release.root),
                "preload": list(release.preload),
            },
            config.start_timeout_s,
        )
        self.cgroups: CgroupTree | None = None
        self.closing = threading.Event()  # set by close(): cgroup removals in threads stop
        self.prepared: tuple[int, InstanceCgroup] | None = None  # (instance number, cgroup)
        self.preparing: asyncio.Task[None] | None = None
        # A prepared instance's limits until it is given a function: the release's largest.
        self.prepared_limits = Limits(
            memory_bytes=max(f.memory_mb for f in release.functions.values()) * MIB,
            pids=max(f.pids for f in release.functions.values()),
            cpu_cores=None,
        )
        limits = OutputLimits(
            bytes_per_s=config.output_bytes_per_s, burst_bytes=config.output_burst_bytes
        )
        self.output_budgets = {
            name: OutputBudget(limits, scheduler.clock) for name in release.functions
        }
        self.output_sink = tee([log_sink(output_log), *output_sinks])
        self.next_instance_id = 0
        self.ports: set[int] = set()  # the ports of the live http exec instances

    async def start(self) -> None:
        if self.sandboxed and self.cgroups is None:
            layout = detect(self.config.cgroup_root)
            if isinstance(layout, str):
                raise SandboxUnavailable(f"cannot sandbox functions: {layout}")
            tag = f"{self.release.name}.{next(_trees)}-{os.getpid()}"
            self.cgroups = open_tree(tag, layout)
        try:
            await self.zygote.start()
        except BaseException:
            await self.close()  # nothing of this spawner outlives a failed start
            raise
        self._prepare_soon()

    async def close(self) -> None:
        self.closing.set()
        if self.preparing is not None:
            self.preparing.cancel()
        self.prepared = None  # its cgroup goes with the tree, its process with the zygote
        await self.zygote.close()
        if self.cgroups is not None:
            try:
                self.cgroups.close()
            except CgroupError as exc:  # the next node start on this host sweeps it
                log.warning("%s", exc)
            self.cgroups = None

    async def spawn(self, spec: FunctionSpec) -> Instance:
        prepared = await self._take_prepared(spec)
        if prepared is not None:
            try:
                return await self._start(spec, *prepared, prepared=True)
            except ZygoteError as exc:  # it died waiting: a fresh fork instead
                log.info("prepared instance not usable (%s); forking one", exc)
        self.next_instance_id += 1
        number = self.next_instance_id
        cgroup = None
        if self.cgroups is not None:
            # In a thread, like every cgroup file operation: see _discard.
            cgroup = await asyncio.to_thread(
                self.cgroups.create, f"instance-{number}", self._limits(spec)
            )
        return await self._start(spec, number, cgroup, prepared=False)

    async def _start(
        self, spec: FunctionSpec, number: int, cgroup: InstanceCgroup | None, prepared: bool
    ) -> Instance:
        port = socket_path = None
        instance: Instance
        if spec.command is None:
            instance = Instance(number, spec, self.zygote, self.scheduler)
        elif spec.command.protocol == "stdio":
            instance = StdioInstance(number, spec, self.zygote, self.scheduler)
        elif spec.command.listen == "unix":
            socket_path = self._socket_path()
            instance = HttpInstance(
                number, spec, self.zygote, self.scheduler, None, socket_path=socket_path
            )
            if not self.sandboxed:  # its own folder on the host, gone with it
                folder = os.path.dirname(socket_path)
                instance.closed.add_done_callback(
                    lambda _: shutil.rmtree(folder, ignore_errors=True)
                )
        else:
            port = free_port()
            while port in self.ports:  # handed to a live instance that may not listen yet
                port = free_port()
            self.ports.add(port)
            instance = HttpInstance(number, spec, self.zygote, self.scheduler, port)
            instance.closed.add_done_callback(lambda _: self.ports.discard(port))
        instance.max_body = self.config.max_response_bytes
        if self.redact is not None:
            instance.redact = self.redact
        instance.cgroup = cgroup
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        passed = [out_w, err_w]
        try:
            if cgroup is not None and not prepared:
                passed += [os.open(path, os.O_WRONLY) for path in cgroup.join_files()]
            instance.output = InstanceOutput(
                spec.name,
                number,
                out_r,
                err_r,
                self.output_budgets[spec.name],
                self.output_sink,
                scheduler=self.scheduler,
                redact=self.redact,
            )
        except BaseException:
            for fd in (out_r, err_r, *passed):
                os.close(fd)
            self._cleanup(instance)
            raise
        instance.closed.add_done_callback(lambda _: self._cleanup(instance))
        frame = self.frame(spec, len(passed) - 2, port, socket_path)
        frame["prepared"] = prepared
        try:
            await instance.start(frame, self.config.start_timeout_s, passed)
        except BaseException:
            self._cleanup(instance)
            raise
        finally:
            for fd in passed:
                os.close(fd)
            self._prepare_soon()
        return instance

    # -- prepared instances ------------------------------------------------------------------
    # Moving a process into a cgroup can wait for an RCU grace period (milliseconds, unless
    # the cgroup mount has favordynmods), so the sandbox keeps one instance forked ahead,
    # settled in its cgroup, that becomes the next cold start's instance.

    async def _take_prepared(self, spec: FunctionSpec) -> tuple[int, InstanceCgroup] | None:
        prepared, self.prepared = self.prepared, None
        if prepared is None:
            return None
        number, cgroup = prepared
        try:
            await asyncio.to_thread(cgroup.set_limits, self._limits(spec))
        except CgroupError as exc:
            log.warning("prepared instance dropped: %s", exc)
            self._discard(cgroup)
            return None
        return number, cgroup

    def _prepare_soon(self) -> None:
        if self.cgroups is None or self.prepared is not None or self.preparing is not None:
            return
        task = asyncio.get_running_loop().create_task(self._prepare())
        self.preparing = task
        task.add_done_callback(lambda _: setattr(self, "preparing", None))

    async def _prepare(self) -> None:
        if self.cgroups is None:
            return
        self.next_instance_id += 1
        number = self.next_instance_id
        try:
            cgroup = await asyncio.to_thread(
                self.cgroups.create, f"instance-{number}", self.prepared_limits
            )
        except CgroupError as exc:
            log.warning("cannot prepare an instance: %s", exc)
            return
        fds: list[int] = []
        try:
            fds = [os.open(path, os.O_WRONLY) for path in cgroup.join_files()]
            box = {"tmp_mb": self.config.sandbox_tmp_mb, "tmp_binds": self.tmp_binds}
            await self.zygote.prepare(box, fds)
        except (OSError, ZygoteError) as exc:
            log.warning("cannot prepare an instance: %s", exc)
            self._discard(cgroup)
            return
        except Exception:
            # A bug: logged now rather than when the task is collected; cold starts fork
            # directly until the next preparation.
            log.exception("cannot prepare an instance")
            self._discard(cgroup)
            return
        finally:
            for fd in fds:
                os.close(fd)
        if self.cgroups is None:  # closed meanwhile
            self._discard(cgroup)
            return
        self.prepared = (number, cgroup)

    def _discard(self, cgroup: InstanceCgroup) -> None:
        """Kills what is left in an instance's cgroup and removes the cgroup once the kernel
        has reaped it all, in a worker thread: cgroup file operations take a kernel-wide lock
        that other nodes' cgroups contend for, and the loop must not wait on it."""
        asyncio.get_running_loop().run_in_executor(None, _discard_now, cgroup, self.closing)

    def _limits(self, spec: FunctionSpec) -> Limits:
        return Limits(memory_bytes=spec.memory_mb * MIB, pids=spec.pids, cpu_cores=spec.cpu)

    def _cleanup(self, instance: Instance) -> None:
        """After an instance's end: its output is read to the end, its cgroup emptied and
        removed."""
        if instance.output is not None:
            instance.output.close()
        cgroup, instance.cgroup = instance.cgroup, None
        if cgroup is not None:
            self._discard(cgroup)

    def _socket_path(self) -> str:
        """Where an http function with ``listen = "unix"`` listens, as it sees the path.
        Sandboxed: in the instance's own /tmp (a tmpfs no other instance sees). Else: in a
        folder of its own that only the node's user may enter."""
        if self.sandboxed:
            return SANDBOXED_SOCKET
        return os.path.join(tempfile.mkdtemp(prefix="tierfaas-http-"), "http.sock")

    def frame(
        self,
        spec: FunctionSpec,
        cgroup_fds: int = 0,
        port: int | None = None,
        socket_path: str | None = None,
    ) -> dict[str, Any]:
        """The SPAWN request's spec: what the instance process needs to start (``port`` or
        ``socket_path``: where an http exec function is to listen)."""

        def entry(point: EntryPoint | None) -> dict[str, str] | None:
            if point is None:
                return None
            return {"module": point.module, "attr": point.attr, "path": str(point.path)}

        sandbox = None
        if self.identities is not None:
            sandbox = {
                "uid": self.identities.of(spec.name),
                "network": spec.network,
                "tmp_mb": self.config.sandbox_tmp_mb,
                "hostname": spec.name.replace("_", "-")[:63],
                "tmp_binds": self.tmp_binds,
                "secrets": None if self.secrets is None else self._secrets_of(spec),
            }
        secrets_dir = self._secrets_dir(spec)
        env = spec.env
        command = None
        if spec.command is not None:
            command = {"argv": list(spec.command.argv), "protocol": spec.command.protocol}
            env = {**env, "TIERFAAS_FUNCTION": spec.name}
            if port is not None:
                # http_port too: OpenFaaS's of-watchdog templates read that name.
                env["PORT"] = env["http_port"] = str(port)
            if socket_path is not None:
                env["SOCKET_PATH"] = socket_path
            if secrets_dir:  # where the files are; the values never go in an environment
                env["TIERFAAS_SECRETS_DIR"] = secrets_dir
        return {
            "name": spec.name,
            "root": str(self.release.root),
            "handler": entry(spec.handler),
            "init": entry(spec.init),
            "exec": command,
            "env": env,
            "memory_mb": spec.memory_mb,
            "concurrency": spec.concurrency,
            "threads": spec.threads,
            "max_response_bytes": self.config.max_response_bytes,
            "debug": self.config.debug,
            "sandbox": sandbox,
            "cgroup_fds": cgroup_fds,
            "secrets_dir": secrets_dir,
        }

    def _secrets_of(self, spec: FunctionSpec) -> str:
        """The function whose folder a sandboxed instance binds ("" for none)."""
        return spec.name if self.secrets is not None and spec.secrets else ""

    def _secrets_dir(self, spec: FunctionSpec) -> str:
        """Where the instance finds its secrets, as it sees the path ("" for none)."""
        if self.secrets is None or not spec.secrets:
            return ""
        if self.sandboxed:
            return SECRETS_MOUNT
        return str(self.secrets.function_dir(spec.name))
