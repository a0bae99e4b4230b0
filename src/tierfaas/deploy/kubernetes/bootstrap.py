"""The first generation of a cluster: ``python -m tierfaas.deploy.kubernetes bootstrap``.

The bootstrap Job of deploy/kubernetes/ runs it once: it waits for a published release, then
starts the first node alone and, once it is ready, the others, so that they all find it behind
the seed name. From then on the master owns the cluster and rolls it.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from tierfaas.deploy.kubernetes.errors import KubernetesError, api_call
from tierfaas.deploy.kubernetes.provider import KubernetesProvider, connect
from tierfaas.deploy.kubernetes.settings import DEFAULT_NAMESPACE, env_name, own_namespace
from tierfaas.deploy.provider import ProviderError
from tierfaas.errors import ConfigError

log = logging.getLogger(__name__)


async def bootstrap(
    provider: KubernetesProvider,
    version: str,
    count: int,
    timeout_s: float = 300.0,
    poll_s: float = 2.0,
) -> list[str]:
    """Starts generation 0 of a new cluster: ``count`` nodes of ``version``. The first is
    started alone and awaited until ready, so it is the only pod the others find behind the
    seed name; pods started together would each find only themselves and form clusters of
    one. Idempotent: tops generation 0 up to ``count``, and does nothing once a rollout has
    run (a node of a later generation exists): the master owns the cluster from then on."""
    existing = await provider.nodes()
    if any(node.generation > 0 for node in existing):
        log.info("a rollout has run (generation > 0 exists): nothing to bootstrap")
        return []
    started: list[str] = []
    if not existing:
        started += await provider.launch(version, 0, 1)
        log.info("waiting for the first node %s to be ready", started[0])
        await provider.wait_ready(started[0], timeout_s, poll_s)
    else:
        ready = [n.name for n in existing if n.phase != "draining"]
        if ready:
            await provider.wait_ready(ready[0], timeout_s, poll_s)
    missing = count - len(existing) - len(started)
    if missing > 0:
        started += await provider.launch(version, 0, missing)
    return started


async def _own_image(pod: str, namespace: str) -> str:
    """The image of the pod we run in (the bootstrap Job's)."""
    from lightkube.resources.core_v1 import Pod

    client = connect(namespace)
    try:
        with api_call(f"get pod {pod}", namespace, str(client.config.cluster.server)):
            me = await client.get(Pod, pod)
    finally:
        await client.close()
    containers = me.spec.containers if me.spec is not None else []
    if not containers or not containers[0].image:
        raise KubernetesError(f"pod {pod} has no image to copy", "not_found")
    return containers[0].image


async def wait_for_release(
    registry: Path,
    version: str | None,
    timeout_s: float,
    poll_s: float = 2.0,
    clock: Callable[[], float] = time.monotonic,
) -> str:
    """``version`` (else the desired one) once it is published in the registry folder, so a
    bootstrap applied together with the rest waits for the first 'tierfaas publish'. Raises
    ``ProviderError`` past ``timeout_s``."""
    from tierfaas.deploy.registry import DirectoryRegistry, RegistryError

    store = DirectoryRegistry(registry)
    deadline = clock() + timeout_s
    why = ""
    while True:
        wanted = version or store.desired()
        if wanted is None:
            why = "it has no desired version yet"
        else:
            try:
                store.info(wanted)
                return wanted
            except RegistryError as exc:
                why = str(exc)
        if clock() >= deadline:
            raise ProviderError(f"no release to start after {timeout_s:g} s in {registry}: {why}")
        log.info(
            "waiting for a release in %s (%s): publish one, see docs/kubernetes.md", registry, why
        )
        await asyncio.sleep(poll_s)


async def _bootstrap_main(args: argparse.Namespace) -> list[str]:
    version: str | None = args.version
    if args.registry is not None:
        version = await wait_for_release(args.registry, version, args.timeout_s)
    if version is None:
        raise ProviderError("give --version, or --registry to start its desired version")
    environ = dict(os.environ)
    if not environ.get(env_name("image")) and environ.get("POD_NAME"):
        # The nodes run the image this Job runs: one place to set it (kustomize 'images:').
        namespace = environ.get(env_name("namespace")) or own_namespace() or DEFAULT_NAMESPACE
        environ[env_name("image")] = await _own_image(environ["POD_NAME"], namespace)
    provider = KubernetesProvider.from_environment(environ)
    try:
        return await bootstrap(provider, version, args.count, args.timeout_s)
    finally:
        await provider.close()


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m tierfaas.deploy.kubernetes bootstrap --registry /registry --count N`` (the
    bootstrap Job of deploy/kubernetes/): starts the first generation of a cluster. Without
    ``TIERFAAS_K8S_IMAGE`` the nodes run the image of the Job's own pod."""
    parser = argparse.ArgumentParser(prog="python -m tierfaas.deploy.kubernetes")
    commands = parser.add_subparsers(dest="command", required=True)
    boot = commands.add_parser("bootstrap", help="start generation 0 of a new cluster")
    boot.add_argument("--version", help="the release version to start (default: the desired one)")
    boot.add_argument(
        "--registry", type=Path, help="the registry folder: wait until the version is published"
    )
    boot.add_argument("--count", type=int, default=3, help="nodes to start (default 3)")
    boot.add_argument(
        "--timeout-s",
        type=float,
        default=600.0,
        help="longest wait for the release, then for the first node to be ready (default 600)",
    )
    args = parser.parse_args(argv)
    if args.count < 1:
        parser.error("--count must be 1 or more")
    if args.version is None and args.registry is None:
        parser.error("give --version, or --registry to start its desired version")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    try:
        started = asyncio.run(_bootstrap_main(args))
    except (ProviderError, ConfigError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"started {len(started)} node(s): {' '.join(started) or '-'}")
    return 0
