// Labeling page ranking: a weak order kept as tiers (best first, ties share a tier), moved by drag and drop or keyboard.
import {el, announce} from "./dom.js";

// 1-based rank of a response, or null when no tier holds it.
export function rankOf(tiers, id) {
  const t = tiers.findIndex((tier) => tier.includes(id));
  return t < 0 ? null : t + 1;
}

// state.tiers and state.touched live in the page's shared state; onTouched runs after each move by hand,
// onReset after "Reset to ratings".
export function createRanking({root, state, ids, byId, onTouched, onReset}) {
  const source = document.getElementById("rank-source");
  const reset = document.getElementById("rank-reset");
  let dragId = null;

  function showSource() {
    source.textContent = state.touched ? "Your ranking." : "Suggested from your ratings.";
    reset.hidden = !state.touched;
  }

  // Best rating first; responses that share a rating share a tier; unrated ones at the bottom.
  function suggest() {
    const rated = ids.filter((id) => state.likert[id]);
    const levels = Array.from(new Set(rated.map((id) => state.likert[id]))).sort((a, b) => b - a);
    const tiers = levels.map((level) => rated.filter((id) => state.likert[id] === level));
    const unrated = ids.filter((id) => !state.likert[id]);
    if (unrated.length) tiers.push(unrated);
    state.tiers = tiers;
    render();
  }

  // A new rating re-orders the suggestion, never a ranking the labeler arranged.
  function followRatings() {
    if (!state.touched) suggest();
  }

  function adopt(tiers) {
    state.tiers = tiers;
    state.touched = true;
    showSource();
    render();
  }

  function normalise() { state.tiers = state.tiers.filter((tier) => tier.length); }

  function touched() {
    state.touched = true;
    showSource();
    onTouched();
  }

  function moved(id) {
    touched();
    render(id);
    announce(describe(id));
  }

  // Move one step: a lone response joins the neighbouring tier (tie); a tied one leaves its tier.
  function move(id, dir) {
    const t = rankOf(state.tiers, id) - 1;
    const tier = state.tiers[t];
    if (tier.length > 1) {
      tier.splice(tier.indexOf(id), 1);
      state.tiers.splice(dir < 0 ? t : t + 1, 0, [id]);
    } else {
      const to = t + dir;
      if (to < 0 || to >= state.tiers.length) {
        announce(`${byId[id].label} is already ${dir < 0 ? "at the top." : "at the bottom."}`);
        return;
      }
      state.tiers[to].push(id);
      state.tiers.splice(t, 1);
    }
    moved(id);
  }

  function dropOnTier(id, tierIndex) {
    const target = state.tiers[tierIndex];
    if (!target || target.includes(id)) return;
    const from = rankOf(state.tiers, id) - 1;
    state.tiers[from].splice(state.tiers[from].indexOf(id), 1);
    target.push(id);
    normalise();
    moved(id);
  }

  function dropOnGap(id, gapIndex) {   // gap i lies above tier i
    const from = rankOf(state.tiers, id) - 1;
    // Insert first, then take the response out of its old tier: the indexes stay valid if that tier empties.
    const marker = ["gap"];
    state.tiers.splice(gapIndex, 0, marker);
    const src = state.tiers[from >= gapIndex ? from + 1 : from];
    src.splice(src.indexOf(id), 1);
    marker[0] = id;
    normalise();
    moved(id);
  }

  function describe(id) {
    const r = rankOf(state.tiers, id);
    const tied = state.tiers[r - 1].filter((x) => x !== id).map((x) => byId[x].letter);
    return `${byId[id].label}: rank ${r} of ${state.tiers.length}${tied.length ? `, tied with ${tied.join(", ")}` : ""}`;
  }

  // A place a dragged response can be dropped on, highlighted while it is over it.
  function acceptDrops(node, onDrop, isLeaving = () => true) {
    node.addEventListener("dragover", (e) => { e.preventDefault(); node.classList.add("is-over"); });
    node.addEventListener("dragleave", (e) => { if (isLeaving(e)) node.classList.remove("is-over"); });
    node.addEventListener("drop", (e) => {
      e.preventDefault();
      node.classList.remove("is-over");
      if (dragId) onDrop(dragId);
    });
  }

  function gapEl(i) {
    const gap = el("div", "lt-gap");
    gap.setAttribute("data-gap", i);
    gap.setAttribute("aria-hidden", "true");
    acceptDrops(gap, (id) => dropOnGap(id, i));
    return gap;
  }

  function itemEl(id) {
    const c = byId[id];
    const rated = state.likert[id];
    const item = el("div", "lt-item");
    item.tabIndex = 0;
    item.draggable = true;
    item.setAttribute("data-completion", id);
    item.setAttribute("role", "button");
    item.setAttribute("aria-roledescription", "movable response");
    item.setAttribute("aria-label", describe(id) + (rated ? `, rated ${rated}` : ", not rated yet") + (c.cut ? ", cut at the length limit" : ""));
    item.setAttribute("aria-describedby", "rank-help");
    item.appendChild(el("span", "lt-letter", c.letter));
    item.appendChild(el("span", "lt-snippet", c.snippet));
    if (c.cut) {
      const cut = el("span", "lt-badge lt-cut", "cut");
      cut.title = "Cut at the length limit: this answer stops mid-way.";
      item.appendChild(cut);
    }
    item.appendChild(el("span", "lt-chip", rated ? `rated ${rated}` : "unrated"));
    for (const [arrow, dir, word] of [["▲", -1, "up"], ["▼", 1, "down"]]) {
      // Out of the tab order: the keyboard moves a focused response with Shift+arrows instead.
      const button = el("button", "lt-move", arrow);
      button.type = "button";
      button.tabIndex = -1;
      button.setAttribute("aria-label", `Move ${c.label} ${word}`);
      button.addEventListener("click", () => move(id, dir));
      item.appendChild(button);
    }
    item.addEventListener("dragstart", (e) => {
      dragId = id;
      item.classList.add("is-dragging");
      e.dataTransfer.effectAllowed = "move";
      e.dataTransfer.setData("text/plain", String(id));
      root.classList.add("is-dragging");
    });
    item.addEventListener("dragend", () => {
      dragId = null;
      item.classList.remove("is-dragging");
      root.classList.remove("is-dragging");
    });
    return item;
  }

  function tierEl(tier, t) {
    const row = el("div", `lt-tier${tier.length > 1 ? " is-tie" : ""}`);
    row.setAttribute("role", "listitem");
    row.setAttribute("data-tier", t);
    const num = el("span", "lt-rank-num", String(t + 1));
    num.setAttribute("aria-hidden", "true");
    row.appendChild(num);
    const items = el("div", "lt-tier-items");
    tier.forEach((id) => items.appendChild(itemEl(id)));
    row.appendChild(items);
    if (tier.length > 1) row.appendChild(el("span", "lt-tie-label", "tie"));
    // Moving between the row's own items fires dragleave too: only leaving the row ends the highlight.
    acceptDrops(row, (id) => dropOnTier(id, t), (e) => !row.contains(e.relatedTarget));
    return row;
  }

  function render(focusId) {
    root.textContent = "";
    state.tiers.forEach((tier, t) => {
      root.appendChild(gapEl(t));
      root.appendChild(tierEl(tier, t));
    });
    root.appendChild(gapEl(state.tiers.length));
    if (focusId != null) {
      const focused = root.querySelector(`.lt-item[data-completion="${focusId}"]`);
      if (focused) focused.focus();
    }
  }

  function items() { return Array.from(root.querySelectorAll(".lt-item")); }

  function focusFirst() {
    const first = items()[0];
    if (first) { first.scrollIntoView({block: "center"}); first.focus(); }
  }

  // Pairs [a, b] where a is ranked above b but rated lower.
  function contradictions() {
    const out = [];
    for (const a of ids) {
      for (const b of ids) {
        if (state.likert[a] && state.likert[b] && rankOf(state.tiers, a) < rankOf(state.tiers, b) && state.likert[a] < state.likert[b]) {
          out.push([a, b]);
        }
      }
    }
    return out;
  }

  reset.addEventListener("click", () => {
    state.touched = false;
    showSource();
    suggest();
    onReset();
  });

  return {suggest, followRatings, adopt, render, move, items, focusFirst, contradictions};
}
