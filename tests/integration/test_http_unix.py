"""``--http-unix``: the node's second listener, a Unix socket for a load balancer on the same
machine (``tierfaas up --lb nginx``)."""

from __future__ import annotations

import socket
import stat
from pathlib import Path

import pytest

from tierfaas.config import NodeConfig
from tierfaas.errors import ConfigError
from tierfaas.node import bind_unix

DEMO = Path(__file__).parent.parent.parent / "examples" / "demo"


def test_binds_a_socket_only_this_user_may_use(tmp_path: Path) -> None:
    path = tmp_path / "n.sock"
    sock = bind_unix(path, "http_unix")
    try:
        assert stat.S_ISSOCK(path.stat().st_mode)
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        client.connect(str(path))
        client.close()
    finally:
        sock.close()


def test_a_socket_left_by_a_dead_node_is_replaced(tmp_path: Path) -> None:
    path = tmp_path / "n.sock"
    bind_unix(path, "http_unix").close()  # closed but not removed: what a kill -9 leaves
    assert path.exists()
    bind_unix(path, "http_unix").close()


def test_a_socket_a_live_node_listens_on_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "n.sock"
    live = bind_unix(path, "http_unix")
    try:
        with pytest.raises(ConfigError, match="another process listens"):
            bind_unix(path, "http_unix")
    finally:
        live.close()


def test_a_file_that_is_not_a_socket_is_never_removed(tmp_path: Path) -> None:
    path = tmp_path / "n.sock"
    path.write_text("precious")
    with pytest.raises(ConfigError, match="not a socket"):
        bind_unix(path, "http_unix")
    assert path.read_text() == "precious"


def test_config_refuses_paths_the_kernel_cannot_bind(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="107 bytes"):
        NodeConfig(release_dir=DEMO, http_unix=tmp_path / ("x" * 120))
    with pytest.raises(ConfigError, match="not a directory"):
        NodeConfig(release_dir=DEMO, http_unix=tmp_path / "missing" / "n.sock")
