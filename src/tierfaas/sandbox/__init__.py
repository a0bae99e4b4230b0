"""Isolation of function instances: cgroups, namespaces, identities."""
