// Labeling page lease: renews this labeler's hold on the task while they work, and says so when it is lost.

export function keepLease({cfg, api}) {
  const banner = document.getElementById("lease-banner");
  // Renew only while someone works here: a tab left open overnight must not hold the task forever.
  let lastActivity = Date.now();
  for (const type of ["keydown", "pointerdown", "input"]) {
    document.addEventListener(type, () => { lastActivity = Date.now(); }, true);
  }

  async function renew() {
    if (Date.now() - lastActivity > cfg.leaseMinutes * 60 * 1000 * 0.8) return;
    try {
      const r = await api("POST", cfg.urls.renew);
      if (r.ok) { banner.hidden = true; return; }
      banner.textContent = `${r.body.detail || "Your hold on this task was lost."} Your draft is kept.`;
      banner.hidden = false;
    } catch (err) {
      // offline: try again at the next tick
    }
  }

  const renewEvery = Math.max(20, Math.min(cfg.leaseMinutes * 60 / 3, 300)) * 1000;
  setInterval(renew, renewEvery);
  document.addEventListener("visibilitychange", () => { if (!document.hidden) renew(); });
}
