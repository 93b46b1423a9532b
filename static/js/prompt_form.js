// Prompt editor: plain text or a chat conversation built turn by turn (kept in the JSON field the server reads).
(function () {
  const form = document.getElementById("prompt-form");
  if (!form) return;
  const plain = document.getElementById("plain-editor");
  const chat = document.getElementById("chat-editor");
  const turns = document.getElementById("turns");
  const json = document.getElementById("id_messages");
  const roles = ["system", "user", "assistant"];

  function sync() {
    const messages = Array.from(turns.querySelectorAll(".turn-row")).map(function (row) {
      return { role: row.querySelector("select").value, content: row.querySelector("textarea").value };
    });
    json.value = JSON.stringify(messages);
  }
  function addTurn(role, content) {
    const row = document.createElement("div");
    row.className = "turn-row";
    const select = document.createElement("select");
    select.setAttribute("aria-label", "Role");
    roles.forEach(function (r) { const o = document.createElement("option"); o.value = r; o.textContent = r; select.appendChild(o); });
    select.value = role;
    const area = document.createElement("textarea");
    area.rows = 3; area.value = content || ""; area.setAttribute("aria-label", "Turn text");
    const remove = document.createElement("button");
    remove.type = "button"; remove.textContent = "Remove"; remove.className = "link-button";
    remove.addEventListener("click", function () { row.remove(); sync(); });
    [select, area].forEach(function (el) { el.addEventListener("input", sync); });
    row.append(select, area, remove);
    turns.appendChild(row);
    sync();
    area.focus();
  }
  function setMode() {
    const chatMode = form.querySelector("input[name=mode]:checked").value === "chat";
    chat.hidden = !chatMode; plain.hidden = chatMode;
    if (chatMode && !turns.children.length) {
      let existing = [];
      try { existing = JSON.parse(json.value || "[]"); } catch (e) { existing = []; }
      if (existing.length) existing.forEach(function (m) { addTurn(m.role, m.content); });
      else addTurn("user", document.getElementById("id_text").value);
    }
  }
  form.querySelectorAll("input[name=mode]").forEach(function (r) { r.addEventListener("change", setMode); });
  document.getElementById("add-turn").addEventListener("click", function () {
    const last = turns.querySelector(".turn-row:last-child select");
    addTurn(last && last.value === "user" ? "assistant" : "user", "");
  });
  form.addEventListener("submit", function () { if (!chat.hidden && turns.children.length) sync(); });
  setMode();
})();
