// Labeling page drafts: each change is kept in this browser at once and on the server shortly after; a reload restores the newer copy.
import {rankOf} from "./ranking.js";

const SAVE_DELAY_MS = 600;

// The answer as the submit endpoint takes it.
export function payloadOf(state, ids) {
  return {
    ratings: ids.map((id) => ({completion: id, likert: state.likert[id] || null, rank: rankOf(state.tiers, id),
                               checks: Object.assign({}, state.checks[id])})),
    comment: state.comment,
  };
}

export function createDrafts({cfg, state, ids, api, ranking, ratings, saveStateEl, isSubmitting}) {
  // A revision of a submitted label is kept apart from the task's draft; it has no server copy (the label stays as it
  // is until the revision is sent).
  const revising = cfg.mode === "revise";
  const localKey = `rlhf-${revising ? "revision" : "draft"}:${cfg.user}:${cfg.taskId}`;
  let saveTimer = null;

  // The payload plus what the page needs to come back as it was: the tiers as arranged and the current response.
  function draftDoc() {
    const doc = payloadOf(state, ids);
    doc.ui = {tiers: state.tiers, touched: state.touched, current: ratings.currentIndex(), savedAt: Date.now()};
    return doc;
  }

  function changed() {
    try {
      localStorage.setItem(localKey, JSON.stringify(draftDoc()));
    } catch (err) {
      // private mode or a full quota: the server copy remains
    }
    if (revising) { saveStateEl.textContent = "Changes kept in this browser until you save the revision"; return; }
    saveStateEl.textContent = "Saving draft…";
    clearTimeout(saveTimer);
    saveTimer = setTimeout(save, SAVE_DELAY_MS);
  }

  async function save() {
    if (isSubmitting() || revising) return;
    try {
      const r = await api("PUT", cfg.urls.draft, {draft: draftDoc()});
      if (r.ok) {
        const time = new Date().toLocaleTimeString([], {hour: "2-digit", minute: "2-digit"});
        saveStateEl.textContent = `Draft saved ${time}`;
      } else {
        saveStateEl.textContent = `Draft kept in this browser (server said: ${r.body.detail || r.status})`;
      }
    } catch (err) {
      saveStateEl.textContent = "Offline: draft kept in this browser";
    }
  }

  function cancelPendingSave() { clearTimeout(saveTimer); }

  function forgetLocal() {
    try {
      localStorage.removeItem(localKey);
    } catch (err) {
      // storage unavailable: nothing was kept here
    }
  }

  // Puts the newer of the server's and this browser's drafts on the page. Returns null when there was none,
  // else {current}: the response to make current.
  function restore() {
    const server = cfg.draft && cfg.draft.ratings ? cfg.draft : null;
    let local = null;
    try {
      local = JSON.parse(localStorage.getItem(localKey) || "null");
    } catch (err) {
      local = null;
    }
    const savedAt = (d) => (d && d.ui && d.ui.savedAt) || 0;
    const d = savedAt(local) > savedAt(server) ? local : server || local;
    if (!d || !Array.isArray(d.ratings)) { ranking.render(); return null; }
    for (const r of d.ratings) {
      if (!ids.includes(r.completion)) continue;
      if (r.likert >= 1 && r.likert <= 7) ratings.showLikert(r.completion, r.likert);
      for (const [key, value] of Object.entries(r.checks || {})) {
        if (value === true || value === false) ratings.showCheck(r.completion, key, value);
      }
    }
    ratings.showComment(typeof d.comment === "string" ? d.comment : "");
    // A ranking arranged by hand comes back only if it still holds exactly this task's responses.
    const tiers = d.ui && Array.isArray(d.ui.tiers) ? d.ui.tiers : null;
    const flat = tiers ? [].concat(...tiers).sort() : [];
    if (tiers && d.ui.touched && flat.length === ids.length && flat.join() === ids.slice().sort().join()) ranking.adopt(tiers);
    else ranking.suggest();
    saveStateEl.textContent = revising ? (d === server ? "Your label as you submitted it" : "Your unsaved changes restored")
      : "Draft restored";
    return {current: d.ui && typeof d.ui.current === "number" ? d.ui.current : 0};
  }

  return {changed, save, cancelPendingSave, forgetLocal, restore};
}
