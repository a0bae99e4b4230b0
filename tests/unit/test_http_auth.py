"""API keys and the admin token, in process (tierfaas.http.auth and the app's checks): which
endpoints need what, on loopback and off it, and how credentials are read and compared.
No socket is opened: the app is called as ASGI, with a node address that is not loopback."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest

from tierfaas.config import Address, NodeConfig
from tierfaas.errors import ConfigError
from tierfaas.funclogs.store import LogSettings, LogStore
from tierfaas.http import auth
from tierfaas.http.app import ADMIN_PATHS, NodeApp
from tierfaas.http.metrics import Metrics
from tierfaas.manifest import load_release
from tierfaas.runtime import Runtime
from tierfaas.testing.asgi import request

HOSTILE = Path(__file__).parent.parent / "fixtures" / "hostile"
TOKEN = "an-admin-token-for-the-tests"
API_KEY = "hostile-fixture-api-key-0123456789"


def make_app(monkeypatch: pytest.MonkeyPatch, host: str, token: str | None) -> NodeApp:
    if token is None:
        monkeypatch.delenv(auth.ADMIN_TOKEN_ENV, raising=False)
    else:
        monkeypatch.setenv(auth.ADMIN_TOKEN_ENV, token)
    config = NodeConfig(release_dir=HOSTILE, http=Address(host, 8080))
    release = load_release(HOSTILE)

    async def view() -> dict[str, Any]:
        return {"self": "n1", "master": "n1", "members": []}

    app = NodeApp(Runtime(release, config), config, Metrics(), "n1", cluster_view=view)
    app.logs = LogStore("n1", release.functions, LogSettings(files=0), None)
    return app


OPEN = ["/healthz", "/readyz", "/v1/functions"]
UNGUARDED_HERE = {"/v1/dashboard/stream", "/v1/routes", "/v1/dashboard", "/v1/logs"}
GUARDED = [*sorted(ADMIN_PATHS - UNGUARDED_HERE), "/v1/logs?function=echo", "/v1/functions/echo"]


@pytest.mark.parametrize("path", GUARDED)
def test_off_loopback_with_a_token_the_admin_endpoints_need_it(
    monkeypatch: pytest.MonkeyPatch, path: str
) -> None:
    app = make_app(monkeypatch, "10.1.2.3", TOKEN)
    for headers in (
        {},
        {"Authorization": "Bearer wrong-token-wrong-token"},
        {"Authorization": f"Bearer {TOKEN}x"},
        {"Authorization": f"Basic {base64.b64encode(b'admin:nope').decode()}"},
    ):
        status, got, body = request(app, path, headers)
        assert status == 401, (path, headers)
        assert json.loads(body)["error"] == "unauthorized"
        assert got["www-authenticate"].startswith("Basic realm=")
    basic = base64.b64encode(f"anyone:{TOKEN}".encode()).decode()
    for headers in ({"Authorization": f"Bearer {TOKEN}"}, {"Authorization": f"Basic {basic}"}):
        assert request(app, path, headers)[0] == 200, (path, headers)


def test_the_event_stream_and_routes_are_guarded_too(monkeypatch: pytest.MonkeyPatch) -> None:
    app = make_app(monkeypatch, "10.1.2.3", TOKEN)
    assert request(app, "/v1/dashboard/stream")[0] == 401
    assert request(app, "/v1/routes")[0] == 401
    # With the token, a standalone node holds no routes: 404, as documented.
    assert request(app, "/v1/routes", {"Authorization": f"Bearer {TOKEN}"})[0] == 404


@pytest.mark.parametrize("path", OPEN)
def test_health_readiness_and_the_function_list_never_need_the_token(
    monkeypatch: pytest.MonkeyPatch, path: str
) -> None:
    app = make_app(monkeypatch, "10.1.2.3", TOKEN)
    status, _, body = request(app, path)
    assert status in (200, 503), body  # /readyz: the runtime is not started here


@pytest.mark.parametrize(
    ("host", "token"), [("127.0.0.1", TOKEN), ("::1", TOKEN), ("10.1.2.3", None)]
)
def test_on_loopback_or_without_a_token_the_admin_endpoints_are_open(
    monkeypatch: pytest.MonkeyPatch, host: str, token: str | None
) -> None:
    app = make_app(monkeypatch, host, token)
    for path in GUARDED:
        assert request(app, path)[0] == 200, path


def test_a_keyed_function_refuses_before_its_body_is_read(monkeypatch: pytest.MonkeyPatch) -> None:
    app = make_app(monkeypatch, "127.0.0.1", None)
    status, got, body = request(app, "/function/secret", method="POST")
    assert (status, json.loads(body)["error"]) == (401, "unauthorized")
    assert got["www-authenticate"].startswith("Bearer")
    # An unknown function is 404 whatever is sent; a function without keys needs none.
    assert request(app, "/function/nosuch", method="POST")[0] == 404


def test_credentials_are_read_from_bearer_basic_and_x_api_key() -> None:
    basic = base64.b64encode(b"user:pass:word").decode()
    headers = [
        (b"authorization", b"Bearer  tok "),
        (b"authorization", f"Basic {basic}".encode()),
        (b"authorization", b"Basic !!!not-base64"),
        (b"authorization", b"Digest whatever"),
        (b"x-api-key", b"k1"),
        (b"x-other", b"k2"),
    ]
    assert auth.presented_secrets(headers) == [b"tok", b"pass:word", b"k1"]
    accepted = (auth.digest("k1"),)
    assert auth.authorized(headers, accepted)
    assert not auth.authorized([(b"x-api-key", b"k1x")], accepted)
    assert not auth.authorized([], accepted)
    assert not auth.authorized([(b"x-api-key", b"k1")], ())


def test_the_admin_token_file_must_be_private_and_sane(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(auth.ADMIN_TOKEN_ENV, raising=False)
    path = tmp_path / "token"
    path.write_text(TOKEN + "\n")
    path.chmod(0o600)
    assert auth.load_admin_token(path) == TOKEN
    path.chmod(0o640)
    with pytest.raises(ConfigError, match="readable by others"):
        auth.load_admin_token(path)
    for bad in ("short", "has a space in it, sadly", "é" * 20, "x" * 5000):
        path.write_text(bad)
        path.chmod(0o600)
        with pytest.raises(ConfigError):
            auth.load_admin_token(path)
    with pytest.raises(ConfigError, match="cannot read"):
        auth.load_admin_token(tmp_path / "missing")
    assert auth.load_admin_token(None) is None
    monkeypatch.setenv(auth.ADMIN_TOKEN_ENV, TOKEN)
    assert auth.load_admin_token(None) == TOKEN
