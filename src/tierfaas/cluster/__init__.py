"""The cluster tier: the ``ClusterManager`` actor, its messages and ``ClusterState``."""

from tierfaas.cluster.manager import ClusterManager
from tierfaas.cluster.state import ClusterState, NodeEndpoint, RoleChange

__all__ = ["ClusterManager", "ClusterState", "NodeEndpoint", "RoleChange"]
