"""tierfaas: a self-organizing Function-as-a-Service engine.

Every node runs user functions in separate OS processes and routes requests to nodes where the
function is already warm, using a routing table the nodes keep among themselves (master,
replicas, workers), with no external database. See docs/architecture.md.
"""

__version__ = "0.1.0"

# Before any submodule: the compiled call path, if built from exactly these sources.
from pathlib import Path as _Path

from tierfaas import native as _native

_native.activate(_Path(__file__).resolve().parent)
