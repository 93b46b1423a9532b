/* The labeling task page: ratings, checks, a weak-order ranking (drag and drop + keyboard),
   draft autosave (server + localStorage), lease renewal, submit/skip through the API. No build step. */
(function () {
  "use strict";

  var cfg = JSON.parse(document.getElementById("label-config").textContent);
  var form = document.getElementById("label-form");
  var rankingEl = document.getElementById("ranking");
  var commentEl = document.getElementById("comment");
  var saveStateEl = document.getElementById("save-state");
  var ids = cfg.completions.map(function (c) { return c.id; });
  var byId = {};
  cfg.completions.forEach(function (c) { byId[c.id] = c; });
  var LOCAL_KEY = "rlhf-draft:" + cfg.user + ":" + cfg.taskId;
  var csrf = form.querySelector("input[name=csrfmiddlewaretoken]").value;

  // ---- state -----------------------------------------------------------------------------
  var state = { likert: {}, checks: {}, tiers: [ids.slice()], touched: false, comment: "" };
  ids.forEach(function (id) { state.checks[id] = {}; });
  var current = 0;          // index of the current completion
  var submitting = false;

  function card(i) { return document.getElementById("comp-" + ids[i]); }
  function rankOf(id) {
    for (var t = 0; t < state.tiers.length; t++) if (state.tiers[t].indexOf(id) >= 0) return t + 1;
    return null;
  }

  // ---- ratings and checks (the radios are the view; state mirrors them) --------------------
  function setLikert(id, n) {
    var input = form.querySelector('input[name="likert-' + id + '"][value="' + n + '"]');
    if (input) { input.checked = true; }
    state.likert[id] = n;
    clearError("ratings." + id + ".likert");
    if (!state.touched) suggestRanking();
    changed();
  }
  function setCheck(id, key, value) {
    var input = form.querySelector('input[name="check-' + id + "-" + key + '"][value="' + (value ? "yes" : "no") + '"]');
    if (input) input.checked = true;
    state.checks[id][key] = value;
    clearError("ratings." + id + ".checks." + key);
    changed();
  }
  form.addEventListener("change", function (e) {
    var name = e.target.name || "";
    var m = name.match(/^likert-(\d+)$/);
    if (m) return setLikert(+m[1], +e.target.value);
    m = name.match(/^check-(\d+)-(.+)$/);
    if (m) { setCheck(+m[1], m[2], e.target.value === "yes"); markCurrentCheck(); }
  });
  commentEl.addEventListener("input", function () { state.comment = commentEl.value; clearError("comment"); changed(); });

  // ---- current completion and current check -----------------------------------------------
  function setCurrent(i, focus) {
    current = Math.max(0, Math.min(ids.length - 1, i));
    for (var k = 0; k < ids.length; k++) card(k).classList.toggle("is-current", k === current);
    markCurrentCheck();
    if (focus) { card(current).focus({ preventScroll: true }); card(current).scrollIntoView({ block: "nearest", behavior: "smooth" }); }
  }
  function firstOpenCheck(id) {
    for (var i = 0; i < cfg.checks.length; i++) if (!(cfg.checks[i].key in state.checks[id])) return cfg.checks[i].key;
    return null;
  }
  var currentCheck = null;
  function markCurrentCheck(key) {
    var id = ids[current];
    currentCheck = key || firstOpenCheck(id);
    form.querySelectorAll(".lt-check.is-current").forEach(function (el) { el.classList.remove("is-current"); });
    if (currentCheck) {
      var row = card(current).querySelector('.lt-check[data-check="' + currentCheck + '"]');
      if (row) row.classList.add("is-current");
    }
  }
  ids.forEach(function (id, i) {
    card(i).addEventListener("focusin", function (e) {
      if (current !== i) setCurrent(i, false);
      var row = e.target.closest(".lt-check");
      if (row) markCurrentCheck(row.getAttribute("data-check"));
    });
    card(i).addEventListener("click", function () { if (current !== i) setCurrent(i, false); });
  });
  function answerCheck(value) {
    var id = ids[current];
    if (!currentCheck) { announce("All checks of " + byId[id].label + " are answered."); return; }
    setCheck(id, currentCheck, value);
    markCurrentCheck();
    var row = currentCheck && card(current).querySelector('.lt-check[data-check="' + currentCheck + '"]');
    if (row) row.scrollIntoView({ block: "nearest" });
    if (!currentCheck && state.likert[id] && current < ids.length - 1) setCurrent(current + 1, true);
  }
  function answerAllNo() {
    var id = ids[current];
    cfg.checks.forEach(function (c) { if (!(c.key in state.checks[id])) setCheck(id, c.key, false); });
    markCurrentCheck();
  }

  // ---- ranking: a list of tiers (ties share a tier), best first -----------------------------
  function suggestRanking() {
    var rated = ids.filter(function (id) { return state.likert[id]; });
    var levels = Array.from(new Set(rated.map(function (id) { return state.likert[id]; }))).sort(function (a, b) { return b - a; });
    var tiers = levels.map(function (l) { return rated.filter(function (id) { return state.likert[id] === l; }); });
    var unrated = ids.filter(function (id) { return !state.likert[id]; });
    if (unrated.length) tiers.push(unrated);
    state.tiers = tiers;
    renderRanking();
  }
  function normalise() { state.tiers = state.tiers.filter(function (t) { return t.length; }); }

  // Move one step: a lone response joins the neighbouring tier (tie); a tied one leaves its tier.
  function moveItem(id, dir) {
    var t = rankOf(id) - 1, tier = state.tiers[t];
    if (tier.length > 1) {
      tier.splice(tier.indexOf(id), 1);
      state.tiers.splice(dir < 0 ? t : t + 1, 0, [id]);
    } else {
      var to = t + dir;
      if (to < 0 || to >= state.tiers.length) return announce(byId[id].label + " is already " + (dir < 0 ? "at the top." : "at the bottom."));
      state.tiers[to].push(id);
      state.tiers.splice(t, 1);
    }
    rankingTouched();
    renderRanking(id);
    announce(describe(id));
  }
  function dropOnTier(id, tierIndex) {
    var target = state.tiers[tierIndex];
    if (!target || target.indexOf(id) >= 0) return;
    var from = rankOf(id) - 1;
    state.tiers[from].splice(state.tiers[from].indexOf(id), 1);
    target.push(id);
    normalise(); rankingTouched(); renderRanking(id); announce(describe(id));
  }
  function dropOnGap(id, gapIndex) {   // gap i lies above tier i
    var from = rankOf(id) - 1;
    var marker = ["gap"];
    state.tiers.splice(gapIndex, 0, marker);
    var src = state.tiers[from >= gapIndex ? from + 1 : from];
    src.splice(src.indexOf(id), 1);
    marker[0] = id;
    normalise(); rankingTouched(); renderRanking(id); announce(describe(id));
  }
  function describe(id) {
    var r = rankOf(id), tier = state.tiers[r - 1];
    var tied = tier.filter(function (x) { return x !== id; }).map(function (x) { return byId[x].letter; });
    return byId[id].label + ": rank " + r + " of " + state.tiers.length + (tied.length ? ", tied with " + tied.join(", ") : "");
  }
  function rankingTouched() {
    state.touched = true;
    document.getElementById("rank-source").textContent = "Your ranking.";
    document.getElementById("rank-reset").hidden = false;
    clearError("ranking");
    changed();
  }
  document.getElementById("rank-reset").addEventListener("click", function () {
    state.touched = false;
    document.getElementById("rank-source").textContent = "Suggested from your ratings.";
    this.hidden = true;
    suggestRanking(); changed();
  });

  var dragId = null;
  function el(tag, cls, text) { var e = document.createElement(tag); if (cls) e.className = cls; if (text != null) e.textContent = text; return e; }
  function gapEl(i) {
    var g = el("div", "lt-gap"); g.setAttribute("data-gap", i); g.setAttribute("aria-hidden", "true");
    g.addEventListener("dragover", function (e) { e.preventDefault(); g.classList.add("is-over"); });
    g.addEventListener("dragleave", function () { g.classList.remove("is-over"); });
    g.addEventListener("drop", function (e) { e.preventDefault(); g.classList.remove("is-over"); if (dragId) dropOnGap(dragId, i); });
    return g;
  }
  function renderRanking(focusId) {
    rankingEl.textContent = "";
    state.tiers.forEach(function (tier, t) {
      rankingEl.appendChild(gapEl(t));
      var row = el("div", "lt-tier" + (tier.length > 1 ? " is-tie" : ""));
      row.setAttribute("role", "listitem");
      row.setAttribute("data-tier", t);
      var num = el("span", "lt-rank-num", String(t + 1)); num.setAttribute("aria-hidden", "true");
      row.appendChild(num);
      var items = el("div", "lt-tier-items");
      tier.forEach(function (id) {
        var c = byId[id];
        var item = el("div", "lt-item");
        item.tabIndex = 0; item.draggable = true;
        item.setAttribute("data-completion", id);
        item.setAttribute("role", "button");
        item.setAttribute("aria-roledescription", "movable response");
        item.setAttribute("aria-label", describe(id) + (state.likert[id] ? ", rated " + state.likert[id] : ", not rated yet"));
        item.setAttribute("aria-describedby", "rank-help");
        item.appendChild(el("span", "lt-letter", c.letter));
        item.appendChild(el("span", "lt-snippet", c.snippet));
        item.appendChild(el("span", "lt-chip", state.likert[id] ? "rated " + state.likert[id] : "unrated"));
        var up = el("button", "lt-move", "▲"); up.type = "button"; up.tabIndex = -1; up.setAttribute("aria-label", "Move " + c.label + " up");
        var down = el("button", "lt-move", "▼"); down.type = "button"; down.tabIndex = -1; down.setAttribute("aria-label", "Move " + c.label + " down");
        up.addEventListener("click", function () { moveItem(id, -1); });
        down.addEventListener("click", function () { moveItem(id, 1); });
        item.appendChild(up); item.appendChild(down);
        item.addEventListener("dragstart", function (e) { dragId = id; item.classList.add("is-dragging"); e.dataTransfer.effectAllowed = "move"; e.dataTransfer.setData("text/plain", String(id)); rankingEl.classList.add("is-dragging"); });
        item.addEventListener("dragend", function () { dragId = null; item.classList.remove("is-dragging"); rankingEl.classList.remove("is-dragging"); });
        items.appendChild(item);
      });
      row.appendChild(items);
      if (tier.length > 1) { var tie = el("span", "lt-tie-label", "tie"); row.appendChild(tie); }
      row.addEventListener("dragover", function (e) { e.preventDefault(); row.classList.add("is-over"); });
      row.addEventListener("dragleave", function (e) { if (!row.contains(e.relatedTarget)) row.classList.remove("is-over"); });
      row.addEventListener("drop", function (e) { e.preventDefault(); row.classList.remove("is-over"); if (dragId) dropOnTier(dragId, t); });
      rankingEl.appendChild(row);
    });
    rankingEl.appendChild(gapEl(state.tiers.length));
    if (focusId != null) { var f = rankingEl.querySelector('.lt-item[data-completion="' + focusId + '"]'); if (f) f.focus(); }
  }
  function rankingItems() { return Array.prototype.slice.call(rankingEl.querySelectorAll(".lt-item")); }

  // ---- contradictions ---------------------------------------------------------------------
  function contradictions() {
    var out = [];
    ids.forEach(function (a) {
      ids.forEach(function (b) {
        if (state.likert[a] && state.likert[b] && rankOf(a) < rankOf(b) && state.likert[a] < state.likert[b]) out.push([a, b]);
      });
    });
    return out;
  }

  // ---- payload, draft and autosave --------------------------------------------------------
  function payload() {
    return {
      ratings: ids.map(function (id) {
        return { completion: id, likert: state.likert[id] || null, rank: rankOf(id), checks: Object.assign({}, state.checks[id]) };
      }),
      comment: state.comment,
    };
  }
  function draftDoc() {
    var d = payload();
    d.ui = { tiers: state.tiers, touched: state.touched, current: current, savedAt: Date.now() };
    return d;
  }
  var saveTimer = null, lastSaved = null;
  function changed() {
    var doc = draftDoc();
    try { localStorage.setItem(LOCAL_KEY, JSON.stringify(doc)); } catch (e) { /* private mode: the server copy remains */ }
    saveStateEl.textContent = "Saving draft…";
    clearTimeout(saveTimer);
    saveTimer = setTimeout(saveDraft, 600);
  }
  function saveDraft() {
    if (submitting) return;
    var doc = draftDoc();
    api("PUT", cfg.urls.draft, { draft: doc }).then(function (r) {
      if (r.ok) { lastSaved = new Date(); saveStateEl.textContent = "Draft saved " + lastSaved.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" }); }
      else saveStateEl.textContent = "Draft kept in this browser (server said: " + (r.body.detail || r.status) + ")";
    }).catch(function () { saveStateEl.textContent = "Offline: draft kept in this browser"; });
  }
  function restore() {
    var server = cfg.draft && cfg.draft.ratings ? cfg.draft : null, local = null;
    try { local = JSON.parse(localStorage.getItem(LOCAL_KEY) || "null"); } catch (e) { local = null; }
    var ts = function (d) { return d && d.ui && d.ui.savedAt || 0; };
    var d = ts(local) > ts(server) ? local : server || local;
    if (!d || !Array.isArray(d.ratings)) { renderRanking(); return false; }
    d.ratings.forEach(function (r) {
      if (ids.indexOf(r.completion) < 0) return;
      if (r.likert >= 1 && r.likert <= 7) {
        state.likert[r.completion] = r.likert;
        var i = form.querySelector('input[name="likert-' + r.completion + '"][value="' + r.likert + '"]'); if (i) i.checked = true;
      }
      Object.keys(r.checks || {}).forEach(function (k) {
        if (r.checks[k] === true || r.checks[k] === false) {
          state.checks[r.completion][k] = r.checks[k];
          var i2 = form.querySelector('input[name="check-' + r.completion + "-" + k + '"][value="' + (r.checks[k] ? "yes" : "no") + '"]'); if (i2) i2.checked = true;
        }
      });
    });
    state.comment = typeof d.comment === "string" ? d.comment : "";
    commentEl.value = state.comment;
    var tiers = d.ui && Array.isArray(d.ui.tiers) ? d.ui.tiers : null;
    var flat = tiers ? [].concat.apply([], tiers).sort() : [];
    if (tiers && d.ui.touched && flat.length === ids.length && flat.join() === ids.slice().sort().join()) {
      state.tiers = tiers; state.touched = true;
      document.getElementById("rank-source").textContent = "Your ranking.";
      document.getElementById("rank-reset").hidden = false;
      renderRanking();
    } else suggestRanking();
    if (d.ui && typeof d.ui.current === "number") current = d.ui.current;
    saveStateEl.textContent = "Draft restored";
    return true;
  }

  // ---- errors -----------------------------------------------------------------------------
  function clearError(key) {
    var p = form.querySelector('[data-error-for="' + key + '"]');
    if (p && p.textContent) {
      p.textContent = "";
      var field = form.querySelector('[data-field="' + key + '"]');
      if (field) { field.classList.remove("has-error"); field.querySelectorAll("input").forEach(function (i) { i.removeAttribute("aria-invalid"); }); }
    }
  }
  function clearErrors() {
    document.querySelectorAll(".lt-error").forEach(function (p) { p.textContent = ""; });
    document.querySelectorAll(".has-error").forEach(function (e) { e.classList.remove("has-error"); });
    document.querySelectorAll("[aria-invalid]").forEach(function (e) { e.removeAttribute("aria-invalid"); });
    var fe = document.getElementById("form-error"); fe.hidden = true; fe.textContent = "";
  }
  function showErrors(detail, errors, scope) {
    scope = scope || document;
    var unplaced = [], first = null;
    Object.keys(errors || {}).forEach(function (key) {
      var p = scope.querySelector('[data-error-for="' + key + '"]');
      var msg = errors[key].join(" ");
      if (!p) { unplaced.push(msg); return; }
      p.textContent = msg;
      p.id = p.id || "err-" + key.replace(/[^a-z0-9]+/gi, "-");
      var field = scope.querySelector('[data-field="' + key + '"]');
      var target = field || p.parentElement;
      if (field) {
        field.classList.add("has-error");
        field.querySelectorAll("input").forEach(function (i) { i.setAttribute("aria-invalid", "true"); i.setAttribute("aria-describedby", p.id); });
      }
      if (!first) first = target;
    });
    if (scope === document) {
      var fe = document.getElementById("form-error");
      fe.textContent = "";
      fe.appendChild(el("strong", null, detail || "Please fix the marked fields."));
      unplaced.forEach(function (m) { fe.appendChild(el("div", null, m)); });
      fe.hidden = false;
      (first || fe).scrollIntoView({ block: "center" });
      var focusable = first && first.querySelector("input, textarea, [tabindex]");
      (focusable || fe).focus({ preventScroll: true });
    }
  }

  // ---- API --------------------------------------------------------------------------------
  function api(method, url, body) {
    return fetch(url, {
      method: method, credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRFToken": csrf, Accept: "application/json" },
      body: body === undefined ? undefined : JSON.stringify(body),
    }).then(function (r) {
      return r.json().catch(function () { return {}; }).then(function (b) { return { ok: r.ok, status: r.status, body: b }; });
    });
  }
  function goNext() {
    return api("POST", cfg.urls.next).then(function (r) {
      if (r.ok && r.body.url) window.location.assign(r.body.url);
      else window.location.assign(cfg.urls.home);
    });
  }
  function forgetLocal() { try { localStorage.removeItem(LOCAL_KEY); } catch (e) { /* nothing kept */ } }

  // ---- submit -----------------------------------------------------------------------------
  var confirmDialog = document.getElementById("confirm-dialog");
  function trySubmit() {
    if (submitting) return;
    clearErrors();
    var bad = contradictions();
    if (bad.length) {
      var list = document.getElementById("confirm-list"); list.textContent = "";
      bad.forEach(function (p) {
        list.appendChild(el("li", null, byId[p[0]].label + " is ranked above " + byId[p[1]].label + " but rated lower (" +
          state.likert[p[0]] + " vs " + state.likert[p[1]] + ")."));
      });
      confirmDialog.showModal();
      document.getElementById("confirm-no").focus();
      return;
    }
    doSubmit();
  }
  document.getElementById("confirm-yes").addEventListener("click", function () { confirmDialog.close(); doSubmit(); });
  document.getElementById("confirm-no").addEventListener("click", function () {
    confirmDialog.close();
    var f = rankingItems()[0]; if (f) { f.scrollIntoView({ block: "center" }); f.focus(); }
  });
  function doSubmit() {
    submitting = true;
    clearTimeout(saveTimer);
    var btn = document.getElementById("submit-btn");
    btn.disabled = true; btn.setAttribute("aria-busy", "true");
    saveStateEl.textContent = "Submitting…";
    api("POST", cfg.urls.submit, payload()).then(function (r) {
      if (r.ok) {
        forgetLocal();
        document.getElementById("today-count").textContent = r.body.today_count;
        saveStateEl.textContent = "Submitted. Loading the next task…";
        return goNext();
      }
      submitting = false; btn.disabled = false; btn.removeAttribute("aria-busy");
      saveStateEl.textContent = "Not submitted: fix the marked fields. Your draft is kept.";
      showErrors(r.body.detail, r.body.errors || flattenDrf(r.body));
    }).catch(function () {
      submitting = false; btn.disabled = false; btn.removeAttribute("aria-busy");
      showErrors("Could not reach the server. Your work is kept in this browser; try again.", {});
    });
  }
  function flattenDrf(body) { var o = {}; Object.keys(body || {}).forEach(function (k) { o[k] = [].concat(body[k]).map(String); }); return o; }
  form.addEventListener("submit", function (e) { e.preventDefault(); trySubmit(); });

  // ---- skip -------------------------------------------------------------------------------
  var skipDialog = document.getElementById("skip-dialog");
  var skipReason = document.getElementById("skip-reason");
  function openSkip() { skipDialog.showModal(); var f = skipDialog.querySelector('input[name="skip-choice"]'); if (f) f.focus(); }
  document.getElementById("skip-open").addEventListener("click", openSkip);
  document.getElementById("skip-cancel").addEventListener("click", function () { skipDialog.close(); });
  function clearSkipError() { skipDialog.querySelector('[data-error-for="reason"]').textContent = ""; skipReason.removeAttribute("aria-invalid"); }
  skipReason.addEventListener("input", clearSkipError);
  skipDialog.addEventListener("change", function (e) {
    clearSkipError();
    if (e.target.name === "skip-choice") { skipReason.value = e.target.value === "other" ? "" : e.target.value; if (e.target.value === "other") skipReason.focus(); }
  });
  document.getElementById("skip-form").addEventListener("submit", function (e) {
    e.preventDefault();
    skipDialog.querySelector('[data-error-for="reason"]').textContent = "";
    api("POST", cfg.urls.skip, { reason: skipReason.value }).then(function (r) {
      if (r.ok) { forgetLocal(); skipDialog.close(); return goNext(); }
      showErrors(r.body.detail, r.body.errors, skipDialog);
      skipReason.setAttribute("aria-invalid", "true"); skipReason.focus();
    });
  });

  // ---- help -------------------------------------------------------------------------------
  var helpDialog = document.getElementById("help-dialog");
  document.getElementById("help-open").addEventListener("click", function () { helpDialog.showModal(); });
  document.getElementById("help-close").addEventListener("click", function () { helpDialog.close(); });

  // ---- keyboard ---------------------------------------------------------------------------
  var live = document.getElementById("rank-live");
  function announce(msg) { live.textContent = msg; }
  document.addEventListener("keydown", function (e) {
    if ((e.ctrlKey || e.metaKey) && e.key === "Enter") { e.preventDefault(); if (!document.querySelector("dialog[open]")) trySubmit(); return; }
    if (document.querySelector("dialog[open]")) return;       // dialogs keep their own keys (Esc closes)
    var t = e.target;
    var typing = t.tagName === "TEXTAREA" || (t.tagName === "INPUT" && t.type !== "radio") || t.tagName === "SELECT";
    if (typing) { if (e.key === "Escape") t.blur(); return; }
    if (e.ctrlKey || e.metaKey || e.altKey) return;
    var item = t.closest && t.closest(".lt-item");
    if (item) {
      var id = +item.getAttribute("data-completion"), items = rankingItems(), pos = items.indexOf(item);
      var up = e.key === "ArrowUp" || e.key === "k" || e.key === "K", down = e.key === "ArrowDown" || e.key === "j" || e.key === "J";
      if ((up || down) && e.shiftKey) { e.preventDefault(); moveItem(id, up ? -1 : 1); return; }
      if (up || down) { e.preventDefault(); var n = items[pos + (up ? -1 : 1)]; if (n) n.focus(); return; }
    }
    var onRadio = t.tagName === "INPUT" && t.type === "radio";
    if (e.key === "?") { e.preventDefault(); helpDialog.showModal(); return; }
    if (/^[1-7]$/.test(e.key) && !item) { e.preventDefault(); setLikert(ids[current], +e.key); announce(byId[ids[current]].label + " rated " + e.key); return; }
    if (item) { if (e.key === "r") return; }
    switch (e.key) {
      case "j": e.preventDefault(); setCurrent(current + 1, true); return;
      case "k": e.preventDefault(); setCurrent(current - 1, true); return;
      case "ArrowDown": if (!onRadio) { e.preventDefault(); setCurrent(current + 1, true); } return;
      case "ArrowUp": if (!onRadio) { e.preventDefault(); setCurrent(current - 1, true); } return;
      case "y": e.preventDefault(); answerCheck(true); return;
      case "n": e.preventDefault(); answerCheck(false); return;
      case "N": e.preventDefault(); answerAllNo(); return;
      case "r": e.preventDefault(); var f = rankingItems()[0]; if (f) { f.scrollIntoView({ block: "center" }); f.focus(); } return;
      case "c": e.preventDefault(); commentEl.focus(); return;
      case "s": e.preventDefault(); openSkip(); return;
    }
  });

  // ---- lease renewal ----------------------------------------------------------------------
  var banner = document.getElementById("lease-banner");
  // Renew only while someone works here: a tab left open overnight must not hold the task forever.
  var lastActivity = Date.now();
  ["keydown", "pointerdown", "input"].forEach(function (t) { document.addEventListener(t, function () { lastActivity = Date.now(); }, true); });
  function renew() {
    if (Date.now() - lastActivity > cfg.leaseMinutes * 60 * 1000 * 0.8) return;
    api("POST", cfg.urls.renew).then(function (r) {
      if (r.ok) { banner.hidden = true; return; }
      banner.textContent = (r.body.detail || "Your hold on this task was lost.") + " Your draft is kept.";
      banner.hidden = false;
    }).catch(function () { /* offline: try again at the next tick */ });
  }
  var renewEvery = Math.max(20, Math.min(cfg.leaseMinutes * 60 / 3, 300)) * 1000;
  setInterval(renew, renewEvery);
  document.addEventListener("visibilitychange", function () { if (!document.hidden) renew(); });

  // ---- start ------------------------------------------------------------------------------
  var restored = restore();
  setCurrent(current, false);
  if (restored) saveDraft();
  window.labelTask = { state: state, payload: payload };   // for debugging and tests
})();
