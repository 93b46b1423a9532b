// Labeling page keyboard: the shortcut map (one keydown handler for the page) and the help dialog that lists it.

export function createHelp() {
  const dialog = document.getElementById("help-dialog");
  document.getElementById("help-open").addEventListener("click", () => dialog.showModal());
  document.getElementById("help-close").addEventListener("click", () => dialog.close());
  return {open: () => dialog.showModal()};
}

const isUp = (key) => key === "ArrowUp" || key === "k" || key === "K";
const isDown = (key) => key === "ArrowDown" || key === "j" || key === "J";

// a–i: responses A–I (K is at most 9).
const LETTER_KEYS = "abcdefghi";

export function installShortcuts({ratings, ranking, submit, help, compact, commentEl}) {
  // Plain keys outside the ranking, text fields and dialogs (a focused ranking item handles j/k and arrows itself).
  // The comment is Shift+C: a plain c is response C.
  const pageKeys = new Map([
    ...Array.from(LETTER_KEYS, (letter, i) => [letter, () => ratings.jump(i)]),
    ["j", () => ratings.step(1)],
    ["k", () => ratings.step(-1)],
    ["ArrowDown", () => ratings.step(1)],
    ["ArrowUp", () => ratings.step(-1)],
    ["y", () => ratings.answerCheck(true)],
    ["n", () => ratings.answerCheck(false)],
    ["N", () => ratings.answerNoProblems()],
    ["r", () => ranking.focusFirst()],
    ["C", () => commentEl.focus()],
    ["s", () => submit.openSkip()],
    ["v", () => compact.toggle()],
  ]);

  // Keys of a focused ranking item: arrows (or j/k) move the focus, with Shift they move the response. True if handled.
  function rankingKey(e, item) {
    const up = isUp(e.key);
    if (!up && !isDown(e.key)) return false;
    e.preventDefault();
    if (e.shiftKey) {
      ranking.move(+item.getAttribute("data-completion"), up ? -1 : 1);
    } else {
      const items = ranking.items();
      const next = items[items.indexOf(item) + (up ? -1 : 1)];
      if (next) next.focus();
    }
    return true;
  }

  document.addEventListener("keydown", (e) => {
    const dialogOpen = document.querySelector("dialog[open]");
    if ((e.ctrlKey || e.metaKey) && e.key === "Enter") {
      e.preventDefault();
      if (!dialogOpen) submit.trySubmit();
      return;
    }
    if (dialogOpen) return;       // dialogs keep their own keys (Esc closes)
    const t = e.target;
    const typing = t.tagName === "TEXTAREA" || (t.tagName === "INPUT" && t.type !== "radio") || t.tagName === "SELECT";
    if (typing) { if (e.key === "Escape") t.blur(); return; }
    if (e.ctrlKey || e.metaKey || e.altKey) return;
    const item = t.closest ? t.closest(".lt-item") : null;
    if (item && rankingKey(e, item)) return;
    if (e.key === "?") { e.preventDefault(); help.open(); return; }
    if (/^[1-7]$/.test(e.key)) {
      // Ratings go to the current response, not to a focused ranking item.
      if (!item) { e.preventDefault(); ratings.rateCurrent(+e.key); }
      return;
    }
    if (item && e.key === "r") return;   // already in the ranking
    // On a radio the arrows keep their own meaning: choose the neighbouring value.
    const onRadio = t.tagName === "INPUT" && t.type === "radio";
    if (onRadio && (e.key === "ArrowDown" || e.key === "ArrowUp")) return;
    const action = pageKeys.get(e.key);
    if (action) { e.preventDefault(); action(); }
  });
}
