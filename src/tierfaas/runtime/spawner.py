"""``ZygoteSpawner``: instances of the release's functions, forked by the node's zygote."""

from __future__ import annotations

from typing import Any

from tierfaas.clock import Scheduler
from tierfaas.config import NodeConfig
from tierfaas.manifest import EntryPoint, FunctionSpec, Release
from tierfaas.runtime.instance import Instance
from tierfaas.runtime.zygote_client import ZygoteClient


class ZygoteSpawner:
    """Asks the zygote (``process/zygote.py``) for a process per instance, then waits for
    the instance's READY (import and init), at most ``start_timeout_s``."""

    def __init__(self, release: Release, config: NodeConfig, scheduler: Scheduler) -> None:
        self.release = release
        self.config = config
        self.scheduler = scheduler
        self.zygote = ZygoteClient(config.start_timeout_s)
        self.next_instance_id = 0

    async def start(self) -> None:
        await self.zygote.start()

    async def close(self) -> None:
        await self.zygote.close()

    async def spawn(self, spec: FunctionSpec) -> Instance:
        self.next_instance_id += 1
        instance = Instance(self.next_instance_id, spec, self.zygote, self.scheduler)
        instance.max_body = self.config.max_response_bytes
        await instance.start(self.frame(spec), self.config.start_timeout_s)
        return instance

    def frame(self, spec: FunctionSpec) -> dict[str, Any]:
        """The SPAWN request's spec: what the instance process needs to start."""

        def entry(point: EntryPoint | None) -> dict[str, str] | None:
            if point is None:
                return None
            return {"module": point.module, "attr": point.attr, "path": str(point.path)}

        return {
            "name": spec.name,
            "root": str(self.release.root),
            "handler": entry(spec.handler),
            "init": entry(spec.init),
            "env": spec.env,
            "memory_mb": spec.memory_mb,
            "concurrency": spec.concurrency,
            "threads": spec.threads,
            "max_response_bytes": self.config.max_response_bytes,
            "debug": self.config.debug,
        }
