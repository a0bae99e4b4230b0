"""docs/openapi.yaml is true: it is valid OpenAPI 3.1, it documents every route of the app
and nothing else, a real node answers each documented operation as documented, and a fuzzer
driven by it (schemathesis) finds no answer the description does not allow, no server error
other than the typed function errors, and a node still healthy afterwards.

The fuzzing is bounded and reproducible: a fixed number of examples per operation, derandomized
(the same inputs on every run), no deadline per example (the machine is shared) but a time
limit per request. ``TIERFAAS_FUZZ_EXAMPLES`` raises the count for a longer run.
Hosts 127.0.10.20-29 are this file's.
"""

from __future__ import annotations

import json
import os
import re
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
import yaml
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.specs.openapi.definitions import OPENAPI_31_VALIDATOR

import tierfaas
from tierfaas import native
from tierfaas.calls import api as calls_api
from tierfaas.http import app as app_module
from tierfaas.http import function_page
from tierfaas.http.dashboard import _STATIC
from tierfaas.testing.nodes import NodeProcess, free_port, http_get
from tierfaas.testing.wait import eventually

pytestmark = pytest.mark.e2e

REPO = Path(__file__).parent.parent.parent
SPEC = REPO / "docs" / "openapi.yaml"
TESTREL = REPO / "tests" / "fixtures" / "testrel"
HOST = "127.0.10.20"
PEER_HOST = "127.0.10.21"
EXAMPLES = int(os.environ.get("TIERFAAS_FUZZ_EXAMPLES", "25"))
# Operations whose answer never ends: checked by hand below, not by the fuzzer.
ENDLESS = {"/v1/dashboard/stream"}
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]


def spec() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(SPEC.read_text())
    return loaded


def _live_members(url: str) -> int:
    status, body = http_get(f"{url}/v1/cluster")
    if status != 200:
        return 0
    return sum(1 for m in json.loads(body)["members"] if m.get("state") == "alive")


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProcess]:
    """The node under test, ready, in a cluster (so it holds a routing table) with a second
    node, which keeps the second copy of its async calls (a cluster without a live peer
    accepts none: 503), so the fuzzer reaches the accept path."""
    logs = tmp_path_factory.mktemp("openapi")
    gossip = free_port(HOST)
    args = ["--gossip", f"{HOST}:{gossip}", "--gossip-preset", "local", "--max-body-bytes", "4096"]
    peer_args = ["--gossip", f"{PEER_HOST}:{free_port(PEER_HOST)}", "--gossip-preset", "local"]
    peer_args += ["--join", f"{HOST}:{gossip}"]
    with (
        NodeProcess(TESTREL, host=HOST, extra_args=args, log_path=logs / "node.log") as started,
        NodeProcess(TESTREL, host=PEER_HOST, extra_args=peer_args, log_path=logs / "peer.log"),
    ):
        eventually(lambda: http_get(f"{started.url}/readyz")[0] == 200, 20.0)
        eventually(lambda: _live_members(started.url) == 2, 30.0)
        yield started


@pytest.fixture(scope="module")
def schema(node: NodeProcess) -> Any:
    loaded = schemathesis.openapi.from_path(SPEC)
    loaded.config.update(base_url=node.url)
    return loaded


def test_the_description_is_valid_openapi_3_1() -> None:
    document = spec()
    assert document["openapi"].startswith("3.1")
    OPENAPI_31_VALIDATOR.validate(document)


PACKAGE = Path(tierfaas.__file__).resolve().parent


def _app_routes() -> set[str]:
    """Every path the app answers, read from its source: the literal paths it compares
    against, its admin paths, the dashboard's files, the invocation prefix, the one of a
    function's details and the routes of asynchronous calls (tierfaas.calls.api)."""
    # The source, not the module's file: that is a compiled one under tierfaas.native.
    source = native.source_path(PACKAGE, app_module.__name__).read_text()
    literal = set(re.findall(r'path == "(/[^"]*)"', source))
    calls = {
        f"{calls_api.ASYNC_PREFIX}{{name}}",
        calls_api.CALLS_PATH,
        f"{calls_api.CALLS_PATH}/{{id}}",
        f"{calls_api.CALLS_PATH}/{{id}}/retry",
        calls_api.DEAD_LETTERS_PATH,
    }
    prefixed = {
        "/function/{name}",
        f"{app_module.FUNCTIONS_PREFIX}{{name}}",
        f"{function_page.PATH}{{name}}",
    }
    return literal | set(app_module.ADMIN_PATHS) | set(_STATIC) | prefixed | calls


