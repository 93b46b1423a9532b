// Small DOM helpers shared by the labeling page modules.

export function el(tag, cls, text) {
  const node = document.createElement(tag);
  if (cls) node.className = cls;
  if (text != null) node.textContent = text;
  return node;
}

// One polite live region carries every spoken update (ratings, moves in the ranking, hints).
export function announce(message) {
  document.getElementById("rank-live").textContent = message;
}
