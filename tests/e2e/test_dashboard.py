"""The dashboard in a real headless Chromium (Debian's package, installed by .ci/run)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from tierfaas.testing.cluster import LocalCluster
from tierfaas.testing.nodes import http_get

pytestmark = pytest.mark.e2e

DEMO = Path(__file__).parent.parent.parent / "examples" / "demo"
STATIC = Path(__file__).parent.parent.parent / "src" / "tierfaas" / "http" / "static"
ARTIFACTS = Path(__file__).parent.parent.parent / "test-artifacts"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# How long a page watches before the screenshots: a longer curve for docs/dashboard*.png.
WATCH_S = float(os.environ.get("TIERFAAS_DASHBOARD_WATCH_S", "8"))
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed")


def chromium(url: str, profile: Path, *extra: str, budget_ms: int = 4000) -> str:
    assert CHROMIUM is not None
    args = [
        CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
        "--no-first-run", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", f"--user-data-dir={profile}", f"--virtual-time-budget={budget_ms}",
        *extra, url,
    ]  # fmt: skip
    result = subprocess.run(args, capture_output=True, timeout=90, check=False)
    return result.stdout.decode(errors="replace")


def test_the_pages_never_write_data_as_html() -> None:
    for name in ("dashboard.js", "charts.js", "functions.js"):
        script = (STATIC / name).read_text()
        for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write"):
            assert sink not in script, name


@needs_chromium
def test_hostile_names_render_as_text(tmp_path: Path) -> None:
    evil = '<img src=x onerror="document.title=\'pwned\'"><script>document.title="pwned"</script>'
    snapshot = {
        "self": evil, "master": evil, "joined": True, "standalone": False,
        "nodes": [{"name": evil, "role": "master", "http": "127.0.0.1:1", "version": evil,
                   "state": "alive", "epoch": 0, "reachable": True,
                   "functions": {"f<b>": {"instances": 1, "busy": 0}}}],
        "functions": ["f<b>"], "isolation": {"f<b>": ["<i>sandbox"]},
        "rates": {"requests": 1, "cold_starts": 0, "forwards": 0, "errors": 0},
        "p99_s": 0.001, "departed": [{"name": evil, "reason": "left", "at": 0}],
        "history": {"window_s": 900, "full": True, "points": [
            {"seq": 1, "t": 1000.0, "requests": 1, "errors": 0, "cold_starts": 0,
             "forwards": 0, "p99_s": 0.001, "nodes": {evil: {"requests": 1}},
             "functions": {"f<b>": {"requests": 1, "p99_s": 0.001}}},
        ]},
    }  # fmt: skip
    page = (STATIC / "index.html").read_text()
    # "<\/" keeps the hostile "</script>" inside the JS string from ending the stub's tag.
    literal = json.dumps(json.dumps(snapshot)).replace("</", "<\\/")
    stub = (
        "<script>window.EventSource = class { constructor() { setTimeout(() => "
        f"this.onmessage({{data: {literal}}}), 10); }} }};</script>"
    )
    page = page.replace('<link rel="stylesheet" href="/dashboard.css">', "")
    page = page.replace('<script src="/charts.js"></script>', '<script src="charts.js"></script>')
    page = page.replace(
        '<script src="/dashboard.js"></script>', stub + '<script src="dashboard.js"></script>'
    )
    (tmp_path / "index.html").write_text(page)
    shutil.copy(STATIC / "dashboard.js", tmp_path / "dashboard.js")
    shutil.copy(STATIC / "charts.js", tmp_path / "charts.js")
    dom = chromium(f"file://{tmp_path / 'index.html'}", tmp_path / "profile", "--dump-dom")
    rendered = re.sub(r"<script.*?</script>", "", dom, flags=re.DOTALL)  # the page's own code
    assert "&lt;script&gt;" in rendered and "&lt;img" in rendered  # shown as text
    assert "pwned" not in rendered.split("<title>")[1].split("</title>")[0]
    assert "<img" not in rendered and "<b>" not in rendered and "<i>" not in rendered
    assert "&lt;i&gt;sandbox" in rendered


@needs_chromium
def test_hostile_log_lines_and_errors_render_as_text(tmp_path: Path) -> None:
    evil = "<img src=x onerror=\"document.title='pwned'\">"
    view = {
        "name": "f", "self": evil, "time": 0, "window_s": 900,
        "points": [{"seq": 1, "t": 1000.0, "requests": 1, "errors": 0, "cold_starts": 0,
                    "p99_s": 0.001}],
        "latency": {"bounds": [0.001, 0.01], "counts": [1, 0, 0], "calls": 1},
        "nodes": [{"name": evil, "reachable": True, "instances": 1, "busy": 0}],
        "errors_reported_by": 1,
        "recent_errors": [{"node": evil, "time_ms": 1_000_000, "request_id": "r1",
                           "status": 500, "error": evil, "message": evil}],
        "logs": [{"time": 1000.0, "node": evil, "instance": 1, "stream": "stdout",
                  "request": "r1", "text": evil, "function": "f"}],
    }  # fmt: skip
    literal = json.dumps(json.dumps(view)).replace("</", "<\\/")
    stub = (
        "<script>window.fetch = async () => ({ok: true, status: 200, "
        f"json: async () => JSON.parse({literal})}});</script>"
    )
    page = (STATIC / "functions.html").read_text()
    page = page.replace('<link rel="stylesheet" href="/dashboard.css">', "")
    page = page.replace('<script src="/charts.js"></script>', stub + '<script src="charts.js">'
                        "</script>")  # fmt: skip
    page = page.replace('<script src="/functions.js"></script>', '<script src="functions.js">'
                        "</script>")  # fmt: skip
    (tmp_path / "functions.html").write_text(page)
    for name in ("charts.js", "functions.js"):
        shutil.copy(STATIC / name, tmp_path / name)
    url = f"file://{tmp_path / 'functions.html'}?name=f"
    dom = chromium(url, tmp_path / "profile", "--dump-dom")
    rendered = re.sub(r"<script.*?</script>", "", dom, flags=re.DOTALL)
    assert rendered.count("&lt;img src=x") >= 5  # node (twice), error code, message, log line
    assert "<img" not in rendered and "pwned" not in rendered.split("</title>")[0]


def with_a_chatty_function(into: Path) -> Path:
    """The demo release and ``chatty``, which prints a line per call and fails when the body
    starts with "fail" (a planted error)."""
    release = into / "release"
    shutil.copytree(DEMO, release)
    with (release / "tierfaas.toml").open("a") as manifest:
        manifest.write('\n[functions.chatty]\nhandler = "handlers:chatty"\n')
    with (release / "handlers.py").open("a") as handlers:
        handlers.write(
            "\n\ndef chatty(body: bytes) -> str:\n"
            "    print(f'chatty says {body.decode()}', flush=True)\n"
            "    if body.startswith(b'fail'):\n"
            "        raise RuntimeError(f'planted failure {body.decode()}')\n"
            "    return 'ok'\n"
        )
    return release


def http_post(url: str, body: bytes) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, data=body, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return (
                response.status,
                {k.lower(): v for k, v in response.headers.items()},
                response.read(),
            )
    except urllib.error.HTTPError as exc:
        return exc.code, {k.lower(): v for k, v in exc.headers.items()}, exc.read()


@contextlib.contextmanager
def setting(event: threading.Event) -> Iterator[None]:
    try:
        yield
    finally:
        event.set()


def watch_dashboard(url: str, done: threading.Event) -> None:
    """Watches ``url``'s dashboard as an open page does (once a second), so it samples."""
    since = None
    while not done.is_set():
        query = "" if since is None else f"?since={since}"
        status, body = http_get(f"{url}/v1/dashboard{query}", timeout=10)
        if status == 200:
            points = json.loads(body)["history"]["points"]
            since = points[-1]["seq"] if points else since
        done.wait(1.0)


