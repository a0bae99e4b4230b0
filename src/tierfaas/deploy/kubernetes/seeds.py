"""Gossip seeds from DNS: a headless Service's name turned into its pods' addresses."""

from __future__ import annotations

import ipaddress
import logging
import socket
import time
from collections.abc import Callable, Iterable, Sequence
from typing import TypeAlias

from tierfaas.config import Address
from tierfaas.errors import ConfigError

log = logging.getLogger(__name__)

Lookup: TypeAlias = Callable[[str, int], Sequence[str]]


def _getaddrinfo(host: str, port: int) -> list[str]:
    return [str(info[4][0]) for info in socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)]


def resolve_seeds(
    seeds: Iterable[str],
    *,
    timeout_s: float = 60.0,
    retry_s: float = 1.0,
    lookup: Lookup = _getaddrinfo,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> tuple[str, ...]:
    """``seeds`` (``HOST:PORT``) with each DNS name replaced by every address it has, so
    ``--join`` can name a headless Service, whose name lists every node pod. IP addresses and
    ``localhost`` pass unchanged, with no lookup. A name with no address yet (the first pod's
    own record takes a moment to appear) is asked again every ``retry_s`` for up to
    ``timeout_s``; then ``ConfigError("join", ...)``. A malformed seed fails at once."""
    parsed: list[tuple[str, int, bool]] = []
    for seed in seeds:
        host, sep, port_text = seed.strip().rpartition(":")
        host = host.strip("[]")
        if not sep or not host or not port_text.isdigit() or not 0 < int(port_text) <= 65535:
            raise ConfigError("join", f"{seed!r} is not HOST:PORT")
        parsed.append((host, int(port_text), host == "localhost" or _is_ip(host)))
    deadline = clock() + timeout_s
    while True:
        out: list[str] = []
        missing: list[str] = []
        for host, port, literal in parsed:
            if literal:
                out.append(f"{host}:{port}" if host == "localhost" else str(Address(host, port)))
                continue
            try:
                found = sorted(set(lookup(host, port)))
            except (OSError, UnicodeError) as exc:
                found, why = [], str(exc)
            else:
                why = "no address"
            if not found:
                missing.append(f"{host} ({why})")
            out.extend(str(Address(ip, port)) for ip in found)
        if not missing:
            return tuple(dict.fromkeys(out))
        if clock() >= deadline:
            raise ConfigError("join", f"cannot resolve {', '.join(missing)} after {timeout_s:g} s")
        log.info("waiting for %s to resolve", ", ".join(missing))
        sleep(retry_s)


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True
