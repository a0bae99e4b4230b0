"""tierfaas: a self-organizing Function-as-a-Service engine.

Every node runs user functions in separate OS processes and routes requests to nodes where the
function is already warm, using a routing table the nodes keep among themselves (master,
replicas, workers), with no external database. See docs/architecture.md.
"""

__version__ = "0.1.0"
