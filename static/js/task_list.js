// Task browser: the header box ticks or clears every task of the page; "… all matching" needs no ticks.
document.addEventListener("DOMContentLoaded", () => {
  const all = document.getElementById("select-page");
  if (!all) return;
  const boxes = () => document.querySelectorAll("#task-list input[name=task]");
  all.addEventListener("change", () => { for (const box of boxes()) box.checked = all.checked; });
});
