// tierfaas dashboard, the page of one function (/functions.html?name=NAME): renders
// /v1/dashboard/functions/NAME every 2 seconds. Every value is written with textContent,
// never as HTML: log lines, error messages and node names come from other nodes and from
// the function itself.
"use strict";

const $ = (id) => document.getElementById(id);
const NAME = new URLSearchParams(location.search).get("name") || "";
const REFRESH_MS = 2000;
const TILE_S = 10;

function perSecond(v) {
  if (v === null || v === undefined) return "–";
  return v >= 100 ? v.toFixed(0) : v >= 10 ? v.toFixed(1) : String(+v.toFixed(2));
}

// An axis label: a round number as it is (20, 0.5), without trailing zeros.
function round(v) { return String(+v.toPrecision(3)); }

function millis(seconds) {
  if (seconds === null || seconds === undefined) return "–";
  const ms = seconds * 1000;
  return `${ms >= 10 ? ms.toFixed(0) : +ms.toFixed(2)} ms`;
}

function when(epochS) {
  const d = new Date(epochS * 1000);
  const two = (n) => String(n).padStart(2, "0");
  return `${two(d.getHours())}:${two(d.getMinutes())}:${two(d.getSeconds())}.` +
    String(d.getMilliseconds()).padStart(3, "0");
}

function live(on) {
  const badge = $("live");
  badge.className = `badge ${on ? "on" : "off"}`;
  badge.textContent = on ? "● live" : "● offline";
}

// A problem instead of the page: no name, an unknown function, no access.
function problem(text) {
  $("summary").textContent = "";
  $("problem").textContent = text;
  $("problem").hidden = false;
  $("content").hidden = true;
}

function renderCharts(data) {
  if (typeof Charts === "undefined") return;  // charts.js did not load: the rest still shows
  const points = data.points || [];
  const times = points.map((p) => p.t);
  Charts.line($("chart-rate"), times, [
    { label: "calls/s", values: points.map((p) => p.requests), color: "#1f6fb4" },
    { label: "errors/s", values: points.map((p) => p.errors), color: "#d1495b" },
  ], { format: perSecond, tick: round });
  Charts.line($("chart-cold"), times,
    [{ label: "cold starts/s", values: points.map((p) => p.cold_starts), color: "#e08a00" }],
    { format: perSecond, tick: round });
  Charts.line($("chart-p99"), times,
    [{ label: "p99", values: points.map((p) => p.p99_s), color: "#8e44ad" }],
    { format: millis, floor: 0.001 });
  Charts.histogram($("chart-latency"), data.latency.bounds, data.latency.counts);
}

function renderNodes(data) {
  const body = el("tbody");
  for (const node of data.nodes) {
    if (!node.reachable) {
      body.append(el("tr", {}, el("td", { class: "fn" }, node.name),
        el("td", { colspan: "2", class: "muted" }, "not answering")));
      continue;
    }
    const warm = node.instances > 0;
    body.append(el("tr", {}, el("td", { class: "fn" }, node.name),
      el("td", { class: warm ? "warm" : "" }, node.instances), el("td", {}, node.busy)));
  }
  $("nodes").tBodies[0].replaceWith(body);
}

function renderErrors(data) {
  const body = el("tbody");
  for (const e of data.recent_errors) {
    body.append(el("tr", {}, el("td", {}, when(e.time_ms / 1000)),
      el("td", { class: "fn" }, e.node), el("td", {}, e.status === null ? "–" : e.status),
      el("td", { class: "err" }, e.error), el("td", { class: "fn" }, e.request_id),
      el("td", { class: "text" }, e.message)));
  }
  $("errors").tBodies[0].replaceWith(body);
  const none = data.recent_errors.length === 0;
  $("errors").hidden = none;
  $("errors-empty").hidden = !none;
  $("errors-empty").textContent = data.errors_reported_by === 0
    ? "Recent errors are not reported by the nodes of this cluster (their release has no "
      + "GET /v1/functions/NAME)."
    : "No recent error.";
}

function renderLogs(data) {
  const body = el("tbody");
  for (const line of [...data.logs].reverse()) {  // newest first, as the errors
    body.append(el("tr", { class: line.stream }, el("td", {}, when(line.time)),
      el("td", { class: "fn" }, line.node), el("td", {}, `#${line.instance}`),
      el("td", { class: "fn" }, line.request || "–"), el("td", {}, line.stream),
      el("td", { class: "text" }, line.text)));
  }
  $("logs").tBodies[0].replaceWith(body);
  $("logs").hidden = data.logs.length === 0;
  $("logs-empty").hidden = data.logs.length > 0;
}

function render(data) {
  $("problem").hidden = true;
  $("content").hidden = false;
  // The tiles: the last TILE_S seconds, as a function called now and then has no call in
  // most one-second points.
  const end = data.points.length ? data.points[data.points.length - 1].t : 0;
  const recent = data.points.filter((p) => p.t > end - TILE_S);
  const mean = (key) => (recent.length
    ? perSecond(recent.reduce((n, p) => n + p[key], 0) / recent.length) : "–");
  const p99s = recent.map((p) => p.p99_s).filter((v) => v !== null && v !== undefined);
  $("rate-requests").textContent = mean("requests");
  $("rate-errors").textContent = mean("errors");
  $("rate-cold").textContent = mean("cold_starts");
  $("p99").textContent = p99s.length ? millis(Math.max(...p99s)) : "–";
  const instances = data.nodes.reduce((n, node) => n + (node.instances || 0), 0);
  const busy = data.nodes.reduce((n, node) => n + (node.busy || 0), 0);
  $("instances").textContent = `${instances} (${busy})`;
  $("calls-total").textContent = String(data.latency.calls);
  const warm = data.nodes.filter((n) => n.instances > 0).length;
  $("summary").textContent = `warm on ${warm} of ${data.nodes.length} node(s)`;
  $("served-by").textContent = data.self || "?";
  renderCharts(data);
  renderNodes(data);
  renderErrors(data);
  renderLogs(data);
}

async function refresh() {
  let again = true;
  try {
    const response = await fetch(`/v1/dashboard/functions/${encodeURIComponent(NAME)}`,
      { cache: "no-store" });
    if (response.ok) {
      render(await response.json());
      live(true);
    } else {
      let detail = {};
      try { detail = await response.json(); } catch (err) { /* not JSON */ }
      live(false);
      if (response.status === 404 || response.status === 400) {
        $("live").hidden = true;  // the node answered: nothing is offline
        problem(response.status === 404
          ? `No function "${NAME}" in this cluster's release. `
            + "The cluster page lists the functions that are warm."
          : `"${NAME}" is not a function name (1-64 of A-Z, a-z, 0-9, ".", "_", "-").`);
        again = false;  // a name does not come into being by asking again
      } else {
        problem(`The node answered ${response.status}: ${detail.message || response.statusText}`);
      }
    }
  } catch (err) {
    live(false);
  }
  if (again) setTimeout(refresh, REFRESH_MS);
}

$("fn-name").textContent = NAME || "function";
document.title = `tierfaas · ${NAME || "function"}`;
if (!NAME) problem("Which function? Open /functions.html?name=NAME, or a function's name on the cluster page.");
else refresh();
