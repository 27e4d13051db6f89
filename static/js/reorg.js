// The reorg on the trade tape after a partition heals. The server renders every mark
// (<i data-reorg> elements pushed into #reorg-queue over the socket, or loaded at once
// from /reconcile/marks/); this only plays them on the tape rows (id "trade-<trade id>"):
//   1. the conflict's trades turn orange;
//   2. each compensated fill (FIX ExecType H) is struck through with a "compensated" label,
//      a corrected one (G) keeps its row with a "corrected" label;
//   3. the struck rows slide out and the tape settles; the trades that stand stay orange.
// Speed: ?reorg_speed=10 (or data-reorg-speed on #tape-body) plays it ten times faster; each
// phase keeps a floor so it stays readable. prefers-reduced-motion: the same states, no motion.
(function () {
  "use strict";
  var BASE = { orange: 1800, strike: 1800, slide: 700 };
  var FLOOR = { orange: 300, strike: 300, slide: 150 };
  var marks = {};       // trade id -> "conflicted" | "standing" | "compensated" | "corrected"
  var pending = [];     // trade ids waiting for their strike phase, in arrival order
  var orangeSince = {}; // trade id -> when it turned orange
  var timer = null;
  var stats = { conflicts: 0, compensated: 0, corrected: 0, playing: false };

  function reducedMotion() {
    return window.matchMedia && window.matchMedia("(prefers-reduced-motion: reduce)").matches;
  }

  function speed() {
    var fromUrl = parseFloat(new URLSearchParams(window.location.search).get("reorg_speed") || "");
    var tape = document.getElementById("tape-body");
    var fromAttr = tape ? parseFloat(tape.getAttribute("data-reorg-speed") || "") : NaN;
    var value = isFinite(fromUrl) && fromUrl > 0 ? fromUrl : (isFinite(fromAttr) && fromAttr > 0 ? fromAttr : 1);
    return Math.min(Math.max(value, 0.1), 50);
  }

  function ms(phase) { return Math.max(FLOOR[phase], Math.round(BASE[phase] / speed())); }

  function row(tradeId) { return document.getElementById("trade-" + tradeId); }

  // The label takes the place of the fill AZ (the narrowest, least needed column); the AZ stays in the title.
  function label(tr, text, cls) {
    var cell = tr.lastElementChild;
    if (!cell) return;
    if (!cell.hasAttribute("data-az")) {
      cell.setAttribute("data-az", cell.textContent.trim());
      cell.title = (cell.title ? cell.title + " · " : "") + "filled in " + cell.textContent.trim();
    }
    var tag = document.createElement("span");
    tag.className = "reorg-label " + cls;
    tag.textContent = text;
    cell.replaceChildren(tag);
  }

  // The state a row should show once the reorg has settled (a reload, a resync, a late row).
  function settle(tr, mark) {
    if (!tr) return;
    if (mark === "compensated") { tr.remove(); return; }
    tr.classList.add("reorg-conflicted", "reorg-settled");
    tr.classList.remove("fresh");
    if (mark === "corrected") label(tr, "corrected", "label-corrected");
    else if (mark === "standing") label(tr, "stands", "label-standing");
  }

  function status() {
    var el = document.getElementById("reorg-status");
    if (!el) return;
    if (!stats.conflicts && !stats.compensated) { el.hidden = true; return; }
    el.hidden = false;
    el.setAttribute("data-state", stats.playing ? "playing" : "settled");
    el.textContent = (stats.playing ? "Reorg in progress · " : "Reorg settled · ") + stats.conflicts + " conflict" + (stats.conflicts === 1 ? "" : "s") +
      " · " + stats.compensated + " fill" + (stats.compensated === 1 ? "" : "s") + " compensated" +
      (stats.corrected ? " · " + stats.corrected + " corrected" : "") + (speed() !== 1 ? " · " + speed() + "x" : "");
  }

  function conflicted(el, instant) {
    var standing = (el.getAttribute("data-standing") || "").split(" ").filter(Boolean);
    (el.getAttribute("data-trades") || "").split(" ").filter(Boolean).forEach(function (id) {
      if (marks[id] === "compensated" || marks[id] === "corrected") return;
      marks[id] = standing.indexOf(id) >= 0 ? "standing" : "conflicted";
      var tr = row(id);
      if (instant) { settle(tr, marks[id]); return; }
      if (tr) {
        tr.classList.remove("fresh");
        tr.classList.add("reorg-conflicted");
        label(tr, "conflict", "label-conflict");
      }
      orangeSince[id] = Date.now();
    });
    if (!instant) stats.conflicts += 1;
  }

  function compensated(el, instant) {
    var corrected = el.getAttribute("data-exec-type") === "G";
    (el.getAttribute("data-trades") || "").split(" ").filter(Boolean).forEach(function (id) {
      marks[id] = corrected ? "corrected" : "compensated";
      if (instant) { settle(row(id), marks[id]); return; }
      if (corrected) stats.corrected += 1; else stats.compensated += 1;
      if (!orangeSince[id]) orangeSince[id] = Date.now();
      pending.push(id);
    });
  }

  // Strike (or relabel) each pending fill once it has been orange long enough, then slide it out.
  function play() {
    timer = null;
    var now = Date.now();
    var wait = null;
    var still = [];
    pending.forEach(function (id) {
      var due = orangeSince[id] + ms("orange");
      if (due > now) { still.push(id); wait = wait === null ? due - now : Math.min(wait, due - now); return; }
      var tr = row(id);
      if (!tr) return;
      tr.classList.add("reorg-conflicted");
      if (marks[id] === "corrected") {
        label(tr, "corrected", "label-corrected");
        setTimeout(function () { tr.classList.add("reorg-settled"); }, ms("strike"));
        return;
      }
      tr.classList.add("reorg-compensated");
      label(tr, "compensated", "label-compensated");
      setTimeout(function () {
        if (reducedMotion()) { tr.remove(); done(); return; }
        tr.style.setProperty("--reorg-slide-ms", ms("slide") + "ms");
        tr.classList.add("reorg-out");
        setTimeout(function () { tr.remove(); done(); }, ms("slide"));
      }, ms("strike"));
    });
    pending = still;
    if (wait !== null) schedule(wait);
    done();
  }

  function done() {
    var live = pending.length || document.querySelector("#tape-body tr.reorg-compensated");
    if (!live) {
      stats.playing = false;
      document.querySelectorAll("#tape-body tr.reorg-conflicted").forEach(function (tr) {
        var id = tr.id.replace(/^trade-/, "");
        if (marks[id] === "standing") label(tr, "stands", "label-standing");
        tr.classList.add("reorg-settled");
      });
    }
    status();
  }

  function schedule(delay) {
    if (timer !== null) clearTimeout(timer);
    timer = setTimeout(play, Math.max(0, delay));
  }

  function take(el) {
    if (!el || !el.getAttribute || !el.hasAttribute("data-reorg")) return;
    var instant = el.getAttribute("data-instant") === "1";
    if (el.getAttribute("data-reorg") === "conflicted") conflicted(el, instant);
    else compensated(el, instant);
    el.remove();
    if (!instant) {
      stats.playing = true;
      document.documentElement.style.setProperty("--reorg-ms", ms("orange") + "ms");
      schedule(0);
    }
    status();
  }

  // A row rendered after its mark (a late trade.executed, a resync, a reload) gets its settled state.
  function reapply(node) {
    if (!node || node.nodeType !== 1) return;
    var rows = node.tagName === "TR" ? [node] : node.querySelectorAll ? node.querySelectorAll("tr[id^='trade-']") : [];
    Array.prototype.forEach.call(rows, function (tr) {
      var id = tr.id.replace(/^trade-/, "");
      if (marks[id] && pending.indexOf(id) < 0 && !tr.classList.contains("reorg-compensated")) settle(tr, marks[id]);
    });
  }

  function init() {
    var queue = document.getElementById("reorg-queue");
    if (!queue) return;
    Array.prototype.slice.call(queue.children).forEach(take);
    new MutationObserver(function (changes) {
      changes.forEach(function (change) { Array.prototype.slice.call(change.addedNodes).forEach(take); });
    }).observe(queue, { childList: true });
    var live = document.getElementById("live") || document.body;
    new MutationObserver(function (changes) {
      changes.forEach(function (change) {
        if (change.target === queue) return;
        Array.prototype.forEach.call(change.addedNodes, reapply);
      });
    }).observe(live, { childList: true, subtree: true });
    var tape = document.getElementById("tape-body");
    if (tape) tape.setAttribute("data-reorg-speed-now", String(speed()));
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init);
  else init();
})();
