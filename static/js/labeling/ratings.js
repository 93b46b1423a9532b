// Labeling page answers: each response's 1–7 rating and yes/no checks (as radios, and as the compact mode's toggles),
// the comment, and which response and check are current.
import {announce} from "./dom.js";
import {clearError} from "./errors.js";

// The radios are the view and state mirrors them. onRating runs after a new rating, onChange after any answer.
// Each of `checks` is {key, question, problem_answer}: problem_answer is the answer (true = yes) that flags a problem.
export function createRatings({form, commentEl, checks, state, ids, byId, onRating, onChange}) {
  let current = 0;            // index into ids
  let currentCheck = null;    // key of the highlighted check of the current response

  const card = (i) => document.getElementById(`comp-${ids[i]}`);
  const radio = (name, value) => form.querySelector(`input[name="${name}"][value="${value}"]`);
  const problemOf = {};
  checks.forEach((c) => { problemOf[c.key] = c.problem_answer; });

  // A compact toggle shows its check's answer: open (dashed), the problem answer (pressed, ⚠) or the other one.
  function paintToggle(id, key) {
    const toggle = form.querySelector(`#comp-${id} .lt-toggle[data-check="${key}"]`);
    if (!toggle) return;
    const value = state.checks[id][key];
    const answered = value === true || value === false;
    toggle.dataset.state = !answered ? "open" : value === problemOf[key] ? "problem" : "fine";
    toggle.setAttribute("aria-pressed", String(answered && value === problemOf[key]));
    toggle.querySelector(".lt-open-note").hidden = answered;
  }

  // show*: put a value into state and onto the page without side effects (restoring a draft).
  function showLikert(id, n) {
    const input = radio(`likert-${id}`, n);
    if (input) input.checked = true;
    state.likert[id] = n;
  }
  function showCheck(id, key, value) {
    const input = radio(`check-${id}-${key}`, value ? "yes" : "no");
    if (input) input.checked = true;
    state.checks[id][key] = value;
    paintToggle(id, key);
  }
  function showComment(text) {
    state.comment = text;
    commentEl.value = text;
  }

  function setLikert(id, n) {
    showLikert(id, n);
    clearError(form, `ratings.${id}.likert`);
    onRating();
    onChange();
  }
  function setCheck(id, key, value) {
    showCheck(id, key, value);
    clearError(form, `ratings.${id}.checks.${key}`);
    onChange();
  }

  function setCurrent(i, focus) {
    current = Math.max(0, Math.min(ids.length - 1, i));
    ids.forEach((id, k) => card(k).classList.toggle("is-current", k === current));
    markCurrentCheck();
    if (focus) {
      card(current).focus({preventScroll: true});
      card(current).scrollIntoView({block: "nearest", behavior: "smooth"});
    }
  }
  function firstOpenCheck(id) {
    const open = checks.find((c) => !(c.key in state.checks[id]));
    return open ? open.key : null;
  }
  function markCurrentCheck(key) {
    currentCheck = key || firstOpenCheck(ids[current]);
    form.querySelectorAll("[data-check].is-current").forEach((node) => node.classList.remove("is-current"));
    if (currentCheck) {
      card(current).querySelectorAll(`[data-check="${currentCheck}"]`).forEach((node) => node.classList.add("is-current"));
    }
  }

  function rateCurrent(n) {
    setLikert(ids[current], n);
    announce(`${byId[ids[current]].label} rated ${n}`);
  }
  // Answers the highlighted check and highlights the next open one. The response stays current after its last
  // check: moving on is j's job alone, so a j pressed next always lands on the next response, never the one after.
  function answerCheck(value) {
    const id = ids[current];
    if (!currentCheck) { announce(`All checks of ${byId[id].label} are answered.`); return; }
    setCheck(id, currentCheck, value);
    markCurrentCheck();
    const row = currentCheck && card(current).querySelector(`.lt-check[data-check="${currentCheck}"]`);
    if (row) row.scrollIntoView({block: "nearest"});
    if (!currentCheck) announce(`${byId[id].label}: all checks answered.${current < ids.length - 1 ? " j: next response." : ""}`);
  }
  // The response with letter index i (a = 0) becomes current; a letter past the last response is only said.
  function jump(i) {
    if (i >= ids.length) { announce(`There is no Response ${String.fromCharCode(65 + i)}.`); return; }
    setCurrent(i, true);
    announce(byId[ids[i]].label);
  }
  // "No problems": every open check of the current response gets the answer that is not its problem answer
  // (no to "toxic", yes to "satisfies the constraints"); answers already given stay.
  function answerNoProblems() {
    const id = ids[current];
    const open = checks.filter((c) => !(c.key in state.checks[id]));
    open.forEach((c) => setCheck(id, c.key, !c.problem_answer));
    markCurrentCheck();
    announce(open.length ? `${byId[id].label}: ${open.length} open check${open.length === 1 ? "" : "s"} answered, no problems.`
                         : `All checks of ${byId[id].label} are answered.`);
  }

  // A compact toggle flags its check's problem, and a second press takes the other answer (an open check starts at
  // the problem answer: a labeler presses toggles to flag problems, and "no problems" answers the rest).
  form.addEventListener("click", (e) => {
    const toggle = e.target.closest(".lt-toggle");
    const rest = e.target.closest(".lt-rest-fine");
    if (!toggle && !rest) return;
    const i = ids.indexOf(+e.target.closest(".lt-completion").getAttribute("data-completion"));
    if (current !== i) setCurrent(i, false);
    if (rest) { answerNoProblems(); return; }
    const key = toggle.getAttribute("data-check");
    const problem = problemOf[key];
    setCheck(ids[i], key, state.checks[ids[i]][key] === problem ? !problem : problem);
    markCurrentCheck();
  });
  form.addEventListener("change", (e) => {
    const name = e.target.name || "";
    let m = name.match(/^likert-(\d+)$/);
    if (m) { setLikert(+m[1], +e.target.value); return; }
    m = name.match(/^check-(\d+)-(.+)$/);
    if (m) { setCheck(+m[1], m[2], e.target.value === "yes"); markCurrentCheck(); }
  });
  commentEl.addEventListener("input", () => {
    state.comment = commentEl.value;
    clearError(form, "comment");
    onChange();
  });
  ids.forEach((id, i) => {
    card(i).addEventListener("focusin", (e) => {
      if (current !== i) setCurrent(i, false);
      const row = e.target.closest("[data-check]");
      if (row) markCurrentCheck(row.getAttribute("data-check"));
    });
    card(i).addEventListener("click", () => { if (current !== i) setCurrent(i, false); });
  });

  return {
    showLikert, showCheck, showComment, setCurrent, rateCurrent, answerCheck, answerNoProblems, jump,
    currentIndex: () => current,
    step: (dir) => setCurrent(current + dir, true),
  };
}
