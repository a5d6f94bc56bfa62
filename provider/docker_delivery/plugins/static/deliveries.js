// The Deliveries page: DORA's five metrics as cards (the window's figures and levels) and as
// charts (one point a period), from the app's /api/metrics.
"use strict";
(function () {
  const METRICS = [
    ["deployment_frequency", "Deployment frequency", (v) => v.toFixed(2) + " a day"],
    ["change_lead_time", "Change lead time", duration],
    ["change_fail_rate", "Change fail rate", percent],
    ["recovery_time", "Failed deployment recovery time", duration],
    ["rework_rate", "Deployment rework rate", percent],
  ];
  const SVG = "http://www.w3.org/2000/svg";

  function percent(v) { return (100 * v).toFixed(1) + " %"; }
  function duration(s) {
    if (s < 60) return Math.round(s) + " s";
    if (s < 3600) return Math.round(s / 60) + " min";
    if (s < 86400) return (s / 3600).toFixed(1) + " h";
    return (s / 86400).toFixed(1) + " d";
  }
  function el(name, attrs, parent) {
    const node = document.createElementNS(SVG, name);
    for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
    if (parent) parent.appendChild(node);
    return node;
  }
  function card(summary, [key, label, format]) {
    const div = document.createElement("div");
    div.className = "card";
    div.dataset.metric = key;
    const value = summary[key];
    const level = summary.levels[key];
    div.innerHTML = '<div class="name"></div><div class="value"></div>';
    div.querySelector(".name").textContent = label;
    div.querySelector(".value").textContent = value === null ? "n/a" : format(value);
    if (level) {
      const chip = document.createElement("span");
      chip.className = "level " + level;
      chip.textContent = level;
      div.appendChild(chip);
    }
    return div;
  }
  function chart(series, [key, label, format]) {
    const w = 300, h = 110, pad = 18;
    const svg = el("svg", { viewBox: `0 0 ${w} ${h}`, role: "img", "aria-label": label,
                            "data-metric": key });
    const points = series.map((m, i) => [i, m[key]]).filter(([, v]) => v !== null);
    const max = Math.max(...points.map(([, v]) => v), 0) || 1;
    const x = (i) => pad + (i * (w - 2 * pad)) / Math.max(series.length - 1, 1);
    const y = (v) => h - pad - (v * (h - 2 * pad)) / max;
    el("line", { x1: pad, y1: h - pad, x2: w - pad, y2: h - pad, stroke: "#dee3ea" }, svg);
    const title = el("text", { x: pad, y: 12, class: "axis" }, svg);
    title.textContent = label + " (max " + format(max) + ")";
    if (series.length) {
      const first = el("text", { x: pad, y: h - 4, class: "axis" }, svg);
      first.textContent = series[0].window_end.slice(5, 10);
      const last = el("text", { x: w - pad, y: h - 4, class: "axis", "text-anchor": "end" }, svg);
      last.textContent = series[series.length - 1].window_end.slice(5, 10);
    }
    if (points.length) {
      el("polyline", { fill: "none", stroke: "#3c5b89", "stroke-width": 2,
                       points: points.map(([i, v]) => `${x(i)},${y(v)}`).join(" ") }, svg);
      for (const [i, v] of points) {
        const dot = el("circle", { cx: x(i), cy: y(v), r: 2.5, fill: "#3c5b89",
                                   class: "point" }, svg);
        el("title", {}, dot).textContent = series[i].window_end.slice(0, 10) + ": " + format(v);
      }
    }
    return svg;
  }
  async function load() {
    const section = document.getElementById("metrics");
    const query = section.dataset.query;
    const response = await fetch("api/metrics" + (query ? "?" + query : ""),
                                 { credentials: "same-origin" });
    if (!response.ok) {
      section.querySelector("#cards").textContent = "Metrics unavailable: " + response.status;
      return;
    }
    const data = await response.json();
    const cards = document.getElementById("cards");
    const charts = document.getElementById("charts");
    for (const metric of METRICS) {
      cards.appendChild(card(data.summary, metric));
      charts.appendChild(chart(data.series, metric));
    }
    document.getElementById("metrics-window").textContent =
      `${data.summary.window_days} days to ${data.summary.window_end.slice(0, 16).replace("T", " ")} UTC, ` +
      `${data.series.length} periods`;
    document.body.dataset.metricsDrawn = "true";
  }
  load();
})();
