"""Releases and rollouts (SPEC 6): the registry a cluster follows, the infrastructure
providers that start and stop nodes, the rollout plan and the master's controller."""
