// The order book card's switch: which market and region's ladder shows. Every ladder is on
// the page and kept live by the socket; this only chooses the visible one (remembered for
// the tab). The ladders themselves are server-rendered fragments (trading/fragments.html).
(function () {
  "use strict";
  var KEY = "book-choice";

  function card() { return document.getElementById("book"); }

  function choice(root) {
    var saved = null;
    try { saved = JSON.parse(sessionStorage.getItem(KEY) || "null"); } catch (e) { saved = null; }
    return {
      symbol: (saved && saved.symbol) || root.getAttribute("data-default-symbol"),
      region: (saved && saved.region) || root.getAttribute("data-default-region")
    };
  }

  function show(root, chosen) {
    var found = false;
    root.querySelectorAll("section.ladder").forEach(function (ladder) {
      var on = ladder.getAttribute("data-symbol") === chosen.symbol && ladder.getAttribute("data-region") === chosen.region;
      ladder.hidden = !on;
      found = found || on;
    });
    if (!found) return false;
    var home = null;
    root.querySelectorAll("[data-book-symbol]").forEach(function (button) {
      var on = button.getAttribute("data-book-symbol") === chosen.symbol;
      button.setAttribute("aria-pressed", on ? "true" : "false");
      if (on) home = button.getAttribute("data-home");
    });
    if (!home) home = root.getAttribute("data-default-region");
    root.querySelectorAll("[data-book-region]").forEach(function (button) {
      var name = button.getAttribute("data-book-region");
      button.setAttribute("aria-pressed", name === chosen.region ? "true" : "false");
      button.classList.toggle("home", name === home);
      button.title = name === home ? "the market's home region: its makers quote here" : "the book the matcher in " + name + " holds";
    });
    root.setAttribute("data-shown", chosen.symbol + " " + chosen.region);
    return true;
  }

  function setUp() {
    var root = card();
    if (!root || !root.querySelector("section.ladder")) return;
    var chosen = choice(root);
    if (!show(root, chosen)) {
      chosen = { symbol: root.getAttribute("data-default-symbol"), region: root.getAttribute("data-default-region") };
      show(root, chosen);
    }
    root.addEventListener("click", function (evt) {
      var button = evt.target.closest("button[data-book-symbol], button[data-book-region]");
      if (!button) return;
      var next = { symbol: chosen.symbol, region: chosen.region };
      if (button.hasAttribute("data-book-symbol")) {
        next.symbol = button.getAttribute("data-book-symbol");
        next.region = button.getAttribute("data-home") || next.region; // a market opens on its home region
      } else {
        next.region = button.getAttribute("data-book-region");
      }
      if (show(root, next)) {
        chosen = next;
        try { sessionStorage.setItem(KEY, JSON.stringify(chosen)); } catch (e) { /* private mode */ }
      }
    });
  }

  document.addEventListener("DOMContentLoaded", setUp);
})();
