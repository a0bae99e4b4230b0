"""``tierfaas functions`` and ``tierfaas describe`` through a real 3-node cluster (hosts
127.0.23.10-12, this file's, and 127.0.23.20-21 for a pair that forwards), ``--json`` on
every command that reads, and shell completion.

The nodes run every call where it lands (``--hop-limit 0``: no forwarding), so calls sent to
two nodes make the function warm on both; the failing function's errors are made on a third,
and ``describe`` asked on another node finds them there.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tierfaas.deploy.registry import DirectoryRegistry
from tierfaas.testing.cluster import LocalCluster
from tierfaas.testing.nodes import NodeProcess, http_get, run_cli
from tierfaas.testing.wait import eventually

pytestmark = pytest.mark.e2e

RELEASE = Path(__file__).parent.parent / "fixtures" / "describe"
SCRIPT = Path(sys.executable).parent / "tierfaas"  # the installed command (for completion)
SECRET_VALUE = "value-never-shown-7f3a"  # an env value of greet: never printed
GREETS = {0: 3, 1: 2}  # calls of greet per node index
FAILS = 3  # calls of fails, on node 2


def tierfaas(*args: str) -> subprocess.CompletedProcess[str]:
    """Runs the command line (with a wide terminal: a table's cells are not folded)."""
    return run_cli(*args, timeout=60, env={"COLUMNS": "200"})


def call(node: NodeProcess, function: str, body: str, request_id: str) -> int:
    sent = urllib.request.Request(
        f"{node.url}/function/{function}",
        data=body.encode(),
        method="POST",
        headers={"X-Request-Id": request_id},
    )
    try:
        with urllib.request.urlopen(sent, timeout=15) as answer:
            return int(answer.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def as_json(result: subprocess.CompletedProcess[str]) -> Any:
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    logs = tmp_path_factory.mktemp("clifunctions")
    with LocalCluster(
        RELEASE, 3, subnet="127.0.23", first_host=10, log_dir=logs,
        extra_args=["--hop-limit", "0"],
    ) as started:  # fmt: skip
        started.wait_ready()
        for index, count in GREETS.items():
            for number in range(count):
                assert call(started.nodes[index], "greet", "you", f"greet-{index}-{number}") == 200
        for number in range(FAILS):
            assert call(started.nodes[2], "fails", f"input {number}", f"fail-{number}") == 500
        yield started


def names(cluster: LocalCluster, *indexes: int) -> list[str]:
    return sorted(cluster.name_of(cluster.nodes[i]) for i in indexes)


def test_functions_shows_each_function_warm_nodes_and_counts(cluster: LocalCluster) -> None:
    listing = as_json(tierfaas("functions", "--url", cluster.nodes[2].url, "--json"))
    assert listing["nodes"] == names(cluster, 0, 1, 2)
    assert listing["unanswered"] == {}
    rows = {row["name"]: row for row in listing["functions"]}
    assert set(rows) == {"greet", "fails"}
    greet = rows["greet"]
    assert greet["warm_nodes"] == names(cluster, 0, 1)
    assert greet["instances"] == 2 and greet["versions"] == ["0.3.0"]
    assert (greet["calls"], greet["errors"], greet["cold_starts"]) == (5, 0, 2)
    assert greet["calls_per_s"] > 0 and greet["p99_ms"] > 0
    fails = rows["fails"]
    assert (fails["calls"], fails["errors"], fails["warm_nodes"]) == (
        FAILS, FAILS, names(cluster, 2)
    )  # fmt: skip

    text = tierfaas("functions", "--url", cluster.nodes[0].url)
    assert text.returncode == 0, text.stderr
    lines = {line.split()[0]: line for line in text.stdout.splitlines() if line.strip()}
    assert "greet" in lines and "python" in lines["greet"] and "0.3.0" in lines["greet"]
    for name in names(cluster, 0, 1):
        assert name in text.stdout


def test_describe_shows_settings_env_names_and_recent_errors(cluster: LocalCluster) -> None:
    # Asked on node 0: the errors happened on node 2.
    text = tierfaas("describe", "fails", "--url", cluster.nodes[0].url)
    assert text.returncode == 0, text.stderr
    out = text.stdout
    for expected in ("fns:fails", "timeout_s", "max_retries", "ValueError", "fail-2",
                     "cannot parse 'input 2'", "recent errors", "3 errors"):  # fmt: skip
        assert expected in out, expected
    assert out.index("fail-2") < out.index("fail-0")  # newest first

    view = as_json(tierfaas("describe", "fails", "--url", cluster.nodes[0].url, "--json"))
    assert view["name"] == "fails" and view["settings"]["max_retries"] == 0
    assert view["isolation"] in ("sandbox", "process")
    assert [e["request_id"] for e in view["recent_errors"]] == ["fail-2", "fail-1", "fail-0"]
    newest = view["recent_errors"][0]
    assert newest["node"] == cluster.name_of(cluster.nodes[2])
    assert (newest["status"], newest["error"]) == (500, "ValueError")
    assert newest["message"] == "cannot parse 'input 2'"
    assert view["stats"]["errors"] == FAILS and view["stats"]["warm_nodes"] == names(cluster, 2)
    assert [n["node"] for n in view["nodes"]] == names(cluster, 0, 1, 2)
    assert view["unanswered"] == {}

    greet = tierfaas("describe", "greet", "--url", cluster.nodes[1].url)
    assert greet.returncode == 0, greet.stderr
    assert "GREETING" in greet.stdout and "API_PASSWORD" in greet.stdout
    assert SECRET_VALUE not in greet.stdout
    greet_json = tierfaas("describe", "greet", "--url", cluster.nodes[1].url, "--json")
    assert SECRET_VALUE not in greet_json.stdout
    assert json.loads(greet_json.stdout)["env"] == ["API_PASSWORD", "GREETING"]


def test_an_unknown_function_is_a_clear_error(cluster: LocalCluster) -> None:
    result = tierfaas("describe", "nosuch", "--url", cluster.nodes[0].url)
    assert result.returncode == 1
    assert "no function named 'nosuch'" in result.stderr and "Traceback" not in result.stderr
    status, body = http_get(f"{cluster.nodes[0].url}/v1/functions/nosuch")
    assert status == 404 and json.loads(body)["error"] == "unknown_function"
    assert "nosuch" in json.loads(body)["message"]
    gone = tierfaas("functions", "--url", "http://127.0.23.250:9")
    assert gone.returncode == 1 and "cannot reach" in gone.stderr


def test_every_reading_command_prints_json(cluster: LocalCluster, tmp_path: Path) -> None:
    url = cluster.nodes[0].url
    status = as_json(tierfaas("status", "--url", url, "--json"))
    assert status["self"] == cluster.name_of(cluster.nodes[0]) and "functions" in status
    lines = tierfaas("logs", "greet", "--url", url, "--json")
    assert lines.returncode == 0, lines.stderr
    for line in lines.stdout.splitlines():  # one object a line (greet prints nothing)
        assert isinstance(json.loads(line), dict)
    accepted = tierfaas("invoke", "greet", "--async", "-d", "json", "--url", url)
    assert accepted.returncode == 0, accepted.stderr
    call_id = accepted.stdout.strip()
    shown = as_json(tierfaas("calls", "show", call_id, "--url", url, "--wait", "--json"))
    assert shown["call_id"] == call_id and shown["state"] == "succeeded"
    listed = as_json(tierfaas("calls", "list", "--url", url, "--json"))
    assert call_id in [c["call_id"] for c in listed["calls"]]
    dead = as_json(tierfaas("calls", "dead", "--url", url, "--json"))
    assert isinstance(dead["calls"], list)
    registry = DirectoryRegistry(tmp_path)
    registry.write_status({"phase": "steady", "versions": {"0.3.0": ["a"]}, "history": []})
    rollout = as_json(tierfaas("rollout", "status", "--registry", str(tmp_path), "--json"))
    assert rollout["phase"] == "steady" and "desired" in rollout
    assert isinstance(as_json(tierfaas("functions", "--url", url, "--json"))["functions"], list)
    assert as_json(tierfaas("describe", "greet", "--url", url, "--json"))["name"] == "greet"


def test_shell_completion_prints_a_script_and_completes_function_names(
    cluster: LocalCluster,
) -> None:
    # The script as a shell's rc file sources it: `--show-completion` detects the shell from
    # the parent processes, which a test run under make or xdist does not have.
    script = subprocess.run(
        [str(SCRIPT)], capture_output=True, text=True, timeout=60, check=False,
        env={**os.environ, "_TIERFAAS_COMPLETE": "source_bash"},
    )  # fmt: skip
    assert script.returncode == 0, script.stderr
    assert "_TIERFAAS_COMPLETE" in script.stdout and "complete" in script.stdout
    env = {
        **os.environ,
        "_TIERFAAS_COMPLETE": "complete_bash",
        "COMP_WORDS": f"tierfaas describe --url {cluster.nodes[0].url} gr",
        "COMP_CWORD": "4",
    }
    completed = subprocess.run(
        [str(SCRIPT)], capture_output=True, text=True, timeout=60, check=False, env=env
    )
    assert completed.stdout.split() == ["greet"], (completed.stdout, completed.stderr)


def test_a_forwarded_call_counts_once_on_the_node_that_ran_it(tmp_path: Path) -> None:
    """With routing on, calls sent to the node where greet is cold are forwarded to the one
    where it is warm: the cluster's count is the calls sent, not more."""
    with LocalCluster(RELEASE, 2, subnet="127.0.23", first_host=20, log_dir=tmp_path) as pair:
        pair.wait_ready()
        warm, other = pair.nodes
        assert call(warm, "greet", "first", "warm-0") == 200
        sent, forwarded = 1, 0

        # Every table knows where greet is warm before `other` is called: a call that finds
        # greet warm nowhere starts it on `other`, which then never forwards again.
        def routed() -> bool:
            tables = [http_get(f"{node.url}/v1/routes") for node in pair.nodes]
            return all(
                status == 200 and json.loads(body)["routes"].get("greet") for status, body in tables
            )

        eventually(routed, 20.0)

        def forwarded_one() -> bool:
            nonlocal sent, forwarded
            sent_to_other = urllib.request.Request(f"{other.url}/function/greet", data=b"x")
            with urllib.request.urlopen(sent_to_other, timeout=15) as answer:
                served_by = answer.headers.get("x-tierfaas-served-by")
            sent += 1
            if served_by == pair.name_of(warm):
                forwarded += 1
            return forwarded >= 3

        eventually(forwarded_one, 20.0)
        listing = as_json(tierfaas("functions", "--url", other.url, "--json"))
        (greet,) = [row for row in listing["functions"] if row["name"] == "greet"]
        assert greet["calls"] == sent
        ran_on_warm = as_json(tierfaas("describe", "greet", "--url", other.url, "--json"))
        per_node = {n["node"]: n["stats"]["calls"] for n in ran_on_warm["nodes"]}
        assert per_node[pair.name_of(warm)] >= 1 + forwarded
        assert sum(per_node.values()) == sent
