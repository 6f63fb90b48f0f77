/* Ops dashboard: live updates, bulk selection, confirmations, filter auto-submit.
 *
 * Live updates: poll /ops/live.json every 2 s; when its stamp changes, fetch this page again and
 * swap the #ops-live region (server-rendered, autoescaped HTML), keeping checked boxes and open
 * <details>. Refreshing pauses while the tab is hidden, while rows are selected, and while a
 * field in the region has focus, so nothing moves under the operator's hand.
 * No inline script anywhere: this file is loaded with `script-src 'self'`.
 */
(function () {
  "use strict";

  var POLL_MS = 2000;
  document.documentElement.classList.add("js");

  var status = document.getElementById("ops-live-status");
  var region = document.getElementById("ops-live");

  // -- bulk selection ------------------------------------------------------------------------
  function boxes(form) {
    return Array.prototype.slice.call(form.querySelectorAll('input[type="checkbox"][name="ids"]'));
  }

  function syncForm(form) {
    var all = boxes(form);
    var n = all.filter(function (b) { return b.checked; }).length;
    var counter = form.querySelector("[data-selected-count]");
    if (counter) {
      counter.textContent = (counter.getAttribute("data-template") || "{n}").replace("{n}", String(n));
    }
    var master = form.querySelector("[data-select-all]");
    if (master) {
      master.checked = all.length > 0 && n === all.length;
      master.indeterminate = n > 0 && n < all.length;
    }
    Array.prototype.forEach.call(form.querySelectorAll("[data-needs-selection]"), function (button) {
      button.disabled = n === 0;
    });
    Array.prototype.forEach.call(all, function (b) {
      var row = b.closest("tr");
      if (row) { row.classList.toggle("is-selected", b.checked); }
    });
  }

  function syncAll() {
    Array.prototype.forEach.call(document.querySelectorAll("form[data-bulk]"), syncForm);
  }

  document.addEventListener("change", function (event) {
    var target = event.target;
    var form = target.form;
    if (target.matches("[data-select-all]") && form) {
      boxes(form).forEach(function (b) { b.checked = target.checked; });
      syncForm(form);
    } else if (target.name === "ids" && form) {
      syncForm(form);
    } else if (form && form.hasAttribute("data-autosubmit") && target.tagName === "SELECT") {
      if (form.requestSubmit) { form.requestSubmit(); } else { form.submit(); }
    }
  });

  document.addEventListener("submit", function (event) {
    var form = event.target;
    var button = event.submitter;
    var question = (button && button.getAttribute("data-confirm")) || form.getAttribute("data-confirm");
    if (question && !window.confirm(question)) {
      event.preventDefault();
      return;
    }
    // One submission per click (a second would only conflict). Disabled after the form data,
    // with the clicked button's value, has been collected.
    if (form.method.toLowerCase() !== "post") { return; }
    Array.prototype.forEach.call(form.querySelectorAll("button[type=submit]"), function (b) {
      window.setTimeout(function () { b.disabled = true; }, 0);
    });
  });

  syncAll();

  // -- live updates --------------------------------------------------------------------------
  if (!status || !region || !window.fetch || !window.DOMParser) { return; }
  var stamp = status.getAttribute("data-stamp");
  var url = status.getAttribute("data-url");
  var label = status.querySelector(".ops-live-label");
  var time = status.querySelector(".ops-live-time");
  var busy = false;

  function show(state) {
    status.classList.remove("is-live", "is-paused", "is-offline");
    status.classList.add("is-" + state);
    label.textContent = status.getAttribute("data-label-" + state) || state;
  }

  function paused() {
    if (region.querySelector('input[name="ids"]:checked')) { return true; }
    var active = document.activeElement;
    if (!active || !region.contains(active)) { return false; }
    if (active.tagName === "SELECT" || active.tagName === "TEXTAREA") { return true; }
    return active.tagName === "INPUT" && !/^(checkbox|radio|button|submit|hidden)$/.test(active.type);
  }

  function badge(count) {
    Array.prototype.forEach.call(document.querySelectorAll("[data-live-count]"), function (el) {
      el.textContent = String(count);
      el.classList.toggle("ops-badge-hot", count > 0);
    });
  }

  function swap(html) {
    var doc = new DOMParser().parseFromString(html, "text/html");
    var fresh = doc.getElementById("ops-live");
    var freshStatus = doc.getElementById("ops-live-status");
    if (!fresh) { return; }
    var checked = {};
    Array.prototype.forEach.call(region.querySelectorAll('input[name="ids"]:checked'), function (b) {
      checked[b.value] = true;
    });
    var closed = {};
    Array.prototype.forEach.call(region.querySelectorAll("details[id]"), function (d) {
      if (!d.open) { closed[d.id] = true; }
    });
    var nodes = Array.prototype.map.call(fresh.childNodes, function (n) { return document.importNode(n, true); });
    region.replaceChildren.apply(region, nodes);
    Array.prototype.forEach.call(region.querySelectorAll('input[name="ids"]'), function (b) {
      if (checked[b.value]) { b.checked = true; }
    });
    Array.prototype.forEach.call(region.querySelectorAll("details[id]"), function (d) {
      if (closed[d.id]) { d.open = false; }
    });
    if (freshStatus) {
      stamp = freshStatus.getAttribute("data-stamp");
      var freshTime = freshStatus.querySelector(".ops-live-time");
      if (freshTime) { time.textContent = freshTime.textContent; }
    }
    var freshBadge = doc.querySelector("[data-live-count]");
    if (freshBadge) { badge(parseInt(freshBadge.textContent, 10) || 0); }
    syncAll();
    region.dispatchEvent(new CustomEvent("ops:updated", { bubbles: true }));
  }

  function refresh() {
    return fetch(window.location.href, { credentials: "same-origin", cache: "no-store",
                                         headers: { "X-Ops-Live": "1" } })
      .then(function (response) {
        if (response.redirected || !response.ok) { throw new Error("page " + response.status); }
        return response.text();
      })
      .then(swap);
  }

  function poll() {
    if (busy || document.hidden) { return; }
    if (paused()) { show("paused"); return; }
    busy = true;
    fetch(url, { credentials: "same-origin", cache: "no-store", headers: { "Accept": "application/json" } })
      .then(function (response) {
        if (response.status === 401) { window.location.reload(); throw new Error("logged out"); }
        if (!response.ok) { throw new Error("live " + response.status); }
        return response.json();
      })
      .then(function (data) {
        badge(data.attention);
        show("live");
        if (data.stamp !== stamp) { return refresh(); }
        return null;
      })
      .catch(function () { show("offline"); })
      .then(function () { busy = false; });
  }

  show("live");
  window.setInterval(poll, POLL_MS);
  document.addEventListener("visibilitychange", function () { if (!document.hidden) { poll(); } });
}());
