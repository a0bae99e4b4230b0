// tierfaas dashboard: renders /v1/dashboard/stream (server-sent events, one snapshot per
// second). Every value is written with textContent, never as HTML: node names and metadata
// come from other nodes and are not trusted.
"use strict";

const $ = (id) => document.getElementById(id);

function rate(value) {
  if (value === undefined || value === null) return "–";
  return value >= 100 ? value.toFixed(0) : value.toFixed(1);
}

function latency(seconds) {
  if (seconds === null || seconds === undefined) return "–";
  return seconds < 1 ? `≤ ${(seconds * 1000).toFixed(seconds < 0.01 ? 1 : 0)} ms` : `≤ ${seconds} s`;
}

function uptime(epochMs) {
  if (!epochMs) return "";
  let s = Math.max(0, Math.floor(Date.now() / 1000 - epochMs / 1000));
  const h = Math.floor(s / 3600); s -= h * 3600;
  const m = Math.floor(s / 60); s -= m * 60;
  return h ? `up ${h}h${String(m).padStart(2, "0")}m` : `up ${m}m${String(s).padStart(2, "0")}s`;
}

function nodeLine(node) {
  const parts = [node.http || "", node.version ? `v${node.version}` : "", uptime(node.epoch)];
  if (node.state && node.state !== "alive") parts.push(node.state);
  if (node.isolation === "process") parts.push("unsandboxed");
  return parts.filter(Boolean).join(" · ");
}

// How a function runs where it is warm: "sandbox", "process", or both when nodes differ.
function isolationCell(kinds) {
  const list = Array.isArray(kinds) ? kinds.map(String) : [];
  const unsandboxed = list.includes("process");
  const title = unsandboxed
    ? "runs as plain processes of the node's user on some node (--isolation process)"
    : "each instance in its own cgroup, user and namespaces";
  return el("td", { class: `iso ${unsandboxed ? "process" : "sandbox"}`, title },
    list.length ? list.join(" + ") : "?");
}

// The page of one function. encodeURIComponent keeps the name a query value; the URL is
// relative to this node, so a name can never make it another scheme or host.
function functionPage(name) {
  return `/functions.html?name=${encodeURIComponent(String(name))}`;
}

// The curves: the server's recent points (see tierfaas/http/history.py). The first answer
// carries them all ("full"); each next one only the points after the newest we have.
const curves = { points: [], windowS: 900 };

function mergeHistory(part) {
  if (!part || !Array.isArray(part.points)) return;
  curves.windowS = part.window_s || curves.windowS;
  if (part.full) curves.points = part.points.slice();
  else curves.points.push(...part.points);
  const newest = curves.points.length ? curves.points[curves.points.length - 1].t : 0;
  curves.points = curves.points.filter((p) => p.t >= newest - curves.windowS);
}

function lastSeq() {
  return curves.points.length ? curves.points[curves.points.length - 1].seq : null;
}

function perSecond(v) { return v >= 100 ? v.toFixed(0) : v >= 10 ? v.toFixed(1) : +v.toFixed(2); }

// An axis label: a round number as it is (20, 0.5), without trailing zeros.
function round(v) { return String(+v.toPrecision(3)); }

function millis(seconds) {
  if (seconds === null || seconds === undefined) return "–";
  const ms = seconds * 1000;
  return `${ms >= 10 ? ms.toFixed(0) : +ms.toFixed(2)} ms`;
}

// Up to this many lines per chart: the busiest, so the chart stays readable.
const MAX_LINES = 8;

function busiest(points, key) {
  const total = new Map();
  for (const p of points) {
    for (const [name, row] of Object.entries(p[key] || {})) {
      total.set(name, (total.get(name) || 0) + (row.requests || 0));
    }
  }
  return [...total.entries()].sort((a, b) => b[1] - a[1] || (a[0] < b[0] ? -1 : 1))
    .slice(0, MAX_LINES).map(([name]) => name);
}

function renderCharts() {
  if (typeof Charts === "undefined") return;  // charts.js did not load: the rest still shows
  const points = curves.points;
  const times = points.map((p) => p.t);
  const of = (key, name) => points.map((p) => ((p[key] || {})[name] || {}).requests || 0);
  Charts.line($("chart-nodes"), times,
    busiest(points, "nodes").map((name) => ({ label: name, values: of("nodes", name) })),
    { format: perSecond, tick: round });
  Charts.line($("chart-functions"), times,
    busiest(points, "functions").map((name) => ({ label: name, values: of("functions", name) })),
    { format: perSecond, tick: round });
  Charts.line($("chart-errors"), times, [
    { label: "errors/s", values: points.map((p) => p.errors), color: "#d1495b" },
    { label: "cold starts/s", values: points.map((p) => p.cold_starts), color: "#1f6fb4" },
  ], { format: perSecond, tick: round });
  Charts.line($("chart-p99"), times,
    [{ label: "p99", values: points.map((p) => p.p99_s), color: "#8e44ad" }],
    { format: millis, floor: 0.001 });
}

