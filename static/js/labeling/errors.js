// Server validation errors on the labeling page: each message next to its field, the rest in the form's summary.
import {el} from "./dom.js";

export function clearError(form, key) {
  const p = form.querySelector(`[data-error-for="${key}"]`);
  if (p && p.textContent) {
    p.textContent = "";
    const field = form.querySelector(`[data-field="${key}"]`);
    if (field) {
      field.classList.remove("has-error");
      field.querySelectorAll("input").forEach((input) => input.removeAttribute("aria-invalid"));
    }
  }
}

export function clearErrors() {
  document.querySelectorAll(".lt-error").forEach((p) => { p.textContent = ""; });
  document.querySelectorAll(".has-error").forEach((node) => node.classList.remove("has-error"));
  document.querySelectorAll("[aria-invalid]").forEach((node) => node.removeAttribute("aria-invalid"));
  const summary = document.getElementById("form-error");
  summary.hidden = true;
  summary.textContent = "";
}

// errors: {"ratings.12.likert": ["message", …]}; scope: the document (the label form) or a dialog.
export function showErrors(detail, errors, scope = document) {
  const unplaced = [];
  let first = null;
  for (const key of Object.keys(errors || {})) {
    const p = scope.querySelector(`[data-error-for="${key}"]`);
    const message = errors[key].join(" ");
    if (!p) { unplaced.push(message); continue; }
    p.textContent = message;
    p.id = p.id || `err-${key.replace(/[^a-z0-9]+/gi, "-")}`;
    const field = scope.querySelector(`[data-field="${key}"]`);
    const target = field || p.parentElement;
    if (field) {
      field.classList.add("has-error");
      field.querySelectorAll("input").forEach((input) => {
        input.setAttribute("aria-invalid", "true");
        input.setAttribute("aria-describedby", p.id);
      });
    }
    if (!first) first = target;
  }
  if (scope === document) {
    const summary = document.getElementById("form-error");
    summary.textContent = "";
    summary.appendChild(el("strong", null, detail || "Please fix the marked fields."));
    unplaced.forEach((message) => summary.appendChild(el("div", null, message)));
    summary.hidden = false;
    (first || summary).scrollIntoView({block: "center"});
    const focusable = first && first.querySelector("input, textarea, [tabindex]");
    (focusable || summary).focus({preventScroll: true});
  }
}
