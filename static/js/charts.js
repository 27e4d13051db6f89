// Live charts, the flash warning's blink and the experiment timelines' moving "now".
// Reads only what the server rendered: the #metrics figures (data-* attributes, pushed
// once a second over the socket) and the fault windows in #fault-windows. No library.
(function () {
  "use strict";
  var WINDOW_MS = 300 * 1000;
  var buffer = [];           // {t, p50, p99, queued, awaiting}
  var lastMetrics = null;    // the #metrics element last sampled (each push replaces it)
  var flashedAt = 0;          // when the server last brought #flash-warning up (0: it is down)
  var STORE_KEY = "exchange-metrics-buffer"; // survives moving between the dashboard and the panel

  function restore() {
    try {
      var saved = JSON.parse(sessionStorage.getItem(STORE_KEY) || "[]");
      var from = Date.now() - WINDOW_MS;
      if (Array.isArray(saved)) buffer = saved.filter(function (p) { return p && p.t >= from; });
    } catch (e) { buffer = []; }
  }

  function num(el, name) {
    var raw = el.getAttribute(name);
    if (raw === null || raw === "") return null;
    var value = parseFloat(raw);
    return isFinite(value) ? value : null;
  }

  // Colours and canvas sizes are read once (and again when they change), never while drawing:
  // a read of computed style or layout right after a frame's rows went in forces Chrome to
  // restyle and lay out the page inside the frame's task.
  var palette = {};
  function css(name, fallback) {
    if (!(name in palette)) palette[name] = getComputedStyle(document.documentElement).getPropertyValue(name).trim();
    return palette[name] || fallback;
  }
  var sizes = new Map(); // canvas -> {width, height} in CSS pixels, kept by a ResizeObserver
  var resizes = window.ResizeObserver ? new ResizeObserver(function (entries) {
    entries.forEach(function (entry) { sizes.set(entry.target, { width: entry.target.clientWidth, height: entry.target.clientHeight }); });
    scheduleDraw();
  }) : null;
  function sizeOf(canvas) {
    var known = sizes.get(canvas);
    if (known) return known;
    if (resizes) resizes.observe(canvas);
    known = { width: canvas.clientWidth, height: canvas.clientHeight }; // once per canvas
    sizes.set(canvas, known);
    return known;
  }

  function sample() {
    var el = document.getElementById("metrics");
    if (!el || el === lastMetrics) return false;
    lastMetrics = el;
    var now = Date.now();
    var point = { t: now, p50: num(el, "data-p50"), p99: num(el, "data-p99"), queued: num(el, "data-queued"), awaiting: num(el, "data-awaiting"), divergence: num(el, "data-divergence"), lag: num(el, "data-lag"), fill50: num(el, "data-fill-p50"), fill99: num(el, "data-fill-p99"), backlog: num(el, "data-backlog") };
    roundTrips(el, point);
    bookDepths(point);
    checkFlash();
    buffer.push(point);
    while (buffer.length && buffer[0].t < now - WINDOW_MS) buffer.shift();
    try { sessionStorage.setItem(STORE_KEY, JSON.stringify(buffer)); } catch (e) { /* private mode: charts start empty */ }
    return true;
  }

  // Round trips: every browser's socket p50 / p99 (the server's figures), this page's own last
  // ping (live.js keeps it on #live) and each region's API probe ("us-east-1=12.5 eu-west-1=failing").
  function roundTrips(el, point) {
    point.rtt50 = num(el, "data-socket-rtt-p50");
    point.rtt99 = num(el, "data-socket-rtt-p99");
    var live = document.getElementById("live");
    point.rttSelf = live ? num(live, "data-rtt") : null;
    (el.getAttribute("data-api-rtt") || "").split(" ").forEach(function (pair) {
      var at = pair.indexOf("=");
      if (at <= 0) return;
      var value = parseFloat(pair.slice(at + 1)), key = "api:" + pair.slice(0, at);
      point[key] = isFinite(value) ? value : null;
      if (pair.slice(at + 1) === "failing") point[key + "!"] = true;
    });
  }

  // Every ladder's depth shown (its bids' and asks' totals), so the book card's chart can draw
  // whichever book is on show: an AZ loss's liquidity dip is a dip under its fault window.
  function bookDepths(point) {
    document.querySelectorAll("#book .ladder-body").forEach(function (ladder) {
      point["bid:" + ladder.id] = num(ladder, "data-bid-total");
      point["ask:" + ladder.id] = num(ladder, "data-ask-total");
    });
  }

  function shownDepth() {
    var ladder = document.querySelector("#book section.ladder:not([hidden]) .ladder-body");
    if (!ladder) return [];
    return [{ key: "bid:" + ladder.id, color: "--buy" }, { key: "ask:" + ladder.id, color: "--sell" }];
  }

  // --- the flash warning: the server decides (slow fills, client retries); it blinks as it appears

  function checkFlash() {
    var flash = document.getElementById("flash-warning");
    if (!flash || flash.hidden) { flashedAt = 0; return; }
    if (!flashedAt) {
      flashedAt = Date.now();
      flash.classList.add("flashing"); // each push replaces the element: only the first one blinks
    }
    flash.setAttribute("data-flashed-at", String(flashedAt));
  }

  // --- the charts ------------------------------------------------------------------------------

  function windows() {
    var holder = document.getElementById("fault-windows");
    if (!holder) return [];
    return Array.prototype.map.call(holder.children, function (el) {
      var end = el.getAttribute("data-end-ms");
      return { start: parseInt(el.getAttribute("data-start-ms"), 10), end: end ? parseInt(end, 10) : null, label: el.getAttribute("data-label") || "" };
    });
  }

  var SERIES = {
    latency: [{ key: "p50", color: "--accent" }, { key: "p99", color: "--alert" }],
    queued: [{ key: "queued", color: "--warn" }],
    awaiting: [{ key: "awaiting", color: "--buy" }],
    fill: [{ key: "fill50", color: "--accent" }, { key: "fill99", color: "--alert" }],
    divergence: [{ key: "divergence", color: "--conflict" }],
    backlog: [{ key: "backlog", color: "--warn" }],
    lag: [{ key: "lag", color: "--accent" }],
    "socket-rtt": [{ key: "rtt50", color: "--accent" }, { key: "rtt99", color: "--alert" }, { key: "rttSelf", color: "--buy" }]
  };
  // A chart of one line per name in its data-series (the API round trip: one per region).
  var SERIES_COLOURS = ["--accent", "--warn", "--buy", "--conflict"];
  function namedSeries(canvas) {
    return (canvas.getAttribute("data-series") || "").split(" ").filter(Boolean).map(function (name, i) {
      return { key: "api:" + name, color: SERIES_COLOURS[i % SERIES_COLOURS.length] };
    });
  }

  function draw(canvas) {
    var kind = canvas.getAttribute("data-chart");
    var series = kind === "depth" ? shownDepth() : SERIES[kind] || namedSeries(canvas);
    if (!series.length) return;
    var dpr = window.devicePixelRatio || 1;
    var size = sizeOf(canvas);
    var width = size.width || 300, height = size.height || 110;
    if (canvas.width !== Math.round(width * dpr)) canvas.width = Math.round(width * dpr);
    if (canvas.height !== Math.round(height * dpr)) canvas.height = Math.round(height * dpr);
    var ctx = canvas.getContext("2d");
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.clearRect(0, 0, width, height);
    var now = Date.now(), from = now - WINDOW_MS;
    var padL = 34, padB = 14, plotW = width - padL - 4, plotH = height - padB - 4;
    function x(t) { return padL + ((t - from) / WINDOW_MS) * plotW; }
    var max = 0;
    buffer.forEach(function (p) { series.forEach(function (s) { if (p[s.key] != null && p[s.key] > max) max = p[s.key]; }); });
    max = max <= 0 ? 1 : niceCeil(max * 1.1);
    function y(v) { return 4 + plotH - (v / max) * plotH; }

    // Fault windows first, under the lines.
    ctx.fillStyle = css("--fault-window", "rgba(240,136,62,.18)");
    ctx.strokeStyle = css("--alert", "#f0883e");
    windows().forEach(function (w) {
      var a = Math.max(x(w.start), padL), b = Math.min(x(w.end === null ? now : w.end), padL + plotW);
      if (b <= padL || a >= padL + plotW) return;
      ctx.fillRect(a, 4, Math.max(b - a, 2), plotH);
      ctx.beginPath(); ctx.moveTo(a + 0.5, 4); ctx.lineTo(a + 0.5, 4 + plotH); ctx.stroke();
    });

    // Axes and grid.
    ctx.strokeStyle = css("--line", "#2a3241");
    ctx.fillStyle = css("--muted", "#8b96a8");
    ctx.font = "10px " + css("--mono", "monospace");
    ctx.lineWidth = 1;
    [0, 0.5, 1].forEach(function (f) {
      var v = max * f, yy = Math.round(y(v)) + 0.5;
      ctx.beginPath(); ctx.moveTo(padL, yy); ctx.lineTo(padL + plotW, yy); ctx.stroke();
      ctx.fillText(short(v), 2, yy + 3);
    });
    ctx.fillText("-5 min", padL, height - 2);
    ctx.fillText("now", padL + plotW - 20, height - 2);

    series.forEach(function (s) {
      ctx.strokeStyle = css(s.color, "#4c9aff");
      ctx.lineWidth = 1.5;
      ctx.beginPath();
      var started = false;
      buffer.forEach(function (p) {
        var v = p[s.key];
        if (v == null) { started = false; return; }
        if (!started) { ctx.moveTo(x(p.t), y(v)); started = true; } else ctx.lineTo(x(p.t), y(v));
      });
      ctx.stroke();
      // A sample that failed (a region's probe during an outage): a tick along the top.
      ctx.fillStyle = css(s.color, "#4c9aff");
      buffer.forEach(function (p) { if (p[s.key + "!"]) ctx.fillRect(x(p.t) - 1, 4, 2, 6); });
    });
  }

  function niceCeil(v) {
    var step = Math.pow(10, Math.floor(Math.log10(v)));
    var m = v / step;
    return (m <= 1 ? 1 : m <= 2 ? 2 : m <= 5 ? 5 : 10) * step;
  }

  function short(v) { return v >= 10000 ? Math.round(v / 1000) + "k" : v >= 100 ? String(Math.round(v)) : String(Math.round(v * 10) / 10); }

  function drawAll() {
    drawPending = false;
    document.querySelectorAll("canvas[data-chart]").forEach(draw);
  }

  // At most one redraw per display frame, in the frame's own rendering step.
  var drawPending = false;
  function scheduleDraw() {
    if (drawPending) return;
    drawPending = true;
    requestAnimationFrame(drawAll);
  }

  // --- experiment timelines: "now" moves and running bars grow between pushes -----------------

  function tickGantts() {
    var now = Date.now();
    document.querySelectorAll('.gantt[data-live="1"]').forEach(function (g) {
      var origin = parseInt(g.getAttribute("data-origin-ms"), 10), span = parseInt(g.getAttribute("data-span-ms"), 10);
      if (!origin || !span) return;
      var pct = Math.max(0, Math.min(100, (100 * (now - origin)) / span));
      g.querySelectorAll(".gantt-now").forEach(function (line) { line.style.left = pct + "%"; });
      g.querySelectorAll('.gantt-run[data-grow="1"]').forEach(function (bar) {
        var left = parseFloat(bar.style.left) || 0;
        bar.style.width = Math.max(0.6, pct - left) + "%";
      });
    });
  }

  function refreshEmptyRuns() {
    var list = document.getElementById("experiment-list"), empty = document.getElementById("experiments-empty");
    if (list && empty && empty.hidden !== list.children.length > 0) empty.hidden = list.children.length > 0;
  }

  function onChange() {
    if (sample()) scheduleDraw();
    refreshEmptyRuns();
  }

  var started = false;
  function init() {
    if (started) return;
    started = true;
    restore();
    var root = document.getElementById("live") || document.body;
    new MutationObserver(onChange).observe(root, { childList: true, subtree: true });
    onChange();
    drawAll();
    setInterval(scheduleDraw, 1000);   // the time axis moves even when no frame arrives
    setInterval(tickGantts, 500);
    if (window.matchMedia) {
      var scheme = window.matchMedia("(prefers-color-scheme: light)");
      var recolour = function () { palette = {}; scheduleDraw(); };
      if (scheme.addEventListener) scheme.addEventListener("change", recolour);
    }
    if (!resizes) window.addEventListener("resize", function () { sizes.clear(); scheduleDraw(); });
  }
  if (document.readyState === "complete") init();
  else document.addEventListener("DOMContentLoaded", init);
})();
