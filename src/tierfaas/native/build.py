"""Compiles the call path (``tierfaas.native.HOT_MODULES``) with mypyc into
``<sys.prefix>/tierfaas-native/``; ``make run`` and ``make test`` call it.

    python -m tierfaas.native.build            # builds unless the build matches the sources
    python -m tierfaas.native.build --force    # builds again
    python -m tierfaas.native.build --remove   # removes the build (the node runs interpreted)

It needs mypyc (the dev extra's mypy), a C compiler and Python's headers. Without them it says
so and exits 0: the node runs the same sources interpreted, slower. A compiler that fails
exits 1 with the end of its output. The build replaces the old one in one rename, so a node
starting meanwhile sees one or the other whole.
"""

from __future__ import annotations

import argparse
import importlib.machinery
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

import tierfaas
from tierfaas import native

TAIL_LINES = 30


def package_dir() -> Path:
    return Path(tierfaas.__file__).resolve().parent


def missing_tools() -> str | None:
    """Why this machine cannot compile, or None."""
    try:
        import mypyc.build  # noqa: F401
        import setuptools  # noqa: F401
    except ImportError as exc:
        return f"no {exc.name} (pip install -e '.[dev]' brings mypy's mypyc and setuptools)"
    compiler = os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc"
    if shutil.which(compiler.split()[0]) is None:
        return f"no C compiler ({compiler.split()[0]})"
    include = sysconfig.get_paths()["include"]
    if not (Path(include) / "Python.h").is_file():
        return f"no Python headers ({include}/Python.h; Debian: python3-dev)"
    return None


def compile_into(out: Path, work: Path, package: Path) -> None:
    """mypyc and the C compiler, run in this process (``main`` runs it as a child)."""
    from mypyc.build import mypycify
    from setuptools import setup

    paths = [str(native.source_path(package, module)) for module in native.HOT_MODULES]
    flags = ["--ignore-missing-imports", "--cache-dir", str(work / "mypy-cache")]
    extensions = mypycify(
        [*flags, *paths],
        opt_level="3",
        multi_file=True,  # C files the compiler builds in parallel
        group_name=native.GROUP,
        target_dir=str(work / "c"),
    )
    setup(
        name="tierfaas-native",
        ext_modules=extensions,
        script_args=[
            "--quiet", "build_ext", "--build-lib", str(out), "--build-temp", str(work / "o"),
            "--parallel", str(os.cpu_count() or 1),
        ],
    )  # fmt: skip


def manifest_for(out: Path, digests: dict[str, str | None]) -> dict[str, object]:
    suffix = importlib.machinery.EXTENSION_SUFFIXES[0]
    files: dict[str, str] = {}
    for module in (*native.HOT_MODULES, f"{native.GROUP}__mypyc"):
        relative = Path(*module.split(".")).with_suffix("").as_posix() + suffix
        if not (out / relative).is_file():
            raise RuntimeError(f"the compiler made no {relative}")
        files[module] = relative
    return {
        "format": native.FORMAT,
        "runtime": native.runtime_tag(),
        "built": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "modules": digests,
        "files": files,
    }


def install(staged: Path, target: Path) -> None:
    """Puts ``staged`` in ``target``'s place (the old build, if any, goes)."""
    old = target.with_name(target.name + f".old-{os.getpid()}")
    if target.exists():
        target.rename(old)
    staged.rename(target)
    shutil.rmtree(old, ignore_errors=True)


def build(force: bool) -> int:
    package = package_dir()
    target = native.native_dir()
    digests = native.source_digests(package)
    if not force:
        try:
            manifest = json.loads((target / native.MANIFEST).read_text())
        except (OSError, ValueError):
            manifest = None
        fresh = (
            isinstance(manifest, dict)
            and native.decide(None, manifest, digests, native.runtime_tag(), target).active
        )
        if fresh:
            print(f"tierfaas.native: up to date ({target})")
            return 0
    why_not = missing_tools()
    if why_not is not None:
        print(f"tierfaas.native: not built, {why_not}; the node runs interpreted")
        return 0
    target.parent.mkdir(parents=True, exist_ok=True)
    staged = Path(tempfile.mkdtemp(prefix="tierfaas-native.new-", dir=target.parent))
    started = time.monotonic()
    try:
        with tempfile.TemporaryDirectory(prefix="tierfaas-native-work-") as work:
            log = Path(work) / "build.log"
            env = {**os.environ, native.ENV: "0"}
            with log.open("wb") as output:
                done = subprocess.run(
                    [sys.executable, "-m", "tierfaas.native.build", "--compile-into",
                     str(staged), "--work", work],
                    stdout=output, stderr=subprocess.STDOUT, env=env, cwd=work, check=False,
                )  # fmt: skip
            if done.returncode != 0:
                lines = log.read_text(errors="replace").splitlines()[-TAIL_LINES:]
                print("\n".join(lines), file=sys.stderr)
                print(
                    f"tierfaas.native: the build failed (exit {done.returncode})", file=sys.stderr
                )
                return 1
        manifest = manifest_for(staged, digests)
        (staged / native.MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        install(staged, target)
    finally:
        shutil.rmtree(staged, ignore_errors=True)
    took = time.monotonic() - started
    print(f"tierfaas.native: built {len(native.HOT_MODULES)} modules in {took:.0f} s ({target})")
    return 0


def remove() -> int:
    target = native.native_dir()
    shutil.rmtree(target, ignore_errors=True)
    print(f"tierfaas.native: removed {target}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tierfaas.native.build", description=__doc__)
    parser.add_argument("--force", action="store_true", help="build even if up to date")
    parser.add_argument("--remove", action="store_true", help="remove the build")
    parser.add_argument("--compile-into", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.compile_into is not None:
        compile_into(args.compile_into, args.work, package_dir())
        return 0
    if args.remove:
        return remove()
    return build(args.force)


if __name__ == "__main__":
    sys.exit(main())
