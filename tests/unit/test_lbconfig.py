"""The nginx config that ``tierfaas lb-config nginx`` prints."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tierfaas.up.nginx_config import nginx_config

NODES = ["127.0.0.101:40001", "127.0.0.102:40002", "127.0.0.103:40003"]


def test_upstream_lists_every_node_with_keepalive() -> None:
    text = nginx_config(NODES, listen="127.0.0.1:9090", prefix="/tmp/x")
    upstream = re.search(r"upstream tierfaas \{(.*?)\}", text, re.S)
    assert upstream is not None
    assert re.findall(r"server (\S+) ", upstream.group(1)) == NODES
    assert re.search(r"^\s+keepalive \d+;", upstream.group(1), re.M)
    assert "listen 127.0.0.1:9090" in text
    assert "proxy_pass http://tierfaas;" in text
    assert "proxy_http_version 1.1;" in text
    assert 'proxy_set_header Connection "";' in text  # keep-alive to the nodes


def test_retries_only_on_connect_errors_timeouts_and_503() -> None:
    text = nginx_config(NODES)
    (line,) = re.findall(r"^\s*proxy_next_upstream .*;$", text, re.M)
    assert line.split()[1:] == ["error", "timeout", "http_503;"]
    assert "non_idempotent" not in line  # a POST that reached a node is never resent


def test_is_a_whole_unprivileged_nginx_conf(tmp_path: Path) -> None:
    text = nginx_config(NODES, prefix=tmp_path)
    assert re.search(r"^daemon off;$", text, re.M)
    assert f"pid {tmp_path}/nginx.pid;" in text
    assert f"error_log {tmp_path}/error.log" in text
    for temp in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
        assert f"{temp}_temp_path {tmp_path}/{temp};" in text
    assert "events {" in text and "http {" in text
    assert "user " not in text
    assert text.count("{") == text.count("}")
    assert nginx_config(NODES, user="root").splitlines()[2] == "user root;"


def test_needs_a_backend() -> None:
    with pytest.raises(ValueError):
        nginx_config([])


def test_stream_mode_splices_connections_and_moves_on_when_refused(tmp_path: Path) -> None:
    text = nginx_config(NODES, listen="127.0.0.1:9090", prefix=tmp_path, mode="stream")
    assert text.startswith("#") and "load_module /usr/lib/nginx/modules/" in text
    assert "stream {" in text and "http {" not in text
    upstream = re.search(r"upstream tierfaas \{(.*?)\}", text, re.S)
    assert upstream is not None
    assert re.findall(r"server (\S+) ", upstream.group(1)) == NODES
    assert re.search(r"^\s+proxy_pass tierfaas;$", text, re.M)
    assert re.search(r"^\s+proxy_next_upstream on;$", text, re.M)
    assert text.count("{") == text.count("}")
    with pytest.raises(ValueError):
        nginx_config(NODES, mode="udp")  # type: ignore[arg-type]


def test_the_cli_takes_unix_socket_upstreams_and_refuses_relative_ones() -> None:
    from typer.testing import CliRunner

    from tierfaas.cli import app

    runner = CliRunner()
    nodes = "unix:/run/tierfaas/a.sock,127.0.0.102:40002"
    result = runner.invoke(app, ["lb-config", "nginx", "--nodes", nodes])
    assert result.exit_code == 0, result.output
    assert "server unix:/run/tierfaas/a.sock " in result.output
    assert "server 127.0.0.102:40002 " in result.output
    result = runner.invoke(app, ["lb-config", "nginx", "--nodes", "unix:a.sock"])
    assert result.exit_code != 0 and "absolute path" in result.output
