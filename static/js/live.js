// Live view glue for the htmx ws extension: upsert rows, detect gaps, reconnect, resync.
// No JSON-to-DOM: the server renders every fragment; this only decides where new rows go.
(function () {
  "use strict";
  var lastSeq = 0;
  var wasClosed = false;
  var reconnectTimer = null;

  function live() { return document.getElementById("live"); }

  function trim(container) {
    var limit = parseInt(container.getAttribute("data-limit") || "0", 10);
    if (!limit) return;
    while (container.children.length > limit) container.removeChild(container.lastElementChild);
  }

  function refreshEmpty() {
    var body = document.getElementById("orders-body");
    var empty = document.getElementById("orders-empty");
    if (body && empty) empty.hidden = body.children.length > 0;
  }

  function resync(reason) {
    var root = live();
    if (!root || !window.htmx) return;
    root.setAttribute("data-resyncs", String(parseInt(root.getAttribute("data-resyncs") || "0", 10) + 1));
    root.setAttribute("data-last-resync", reason);
    htmx.ajax("GET", root.getAttribute("data-snapshot-url"), { swap: "none", source: root }).then(refreshEmpty);
  }

  // Insert a fragment whose id is not on the page yet at the top of its container.
  function insertNew(content) {
    var into = content.getAttribute && content.getAttribute("data-upsert-into");
    var container = into && document.querySelector(into);
    if (!container) return false;
    container.insertBefore(content, container.firstElementChild);
    if (window.htmx) htmx.process(content);
    trim(container);
    return true;
  }

  // Replace the element with the fragment's id, or insert the fragment as new.
  function upsert(el) {
    el.removeAttribute("hx-swap-oob");
    var existing = el.id && document.getElementById(el.id);
    if (existing) {
      var newer = parseInt(el.getAttribute("data-updated") || "0", 10);
      var shown = parseInt(existing.getAttribute("data-updated") || "0", 10);
      if (newer && shown && newer < shown) return; // never step back to an older state
      existing.replaceWith(el);
      if (window.htmx) htmx.process(el);
    } else {
      insertNew(el);
    }
  }

  // Socket frames carry table rows inside <template> (a <tr> cannot stand alone in
  // HTML); the ws extension swaps only top-level elements, so frames are applied here.
  document.addEventListener("htmx:wsBeforeMessage", function (evt) {
    evt.preventDefault();
    var holder = document.createElement("template");
    holder.innerHTML = evt.detail.message;
    var elts = [];
    Array.prototype.forEach.call(holder.content.children, function (child) {
      if (child.tagName === "TEMPLATE") Array.prototype.push.apply(elts, child.content.children);
      else elts.push(child);
    });
    elts.slice().forEach(upsert);
    afterFrame();
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

  document.addEventListener("htmx:wsOpen", function () {
    var banner = document.getElementById("banner-disconnected");
    if (banner) banner.hidden = true;
    var root = live();
    if (root) root.setAttribute("data-connected", "1");
    lastSeq = 0; // a new connection numbers its frames from 1
    if (wasClosed) resync("reconnect");
    wasClosed = false;
  });

  document.addEventListener("htmx:wsClose", function (evt) {
    var root = live();
    if (root) root.setAttribute("data-connected", "0");
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
