// Import job page: "Undo this import…" opens the confirm dialog, which lists what will be deleted.
(function () {
  "use strict";
  const dialog = document.getElementById("undo-dialog");
  const open = document.getElementById("undo-open");
  if (!dialog || !open) return;
  open.addEventListener("click", () => dialog.showModal());
  dialog.querySelector("[data-close]").addEventListener("click", () => dialog.close());
})();
