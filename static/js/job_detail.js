// Job page: draws the job's metric series with plotly and appends new points while the job runs.
(function () {
  "use strict";
  const root = document.getElementById("charts");
  if (!root || typeof Plotly === "undefined") return;
  const url = root.dataset.seriesUrl;
  const pollMs = parseInt(root.dataset.pollMs, 10) || 2000;
  const series = {};          // key -> {x: [], y: []}
  const drawn = {};           // chart id -> true once Plotly.newPlot ran
  let lastId = 0;
  let timer = null;
  const palette = ["#2f5bd3", "#d3542f", "#1f7a3d", "#9a6400", "#7b3fb5", "#0f7c8c"];

  function label(key) {
    // "train/loss" -> "train loss"; "objective/scores" -> "objective scores"
    return key.replace("/", " ").replace(/_/g, " ");
  }

  function chartDiv(chart) {
    let div = document.getElementById("chart-" + chart.id);
    if (!div) {
      div = document.createElement("div");
      div.id = "chart-" + chart.id;
      div.className = "chart";
      div.setAttribute("role", "img");
      div.setAttribute("aria-label", chart.title + " by optimisation step");
      root.appendChild(div);
      // a new chart can change the grid's columns: let the others fit their cells again
      for (const other of root.querySelectorAll(".chart.js-plotly-plot")) Plotly.Plots.resize(other);
    }
    return div;
  }

  function draw(chart) {
    const traces = chart.keys.filter((k) => series[k]).map((k, i) => ({
      x: series[k].x, y: series[k].y, name: label(k), type: "scatter",
      mode: series[k].x.length > 1 ? "lines" : "markers",
      line: {color: palette[i % palette.length], width: 2, dash: k.startsWith("eval/") ? "dot" : "solid"},
      marker: {color: palette[i % palette.length], size: 7},
      hovertemplate: "step %{x}<br>" + label(k) + " %{y:.4g}<extra></extra>",
    }));
    const layout = {
      title: {text: chart.title, font: {size: 15}},
      xaxis: {title: {text: "optimisation step"}, rangemode: "tozero", zeroline: false},
      yaxis: {title: {text: chart.y_title}, range: chart.y_range || undefined, autorange: chart.y_range ? false : true},
      margin: {l: 64, r: 16, t: 48, b: 80}, height: 320, showlegend: true,
      legend: {orientation: "h", y: -0.38}, paper_bgcolor: "#fff", plot_bgcolor: "#fff",
      datarevision: lastId,  // the arrays grow in place: tell Plotly.react the data changed
    };
    const div = chartDiv(chart);
    Plotly.react(div, traces, layout, {displaylogo: false, responsive: true});
    div.dataset.points = String(traces.reduce((n, t) => n + t.x.length, 0));
    drawn[chart.id] = true;
  }

  async function poll() {
    let data;
    try {
      const response = await fetch(url + "?after=" + lastId, {headers: {Accept: "application/json"}, credentials: "same-origin"});
      if (!response.ok) throw new Error("HTTP " + response.status);
      data = await response.json();
    } catch (err) {
      root.dataset.error = String(err);
      timer = setTimeout(poll, pollMs * 2);
      return;
    }
    for (const [key, s] of Object.entries(data.series)) {
      const target = series[key] || (series[key] = {x: [], y: []});
      target.x.push(...s.x);
      target.y.push(...s.y);
    }
    lastId = data.last_id;
    const empty = document.getElementById("charts-empty");
    if (empty && data.charts.length) empty.remove();
    const changed = new Set(Object.keys(data.series));
    for (const chart of data.charts) {
      if (!drawn[chart.id] || chart.keys.some((k) => changed.has(k))) draw(chart);
    }
    root.dataset.status = data.status;
    if (data.more) {
      timer = setTimeout(poll, 0);
    } else if (!data.finished) {
      timer = setTimeout(poll, pollMs);
    } else {
      root.dataset.done = "true";   // finished: the last points are drawn, stop polling
    }
  }

  poll();
})();