function renderTopology(data) {
  const box = $("topology");
  box.replaceChildren();
  const byName = new Map(data.nodes.map((n) => [n.name, n]));
  const card = (node, role) => {
    const c = el("div", { class: `card ${role}` },
      el("div", { class: `role ${role}` }, role),
      el("div", { class: "name" }, node.name),
      el("div", { class: "meta" }, nodeLine(node)));
    if (!node.reachable) c.append(el("div", { class: "meta unreachable" }, "not answering"));
    return c;
  };
  const master = byName.get(data.master);
  if (master) box.append(card(master, "master"));
  for (const node of data.nodes.filter((n) => n.role === "replica")) {
    const c = card(node, "replica");
    const workers = data.nodes.filter((n) => n.role === "worker" && n.replica === node.name);
    const list = el("ul");
    for (const w of workers) list.append(el("li", { class: "worker" }, w.name));
    if (!workers.length) list.append(el("li", { class: "muted" }, "no workers"));
    c.append(el("div", { class: "meta" }, `serves ${workers.length} worker(s):`), list);
    box.append(c);
  }
  const orphans = data.nodes.filter((n) => n.role === "worker" && !byName.has(n.replica));
  for (const w of orphans) box.append(card(w, "worker"));
  if (!data.nodes.length) box.append(el("p", { class: "muted" }, "no members yet"));
}

function renderWarm(data) {
  const table = $("warm");
  const head = el("tr", {}, el("th", { class: "fn" }, "function"), el("th", {}, "isolation"));
  for (const node of data.nodes) {
    head.append(el("th", { title: node.http || "" }, `${node.name}`,
      el("div", { class: `role ${node.role}` }, node.role || "")));
  }
  table.tHead.replaceChildren(head);
  const body = el("tbody");
  for (const fn of data.functions) {
    const link = el("a", { href: functionPage(fn) }, fn);
    const row = el("tr", {}, el("td", { class: "fn" }, link),
      isolationCell((data.isolation || {})[fn]));
    for (const node of data.nodes) {
      const cell = node.functions[fn];
      if (!cell) { row.append(el("td", {}, "")); continue; }
      const busyAll = cell.instances > 0 && cell.busy >= cell.instances;
      row.append(el("td", { class: busyAll ? "busy" : "warm" },
        `${cell.instances} (${cell.busy})`));
    }
    body.append(row);
  }
  table.tBodies[0].replaceWith(body);
  $("warm-empty").hidden = data.functions.length > 0;
}

function mib(bytes) {
  if (typeof bytes !== "number") return "–";
  return bytes >= 10 * 1024 ** 3 ? `${(bytes / 1024 ** 3).toFixed(1)} GiB`
    : `${(bytes / 1024 ** 2).toFixed(0)} MiB`;
}

// One row per node: its instances' measured use, what they book, its budget, evictions/min.
function renderMemory(data) {
  const body = el("tbody");
  for (const node of data.nodes) {
    const m = node.memory;
    if (!m || typeof m !== "object") {
      body.append(el("tr", {}, el("td", { class: "fn" }, node.name),
        el("td", { colspan: "4", class: "muted" }, node.reachable ? "not reported" : "not answering")));
      continue;
    }
    const over = typeof m.booked_bytes === "number" && m.booked_bytes > m.budget_bytes;
    body.append(el("tr", {}, el("td", { class: "fn" }, node.name),
      el("td", {}, mib(m.used_bytes)),
      el("td", { class: over ? "over" : "", title: `accounting: ${m.accounting || "?"}` },
        mib(m.booked_bytes)),
      el("td", {}, mib(m.budget_bytes)),
      el("td", {}, rate(m.evictions_per_min))));
  }
  $("memory").tBodies[0].replaceWith(body);
}

function renderDeparted(data) {
  const list = $("departed");
  list.replaceChildren();
  for (const gone of (data.departed || []).slice(-8).reverse()) {
    const when = new Date(gone.at).toLocaleTimeString();
    list.append(el("li", {}, `${gone.name} ${gone.reason} at ${when}`));
  }
  if (!list.children.length) list.append(el("li", {}, "none"));
}

function render(data) {
  const count = data.nodes.length;
  const master = data.master || "none";
  $("summary").textContent = data.standalone
    ? `1 standalone node`
    : `${count} node${count === 1 ? "" : "s"} · master ${master}`;
  $("served-by").textContent = data.self || "?";
  $("rate-requests").textContent = rate(data.rates.requests);
  $("rate-cold").textContent = rate(data.rates.cold_starts);
  $("rate-forwards").textContent = rate(data.rates.forwards);
  $("rate-errors").textContent = rate(data.rates.errors);
  $("p99").textContent = latency(data.p99_s);
  $("rate-evictions").textContent = rate(data.evictions_per_min);
  mergeHistory(data.history);
  renderCharts();
  renderTopology(data);
  renderWarm(data);
  renderMemory(data);
  renderDeparted(data);
}

function live(on) {
  const badge = $("live");
  badge.className = `badge ${on ? "on" : "off"}`;
  badge.textContent = on ? "● live" : "● offline";
}

function connect() {
  const source = new EventSource("/v1/dashboard/stream");
  source.onmessage = (event) => { live(true); render(JSON.parse(event.data)); };
  source.onerror = () => { live(false); };  // EventSource reconnects by itself
}

// ?mode=poll: one request a second instead of a stream (for proxies that buffer streams,
// and for headless snapshots, which wait for the network to go quiet).
async function poll() {
  try {
    const seq = lastSeq();
    const url = seq === null ? "/v1/dashboard" : `/v1/dashboard?since=${seq}`;
    const response = await fetch(url, { cache: "no-store" });
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    render(await response.json());
    live(true);
  } catch (err) {
    live(false);
  }
  setTimeout(poll, 1000);
}

if (new URLSearchParams(location.search).get("mode") === "poll") poll(); else connect();
