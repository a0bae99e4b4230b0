"""The child spans of a call, as the parts that measured them record them (pure: they only
add finished spans to the call's trace).

- ``forwarded``: the router's forward of the call to another node, a CLIENT span whose id
  the receiver's server span names as its parent (``CallTrace.outgoing``);
- ``ran``: the pool's part, a ``queue`` span for the wait for a slot (when the call waited
  at least ``QUEUE_SPAN_MIN_S``) and an ``execute`` span for the call on its instance;
- ``cold_start``: an instance started for the call, with its phases as the runtime knows
  them: ``spawn`` (the zygote forks the process, in its sandbox and cgroup), ``init`` (the
  handler's import and init, as the instance measured them) and ``ready`` (the rest, until
  its READY reached the node; all of it for an exec function, which reports no init time).
"""

from __future__ import annotations

from tierfaas.tracing.spans import Attribute, CallTrace, Kind

QUEUE_SPAN_MIN_S = 0.0001
"""A call that got a slot within this (the common, warm case) records no ``queue`` span."""


def forwarded(
    trace: CallTrace,
    span_id: str,
    start: float,
    end: float,
    *,
    node: str,
    address: str,
    method: str,
    status: int | None,
    reject: str | None = None,
    error: BaseException | None = None,
) -> None:
    """One forward of the call to ``node`` at ``address`` (host:port), answered ``status``
    (None: no answer), refused unrun with ``reject``, or failed with ``error``."""
    host, _, port = address.rpartition(":")
    attributes: dict[str, Attribute] = {
        "http.request.method": method,
        "server.address": host.strip("[]"),
        "tierfaas.forward.node": node,
    }
    if port.isdigit():
        attributes["server.port"] = int(port)
    if status is not None:
        attributes["http.response.status_code"] = status
    if reject is not None:
        attributes["tierfaas.forward.reject"] = reject
    message = None
    if error is not None:
        attributes["error.type"] = type(error).__name__
        message = str(error)[:300]
    elif status is not None and status >= 500 and reject is None:
        attributes["error.type"] = str(status)
        message = f"HTTP {status}"
    trace.child(
        "POST /function/{name}", start, end, attributes, kind=Kind.CLIENT, error=message,
        span_id=span_id,
    )  # fmt: skip


def ran(
    trace: CallTrace,
    function: str,
    arrived: float,
    dispatched: float,
    ended: float,
    instance: int,
    cold: bool,
    error: BaseException | None = None,
) -> None:
    """The call's wait for a slot (from ``arrived``) and its run on instance ``instance``
    (from ``dispatched``), ``error`` if it failed there."""
    if dispatched - arrived >= QUEUE_SPAN_MIN_S:
        trace.child("queue", arrived, dispatched, {"faas.name": function, "faas.coldstart": cold})
    attributes: dict[str, Attribute] = {
        "faas.name": function, "tierfaas.instance": instance, "faas.coldstart": cold,
    }  # fmt: skip
    message = None
    if error is not None:
        attributes["error.type"] = getattr(error, "code", type(error).__name__)
        message = str(error)[:300]
    trace.child(f"execute {function}", dispatched, ended, attributes, error=message)


def cold_start(
    trace: CallTrace,
    function: str,
    began: float,
    ready: float,
    *,
    instance: int | None = None,
    forked: float | None = None,
    init_s: float | None = None,
    error: BaseException | None = None,
) -> None:
    """An instance of ``function`` started for the call, from ``began`` to ``ready`` (or
    failed with ``error``): ``forked``, when the zygote had forked it; ``init_s``, how long
    its import and init took as it measured them."""
    attributes: dict[str, Attribute] = {"faas.name": function}
    if instance is not None:
        attributes["tierfaas.instance"] = instance
    message = None
    if error is not None:
        attributes["error.type"] = getattr(error, "code", type(error).__name__)
        message = str(error)[:300]
    parent = trace.child("cold start", began, ready, attributes, error=message)
    if forked is None or error is not None:
        return
    forked = min(max(forked, began), ready)
    trace.child("spawn", began, forked, parent_id=parent)
    init_end = forked
    if init_s is not None:
        init_end = min(ready, forked + max(0.0, init_s))
        trace.child("init", forked, init_end, parent_id=parent)
    trace.child("ready", init_end, ready, parent_id=parent)
