"""The dashboard in a real headless Chromium (Debian's package, installed by .ci/run)."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
import threading
import time
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


def test_the_page_never_writes_data_as_html() -> None:
    script = (STATIC / "dashboard.js").read_text()
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write"):
        assert sink not in script


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
    }  # fmt: skip
    page = (STATIC / "index.html").read_text()
    # "<\/" keeps the hostile "</script>" inside the JS string from ending the stub's tag.
    literal = json.dumps(json.dumps(snapshot)).replace("</", "<\\/")
    stub = (
        "<script>window.EventSource = class { constructor() { setTimeout(() => "
        f"this.onmessage({{data: {literal}}}), 10); }} }};</script>"
    )
    page = page.replace('<link rel="stylesheet" href="/dashboard.css">', "")
    page = page.replace(
        '<script src="/dashboard.js"></script>', stub + '<script src="dashboard.js"></script>'
    )
    (tmp_path / "index.html").write_text(page)
    shutil.copy(STATIC / "dashboard.js", tmp_path / "dashboard.js")
    dom = chromium(f"file://{tmp_path / 'index.html'}", tmp_path / "profile", "--dump-dom")
    rendered = re.sub(r"<script.*?</script>", "", dom, flags=re.DOTALL)  # the page's own code
    assert "&lt;script&gt;" in rendered and "&lt;img" in rendered  # shown as text
    assert "pwned" not in rendered.split("<title>")[1].split("</title>")[0]
    assert "<img" not in rendered and "<b>" not in rendered and "<i>" not in rendered
    assert "&lt;i&gt;sandbox" in rendered


@needs_chromium
def test_dashboard_of_a_loaded_cluster_shows_every_node(tmp_path: Path) -> None:
    with LocalCluster(DEMO, 3, first_host=90, log_dir=tmp_path) as cluster:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if json.loads(http_get(f"{cluster.nodes[0].url}/v1/cluster")[1])["master"]:
                break
            time.sleep(0.1)

        done = threading.Event()

        async def load(seconds: float) -> int:
            ok = 0
            async with aiohttp.ClientSession() as session:
                end = time.monotonic() + seconds
                i = 0
                while time.monotonic() < end and not done.is_set():
                    for fn in ("hello", "sha256", "sleep"):
                        node = cluster.nodes[i % 3]
                        i += 1
                        async with session.post(f"{node.url}/function/{fn}", data=b"x") as r:
                            ok += r.status == 200
            return ok

        assert asyncio.run(load(1.0)) > 0
        # Load goes on while the browser looks, so the rates are live.
        background = threading.Thread(target=lambda: asyncio.run(load(60.0)), daemon=True)
        background.start()
        # The stream keeps the network busy, and a headless snapshot waits for it to go quiet.
        url = f"{cluster.nodes[1].url}/?mode=poll"
        time.sleep(1.0)
        ARTIFACTS.mkdir(exist_ok=True)
        shot = ARTIFACTS / "dashboard.png"
        chromium(url, tmp_path / "profile2", f"--screenshot={shot}", "--window-size=1280,860")
        assert shot.exists() and shot.stat().st_size > 10_000
        dom = chromium(url, tmp_path / "profile", "--dump-dom")
        done.set()
        names = [cluster.name_of(n) for n in cluster.nodes]
        for name in names:
            assert name in dom
        assert 'class="role master"' in dom and "● live" in dom
        for fn in ("hello", "sha256", "sleep"):
            assert f'<td class="fn">{fn}</td>' in dom
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
        background.join(20)
