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

  // A pushed row whose id is not on the page yet: insert it at the top of its table.
  document.addEventListener("htmx:oobErrorNoTarget", function (evt) {
    var content = evt.detail && evt.detail.content;
    if (!content || !content.getAttribute) return;
    var into = content.getAttribute("data-upsert-into");
    var container = into && document.querySelector(into);
    if (!container) return;
    container.insertBefore(content, container.firstElementChild);
    if (window.htmx) htmx.process(content);
    trim(container);
    refreshEmpty();
  });

  document.addEventListener("htmx:wsAfterMessage", function () {
    var marker = document.getElementById("live-seq");
    if (!marker) return;
    var seq = parseInt(marker.getAttribute("data-seq") || "0", 10);
    var gap = lastSeq && seq !== lastSeq + 1;
    var overflow = marker.getAttribute("data-resync") === "1";
    lastSeq = seq;
    if (gap || overflow) resync(gap ? "gap" : "overflow");
    document.querySelectorAll("tbody[data-limit]").forEach(trim);
    refreshEmpty();
  });

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
