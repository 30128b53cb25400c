// fedibridge admin: progressive enhancement. Every form works without this file; with it, moderation
// buttons post with fetch and update the row in place, and "select all" drives the bulk checkboxes.
(function () {
  "use strict";
  document.documentElement.classList.add("js");

  function say(text) {
    var flash = document.getElementById("flash");
    if (flash) { flash.textContent = text; }
  }

  function post(form, extra) {
    var body = new URLSearchParams(new FormData(form));
    if (extra) { body.append(extra.name, extra.value); }
    return fetch(form.getAttribute("action"), {  // not form.action: the bulk buttons are named "action"
      method: "POST", body: body, credentials: "same-origin",
      headers: { "Accept": "application/json" }
    }).then(function (resp) {
      return resp.json().then(function (data) {
        if (!resp.ok) { throw new Error(data.error || ("HTTP " + resp.status)); }
        return data;
      });
    });
  }

  function settle(li, status, deleted) {
    var list = li.closest("ol.comments");
    var shown = list ? list.getAttribute("data-status") : "all";
    li.classList.remove("status-pending", "status-approved", "status-rejected");
    li.classList.add("status-" + status);
    li.setAttribute("data-now", deleted ? "deleted" : status);
    if (shown !== "all" && (shown !== status || deleted)) {
      li.classList.add("done");
      li.querySelectorAll("button, input").forEach(function (b) { b.disabled = true; });
    }
    var badge = document.querySelector(".top .count");
    if (badge && shown === "pending" && status !== "pending") {
      var n = Math.max(0, parseInt(badge.textContent, 10) - 1);
      badge.textContent = String(n);
      document.title = document.title.replace(/^\(\d+\) /, n ? "(" + n + ") " : "");
    }
  }

  document.addEventListener("submit", function (event) {
    var form = event.target;
    if (!(form instanceof HTMLFormElement)) { return; }
    var isAct = form.classList.contains("act"), isBulk = form.getAttribute("id") === "bulk";  // not form.id: the checkboxes named "id" shadow it
    if (!isAct && !isBulk) { return; }
    event.preventDefault();
    var submitter = event.submitter;
    var extra = submitter && submitter.name ? { name: submitter.name, value: submitter.value } : null;
    if (submitter) { submitter.disabled = true; }
    post(form, extra).then(function (data) {
      say(data.message);
      if (data.reload) { window.location.assign(data.location || window.location.href); return; }
      if (isAct) {
        var li = form.closest("li.comment");
        if (li) { settle(li, data.status, data.deleted); }
      } else {
        (data.ids || []).forEach(function (id) {
          var li = document.getElementById("c" + id);
          if (li) { settle(li, data.status, false); }
        });
      }
      if (submitter && !isAct) { submitter.disabled = false; }
    }).catch(function (err) {
      say(err.message);
      if (submitter) { submitter.disabled = false; }
    });
  });

  // An avatar its server no longer serves: hide the broken image (no inline onerror under our CSP).
  document.addEventListener("error", function (event) {
    var img = event.target;
    if (img instanceof HTMLImageElement && img.classList.contains("avatar")) { img.hidden = true; }
  }, true);

  document.addEventListener("change", function (event) {
    if (event.target.id !== "select-all") { return; }
    document.querySelectorAll("input.pick").forEach(function (box) {
      if (!box.disabled) { box.checked = event.target.checked; }
    });
  });
})();
