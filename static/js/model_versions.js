// Model versions page: grouped bars comparing versions (reward: accuracy vs agreement; policy: score and KL).
(function () {
  "use strict";
  if (typeof Plotly === "undefined") return;
  const config = {displaylogo: false, responsive: true};
  const base = {margin: {l: 64, r: 64, t: 48, b: 90}, height: 320, barmode: "group", bargap: 0.45,
                legend: {orientation: "h", y: -0.35}, paper_bgcolor: "#fff", plot_bgcolor: "#fff"};
  function data(id) { const el = document.getElementById(id); return el ? JSON.parse(el.textContent) : []; }

  const rewards = data("reward-chart-data");
  if (rewards.length && document.getElementById("reward-chart")) {
    const x = rewards.map((r) => r.label);
    Plotly.newPlot("reward-chart", [
      {type: "bar", name: "held-out accuracy", x, y: rewards.map((r) => r.accuracy), marker: {color: "#2f5bd3"}},
      {type: "bar", name: "labelers' agreement", x, y: rewards.map((r) => r.agreement), marker: {color: "#9aa5b8"}},
    ], {...base, title: {text: "Reward models: held-out accuracy vs. labelers' agreement", font: {size: 15}},
        xaxis: {title: {text: "reward model version"}},
        yaxis: {title: {text: "fraction of pairs (0–1)"}, range: [0, 1]}}, config);
  }

  const policies = data("policy-chart-data");
  if (policies.length && document.getElementById("policy-chart")) {
    const x = policies.map((r) => r.label);
    Plotly.newPlot("policy-chart", [
      {type: "bar", name: "reward-model score", x, y: policies.map((r) => r.score), marker: {color: "#1f7a3d"}, offsetgroup: 0},
      {type: "bar", name: "KL to reference (right axis)", x, y: policies.map((r) => r.kl), marker: {color: "#d3542f"}, yaxis: "y2", offsetgroup: 1},
    ], {...base, title: {text: "Policies: score (higher is better) and KL from the reference", font: {size: 15}},
        xaxis: {title: {text: "policy version"}},
        yaxis: {title: {text: "mean reward-model score"}},
        yaxis2: {title: {text: "KL (nats)"}, overlaying: "y", side: "right", rangemode: "tozero"}}, config);
  }
})();
