// Demonstration editor: grows with the text, counts characters, Ctrl+Enter saves, keeps a local draft until saved.
(function () {
  const area = document.getElementById("id_demo_text");
  if (!area) return;
  const form = area.form;
  const counter = document.getElementById(area.dataset.count);
  const key = "demo-draft:" + location.pathname;
  if (!area.value && localStorage.getItem(key)) area.value = localStorage.getItem(key);
  function update() {
    area.style.height = "auto";
    area.style.height = Math.max(area.scrollHeight + 2, 180) + "px";
    if (counter) counter.textContent = area.value.length;
  }
  area.addEventListener("input", function () { localStorage.setItem(key, area.value); update(); });
  area.addEventListener("keydown", function (e) {
    if ((e.ctrlKey || e.metaKey) && e.key === "Enter") { e.preventDefault(); form.requestSubmit(); }
  });
  form.addEventListener("submit", function () { localStorage.removeItem(key); });
  update();
})();
