// tierfaas dashboard charts: time series and a histogram, drawn as SVG by this small file
// (no library, no CDN). Labels are written with textContent, never as HTML: series names are
// node and function names, which come from other nodes.
"use strict";

// An element with attributes and children, text children as text nodes (never HTML); both
// pages load this file first and build their DOM with it.
function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (key === "class") node.className = value;
    else node.setAttribute(key, value);
  }
  for (const child of children) {
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

const Charts = (() => {
  const SVG = "http://www.w3.org/2000/svg";
  const PALETTE = ["#1f6fb4", "#2e8b57", "#d1495b", "#8e44ad", "#e08a00", "#17a2b8",
    "#8c564b", "#6b7585"];
  const GAP_S = 3.5;  // points further apart than this: nobody watched, the line breaks
  const PAD = { left: 52, right: 12, top: 10, bottom: 24 };

  function svg(tag, attrs, text) {
    const node = document.createElementNS(SVG, tag);
    for (const [key, value] of Object.entries(attrs || {})) node.setAttribute(key, String(value));
    if (text !== undefined) node.textContent = String(text);
    return node;
  }

  function html(tag, cls, text) {
    const node = document.createElement(tag);
    if (cls) node.className = cls;
    if (text !== undefined) node.textContent = String(text);
    return node;
  }

  // The smallest "nice" number (1, 2, 2.5, 5 x 10^n) at or above value.
  function niceCeil(value) {
    if (!(value > 0)) return 1;
    const power = 10 ** Math.floor(Math.log10(value));
    for (const step of [1, 2, 2.5, 5, 10]) if (step * power >= value * (1 - 1e-9)) return step * power;
    return 10 * power;
  }

  // A y axis from 0 that holds `top`: 2 to 5 ticks a nice step apart, so labels are round.
  function axis(top) {
    const step = niceCeil(top / 4);
    const ticks = [];
    for (let v = 0; ticks.length < 6; v += step) {
      ticks.push(+v.toPrecision(12));
      if (v >= top * (1 - 1e-9)) break;
    }
    return { ticks, top: ticks[ticks.length - 1] || 1 };
  }

  function clock(t, seconds) {
    const d = new Date(t * 1000);
    const two = (n) => String(n).padStart(2, "0");
    return seconds ? `${two(d.getHours())}:${two(d.getMinutes())}:${two(d.getSeconds())}`
      : `${two(d.getHours())}:${two(d.getMinutes())}`;
  }

  function size(box, height) {
    const width = Math.max(240, Math.floor(box.clientWidth || 520));
    return { width, height };
  }

  function empty(root, width, height, message) {
    root.append(svg("text", { x: width / 2, y: height / 2, "text-anchor": "middle",
      class: "chart-empty" }, message));
  }

  // A line chart of `series` ([{label, values, color?}], values aligned with `times`, Unix
  // seconds; null: no value) into `box`, with a y axis from 0 (labels written by `tick`,
  // else `format`), a time axis, and a legend with each series' newest value (`format`).
  function line(box, times, series, options) {
    const opts = { height: 170, format: (v) => String(v), ...(options || {}) };
    const tick = opts.tick || opts.format;  // the y axis' labels (round numbers)
    const { width, height } = size(box, opts.height);
    const root = svg("svg", { width, height, viewBox: `0 0 ${width} ${height}`, class: "chart",
      role: "img" });
    const plotW = width - PAD.left - PAD.right;
    const plotH = height - PAD.top - PAD.bottom;
    let highest = 0;
    for (const s of series) for (const v of s.values) if (v !== null && v > highest) highest = v;
    // A little headroom: a curve at its maximum does not run along the chart's top edge.
    const { ticks, top } = axis(highest ? highest * 1.08 : opts.floor || 1);
    // The newest point on the right edge; at least a minute shown, so a new curve grows
    // from the right as a chart that scrolls does.
    const t1 = times.length ? times[times.length - 1] : 60;
    const t0 = times.length ? Math.min(times[0], t1 - 60) : 0;
    const x = (t) => PAD.left + ((t - t0) / (t1 - t0)) * plotW;
    const y = (v) => PAD.top + plotH - (v / top) * plotH;
    ticks.forEach((value, i) => {
      const yy = y(value);
      root.append(svg("line", { x1: PAD.left, x2: width - PAD.right, y1: yy, y2: yy,
        class: i ? "grid" : "axis" }));
      root.append(svg("text", { x: PAD.left - 6, y: yy + 4, "text-anchor": "end",
        class: "tick" }, tick(value)));
    });
    // Time labels: about one per 110 px, at whole seconds.
    const span = t1 - t0;
    const labels = Math.max(2, Math.floor(plotW / 110));
    for (let i = 0; i <= labels; i++) {
      const t = t0 + (span * i) / labels;
      const anchor = i === 0 ? "start" : i === labels ? "end" : "middle";
      root.append(svg("text", { x: x(t), y: height - 6, "text-anchor": anchor, class: "tick" },
        clock(t, span < 600)));
    }
    if (!times.length) empty(root, width, height - PAD.bottom, "no samples yet");
    const legend = html("div", "chart-legend");
    series.forEach((s, index) => {
      const color = s.color || PALETTE[index % PALETTE.length];
      let d = "";
      let last = null;
      for (let i = 0; i < times.length; i++) {
        const v = s.values[i];
        if (v === null || v === undefined) { last = null; continue; }
        const joined = last !== null && times[i] - times[last] <= GAP_S;
        d += `${joined ? "L" : "M"}${x(times[i]).toFixed(1)},${y(v).toFixed(1)}`;
        last = i;
      }
      if (d) root.append(svg("path", { d, stroke: color, class: "series" }));
      // A lone point (the line broke around it) is a dot, not an invisible segment.
      for (let i = 0; i < times.length; i++) {
        const v = s.values[i];
        if (v === null || v === undefined) continue;
        const before = i > 0 && s.values[i - 1] !== null && times[i] - times[i - 1] <= GAP_S;
        const after = i + 1 < times.length && s.values[i + 1] !== null
          && times[i + 1] - times[i] <= GAP_S;
        if (!before && !after) {
          root.append(svg("circle", { cx: x(times[i]).toFixed(1), cy: y(v).toFixed(1), r: 2,
            fill: color }));
        }
      }
      const newest = [...s.values].reverse().find((v) => v !== null && v !== undefined);
      const item = html("span", "item");
      const swatch = html("i", "swatch");
      swatch.style.background = color;
      item.append(swatch, html("span", "", s.label),
        html("b", "latest", newest === undefined ? "–" : opts.format(newest)));
      legend.append(item);
    });
    box.replaceChildren(root, legend);
  }

  function bucketLabel(bound) {
    if (bound < 1) return `${+(bound * 1000).toPrecision(3)}ms`;
    return `${+bound.toPrecision(3)}s`;
  }

  // Bars of `counts` (one per latency bucket: counts[i] calls took at most bounds[i]
  // seconds; the last one, more than the last bound) into `box`. Shows the buckets from the
  // first to the last that has calls, widened to at least `minBars`.
  function histogram(box, bounds, counts, options) {
    const opts = { height: 200, minBars: 8, ...(options || {}) };
    const { width, height } = size(box, opts.height);
    const root = svg("svg", { width, height, viewBox: `0 0 ${width} ${height}`,
      class: "chart", role: "img" });
    const labels = [...bounds.map((b) => `≤${bucketLabel(b)}`),
      `>${bucketLabel(bounds[bounds.length - 1] || 0)}`];
    let first = counts.findIndex((n) => n > 0);
    let last = counts.length - 1 - [...counts].reverse().findIndex((n) => n > 0);
    if (first < 0) { first = 0; last = Math.min(counts.length, opts.minBars) - 1; }
    while (last - first + 1 < opts.minBars && (first > 0 || last < counts.length - 1)) {
      if (last < counts.length - 1) last++;
      if (last - first + 1 < opts.minBars && first > 0) first--;
    }
    const shown = counts.slice(first, last + 1);
    const names = labels.slice(first, last + 1);
    const { ticks, top } = axis(Math.max(4, ...shown) * 1.1);  // room for the counts
    const plotW = width - PAD.left - PAD.right;
    const plotH = height - PAD.top - PAD.bottom - 8;
    const slot = plotW / Math.max(1, shown.length);
    ticks.forEach((value, i) => {
      const yy = PAD.top + plotH - (value / top) * plotH;
      root.append(svg("line", { x1: PAD.left, x2: width - PAD.right, y1: yy, y2: yy,
        class: i ? "grid" : "axis" }));
      root.append(svg("text", { x: PAD.left - 6, y: yy + 4, "text-anchor": "end",
        class: "tick" }, value));
    });
    shown.forEach((n, i) => {
      const h = (n / top) * plotH;
      const x = PAD.left + i * slot + slot * 0.12;
      const bar = svg("rect", { x: x.toFixed(1), y: (PAD.top + plotH - h).toFixed(1),
        width: (slot * 0.76).toFixed(1), height: h.toFixed(1), class: "bar" });
      bar.append(svg("title", {}, `${names[i]}: ${n} calls`));
      root.append(bar);
      if (n > 0) {
        root.append(svg("text", { x: (x + slot * 0.38).toFixed(1),
          y: (PAD.top + plotH - h - 3).toFixed(1), "text-anchor": "middle", class: "tick" }, n));
      }
      root.append(svg("text", { x: (x + slot * 0.38).toFixed(1), y: height - 10,
        "text-anchor": "middle", class: "tick" }, names[i]));
    });
    if (!counts.some((n) => n > 0)) empty(root, width, height - PAD.bottom, "no calls yet");
    box.replaceChildren(root);
  }

  return { line, histogram, PALETTE };
})();
