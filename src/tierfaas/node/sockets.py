"""The node's listening sockets, bound before anything starts so that a busy port or a live
socket file is a clear ``ConfigError`` at start, not a failure after the node joined."""

from __future__ import annotations

import contextlib
import os
import socket
import stat
from pathlib import Path

from tierfaas import errors
from tierfaas.config import NodeConfig


def bind_tcp(address: str, port: int, field: str) -> socket.socket:
    """Binds a listening socket now, so a busy port is a clear error before anything starts."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((address, port))
    except OSError as exc:
        sock.close()
        raise errors.ConfigError(
            field, f"cannot listen on {address}:{port}: {exc.strerror}"
        ) from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def bind_unix(path: Path, field: str) -> socket.socket:
    """Binds a listening Unix socket (mode 600: only this user's load balancer may connect).
    A socket file left by a node that died is replaced; one a live node answers on is not."""
    if path.exists() or path.is_symlink():
        if not stat.S_ISSOCK(path.lstat().st_mode):
            raise errors.ConfigError(field, f"{path} exists and is not a socket")
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(str(path))
        except OSError:
            path.unlink()  # nobody listens: left over from a node that died
        else:
            raise errors.ConfigError(field, f"another process listens on {path}")
        finally:
            probe.close()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old_umask = os.umask(0o177)
    try:
        sock.bind(str(path))
    except OSError as exc:
        sock.close()
        raise errors.ConfigError(field, f"cannot listen on {path}: {exc.strerror}") from None
    finally:
        os.umask(old_umask)
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def bind_http(config: NodeConfig) -> list[socket.socket]:
    """The HTTP listeners: ``http``, and ``http_unix`` if set (all or none: a failure closes
    what was bound)."""
    sockets = [bind_tcp(config.http.host, config.http.port, "http")]
    if config.http_unix is not None:
        try:
            sockets.append(bind_unix(config.http_unix, "http_unix"))
        except errors.ConfigError:
            sockets[0].close()
            raise
    return sockets


def close_http(config: NodeConfig, sockets: list[socket.socket]) -> None:
    """Closes the listeners of ``bind_http`` and removes the Unix socket's file."""
    for sock in sockets:
        sock.close()
    if config.http_unix is not None:
        with contextlib.suppress(FileNotFoundError):
            config.http_unix.unlink()
