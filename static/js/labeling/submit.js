// Labeling page submit and skip: the check of the ranking against the ratings, the skip dialog, and moving on to the next task.
import {el} from "./dom.js";
import {clearErrors, showErrors} from "./errors.js";

// DRF's plain {"field": "message"} or {"field": ["message", …]} as the {"field": ["message", …]} that showErrors takes.
function flattenDrf(body) {
  const out = {};
  Object.keys(body || {}).forEach((k) => { out[k] = [].concat(body[k]).map(String); });
  return out;
}

export function createSubmit({cfg, state, byId, api, ranking, drafts, progress, payload, saveStateEl}) {
  const button = document.getElementById("submit-btn");
  const confirmDialog = document.getElementById("confirm-dialog");
  const skipDialog = document.getElementById("skip-dialog");
  const skipReason = document.getElementById("skip-reason");
  const skipError = skipDialog.querySelector('[data-error-for="reason"]');
  let submitting = false;
  const revising = cfg.mode === "revise";   // revising a submitted label: no skip, back to the label when saved

  async function goNext() {
    const r = await api("POST", cfg.urls.next);
    window.location.assign(r.ok && r.body.url ? r.body.url : cfg.urls.home);
  }

  function busy(on) {
    submitting = on;
    button.disabled = on;
    if (on) button.setAttribute("aria-busy", "true");
    else button.removeAttribute("aria-busy");
  }

  function trySubmit() {
    if (submitting) return;
    clearErrors();
    const bad = ranking.contradictions();
    if (bad.length) {
      const list = document.getElementById("confirm-list");
      list.textContent = "";
      for (const [a, b] of bad) {
        list.appendChild(el("li", null, `${byId[a].label} is ranked above ${byId[b].label} but rated lower (` +
                                        `${state.likert[a]} vs ${state.likert[b]}).`));
      }
      confirmDialog.showModal();
      document.getElementById("confirm-no").focus();
      return;
    }
    doSubmit();
  }

  async function doSubmit() {
    busy(true);
    drafts.cancelPendingSave();
    saveStateEl.textContent = "Submitting…";
    try {
      const body = revising ? Object.assign(payload(), {opened_at: cfg.openedAt}) : payload();
      const r = await api("POST", cfg.urls.submit, body);
      if (r.ok && revising) {
        drafts.forgetLocal();
        saveStateEl.textContent = "Revision saved.";
        window.location.assign(cfg.urls.home);
        return;
      }
      if (r.ok) {
        drafts.forgetLocal();
        progress.submitted(r.body.today_count);
        saveStateEl.textContent = "Submitted. Loading the next task…";
        await goNext();
        return;
      }
      busy(false);
      saveStateEl.textContent = revising ? "Not saved: fix the marked fields. Your changes are kept in this browser."
        : "Not submitted: fix the marked fields. Your draft is kept.";
      showErrors(r.body.detail, r.body.errors || flattenDrf(r.body));
    } catch (err) {
      busy(false);
      showErrors("Could not reach the server. Your work is kept in this browser; try again.", {});
    }
  }

  function openSkip() {
    if (revising) return;
    skipDialog.showModal();
    const first = skipDialog.querySelector('input[name="skip-choice"]');
    if (first) first.focus();
  }
  function clearSkipError() {
    skipError.textContent = "";
    skipReason.removeAttribute("aria-invalid");
  }

  document.getElementById("label-form").addEventListener("submit", (e) => { e.preventDefault(); trySubmit(); });
  document.getElementById("confirm-yes").addEventListener("click", () => { confirmDialog.close(); doSubmit(); });
  document.getElementById("confirm-no").addEventListener("click", () => { confirmDialog.close(); ranking.focusFirst(); });

  if (!revising) document.getElementById("skip-open").addEventListener("click", openSkip);
  document.getElementById("skip-cancel").addEventListener("click", () => skipDialog.close());
  skipReason.addEventListener("input", clearSkipError);
  skipDialog.addEventListener("change", (e) => {
    clearSkipError();
    if (e.target.name === "skip-choice") {
      skipReason.value = e.target.value === "other" ? "" : e.target.value;
      if (e.target.value === "other") skipReason.focus();
    }
  });
  document.getElementById("skip-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    skipError.textContent = "";
    const r = await api("POST", cfg.urls.skip, {reason: skipReason.value});
    if (r.ok) { drafts.forgetLocal(); skipDialog.close(); await goNext(); return; }
    showErrors(r.body.detail, r.body.errors, skipDialog);
    skipReason.setAttribute("aria-invalid", "true");
    skipReason.focus();
  });

  return {trySubmit, openSkip, isSubmitting: () => submitting};
}