def test_every_route_of_the_app_is_documented_and_nothing_else() -> None:
    documented = set(spec()["paths"])
    assert _app_routes() == documented


def test_every_status_the_errors_module_can_send_to_a_client_is_documented() -> None:
    from tierfaas import errors

    def subclasses(cls: type) -> list[type]:
        found = []
        for sub in cls.__subclasses__():
            found += [sub, *subclasses(sub)]
        return found

    statuses = {str(cls.status) for cls in subclasses(errors.HttpError)}  # type: ignore[attr-defined]
    documented = set(spec()["paths"]["/function/{name}"]["post"]["responses"])
    # 405 answers a method no operation lists (said in the description's text; checked live
    # by test_bad_input.py), so no listed operation documents it.
    assert statuses - {"405"} <= documented


def _operations(schema: Any) -> list[Any]:
    operations = []
    for result in schema.get_all_operations():
        operation = result.ok()
        if operation.path not in ENDLESS:
            operations.append(operation)
    return operations


def _not_following(case: Any) -> None:
    """``GET /v1/logs?follow=true`` never ends: the fuzzer asks without it (checked by hand in
    test_following_logs_answers_as_documented)."""
    if case.path == "/v1/logs" and isinstance(case.query, dict):
        case.query.pop("follow", None)


def test_each_documented_operation_answers_as_documented(node: NodeProcess, schema: Any) -> None:
    """Positive examples of every operation (bounded), each response checked against the
    description: status, content type, headers, body schema, no untyped server error."""
    # Warm a function first, so that /v1/routes and /v1/stats have something to show.
    assert http_get(f"{node.url}/function/echo")[0] == 200
    for operation in _operations(schema):

        @given(case=operation.as_strategy())
        @settings(
            max_examples=5,
            derandomize=True,
            deadline=None,
            database=None,
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        def check(case: Any) -> None:
            _not_following(case)
            response = case.call(timeout=10)
            case.validate_response(response, checks=CHECKS)

        check()
    assert http_get(f"{node.url}/healthz")[0] == 200


def test_an_async_call_answers_as_documented_at_each_step(node: NodeProcess, schema: Any) -> None:
    """The fuzzer's random names and headers rarely make an async call; this one goes
    through every route of one: accepted, replayed by its key, read until it succeeded,
    refused a retry, listed; and the refusals before anything is kept."""

    def call(path: str, method: str, **parts: Any) -> Any:
        case = schema[path][method].Case(**parts)
        response = case.call(timeout=10)
        case.validate_response(response, checks=CHECKS)
        return response

    def header(response: Any, name: str) -> str:
        values = {key.lower(): value for key, value in response.headers.items()}[name]
        return str(values[0] if isinstance(values, list) else values)

    octets = {"media_type": "application/octet-stream", "body": b"hello"}
    accept = {"path_parameters": {"name": "echo"}, "headers": {"Idempotency-Key": "openapi-1"}}
    first = call("/async-function/{name}", "POST", **accept, **octets)
    assert first.status_code == 202, first.text
    call_id = first.json()["call_id"]
    assert header(first, "x-call-id") == call_id
    again = call("/async-function/{name}", "POST", **accept, **octets)
    assert (again.status_code, again.json()["call_id"]) == (202, call_id)
    assert header(again, "x-idempotent-replay") == "true"

    def state() -> str:
        answer = call("/v1/calls/{id}", "GET", path_parameters={"id": call_id})
        assert answer.status_code == 200, answer.text
        return str(answer.json()["state"])

    eventually(lambda: state() == "succeeded", 20.0)
    retried = call("/v1/calls/{id}/retry", "POST", path_parameters={"id": call_id})
    assert retried.status_code == 409
    # A keyed call lives where its key hashes to (maybe the peer); one without a key is
    # this node's own, and so in its list.
    own = call("/async-function/{name}", "POST", path_parameters={"name": "echo"}, **octets)
    assert own.status_code == 202, own.text
    listed = call("/v1/calls", "GET", query={"function": "echo", "limit": 10})
    assert own.json()["call_id"] in [c["call_id"] for c in listed.json()["calls"]]
    assert call("/v1/dead-letters", "GET", query={"limit": 5}).status_code == 200
    unknown = {"path_parameters": {"name": "nope"}}
    assert call("/async-function/{name}", "POST", **unknown, **octets).status_code == 404
    outside = {"X-Callback-Url": "http://169.254.169.254/latest/meta-data/"}
    refused = call(
        "/async-function/{name}",
        "POST",
        path_parameters={"name": "echo"},
        headers=outside,
        **octets,
    )
    assert (refused.status_code, refused.json()["error"]) == (400, "bad_callback")


def test_the_event_stream_answers_as_documented(node: NodeProcess) -> None:
    with socket.create_connection((node.host, node.port), timeout=5) as sock:
        sock.sendall(b"GET /v1/dashboard/stream HTTP/1.1\r\nHost: x\r\n\r\n")
        data = b""
        # Chunked: the first event ends with a blank line inside its chunk.
        while b"data: " not in data or b"\n\n" not in data.split(b"data: ", 1)[1]:
            chunk = sock.recv(65536)
            assert chunk, data
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    assert b"content-type: text/event-stream" in head.lower()
    assert b"x-request-id: " in head.lower()
    event = body.split(b"data: ", 1)[1].split(b"\n\n", 1)[0]
    assert set(spec()["components"]["schemas"]["Overview"]["required"]) <= set(json.loads(event))


def test_following_logs_answers_as_documented(node: NodeProcess) -> None:
    """``follow=true``: a 200 ndjson answer that stays open, whose lines are ``LogLine``s (the
    testrel function ``ctx`` prints nothing, so ``echo``'s empty log is read: headers only)."""
    with socket.create_connection((node.host, node.port), timeout=5) as sock:
        sock.sendall(b"GET /v1/logs?function=echo&follow=true HTTP/1.1\r\nHost: x\r\n\r\n")
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            assert chunk, data
            data += chunk
    head = data.partition(b"\r\n\r\n")[0].lower()
    assert head.startswith(b"http/1.1 200")
    assert b"content-type: application/x-ndjson" in head and b"x-request-id: " in head
    assert b"content-length" not in head  # it stays open
    required = set(spec()["components"]["schemas"]["LogLine"]["required"])
    status, body = http_get(f"{node.url}/v1/logs?function=echo&limit=5")
    assert status == 200
    for line in body.splitlines():
        assert set(json.loads(line)) == required


def test_fuzzing_from_the_description_finds_only_documented_answers(
    node: NodeProcess, schema: Any
) -> None:
    """Generated (and, for each parameter, deliberately invalid) inputs for every operation:
    every answer is one the description allows, never a server error other than the typed
    function errors, and the node is healthy at the end."""
    for operation in _operations(schema):
        modes = [schemathesis.GenerationMode.POSITIVE]
        if "{" in operation.path:  # something to break: the only parameters are in paths
            modes.append(schemathesis.GenerationMode.NEGATIVE)
        for mode in modes:
            strategy = operation.as_strategy(generation_mode=mode)

            @given(case=strategy, extra=st.binary(max_size=64))
            @settings(
                max_examples=EXAMPLES,
                derandomize=True,
                deadline=None,
                database=None,
                phases=[Phase.explicit, Phase.generate],
                suppress_health_check=list(HealthCheck),
            )
            def fuzz(case: Any, extra: bytes) -> None:
                if case.path.startswith("/function/") and case.method.upper() != "GET":
                    case.body = extra  # any bytes are a valid body
                _not_following(case)
                response = case.call(timeout=15)
                case.validate_response(response, checks=CHECKS)

            fuzz()
    status, body = http_get(f"{node.url}/healthz")
    assert status == 200 and json.loads(body)["status"] == "ok"
