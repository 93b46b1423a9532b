// Copy buttons: <button data-copy="#input-id"> copies that field's value (a link or token shown once).
document.addEventListener("click", async (event) => {
  const button = event.target.closest("button[data-copy]");
  if (!button) return;
  const field = document.querySelector(button.dataset.copy);
  field.select();
  try {
    await navigator.clipboard.writeText(field.value);
    button.textContent = "Copied";
  } catch {
    // No clipboard permission (plain http, old browser): the text is selected for Ctrl+C.
    button.textContent = "Selected: press Ctrl+C";
  }
});