def drawn_points(svg_path: str) -> int:
    """How many points an SVG path of the charts joins or starts (its M and L commands)."""
    return len(re.findall(r"[ML][0-9.-]+,[0-9.-]+", svg_path))


@needs_chromium
def test_dashboard_of_a_loaded_cluster_shows_every_node(tmp_path: Path) -> None:
    release = with_a_chatty_function(tmp_path)
    done = threading.Event()  # stops the load and the watcher, whatever the test's outcome
    with LocalCluster(release, 3, first_host=90, log_dir=tmp_path) as cluster, setting(done):
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if json.loads(http_get(f"{cluster.nodes[0].url}/v1/cluster")[1])["master"]:
                break
            time.sleep(0.1)

        async def load(seconds: float) -> int:
            ok = 0
            async with aiohttp.ClientSession() as session:
                end = time.monotonic() + seconds
                i = 0
                while time.monotonic() < end and not done.is_set():
                    # hello the busiest; a failing call and a printed line now and then.
                    calls = ["hello", "hello", "hello", "sha256", "sleep"]
                    calls += ["chatty"] if i % 40 < 5 else []
                    calls += ["boom"] if i % 60 < 5 else []
                    for fn in calls:
                        node = cluster.nodes[i % 3]
                        i += 1
                        async with session.post(f"{node.url}/function/{fn}", data=b"x") as r:
                            ok += r.status == 200
                    await asyncio.sleep(0.02)  # a steady rate, not all the machine's CPU
            return ok

        assert asyncio.run(load(1.0)) > 0
        # Load goes on while the browser looks, so the rates are live.
        background = threading.Thread(target=lambda: asyncio.run(load(90.0)), daemon=True)
        background.start()
        served = cluster.nodes[1].url
        # A page watches this node all along: a page opened later draws curves at once.
        watcher = threading.Thread(target=watch_dashboard, args=(served, done), daemon=True)
        watcher.start()
        time.sleep(WATCH_S)
        overview = json.loads(http_get(f"{served}/v1/dashboard", timeout=10)[1])
        points = overview["history"]["points"]
        assert len(points) >= 5 and overview["history"]["full"]
        assert any(p["functions"].get("chatty", {}).get("requests", 0) > 0 for p in points)
        assert {n for p in points for n in p["nodes"]} == {
            cluster.name_of(n) for n in cluster.nodes
        }
        newer = json.loads(http_get(f"{served}/v1/dashboard?since={points[-1]['seq']}")[1])
        assert not newer["history"]["full"] and len(newer["history"]["points"]) <= 1
        # The stream keeps the network busy, and a headless snapshot waits for it to go quiet.
        url = f"{served}/?mode=poll"
        ARTIFACTS.mkdir(exist_ok=True)
        shot = ARTIFACTS / "dashboard.png"
        chromium(url, tmp_path / "profile2", f"--screenshot={shot}", "--window-size=1280,1150")
        assert shot.exists() and shot.stat().st_size > 10_000
        dom = chromium(url, tmp_path / "profile", "--dump-dom")

        # One planted failure, whose request id the function page must show.
        status, headers, _ = http_post(f"{cluster.nodes[2].url}/function/chatty", b"fail-42")
        assert status == 500
        planted = headers["x-request-id"]
        # The page of one function: curves, histogram, its log lines and the planted error.
        page = f"{served}/functions.html?name=chatty"
        fn_shot = ARTIFACTS / "dashboard-function.png"
        chromium(page, tmp_path / "profile3", f"--screenshot={fn_shot}", "--window-size=1280,1300")
        assert fn_shot.exists() and fn_shot.stat().st_size > 10_000
        fn_dom = chromium(page, tmp_path / "profile4", "--dump-dom")
        unknown = chromium(
            f"{served}/functions.html?name=nosuch", tmp_path / "profile5", "--dump-dom"
        )
        done.set()
        names = [cluster.name_of(n) for n in cluster.nodes]
        for name in names:
            assert name in dom
        assert 'class="role master"' in dom and "● live" in dom
        for fn in ("hello", "sha256", "sleep", "chatty"):
            assert f'<td class="fn"><a href="/functions.html?name={fn}">{fn}</a></td>' in dom
        # The four charts, each with a curve of several points.
        for chart in ("chart-nodes", "chart-functions", "chart-errors", "chart-p99"):
            box = dom.split(f'id="{chart}"')[1].split("</figure>")[0]
            drawn = [drawn_points(d) for d in re.findall(r'<path d="([^"]+)"', box)]
            assert drawn and max(drawn) >= 5, (chart, drawn)
        by_node = dom.split('id="chart-nodes"')[1].split("</figure>")[0]
        assert by_node.count('class="series"') == 3 and all(name in by_node for name in names)
        # Each warm function's isolation beside it: the nodes' default, the sandbox.
        assert len(re.findall(r'<td class="iso sandbox"[^>]*>sandbox</td>', dom)) >= 3
        assert 'class="iso process"' not in dom
        rate = re.search(r'id="rate-requests">([0-9.]+)<', dom)
        assert rate is not None and float(rate.group(1)) > 0  # live rates under load
        # Each node's memory: used (measured), booked and its budget; evictions per minute.
        memory = dom.split('id="memory"')[1].split("</table>")[0]
        for name in names:
            assert name in memory
        assert len(re.findall(r"<td[^>]*>[0-9.]+ (?:MiB|GiB)</td>", memory)) == 9
        assert re.search(r'id="rate-evictions">[0-9.]+<', dom)

        assert 'id="fn-name">chatty<' in fn_dom and "● live" in fn_dom
        bars = re.findall(r'<rect [^>]*height="([0-9.]+)" class="bar"', fn_dom)
        assert bars and max(float(h) for h in bars) > 10  # the latency histogram
        rate_chart = fn_dom.split('id="chart-rate"')[1].split("</figure>")[0]
        assert max(drawn_points(d) for d in re.findall(r'<path d="([^"]+)"', rate_chart)) >= 5
        logs = fn_dom.split('id="logs"')[1].split("</table>")[0]
        assert logs.count("chatty says x") >= 3 and "chatty says fail-42" in logs
        shown = re.findall(r"<tr[^>]*><td>(\d\d:\d\d:\d\d\.\d{3})</td>", logs)
        assert len(shown) >= 4 and shown == sorted(shown, reverse=True)  # newest first
        errors = fn_dom.split('id="errors"')[1].split("</table>")[0]
        assert planted in errors and "planted failure fail-42" in errors
        assert cluster.name_of(cluster.nodes[2]) in errors
        # An unknown function: a clear message, no empty page.
        assert 'No function "nosuch" in this cluster' in unknown
        assert re.search(r'<div id="content" hidden', unknown)
        background.join(20)
        watcher.join(20)
        # Nobody watches now; the node goes on sampling (for 15 minutes), so a page opened
        # again finds its curves whole.
        current = json.loads(http_get(f"{served}/v1/dashboard", timeout=10)[1])
        newest = current["history"]["points"][-1]["seq"]
        time.sleep(5.0)
        later = json.loads(http_get(f"{served}/v1/dashboard?since={newest}", timeout=10)[1])
        unwatched = [p for p in later["history"]["points"] if p["t"] < later["time"] - 0.5]
        assert len(unwatched) >= 3, later["history"]
