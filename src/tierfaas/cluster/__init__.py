"""The cluster tier: the ``ClusterManager`` actor, its messages and ``ClusterState``."""

from tierfaas.cluster.manager import ClusterManager
from tierfaas.cluster.state import ClusterState, MemberView, NodeEndpoint, RoleChange, RunGone

__all__ = ["ClusterManager", "ClusterState", "MemberView", "NodeEndpoint", "RoleChange", "RunGone"]
