// runstate console: refresh the live part of list pages (the element with data-refresh,
// in seconds), unless the user is typing in one of its fields. No framework, no build.
(function () {
  "use strict";
  const live = document.getElementById("live");
  if (!live || !live.dataset.refresh) return;
  const seconds = Math.max(5, parseInt(live.dataset.refresh, 10) || 15);
  function busy() {
    const el = document.activeElement;
    return el && live.contains(el) && (el.tagName === "INPUT" || el.tagName === "TEXTAREA");
  }
  async function refresh() {
    if (document.hidden || busy()) return;
    try {
      const resp = await fetch(window.location.href, { credentials: "same-origin" });
      if (!resp.ok || resp.redirected) return;
      const page = new DOMParser().parseFromString(await resp.text(), "text/html");
      const fresh = page.getElementById("live");
      if (fresh && !busy()) live.innerHTML = fresh.innerHTML;
    } catch (e) {
      // the next tick tries again
    }
  }
  window.setInterval(refresh, seconds * 1000);
})();
