// Live view glue for the htmx ws extension: upsert rows, detect gaps, reconnect, resync.
// No JSON-to-DOM: the server renders every fragment; this only decides where new rows go.
(function () {
  "use strict";
  var lastSeq = 0;
  var wasClosed = false;
  var reconnectTimer = null;
  var settleTimer = null;
  var socket = null;   // the ws extension's wrapper while the socket is open
  var lastRtt = null;  // this page's last socket round trip (ms), reported with the next ping

  // Every PING_MS the page pings its socket; the server answers at once and the page times
  // the pong. The figure goes on #live (data-rtt, the chart's "this one") and to the server
  // with the next ping, where every browser's figures make the socket round trip p50 / p99.
  var PING_MS = 2000;
  function ping() {
    if (!socket) return;
    try {
      socket.sendImmediately(JSON.stringify({ type: "ping", t: Math.round(performance.now() * 10) / 10, rtt: lastRtt }));
    } catch (e) { /* closing: the next open pings again */ }
  }

  function onPong(message) {
    var pong;
    try { pong = JSON.parse(message); } catch (e) { return; }
    if (!pong || typeof pong.t !== "number") return;
    lastRtt = Math.round((performance.now() - pong.t) * 10) / 10;
    var root = live();
    if (root) root.setAttribute("data-rtt", String(lastRtt));
  }
  setInterval(ping, PING_MS);

  function live() { return document.getElementById("live"); }

  function limitOf(container) {
    return parseInt(container.getAttribute("data-limit") || "0", 10);
  }

  // Everything past the container's row limit goes in one removal (one mutation, one
  // invalidation) rather than one removeChild per row.
  function trim(container) {
    var limit = limitOf(container);
    if (!limit || container.children.length <= limit) return;
    var range = document.createRange();
    range.setStartBefore(container.children[limit]);
    range.setEndAfter(container.lastChild);
    range.deleteContents();
  }

  // htmx.process walks the element's subtree and fires events for each node: only worth it
  // where the fragment has something for htmx (the refreshers' hx-get, a form's hx-post).
  var HTMX_ATTR = /^(data-)?(hx|ws|sse)-/;
  function needsHtmx(el) {
    var nodes = [el].concat(Array.prototype.slice.call(el.querySelectorAll("*")));
    return nodes.some(function (node) { return node.getAttributeNames().some(function (name) { return HTMX_ATTR.test(name); }); });
  }

  function process(el) {
    if (window.htmx && needsHtmx(el)) htmx.process(el);
  }

  // A new tape row flashes (tr.fresh, a 1.2 s CSS animation). While any row flashes, Chrome
  // restyles and repaints the tape on every display frame; with more than a few trades a second
  // every row is always flashing (at 200 trades/s that was three quarters of the main thread)
  // and none stands out. So a row flashes only while the tape is calm: at most FLASH_MAX new
  // rows in FLASH_MS; beyond that, rows come in without the flash.
  var FLASH_MS = 1200, FLASH_MAX = 4;
  var recentRows = []; // arrival times of the last FLASH_MS
  function calmFlash(rows) {
    var now = Date.now();
    while (recentRows.length && recentRows[0] <= now - FLASH_MS) recentRows.shift();
    var calm = recentRows.length + rows.length <= FLASH_MAX;
    rows.forEach(function (row) {
      recentRows.push(now);
      if (!calm) row.classList.remove("fresh");
    });
  }

  function refreshEmpty() {
    var body = document.getElementById("orders-body");
    var empty = document.getElementById("orders-empty");
    if (body && empty && empty.hidden !== body.children.length > 0) empty.hidden = body.children.length > 0;
  }

  function resync(reason) {
    var root = live();
    if (!root || !window.htmx) return;
    root.setAttribute("data-resyncs", String(parseInt(root.getAttribute("data-resyncs") || "0", 10) + 1));
    root.setAttribute("data-last-resync", reason);
    htmx.ajax("GET", root.getAttribute("data-snapshot-url"), { swap: "none", source: root }).then(refreshEmpty);
  }

  function containerOf(content) {
    var into = content.getAttribute && content.getAttribute("data-upsert-into");
    return (into && document.querySelector(into)) || null;
  }

  // Insert a fragment whose id is not on the page yet at the top of its container.
  function insertNew(content) {
    var container = containerOf(content);
    if (!container) return false;
    if (container.id === "tape-body") calmFlash([content]);
    container.insertBefore(content, container.firstElementChild);
    process(content);
    trim(container);
    return true;
  }

  function older(el, shown) {
    var newer = parseInt(el.getAttribute("data-updated") || "0", 10);
    var was = parseInt(shown.getAttribute("data-updated") || "0", 10);
    return newer && was && newer < was; // never step back to an older state
  }

  // Replace the element with the fragment's id, or insert the fragment as new.
  function upsert(el) {
    el.removeAttribute("hx-swap-oob");
    var existing = el.id && document.getElementById(el.id);
    if (existing) {
      if (older(el, existing)) return;
      existing.replaceWith(el);
      process(el);
    } else {
      insertNew(el);
    }
  }

  // Newest on top as if inserted one by one, only as many as the table shows (the rest would
  // be trimmed at once), in one insertion and one trim.
  function insertRows(batch, container) {
    var rows = batch.rows.slice(-limitOf(container)).reverse();
    if (container.id === "tape-body") calmFlash(rows);
    var fragment = document.createDocumentFragment();
    rows.forEach(function (row) { fragment.appendChild(row); });
    container.insertBefore(fragment, container.firstChild);
    trim(container);
    rows.forEach(process);
  }

  // One frame's fragments, in order. A run of new rows for tables with a row limit (the tape,
  // the orders) goes in together, so the frame costs one style and layout pass, not one per
  // row; anything else is applied after the rows before it (it may go into one of them).
  function applyFrame(elts) {
    var batches = new Map(); // container -> {rows: new rows in frame order, byId: id -> index}
    function flush() {
      batches.forEach(insertRows);
      batches.clear();
    }
    elts.forEach(function (el) {
      el.removeAttribute("hx-swap-oob");
      var container = el.id && !document.getElementById(el.id) ? containerOf(el) : null;
      if (!container || !limitOf(container)) { flush(); upsert(el); return; }
      var batch = batches.get(container);
      if (!batch) { batch = { rows: [], byId: new Map() }; batches.set(container, batch); }
      var pending = batch.byId.get(el.id);
      if (pending !== undefined) { // the same row twice in one run: the newer state wins
        if (!older(el, batch.rows[pending])) batch.rows[pending] = el;
        return;
      }
      batch.byId.set(el.id, batch.rows.length);
      batch.rows.push(el);
    });
    flush();
  }

  // Socket frames carry table rows inside <template> (a <tr> cannot stand alone in
  // HTML); the ws extension swaps only top-level elements, so frames are applied here.
  document.addEventListener("htmx:wsBeforeMessage", function (evt) {
    evt.preventDefault();
    if (evt.detail.message.charAt(0) === "{") { onPong(evt.detail.message); return; } // frames are HTML
    var holder = document.createElement("template");
    holder.innerHTML = evt.detail.message;
    var elts = [];
    Array.prototype.forEach.call(holder.content.children, function (child) {
      if (child.tagName === "TEMPLATE") Array.prototype.push.apply(elts, child.content.children);
      else elts.push(child);
    });
    applyFrame(elts.slice());
    afterFrame();
  });

  // An HTTP response's out-of-band row must not step a row back either: the socket can
  // deliver an order's fill before the form's response (the accepted row) is swapped in.
  document.addEventListener("htmx:oobBeforeSwap", function (evt) {
    var detail = evt.detail;
    var el = detail && detail.fragment && detail.fragment.firstElementChild;
    if (el && detail.target && detail.target.getAttribute && older(el, detail.target)) detail.shouldSwap = false;
  });

  // An HTTP response's out-of-band row with no target yet (the order form's new order).
  document.addEventListener("htmx:oobErrorNoTarget", function (evt) {
    var content = evt.detail && evt.detail.content;
    if (content && insertNew(content)) refreshEmpty();
  });

  function afterFrame() {
    var marker = document.getElementById("live-seq");
    if (!marker) return;
    var seq = parseInt(marker.getAttribute("data-seq") || "0", 10);
    var gap = lastSeq && seq !== lastSeq + 1;
    var overflow = marker.getAttribute("data-resync") === "1";
    lastSeq = seq;
    if (gap || overflow) resync(gap ? "gap" : "overflow");
    document.querySelectorAll("tbody[data-limit]").forEach(trim);
    refreshEmpty();
  }

  document.addEventListener("htmx:wsOpen", function (evt) {
    var banner = document.getElementById("banner-disconnected");
    if (banner) banner.hidden = true;
    var root = live();
    if (root) root.setAttribute("data-connected", "1");
    lastSeq = 0; // a new connection numbers its frames from 1
    socket = evt.detail && evt.detail.socketWrapper;
    ping();
    if (wasClosed) {
      resync("reconnect");
      // The snapshot comes from the mirror, which trails the tables by a round of the
      // stream readers (up to ~2 s when idle, more under load): what changed while the
      // socket was down and reached the mirror only after the first snapshot would
      // otherwise stay missing until its next event, and a finished order has none.
      clearTimeout(settleTimer);
      settleTimer = setTimeout(function () { resync("reconnect"); }, 3000);
    }
    wasClosed = false;
  });

  document.addEventListener("htmx:wsClose", function (evt) {
    var root = live();
    if (root) { root.setAttribute("data-connected", "0"); root.removeAttribute("data-rtt"); }
    socket = null;
    lastRtt = null;
    var banner = document.getElementById("banner-disconnected");
    if (banner) banner.hidden = false;
    wasClosed = true;
    var code = evt.detail && evt.detail.event ? evt.detail.event.code : 0;
    if (code === 4401) { window.location.href = "/login/?next=/"; return; }
    // The extension itself retries only on 1006/1011/1012/1013: retry on every other close too.
    if ([1006, 1011, 1012, 1013].indexOf(code) < 0 && evt.detail && evt.detail.socketWrapper) {
      clearTimeout(reconnectTimer);
      var wrapper = evt.detail.socketWrapper;
      reconnectTimer = setTimeout(function () { wrapper.reconnect(); }, 1000);
    }
  });

  document.addEventListener("htmx:afterSwap", refreshEmpty);
  document.addEventListener("DOMContentLoaded", refreshEmpty);
})();
