// Ferry's UI script: live updates from the server's event stream. Loaded from /assets (the
// Content-Security-Policy allows no inline script).
(function () {
  "use strict";
  var stream = null;
  function changed(key) {
    var nodes = document.querySelectorAll("[data-app]");
    for (var i = 0; i < nodes.length; i++) {
      if (nodes[i].getAttribute("data-app") === key && window.htmx) {
        window.htmx.trigger(nodes[i], "ferry:changed");
      }
    }
  }
  function connect() {
    if (!window.EventSource || !document.querySelector("[data-app]") || stream) return;
    stream = new EventSource("/ui/stream");
    stream.addEventListener("app", function (e) { changed(e.data); });
    // The browser reconnects by itself; a closed stream (logged out) stays closed.
  }
  function clearToast() {
    var t = document.getElementById("toast");
    if (t && t.firstElementChild && !t.querySelector(".token")) {
      setTimeout(function () { t.innerHTML = ""; }, 8000);
    }
  }
  document.addEventListener("DOMContentLoaded", connect);
  document.addEventListener("htmx:afterSettle", function (e) {
    connect();
    if (e.detail && e.detail.target && e.detail.target.id === "toast") clearToast();
  });
  // Escape closes an open dialog (a <details>), returning focus to its summary.
  document.addEventListener("keydown", function (e) {
    if (e.key !== "Escape") return;
    var open = document.querySelector("details.dialog[open]");
    if (open) { open.removeAttribute("open"); var s = open.querySelector("summary"); if (s) s.focus(); }
  });
})();
