"""The network-namespace fabric moved to ``tierfaas.testing.netns`` (benchmarks/netns_cluster.py
builds its 40-node cluster with it too); this name stays for the chaos scenarios' imports."""

from tierfaas.testing.netns import (
    STEM,
    Fabric,
    NetnsNode,
    clean_stale,
    namespaces,
    unavailable,
)

__all__ = ["STEM", "Fabric", "NetnsNode", "clean_stale", "namespaces", "unavailable"]
