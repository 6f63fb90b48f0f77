/* The editor desk: forms sent once, editor helpers, and the live delivery rows.
   Loaded as a file (CSP script-src 'self'): no inline scripts or handlers anywhere. */
(function () {
  "use strict";

  // -- forms are sent once: a second click (or Enter) does nothing --------------------------------
  function armOnce(form) {
    form.addEventListener("submit", function (event) {
      if (form.dataset.submitted === "1") {
        event.preventDefault();
        return;
      }
      var question = form.getAttribute("data-confirm");
      if (question && !window.confirm(question)) {
        event.preventDefault();
        return;
      }
      form.dataset.submitted = "1";
      var submitter = event.submitter;
      // Disable after the browser has taken the form data (a disabled button is left out of it).
      window.setTimeout(function () {
        form.querySelectorAll("button").forEach(function (button) {
          if (button.type !== "submit") { return; }
          button.disabled = true;
          if (button === submitter && button.dataset.busy) {
            button.dataset.label = button.textContent;
            button.textContent = button.dataset.busy;
          }
        });
      }, 0);
    });
  }
  document.querySelectorAll("form[data-once]").forEach(armOnce);

  // Coming back with the browser's Back button shows the page as it was left: enable it again.
  window.addEventListener("pageshow", function (event) {
    if (!event.persisted) { return; }
    document.querySelectorAll("form[data-once]").forEach(function (form) {
      delete form.dataset.submitted;
      form.querySelectorAll("button[type=submit]").forEach(function (button) {
        if (button.hasAttribute("data-retry")) { return; }
        button.disabled = false;
        if (button.dataset.label) { button.textContent = button.dataset.label; }
      });
    });
  });

  // A form sent back with problems: take the editor to the first one.
  var invalid = document.querySelector('[aria-invalid="true"]');
  if (invalid) { invalid.focus(); }

  // -- character counters ----------------------------------------------------------------------
  document.querySelectorAll("[data-counter]").forEach(function (input) {
    var out = document.querySelector('[data-counter-for="' + input.id + '"]');
    if (!out) { return; }
    var limit = parseInt(input.dataset.counter, 10) || 0;
    function update() {
      var n = Array.from(input.value.trim()).length;
      out.textContent = limit ? n + "/" + limit : String(n);
      out.classList.toggle("over", limit > 0 && n > limit);
    }
    input.addEventListener("input", update);
    update();
  });

  // -- body editor helpers ---------------------------------------------------------------------
  var BLOCK = /^(## |- |> )/;

  function insert(area, template) {
    var start = area.selectionStart, end = area.selectionEnd;
    var selected = area.value.slice(start, end);
    var parts = template.split("|");
    var before = parts[0], after = parts.length > 1 ? parts[1] : "";
    if (start > 0 && area.value.charAt(start - 1) !== "\n" && (BLOCK.test(before) || before.charAt(0) === "<" ||
        before.indexOf("![") === 0)) {
      before = "\n" + before;
    }
    area.setRangeText(before + selected + after, start, end, "end");
    var caret = start + before.length + selected.length;
    area.focus();
    area.setSelectionRange(caret, caret);
    area.dispatchEvent(new Event("input", { bubbles: true }));
  }

  document.querySelectorAll(".toolbar[data-editor]").forEach(function (bar) {
    var area = document.getElementById(bar.dataset.editor);
    if (!area) { return; }
    bar.addEventListener("click", function (event) {
      var button = event.target.closest("button");
      if (!button) { return; }
      var format = area.form && area.form.querySelector("input[name=body_format]:checked");
      insert(area, format && format.value === "html" ? button.dataset.html : button.dataset.md);
    });
  });

  document.addEventListener("click", function (event) {
    var button = event.target.closest("button[data-insert]");
    if (!button) { return; }
    var area = document.getElementById(button.dataset.target);
    if (area) { insert(area, button.dataset.insert); }
  });

  // -- cover and body images: show what was chosen before it is sent ----------------------------
  function readImage(file, done) {
    if (!file || !/^image\//.test(file.type)) { return; }
    var reader = new FileReader();
    reader.addEventListener("load", function () { done(reader.result); });  // a data: URL (CSP img-src)
    reader.readAsDataURL(file);
  }

  document.querySelectorAll("input[data-cover-input]").forEach(function (input) {
    var box = input.closest("fieldset").querySelector("[data-cover-box]");
    input.addEventListener("change", function () {
      var img = box.querySelector("[data-cover-img]");
      var empty = box.querySelector("[data-cover-empty]");
      var remove = box.querySelector("input[name=cover_remove]");
      readImage(input.files[0], function (url) {
        img.src = url;
        img.hidden = false;
        if (empty) { empty.hidden = true; }
        if (remove) { remove.checked = false; }
      });
    });
  });

  document.querySelectorAll("input[data-images-input]").forEach(function (input) {
    var list = input.closest("fieldset").querySelector("[data-new-images]");
    input.addEventListener("change", function () {
      list.textContent = "";
      Array.from(input.files).forEach(function (file) {
        var item = document.createElement("li");
        var img = document.createElement("img");
        img.alt = "";
        readImage(file, function (url) { img.src = url; });
        var name = document.createElement("code");
        name.textContent = file.name;
        var button = document.createElement("button");
        button.type = "button";
        button.className = "mini";
        button.dataset.insert = "![](" + file.name + ")";
        button.dataset.target = input.dataset.target;
        button.textContent = input.dataset.insertLabel || "Insert";
        item.append(img, name, button);
        list.append(item);
      });
      list.hidden = input.files.length === 0;
    });
  });

  // -- live delivery rows: poll the API until every channel has settled --------------------------
  var live = document.querySelector("[data-live]");
  if (live) {
    var terminal = JSON.parse(live.dataset.terminal);
    var labels = JSON.parse(live.dataset.labels);
    var summary = live.querySelector("[data-live-summary]");
    var retry = live.querySelector("[data-retry]");
    var clock = new Intl.DateTimeFormat("sv-SE", {
      timeZone: live.dataset.timezone, year: "numeric", month: "2-digit", day: "2-digit",
      hour: "2-digit", minute: "2-digit", hour12: false
    });
    var RETRYABLE = ["failed", "unknown", "retry_wait"];

    var cell = function (row, name) { return row.querySelector('[data-field="' + name + '"]'); };
    var put = function (row, name, node) {
      var target = cell(row, name);
      if (!target) { return; }
      target.textContent = "";
      if (typeof node === "string") { target.textContent = node; } else if (node) { target.append(node); }
    };

    var apply = function (data) {
      var latest = {};
      data.deliveries.forEach(function (d) { latest[d.channel] = d; });  // ordered by id: the last one wins
      var channels = Object.keys(latest);
      var delivered = 0, settled = true, retryable = false, retracting = channels.length > 0;
      channels.forEach(function (channel) {
        var d = latest[channel];
        // A retraction that arrived reads "withdrawn", not "delivered".
        var shown = d.operation === "retract" && d.state === "delivered" ? "withdrawn" : d.state;
        if (d.operation !== "retract") { retracting = false; }
        if (d.state === "delivered") { delivered += 1; }
        if (terminal.indexOf(d.state) < 0) { settled = false; }
        if (RETRYABLE.indexOf(d.state) >= 0) { retryable = true; }
        var row = live.querySelector('tr[data-channel="' + CSS.escape(channel) + '"]');
        if (!row) { return; }
        row.dataset.state = shown;
        put(row, "operation", (labels.operations[d.operation] || d.operation) + " · r" + d.revision);
        var badge = document.createElement("span");
        badge.className = "state state-" + shown;
        badge.textContent = labels.states[shown] || shown;
        put(row, "state", badge);
        put(row, "attempts", String(d.attempts));
        put(row, "updated", d.updated_at ? clock.format(new Date(d.updated_at)) : "");
        var detail = null;
        if (d.error && d.state !== "delivered") {
          detail = document.createElement("span");
          detail.className = "error-text";
          detail.textContent = d.error;
        } else if (d.remote_url && /^https?:\/\//.test(d.remote_url)) {
          detail = document.createElement("a");
          detail.href = d.remote_url;
          detail.target = "_blank";
          detail.rel = "noopener noreferrer";
          detail.textContent = labels.open;
        }
        put(row, "detail", detail);
      });
      if (summary) {
        summary.textContent = (retracting ? labels.withdrawn_of : labels.delivered_of).replace("{done}", delivered).replace("{total}", channels.length) +
          (settled && channels.length ? " · " + labels.all_done : "");
      }
      if (retry) { retry.disabled = !retryable; }
      live.classList.toggle("is-live", !settled);
      live.dataset.settled = settled ? "1" : "0";
      return settled;
    };

    var tick = function () {
      fetch(live.dataset.live, { credentials: "same-origin", headers: { Accept: "application/json" } })
        .then(function (response) { return response.ok ? response.json() : Promise.reject(response.status); })
        .then(function (data) { if (!apply(data)) { window.setTimeout(tick, 1000); } })
        .catch(function () { window.setTimeout(tick, 3000); });
    };
    tick();
  }
}());
