"""The node's HTTP face: invocations, health, the function list and metrics (raw ASGI)."""
