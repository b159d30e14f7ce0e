/* Live detail page of an unfinished run. No framework.

   The page's #content-main carries data-wf-live (a small JSON view: the row's version
   and state) and data-wf-version. The script polls it, every second at first and more
   slowly while nothing changes; when the version moved it fetches the page again and
   swaps the sections that show the run (General, Waiting, Timeline, Gantt, Payload,
   History, the command links). It stops once the run has finished, after an hour, or
   when the page is left; while the tab is hidden it does not poll. */
(function () {
  "use strict";

  var SECTIONS = ["general", "waiting", "timeline", "gantt", "payload", "history"];
  var FIRST_DELAY = 1000;
  var MAX_DELAY = 8000;
  var ERROR_DELAY = 15000;
  var LIFETIME = 60 * 60 * 1000;

  var root = document.querySelector("[data-wf-live]");
  if (!root || !window.fetch || !window.DOMParser) return;
  var url = root.getAttribute("data-wf-live");
  var version = root.getAttribute("data-wf-version");
  var status = document.getElementById("wf-live-status");
  var deadline = Date.now() + LIFETIME;
  var delay = FIRST_DELAY;
  var timer = null;

  function say(text, state) {
    if (!status) return;
    status.textContent = text;
    status.setAttribute("data-live", state);
  }

  function schedule(ms) {
    if (Date.now() > deadline) {
      say("Live updates paused: reload the page to see changes.", "paused");
      return;
    }
    timer = window.setTimeout(tick, ms);
  }

  function swap(fresh) {
    var previous = null;
    SECTIONS.forEach(function (id) {
      var now = document.getElementById(id);
      var next = fresh.getElementById(id);
      // Leave a section alone while the user types in it.
      if (now && now.contains(document.activeElement) && document.activeElement.matches("textarea, input")) {
        previous = now;
        return;
      }
      if (now && next) {
        now.replaceWith(next);
        previous = next;
      } else if (now) {
        now.remove();
      } else if (next) {
        if (previous) previous.after(next);
        else root.prepend(next);
        previous = next;
      }
    });
    var tools = document.querySelector("#content-main > .object-tools");
    var freshTools = fresh.querySelector("#content-main > .object-tools");
    if (tools && freshTools) tools.replaceWith(freshTools);
    if (window.wfGraph) window.wfGraph.setUp(root);
  }

  function refresh() {
    return fetch(window.location.pathname, { credentials: "same-origin", cache: "no-store" })
      .then(function (response) {
        if (!response.ok) throw new Error("HTTP " + response.status);
        return response.text();
      })
      .then(function (html) {
        swap(new DOMParser().parseFromString(html, "text/html"));
      });
  }

  function tick() {
    timer = null;
    if (document.hidden) {
      schedule(delay);
      return;
    }
    fetch(url, { credentials: "same-origin", cache: "no-store", headers: { Accept: "application/json" } })
      .then(function (response) {
        if (!response.ok) throw new Error("HTTP " + response.status);
        return response.json();
      })
      .then(function (row) {
        var changed = String(row.version) !== version;
        var done = changed ? refresh() : Promise.resolve();
        return done.then(function () {
          version = String(row.version);
          if (row.finished) {
            say("Finished: live updates stopped.", "stopped");
            root.removeAttribute("data-wf-live");
            return;
          }
          delay = changed ? FIRST_DELAY : Math.min(Math.round(delay * 1.5), MAX_DELAY);
          say("Live: this page updates by itself.", "on");
          schedule(delay);
        });
      })
      .catch(function () {
        say("Live updates interrupted; retrying.", "error");
        schedule(ERROR_DELAY);
      });
  }

  window.addEventListener("pagehide", function () {
    if (timer) window.clearTimeout(timer);
    deadline = 0;
  });
  say("Live: this page updates by itself.", "on");
  schedule(FIRST_DELAY);
})();
