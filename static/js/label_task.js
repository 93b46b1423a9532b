// Labeling task page (an ES module): wires ratings, ranking, drafts, submit/skip, keyboard, compact checks, progress and
// lease renewal to the page.
import {jsonApi} from "./labeling/api.js";
import {clearError} from "./labeling/errors.js";
import {createRatings} from "./labeling/ratings.js";
import {createRanking} from "./labeling/ranking.js";
import {createDrafts, payloadOf} from "./labeling/drafts.js";
import {createSubmit} from "./labeling/submit.js";
import {createHelp, installShortcuts} from "./labeling/keyboard.js";
import {keepLease} from "./labeling/lease.js";
import {createCompact} from "./labeling/compact.js";
import {createProgress} from "./labeling/progress.js";

const cfg = JSON.parse(document.getElementById("label-config").textContent);
const form = document.getElementById("label-form");
const commentEl = document.getElementById("comment");
const saveStateEl = document.getElementById("save-state");
const api = jsonApi(form.querySelector("input[name=csrfmiddlewaretoken]").value);

const ids = cfg.completions.map((c) => c.id);
const byId = {};
cfg.completions.forEach((c) => { byId[c.id] = c; });
// tiers: the ranking, best first, ties share a tier; touched: the labeler arranged it (else it follows the ratings).
const state = {likert: {}, checks: {}, tiers: [ids.slice()], touched: false, comment: ""};
ids.forEach((id) => { state.checks[id] = {}; });
const payload = () => payloadOf(state, ids);

// The modules reach each other through these callbacks, which first run once all of them are built.
const changed = () => drafts.changed();
const ranking = createRanking({
  root: document.getElementById("ranking"), state, ids, byId,
  onTouched: () => { clearError(form, "ranking"); changed(); },
  onReset: changed,
});
const ratings = createRatings({form, commentEl, checks: cfg.checks, state, ids, byId, onRating: ranking.followRatings, onChange: changed});
const drafts = createDrafts({cfg, state, ids, api, ranking, ratings, saveStateEl, isSubmitting: () => submit.isSubmitting()});
const progress = createProgress({cfg});
const submit = createSubmit({cfg, state, byId, api, ranking, drafts, progress, payload, saveStateEl});
installShortcuts({ratings, ranking, submit, help: createHelp(), compact: createCompact({cfg}), commentEl});
if (cfg.urls.renew) keepLease({cfg, api});   // a revision holds no lease

const restored = drafts.restore();
ratings.setCurrent(restored ? restored.current : 0, false);
if (restored) drafts.save();   // the server learns of a newer copy this browser kept
window.labelTask = {state, payload};   // for debugging from the console
