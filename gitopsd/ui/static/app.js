/* gitopsd status page: live updates over server-sent events (GET /events).
   Without JavaScript the page is complete; with it, the parts marked data-live are
   fetched again (the same URL) when an event arrives, and ages tick. No dependencies. */
(function () {
  "use strict";

  var live = document.getElementById("live");
  var state = { updates: 0, events: 0, lastEventAt: null, lastEventDelayMs: null };
  window.gitopsd = state;

  function setLive(mode, text) {
    if (!live) { return; }
    live.setAttribute("data-state", mode);
    live.textContent = text;
  }

  function ageText(seconds) {
    var future = seconds < 0;
    var s = Math.floor(Math.abs(seconds));
    var text;
    if (s < 60) { text = s + " s"; }
    else if (s < 3600) { text = Math.floor(s / 60) + " min"; }
    else if (s < 86400) { text = Math.floor(s / 3600) + " h"; }
    else { text = Math.floor(s / 86400) + " d"; }
    return future ? "in " + text : text + " ago";
  }

  function refreshAges() {
    var now = Date.now();
    document.querySelectorAll("[data-age]").forEach(function (el) {
      var t = Date.parse(el.getAttribute("data-age"));
      if (!isNaN(t)) { el.textContent = "(" + ageText((now - t) / 1000) + ")"; }
    });
  }

  function focusSelector(el) {
    if (el.id) { return "#" + CSS.escape(el.id); }
    var tag = el.tagName.toLowerCase();
    if (tag === "a" && el.getAttribute("href")) {
      return 'a[href="' + CSS.escape(el.getAttribute("href")) + '"]';
    }
    if (tag === "button" && el.value) { return 'button[value="' + CSS.escape(el.value) + '"]'; }
    return null;
  }

  function swap(doc) {
    document.querySelectorAll("[data-live]").forEach(function (el) {
      var key = el.getAttribute("data-live");
      var fresh = doc.querySelector('[data-live="' + key + '"]');
      if (!fresh || fresh.innerHTML === el.innerHTML) { return; }
      var active = document.activeElement;
      var selector = active && el.contains(active) ? focusSelector(active) : null;
      var open = {};
      el.querySelectorAll("details").forEach(function (d, i) { open[i] = d.open; });
      el.innerHTML = fresh.innerHTML;
      el.querySelectorAll("details").forEach(function (d, i) {
        if (i in open) { d.open = open[i]; }
      });
      if (selector) {
        var again = el.querySelector(selector);
        if (again) { again.focus(); }
      }
    });
    state.updates += 1;
    refreshAges();
  }

  var inflight = false;
  var dirty = false;
  var timer = null;

  function schedule() {
    if (timer !== null) { return; }
    timer = setTimeout(function () { timer = null; refresh(); }, 50);
  }

  function refresh() {
    /* A page with no live parts (the login form) has nothing to update. */
    if (!document.querySelector("[data-live]")) { return; }
    if (inflight) { dirty = true; return; }
    inflight = true;
    fetch(location.href, { headers: { "Accept": "text/html" }, cache: "no-store",
                           credentials: "same-origin" })
      .then(function (r) {
        if (!r.ok) { throw new Error("HTTP " + r.status); }
        return r.text();
      })
      .then(function (html) { swap(new DOMParser().parseFromString(html, "text/html")); })
      .catch(function () { setLive("error", "update failed; retrying on the next event"); })
      .then(function () {
        inflight = false;
        if (dirty) { dirty = false; schedule(); }
      });
  }

  var scope = document.body.getAttribute("data-function");

  function onEvent(ev) {
    var data = {};
    try { data = JSON.parse(ev.data); } catch (e) { data = {}; }
    state.events += 1;
    state.lastEventAt = Date.now();
    if (typeof data.at === "number") { state.lastEventDelayMs = Date.now() - data.at * 1000; }
    if (scope && data.function && data.function !== scope) { return; }
    schedule();
  }

  var source = null;
  var down = false;
  var delay = 1000;

  function connect() {
    if (typeof EventSource === "undefined") { return; }
    source = new EventSource("/events");
    source.onopen = function () {
      setLive("on", "live");
      if (down) { refresh(); }  /* events missed while away: read everything again */
      down = false;
      delay = 1000;
    };
    source.onerror = function () {
      down = true;
      setLive("reconnecting", "connection lost, reconnecting…");
      if (source.readyState === EventSource.CLOSED) {
        source.close();
        setTimeout(connect, delay);
        delay = Math.min(delay * 2, 15000);
      }
    };
    ["step", "node", "pass", "action"].forEach(function (kind) {
      source.addEventListener(kind, onEvent);
    });
    source.addEventListener("reload", function () {
      source.close();
      down = true;
      setTimeout(connect, 200);
    });
  }

  setLive("connecting", "connecting…");
  connect();
  refreshAges();
  setInterval(refreshAges, 5000);
})();
