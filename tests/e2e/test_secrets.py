"""Secrets (issue 21.2) through real node processes: a 2-node cluster per isolation
(``--isolation process``, and the sandbox where the host allows it, as root), following a
registry that holds the release ``tests/fixtures/secretive`` and two secrets planted with
``tierfaas secret create``, each a recognizable random value.

- the functions that list a secret read it (Python through ``context.secret`` and, in the
  sandbox, ``/var/secrets``; an exec program through ``$TIERFAAS_SECRETS_DIR``) and answer
  its SHA-256, never the value; one that lists none finds nothing;
- a new version reaches a running instance on its next read;
- the values are nowhere: not in an environment (/proc/PID/environ of the nodes and all their
  descendants), not in the nodes' output and files, not in any /v1 answer, the dashboard,
  /metrics or /v1/logs, and not in the error answers of functions that print the value and
  raise (or exit) with it;
- bad input: an oversized secret, names that are not plain, ``rm`` of an unknown secret, a
  release listing a secret that does not exist.

Hosts 127.0.33.10-12 (process), 127.0.33.20-21 (sandbox) and 127.0.33.50 (``tierfaas up``)
are this file's.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tierfaas.deploy.registry import DirectoryRegistry
from tierfaas.errors import SandboxUnavailable
from tierfaas.keys import write_key_file
from tierfaas.procs import free_port
from tierfaas.sandbox.probe import check_isolation
from tierfaas.testing.cluster import LocalCluster
from tierfaas.testing.nodes import NodeProcess, descendants, http_get, run_cli_bytes
from tierfaas.testing.wait import eventually

pytestmark = pytest.mark.e2e

RELEASE = Path(__file__).parent.parent / "fixtures" / "secretive"
FUNCTIONS = ("holder", "leaker", "stranger", "exec-holder", "exec-leaker")
POLL_S = 0.3


def sandbox_refusal() -> str | None:
    if os.geteuid() != 0:
        return "the sandbox tests run the node as root"
    try:
        check_isolation("sandbox", Path("/sys/fs/cgroup"))
    except SandboxUnavailable as exc:
        return str(exc)
    return None


tierfaas = run_cli_bytes


def sha256(value: bytes) -> str:
    return hashlib.sha256(value).hexdigest()


def call(node: NodeProcess, function: str) -> tuple[int, bytes]:
    return call_url(node.url, function)


@dataclass
class Planted:
    """A cluster and the secrets planted for it: every value ever created is looked for."""

    cluster: LocalCluster
    registry: Path
    key_file: Path
    log_dir: Path
    isolation: str
    values: dict[str, bytes] = field(default_factory=dict, repr=False)  # the newest
    every_value: list[bytes] = field(default_factory=list, repr=False)
    answers: list[bytes] = field(default_factory=list, repr=False)

    def create(self, name: str, value: bytes) -> None:
        made = tierfaas(
            "secret", "create", name, "--registry", str(self.registry),
            "--key-file", str(self.key_file), stdin=value,
        )  # fmt: skip
        assert made.returncode == 0, made.stderr.decode()
        assert value not in made.stdout + made.stderr
        self.values[name] = value
        self.every_value.append(value)

    def call(self, node: NodeProcess, function: str) -> tuple[int, bytes]:
        status, body = call(node, function)
        self.answers.append(body)
        return status, body

    @property
    def nodes(self) -> list[NodeProcess]:
        return self.cluster.nodes


def random_value(tag: str) -> bytes:
    return f"tfs-{tag}-{uuid.uuid4().hex}".encode()


@pytest.fixture(
    scope="module",
    params=[
        pytest.param(("process", 10), id="process"),
        pytest.param(
            ("sandbox", 20),
            id="sandbox",
            marks=pytest.mark.skipif(sandbox_refusal() is not None, reason=str(sandbox_refusal())),
        ),
    ],
)
def planted(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Planted]:
    isolation, first_host = request.param
    tmp = tmp_path_factory.mktemp(f"secrets-{isolation}")
    registry, key_file, log_dir = tmp / "registry", tmp / "cluster.key", tmp / "logs"
    log_dir.mkdir()
    write_key_file(key_file)
    DirectoryRegistry(registry).publish(RELEASE)
    cluster = LocalCluster(
        RELEASE,
        2,
        subnet="127.0.33",
        first_host=first_host,
        log_dir=log_dir,
        extra_args=[
            "--registry", str(registry), "--key-file", str(key_file),
            "--isolation", isolation, "--secrets-poll-s", str(POLL_S),
            "--cold-starts", "local",
        ],
    )  # fmt: skip
    state = Planted(cluster, registry, key_file, log_dir, isolation)
    state.create("db", random_value("db") + b"\n")  # as `echo VALUE | tierfaas secret create`
    state.create("api", random_value("api"))
    try:
        cluster.start()
        yield state
    finally:
        folders = [f"/dev/shm/tierfaas-secrets-{node.pid}-" for node in cluster.nodes]
        for node in cluster.nodes:
            node.stop()
        cluster.close()
        left = [
            e for e in os.listdir("/dev/shm") if any(f"/dev/shm/{e}".startswith(f) for f in folders)
        ]
        assert left == [], "a node that stopped left its secrets folder behind"


def test_functions_read_their_secrets_and_the_registry_holds_them_sealed(
    planted: Planted,
) -> None:
    db = planted.values["db"]
    for node in planted.nodes:
        status, body = planted.call(node, "holder")
        assert status == 200, body
        answer = json.loads(body)
        assert answer["sha256"] == sha256(db)
        assert answer["in_environ"] is False
        if planted.isolation == "sandbox":
            assert answer["file_sha256"] == sha256(db)  # /var/secrets/db
            assert answer["file_writable"] is False
            assert not answer["staged"]  # no other function's folder in sight
        status, body = planted.call(node, "exec-holder")
        assert (status, body.decode()) == (200, sha256(db))
    for path in (planted.registry / "secrets").rglob("*"):
        if path.is_file():
            content = path.read_bytes()
            assert all(v.strip() not in content for v in planted.every_value), path


def test_a_function_that_lists_no_secret_gets_none(planted: Planted) -> None:
    status, body = planted.call(planted.nodes[0], "stranger")
    assert status == 200, body
    answer = json.loads(body)
    assert answer["context"] is False
    assert answer["/var/secrets/db"] is False
    if planted.isolation == "sandbox":  # under process isolation it runs as the node's user
        assert answer["/run/tierfaas/secrets/holder"] is False
        assert not answer["staged"]


def test_v1_functions_names_the_secrets(planted: Planted) -> None:
    status, body = http_get(f"{planted.nodes[0].url}/v1/functions")
    assert status == 200
    listed = {f["name"]: f["secrets"] for f in json.loads(body)["functions"]}
    assert listed == {
        "holder": ["db"], "leaker": ["db", "api"], "stranger": [],
        "exec-holder": ["db"], "exec-leaker": ["db"],
    }  # fmt: skip


def test_a_new_version_reaches_a_running_instance_on_its_next_read(planted: Planted) -> None:
    node = planted.nodes[1]
    status, body = planted.call(node, "holder")
    assert status == 200, body
    before = json.loads(body)
    new = random_value("db-v2")
    planted.create("db", new)

    def read_new() -> dict[str, Any] | None:
        status, body = planted.call(node, "holder")
        answer: dict[str, Any] = json.loads(body)
        return answer if status == 200 and answer["sha256"] == sha256(new) else None

    after = eventually(read_new, timeout=10 + 20 * POLL_S)
    assert after is not None
    assert after["instance"] == before["instance"]  # the same instance, not a new one

    # An exec instance reads it too (each function's folder is written in turn).
    def exec_read_new() -> bool:
        status, body = planted.call(node, "exec-holder")
        return (status, body.decode()) == (200, sha256(new))

    eventually(exec_read_new, timeout=10 + 20 * POLL_S)


def test_errors_of_functions_that_print_and_raise_the_value_mask_it(planted: Planted) -> None:
    for node in planted.nodes:
        status, body = planted.call(node, "leaker")
        assert status == 500, body
        answer = json.loads(body)
        assert answer["error"] == "ValueError"
        assert answer["message"].count("***") == 2
        status, body = planted.call(node, "exec-leaker")
        assert status in (500, 502), body
        assert "starting with password ***" in json.loads(body)["message"]

    def printed() -> list[dict[str, Any]] | None:
        status, body = http_get(f"{planted.nodes[0].url}/v1/logs?function=leaker", timeout=5)
        lines = [json.loads(line) for line in body.decode().splitlines() if line.strip()]
        texts = {line["text"] for line in lines}
        wanted = {"the password is ***", "the api token is ***"}
        return lines if status == 200 and wanted <= texts else None

    eventually(printed, timeout=10)


def test_the_values_are_nowhere_to_be_found(planted: Planted) -> None:
    # What the earlier tests provoked, once more, so this test stands alone.
    for node in planted.nodes:
        for function in FUNCTIONS:
            planted.call(node, function)
    values = [v.strip() for v in planted.every_value]
    places: dict[str, bytes] = {}
    for node in planted.nodes:
        for pid in [node.pid, *descendants(node.pid)]:  # zygotes, instances, their children
            try:
                places[f"/proc/{pid}/environ"] = Path(f"/proc/{pid}/environ").read_bytes()
                places[f"/proc/{pid}/cmdline"] = Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:
                continue  # it ended meanwhile
        paths = [
            "/", "/healthz", "/readyz", "/metrics", "/v1/functions", "/v1/cluster",
            "/v1/routes", "/v1/stats", "/v1/dashboard", "/v1/calls", "/v1/dead-letters",
            "/dashboard.js", *(f"/v1/functions/{f}" for f in FUNCTIONS),
            *(f"/v1/logs?function={f}" for f in FUNCTIONS),
        ]  # fmt: skip
        for path in paths:
            try:
                status, body = http_get(f"{node.url}{path}", timeout=5)
            except OSError as exc:
                pytest.fail(f"{node.url}{path}: {exc}")
            places[f"{node.url}{path} ({status})"] = body
        if node.data_dir is not None:  # the node's state: function logs, call store
            for file in node.data_dir.rglob("*"):
                if file.is_file():
                    places[str(file)] = file.read_bytes()
    for file in planted.log_dir.iterdir():  # each node's stdout and stderr
        places[str(file)] = file.read_bytes()
    for number, answer in enumerate(planted.answers):
        places[f"answer {number}"] = answer
    assert len(places) > 40
    leaks = [where for where, content in places.items() if any(v in content for v in values)]
    assert leaks == [], f"a secret value was found in: {leaks}"
    # and the test could see them, were they there: the instances print them (masked)
    logs = b"".join(content for where, content in places.items() if "/v1/logs" in where)
    assert b"the password is ***" in logs


def test_bad_input_is_refused_with_a_clear_error(planted: Planted, tmp_path: Path) -> None:
    if planted.isolation != "process":
        pytest.skip("the CLI and the manifest check do not depend on the isolation")
    registry, key = str(planted.registry), str(planted.key_file)
    oversized = tmp_path / "big"
    oversized.write_bytes(os.urandom(64 * 1024 + 1))
    refused = tierfaas(
        "secret", "create", "big", "--from-file", str(oversized), "--registry", registry,
        "--key-file", key,
    )  # fmt: skip
    assert refused.returncode == 2 and b"over the limit of 65536 bytes" in refused.stderr
    for name in ("../etc/passwd", "a b", ".hidden", "x" * 65):
        refused = tierfaas(
            "secret", "create", name, "--registry", registry, "--key-file", key, stdin=b"v"
        )
        assert refused.returncode == 2 and b"is not a secret name" in refused.stderr, name
    refused = tierfaas("secret", "rm", "no-such-secret", "--registry", registry)
    assert refused.returncode == 2 and b"no secret 'no-such-secret'" in refused.stderr
    listed = tierfaas("secret", "list", "--json", "--registry", registry)
    assert listed.returncode == 0
    names = {s["name"] for s in json.loads(listed.stdout)["secrets"]}
    assert names == {"db", "api"}
    assert all(v.strip() not in listed.stdout for v in planted.every_value)

    # A release that lists a secret the registry does not hold does not load.
    release = tmp_path / "release"
    release.mkdir()
    (release / "fns.py").write_text("def f(body):\n    return body\n")
    (release / "tierfaas.toml").write_text(
        '[release]\nname = "missing"\nversion = "1"\n\n'
        '[functions.needy]\nhandler = "fns:f"\nsecrets = ["db", "nope"]\n'
    )
    other = tmp_path / "registry"
    DirectoryRegistry(other).publish(release)
    node = subprocess.Popen(
        [sys.executable, "-m", "tierfaas.cli",
         "node", "--registry", str(other), "--key-file", key, "--isolation", "process",
         "--http", f"127.0.33.12:{free_port('127.0.33.12')}", "--data-dir", str(tmp_path / "d")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    _, stderr = node.communicate(timeout=60)
    assert node.returncode == 2
    assert b"functions.needy.secrets" in stderr
    assert b"'db' does not exist" in stderr  # the first one it checked
    # The node that did not start left no folder behind (nodes of other tests may be
    # starting beside it: only its own pid's are looked for).
    left = [e for e in os.listdir("/dev/shm") if e.startswith(f"tierfaas-secrets-{node.pid}-")]
    assert not left


def test_rm_removes_every_version_and_the_functions_lose_it(planted: Planted) -> None:
    if planted.isolation != "process":
        pytest.skip("once is enough")
    removed = tierfaas("secret", "rm", "api", "--registry", str(planted.registry))
    assert removed.returncode == 0, removed.stderr
    assert not (planted.registry / "secrets" / "api").exists()

    def lost() -> bool:
        status, body = call(planted.nodes[0], "leaker")
        return status == 500 and b"KeyError" in body

    eventually(lost, timeout=10 + 20 * POLL_S)


def test_tierfaas_up_serves_secrets_created_in_its_state_folder(tmp_path: Path) -> None:
    """Without --registry and --key-file, ``secret create`` works in the state folder of
    ``tierfaas up`` (making its key), and ``up`` keeps both: its nodes open the secret."""
    env = {"XDG_STATE_HOME": str(tmp_path / "state")}
    value = random_value("up")
    made = tierfaas("secret", "create", "db", stdin=value, env=env)
    assert made.returncode == 0, made.stderr
    made = tierfaas("secret", "create", "api", stdin=random_value("up-api"), env=env)
    assert made.returncode == 0, made.stderr
    port = free_port("127.0.0.1")
    try:
        up = tierfaas(
            "up", "--release", str(RELEASE), "--nodes", "1", "--port", str(port),
            "--first-host", "127.0.33.50", "--isolation", "process", "--detach",
            env=env, timeout=120,
        )  # fmt: skip
        assert up.returncode == 0, up.stderr.decode()[-2000:]
        status, body = call_url(f"http://127.0.0.1:{port}", "holder")
        assert status == 200, body
        assert json.loads(body)["sha256"] == sha256(value)
    finally:
        tierfaas("down", env=env, timeout=90)
    listed = tierfaas("secret", "list", "--json", env=env)
    assert {s["name"] for s in json.loads(listed.stdout)["secrets"]} == {"db", "api"}


def call_url(url: str, function: str) -> tuple[int, bytes]:
    request = urllib.request.Request(f"{url}/function/{function}", data=b"x", method="POST")
    try:
        with urllib.request.urlopen(request, timeout=20) as answer:
            return answer.status, answer.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
