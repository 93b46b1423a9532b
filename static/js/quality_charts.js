// Label quality page: labels per day, pair agreement per day and per labeler (series from the SQL aggregates).
(function () {
  "use strict";
  if (typeof Plotly === "undefined") return;
  const el = document.getElementById("quality-chart-data");
  if (!el) return;
  const data = JSON.parse(el.textContent);
  const config = {displaylogo: false, responsive: true};
  const base = {margin: {l: 64, r: 24, t: 48, b: 70}, height: 300, legend: {orientation: "h", y: -0.3},
                paper_bgcolor: "#fff", plot_bgcolor: "#fff"};
  const percent = {title: {text: "pairs ordered alike"}, range: [0, 1], tickformat: ".0%"};

  // Whole days on the date axes: one tick per day while they fit, never "12:00" between two days.
  function dayAxis(days) {
    return {title: {text: "day"}, type: "date", tickformat: "%b %d", dtick: days.length <= 14 ? 86400000 : undefined};
  }

  function empty(id, text) {
    const node = document.getElementById(id);
    node.classList.add("chart-empty");
    node.textContent = text;
  }

  const perDay = data.labels_per_day;
  if (perDay.days.length) {
    Plotly.newPlot("chart-labels-per-day", [
      {type: "bar", name: "by labelers", x: perDay.days, y: perDay.human, marker: {color: "#2f5bd3"}},
      {type: "bar", name: "imported", x: perDay.days, y: perDay.imported, marker: {color: "#9aa5b8"}},
    ], {...base, barmode: "stack", title: {text: "Labels per day", font: {size: 15}},
        xaxis: dayAxis(perDay.days), yaxis: {title: {text: "labels submitted"}, rangemode: "tozero"}}, config);
  } else {
    empty("chart-labels-per-day", "Labels per day: no labels yet.");
  }

  const agreement = data.agreement_per_day;
  if (agreement.days.length) {
    Plotly.newPlot("chart-agreement-per-day", [
      {type: "scatter", mode: "lines+markers", name: "pair agreement", x: agreement.days, y: agreement.agreement,
       customdata: agreement.pairs, hovertemplate: "%{x}: %{y:.1%} of %{customdata} pairs<extra></extra>",
       marker: {color: "#1f7a3d"}},
    ], {...base, showlegend: false, title: {text: "Agreement over time (day of the later label)", font: {size: 15}},
        xaxis: dayAxis(agreement.days), yaxis: percent}, config);
  } else {
    empty("chart-agreement-per-day", "Agreement over time: no task has two labels by people yet.");
  }

  const perLabeler = data.agreement_per_labeler;
  if (perLabeler.labelers.length) {
    Plotly.newPlot("chart-agreement-per-labeler", [
      {type: "bar", name: "agreement with the others", x: perLabeler.labelers, y: perLabeler.agreement,
       customdata: perLabeler.pairs, hovertemplate: "%{x}: %{y:.1%} of %{customdata} pairs<extra></extra>",
       marker: {color: "#d3542f"}},
    ], {...base, showlegend: false, title: {text: "Agreement with the other labelers", font: {size: 15}},
        xaxis: {title: {text: "labeler"}, type: "category"}, yaxis: percent}, config);
  } else {
    empty("chart-agreement-per-labeler", "Agreement per labeler: no labeler shares a task with another yet.");
  }

  const ceiling = data.reward_ceiling;
  if (ceiling && (ceiling.times.length || ceiling.days.length)) {
    Plotly.newPlot("chart-reward-ceiling", [
      {type: "scatter", mode: "lines+markers", line: {shape: "hv", dash: "dash"}, name: "labelers' pairwise agreement (ceiling)",
       x: ceiling.days, y: ceiling.agreement, customdata: ceiling.pairs,
       hovertemplate: "%{x}: %{y:.1%} of %{customdata} pairs<extra></extra>", marker: {color: "#9aa5b8"}},
      {type: "scatter", mode: "lines+markers", name: "reward model held-out accuracy", x: ceiling.times,
       y: ceiling.accuracy, text: ceiling.models, hovertemplate: "%{text}: %{y:.1%}<extra></extra>",
       marker: {color: "#2f5bd3", size: 9}},
    ], {...base, title: {text: "Reward model accuracy next to its ceiling", font: {size: 15}},
        xaxis: {title: {text: "time"}, type: "date"}, yaxis: {...percent, title: {text: "pairs ordered as people did"}}},
      config);
  } else if (ceiling) {
    empty("chart-reward-ceiling", "No reward model trained on this project and no two labels of one task yet.");
  }
})();
