"""What the node's app makes of a call's URL and method for exec functions, in process (the
app called as ASGI, no socket): the path below ``/function/NAME`` (``_subpath``: as the client
sent it, percent escapes kept), and the methods only an http exec function takes (PATCH,
DELETE, OPTIONS). The router is a fake that records what reaches it, so nothing runs."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any, cast

import pytest

from tierfaas import errors
from tierfaas.config import Address, NodeConfig
from tierfaas.http.app import NodeApp, _subpath
from tierfaas.http.metrics import Metrics
from tierfaas.manifest import EntryPoint, ExecCommand, FunctionSpec, Release
from tierfaas.routing.router import Reply, Router
from tierfaas.runtime import Runtime

# -- _subpath -----------------------------------------------------------------------------


def scope(path: str, raw_path: bytes | None = None) -> dict[str, Any]:
    given: dict[str, Any] = {"type": "http", "path": path}
    if raw_path is not None:
        given["raw_path"] = raw_path
    return given


@pytest.mark.parametrize(
    ("raw_path", "subpath"),
    [
        (b"/function/f", "/"),
        (b"/function/f/", "/"),
        (b"/function/f/a", "/a"),
        (b"/function/f/a/b/", "/a/b/"),
        (b"/function/f//a", "//a"),
        (b"/function/f/a%20b/c%2Fd", "/a%20b/c%2Fd"),  # escapes kept, %2F not a separator
        (b"/function/f/%E2%82%AC", "/%E2%82%AC"),
        (b"/function/h%65llo/x", "/x"),  # the name escaped: what follows it still found
        (b"/function/f/~!$&'()*+,;=:@", "/~!$&'()*+,;=:@"),
    ],
)
def test_the_subpath_is_what_follows_the_name_as_sent(raw_path: bytes, subpath: str) -> None:
    assert _subpath(scope(raw_path.decode("latin-1"), raw_path)) == subpath


def test_without_raw_path_the_decoded_path_is_used() -> None:
    assert _subpath(scope("/function/f/a/b")) == "/a/b"
    assert _subpath(scope("/function/f")) == "/"


def test_raw_path_wins_over_the_decoded_path() -> None:
    assert _subpath(scope("/function/f/a b", b"/function/f/a%20b")) == "/a%20b"


@pytest.mark.parametrize(
    "raw_path",
    [
        b"/function/f/a b",
        b"/function/f/a\tb",
        b"/function/f/\x00",
        b"/function/f/a\x7f",
        b"/function/f/\xe2\x82\xac",  # UTF-8 sent unescaped
        b"/function/f/a\r\nHost: x",
    ],
)
def test_bytes_a_request_line_cannot_carry_are_a_bad_request(raw_path: bytes) -> None:
    with pytest.raises(errors.BadRequest, match="bytes a URL cannot carry"):
        _subpath(scope("/function/f/x", raw_path))


def test_decoded_non_ascii_without_raw_path_is_a_bad_request() -> None:
    with pytest.raises(errors.BadRequest):
        _subpath(scope("/function/f/\u20ac"))


# -- through the app ----------------------------------------------------------------------


class FakeRouter:
    """Records each call that reaches routing and answers it 200."""

    forwarded = 0

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    async def handle(self, name: str, body: bytes, **kwargs: Any) -> Reply:
        self.calls.append({"name": name, "body": body, **kwargs})
        return Reply(200, b"done", [(b"content-type", b"text/plain")])


def release(root: Path) -> Release:
    def exec_spec(name: str, protocol: str) -> FunctionSpec:
        return FunctionSpec(name=name, handler=None, command=ExecCommand(("./x",), protocol))

    functions = {
        "web": exec_spec("web", "http"),
        "pipe": exec_spec("pipe", "stdio"),
        "py": FunctionSpec(name="py", handler=EntryPoint("mod", "fn", root / "mod.py")),
    }
    return Release("r", "1", root, functions)


def make_app(tmp_path: Path) -> tuple[NodeApp, FakeRouter]:
    config = NodeConfig(release_dir=tmp_path, http=Address("127.0.0.1", 8080))
    router = FakeRouter()
    app = NodeApp(
        Runtime(release(tmp_path), config), config, Metrics(), "n1", router=cast(Router, router)
    )
    return app, router


def send(
    app: NodeApp,
    method: str,
    path: str,
    raw_path: bytes | None = None,
    query: bytes = b"",
) -> tuple[int, dict[str, str], bytes]:
    given = scope(path, raw_path)
    given.update(method=method, query_string=query, headers=[(b"x-request-id", b"rid-1")])
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"payload", "more_body": False}

    async def record(message: dict[str, Any]) -> None:
        sent.append(message)

    async def run() -> None:
        await app(given, receive, record)  # type: ignore[arg-type]
        await app.dashboard.close()

    asyncio.run(run())
    headers = {key.decode(): value.decode() for key, value in sent[0]["headers"]}
    return sent[0]["status"], headers, b"".join(m.get("body", b"") for m in sent[1:])


@pytest.mark.parametrize("method", ["PATCH", "DELETE", "OPTIONS", "GET", "POST", "PUT"])
def test_an_http_function_takes_more_methods(tmp_path: Path, method: str) -> None:
    app, router = make_app(tmp_path)
    status, _, body = send(app, method, "/function/web/items/7", b"/function/web/items/7")
    assert (status, body) == (200, b"done")
    assert router.calls[-1]["method"] == method
    assert router.calls[-1]["path"] == "/items/7"


@pytest.mark.parametrize("name", ["pipe", "py"])
@pytest.mark.parametrize("method", ["PATCH", "DELETE", "OPTIONS"])
def test_other_functions_refuse_them(tmp_path: Path, name: str, method: str) -> None:
    app, router = make_app(tmp_path)
    status, headers, body = send(app, method, f"/function/{name}")
    assert status == 405
    assert json.loads(body)["error"] == "method_not_allowed"
    assert headers["allow"] == "GET, POST, PUT"
    assert router.calls == []


@pytest.mark.parametrize("method", ["HEAD", "TRACE", "CONNECT", "PROPFIND"])
def test_an_http_function_still_refuses_the_rest(tmp_path: Path, method: str) -> None:
    app, router = make_app(tmp_path)
    status, headers, _ = send(app, method, "/function/web")
    assert status == 405
    assert headers["allow"] == "GET, POST, PUT, PATCH, DELETE, OPTIONS"
    assert router.calls == []


def test_the_subpath_and_query_reach_routing_as_sent(tmp_path: Path) -> None:
    app, router = make_app(tmp_path)
    status, headers, _ = send(
        app, "GET", "/function/web/a b/c", b"/function/web/a%20b/c", query=b"q=%C3%A9&x"
    )
    assert status == 200 and headers["x-request-id"] == "rid-1"
    call = router.calls[-1]
    assert (call["name"], call["path"], call["query"]) == ("web", "/a%20b/c", "q=%C3%A9&x")
    assert call["body"] == b"payload"
    send(app, "POST", "/function/py", b"/function/py")
    assert router.calls[-1]["path"] == "/"  # a Python function gets its subpath too


def test_a_subpath_with_bytes_a_url_cannot_carry_is_a_bad_request(tmp_path: Path) -> None:
    app, router = make_app(tmp_path)
    status, _, body = send(app, "POST", "/function/web/\u20ac", b"/function/web/\xe2\x82\xac")
    assert status == 400
    assert json.loads(body)["error"] == "bad_request"
    assert router.calls == []
