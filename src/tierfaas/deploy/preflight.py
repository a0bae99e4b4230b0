"""Does a release import? Checked once when a node starts from a registry, before it says it
is ready, so that a rollout to a broken release stops at its canaries (SPEC 6.1).

The check runs in a fresh interpreter (``python -m tierfaas.deploy.preflight DIR``), never in
the node: user code must not run in the node's process. It imports every handler and init
module the way an instance does (from its file inside the release) and checks that each
named callable exists; it does not call init. It prints one JSON object:
``{"problems": {"function": "reason", ...}}``.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import traceback
from pathlib import Path

from tierfaas.errors import ManifestError
from tierfaas.manifest import EntryPoint, load_release


def _entry(point: EntryPoint) -> dict[str, str]:
    return {"module": point.module, "attr": point.attr, "path": str(point.path)}


def check(release_dir: Path) -> dict[str, str]:
    """function -> why it cannot start (empty when every function imports)."""
    from tierfaas.runtime.process.child import _load

    try:
        release = load_release(release_dir)
    except ManifestError as exc:
        return {"*": str(exc)}
    os.chdir(release.root)
    sys.path.insert(0, str(release.root))
    problems = {}
    for name, spec in sorted(release.functions.items()):
        os.environ.update(spec.env)
        for point in (spec.handler, spec.init):
            if point is None:
                continue
            try:
                _load(_entry(point))
            except BaseException as exc:  # any failure of user code is a finding
                last = traceback.extract_tb(exc.__traceback__)[-1:]
                where = f" ({last[0].filename}:{last[0].lineno})" if last else ""
                problems[name] = f"{point}: {exc.__class__.__name__}: {exc}{where}"[:500]
                break
    return problems


async def run_preflight(release_dir: Path, timeout_s: float = 60.0) -> str | None:
    """None when the release imports, else a one-line reason (for /readyz and the rollout
    status)."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tierfaas.deploy.preflight",
        str(release_dir),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(process.communicate(), timeout_s)
    except TimeoutError:
        process.kill()
        await process.wait()
        return f"importing the release took more than {timeout_s:g} s"
    try:
        problems = json.loads(out)["problems"]
    except (ValueError, KeyError, TypeError):
        tail = err.decode(errors="replace").strip().splitlines()[-1:] or ["no output"]
        return f"the release check failed (exit {process.returncode}): {tail[0][:300]}"
    if not problems:
        return None
    first = sorted(problems.items())[0]
    more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
    return f"release does not import: {first[0]}: {first[1]}{more}"


def main() -> None:
    if len(sys.argv) != 2:
        sys.exit("usage: python -m tierfaas.deploy.preflight RELEASE_DIR")
    # User code may print: keep stdout for our one JSON line.
    real_stdout = os.dup(1)
    os.dup2(2, 1)
    problems = check(Path(sys.argv[1]))
    os.write(real_stdout, (json.dumps({"problems": problems}) + "\n").encode())


if __name__ == "__main__":
    main()
