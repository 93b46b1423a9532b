// Labeling page progress: today's count from the server, and this browser session's count kept in sessionStorage.

export function createProgress({cfg}) {
  if (cfg.mode === "revise") return {submitted() {}};   // a revision is not a new task done
  const todayEl = document.getElementById("today-count");
  const sessionEl = document.getElementById("session-count");
  // One count per labeler and project, for as long as this tab lives: the session starts when its first task opens.
  const key = `rlhf-session:${cfg.user}:${cfg.projectId}`;
  let count = 0;
  try {
    count = parseInt(sessionStorage.getItem(key) || "0", 10) || 0;
    sessionStorage.setItem(key, String(count));
  } catch (err) {
    // storage unavailable: the count covers this page only
  }
  sessionEl.textContent = String(count);

  // After a submission: the server's count for today, and one more for this session.
  function submitted(todayCount) {
    count += 1;
    try {
      sessionStorage.setItem(key, String(count));
    } catch (err) {
      // as above
    }
    sessionEl.textContent = String(count);
    if (todayCount != null) todayEl.textContent = String(todayCount);
  }

  return {submitted};
}
