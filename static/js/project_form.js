// Project settings page: live Markdown-ish preview hint and "+ another check" rows.
(function () {
  const add = document.getElementById("add-check");
  const box = document.getElementById("new-checks");
  if (add && box) {
    add.addEventListener("click", function () {
      // A new row is a copy of the first: question, which answer is a problem, severity; the common choices preset.
      const row = box.querySelector(".new-check").cloneNode(true);
      const input = row.querySelector("input[name=new_question]");
      input.removeAttribute("id");
      input.value = "";
      input.placeholder = "Another yes/no question";
      input.setAttribute("aria-label", "New check question");
      row.querySelectorAll("select").forEach(function (select) { select.selectedIndex = 0; });
      box.appendChild(row);
      input.focus();
    });
  }
  const text = document.getElementById("id_instructions");
  const preview = document.getElementById("instructions-preview");
  if (text && preview) {
    // The server renders the real (sanitised) Markdown on save; here a plain-text echo keeps the layout honest.
    text.addEventListener("input", function () { preview.textContent = text.value; preview.classList.add("raw"); });
  }
})();
