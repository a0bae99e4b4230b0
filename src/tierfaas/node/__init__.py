"""One tierfaas node: ``compose`` builds its parts, ``lifecycle`` starts, serves and stops
them (signals, drain), ``sockets`` binds its listeners, ``readiness`` answers /readyz."""

from tierfaas.node.compose import ClusterParts, NodeParts, compose
from tierfaas.node.lifecycle import EXIT_NAME_CONFLICT, Node, run_node
from tierfaas.node.sockets import bind_tcp, bind_unix

__all__ = [
    "EXIT_NAME_CONFLICT",
    "ClusterParts",
    "Node",
    "NodeParts",
    "bind_tcp",
    "bind_unix",
    "compose",
    "run_node",
]
