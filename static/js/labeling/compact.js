// Labeling page compact checks: one row of toggles per response instead of a row per check, remembered per labeler in this browser.

import {announce} from "./dom.js";

// The class lives on <html> so that the page's head script can set it before the first paint (no jump on load).
const CLASS = "lt-compact";

export function createCompact({cfg}) {
  const root = document.documentElement;
  const button = document.getElementById("compact-toggle");
  const key = `rlhf-compact:${cfg.user}`;

  function show(on) {
    root.classList.toggle(CLASS, on);
    button.setAttribute("aria-pressed", String(on));
  }

  function toggle() {
    const on = !root.classList.contains(CLASS);
    show(on);
    try {
      localStorage.setItem(key, on ? "1" : "0");
    } catch (err) {
      // private mode or a full quota: the choice lasts for this page only
    }
    announce(on ? "Compact checks: one row of toggles per response." : "Full checks: one row per check.");
  }

  button.addEventListener("click", toggle);
  show(root.classList.contains(CLASS));
  return {toggle};
}
