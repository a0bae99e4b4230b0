"""Regenerates ``tierfaas_pb2.py``, ``tierfaas_pb2_grpc.py`` and ``tierfaas_pb2.pyi`` from
``tierfaas.proto``: ``python -m tierfaas.control.generate`` (needs grpcio-tools).

``generate(out_dir)`` writes into another directory, which is how the staleness test compares
the committed files with fresh output.
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
PROTO = HERE / "tierfaas.proto"
OUTPUTS = ("tierfaas_pb2.py", "tierfaas_pb2_grpc.py", "tierfaas_pb2.pyi")
# protoc names the import of the messages module after the proto's path; the package-relative
# import keeps the generated stub importable as tierfaas.control.tierfaas_pb2_grpc.
_ABSOLUTE_IMPORT = "import tierfaas_pb2 as tierfaas__pb2"
_PACKAGE_IMPORT = "from tierfaas.control import tierfaas_pb2 as tierfaas__pb2"


def generate(out_dir: Path = HERE) -> list[Path]:
    """Runs protoc on tierfaas.proto into ``out_dir``; returns the files written."""
    from grpc_tools import protoc  # type: ignore[import-untyped]  # dev dependency, untyped

    out_dir.mkdir(parents=True, exist_ok=True)
    include = Path(protoc.__file__).resolve().parent / "_proto"
    status = protoc.main(
        [
            "grpc_tools.protoc",
            f"-I{HERE}",
            f"-I{include}",
            f"--python_out={out_dir}",
            f"--pyi_out={out_dir}",
            f"--grpc_python_out={out_dir}",
            str(PROTO),
        ]
    )
    if status != 0:
        raise RuntimeError(f"protoc failed with status {status}")
    stub = out_dir / "tierfaas_pb2_grpc.py"
    stub.write_text(stub.read_text().replace(_ABSOLUTE_IMPORT, _PACKAGE_IMPORT))
    return [out_dir / name for name in OUTPUTS]


if __name__ == "__main__":
    for path in generate():
        print(path.relative_to(Path.cwd()) if path.is_relative_to(Path.cwd()) else path)
    sys.exit(0)
