"""Function instances: each one an OS process forked from a zygote, holding one handler.

``Runtime`` is the node's face of it: ``invoke(name, body, context)`` runs a call on a warm
instance of the function, starting one (a cold start) when none is free and the limits allow.
User code never runs in the node's process, so a CPU-bound or crashing handler can't starve or
kill the event loop that serves HTTP and gossip.
"""

from tierfaas.runtime.events import (
    FunctionCold,
    FunctionWarm,
    InstanceStarted,
    InstanceStopped,
    RuntimeEvent,
)
from tierfaas.runtime.pool import PendingCall
from tierfaas.runtime.ports import PoolView, Spawner
from tierfaas.runtime.runtime import Invocation, Runtime

__all__ = [
    "FunctionCold",
    "FunctionWarm",
    "InstanceStarted",
    "InstanceStopped",
    "Invocation",
    "PendingCall",
    "PoolView",
    "Runtime",
    "RuntimeEvent",
    "Spawner",
]
