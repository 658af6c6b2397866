// /dashboard's charts: drawn with plotly from the JSON the page embeds (the numbers of
// /v1/stats/agreement and /v1/jobs/{id}/report); no inline script, no CDN.
(function () {
  "use strict";

  function readJSON(id) {
    var node = document.getElementById(id);
    return node ? JSON.parse(node.textContent) : null;
  }

  function draw(id, traces, layout) {
    var node = document.getElementById(id);
    if (!node) { return; }
    var base = {title: {text: node.dataset.title}, margin: {t: 40, r: 10, b: 40, l: 50},
                legend: {orientation: "h"}};
    window.Plotly.newPlot(node, traces, Object.assign(base, layout || {}), {displaylogo: false, responsive: true});
  }

  function days(points) { return points.map(function (p) { return p.day; }); }

  function overview(data) {
    var accuracy = [], kappa = [];
    data.series.forEach(function (s) {
      var name = s.profile + " · " + s.model;
      var text = s.points.map(function (p) { return "/v1/stats/agreement?" + p.query; });
      accuracy.push({type: "scatter", mode: "lines+markers", name: name, x: days(s.points), text: text,
                     y: s.points.map(function (p) { return p.accuracy; })});
      kappa.push({type: "scatter", mode: "lines+markers", name: name, x: days(s.points), text: text,
                  y: s.points.map(function (p) { return p.cohen_kappa; }),
                  error_y: {type: "data", symmetric: false,
                            array: s.points.map(function (p) { return p.cohen_kappa_ci95 ? p.cohen_kappa_ci95[1] - p.cohen_kappa : null; }),
                            arrayminus: s.points.map(function (p) { return p.cohen_kappa_ci95 ? p.cohen_kappa - p.cohen_kappa_ci95[0] : null; })}});
    });
    draw("chart-accuracy", accuracy, {yaxis: {range: [0, 1]}});
    draw("chart-kappa", kappa, {yaxis: {range: [-1, 1]}});
    draw("chart-cost", [{type: "bar", name: "cost (USD)", x: days(data.per_day),
                         y: data.per_day.map(function (p) { return p.cost_usd; })}]);
    draw("chart-calls", [{type: "bar", name: "calls", x: days(data.per_day),
                          y: data.per_day.map(function (p) { return p.calls; })}]);
  }

  function job(report) {
    var curve = report.coverage_curve || [];
    draw("chart-coverage", [{type: "scatter", mode: "lines+markers", name: "accuracy",
                             x: curve.map(function (c) { return c.coverage; }),
                             y: curve.map(function (c) { return c.accuracy; }),
                             text: curve.map(function (c) { return "certainty ≥ " + c.threshold; })}],
         {xaxis: {title: {text: "coverage"}, range: [0, 1.02]}, yaxis: {title: {text: "accuracy"}}});
    var stages = report.cascade_stages ? report.cascade_stages.stages : [];
    if (stages.length) {
      var names = stages.map(function (s) { return s.stage + ": " + s.model; });
      draw("chart-stages", [
        {type: "bar", name: "reached", x: names, y: stages.map(function (s) { return s.reached; })},
        {type: "bar", name: "accepted", x: names, y: stages.map(function (s) { return s.accepted; })}]);
    }
  }

  // Live progress: the jobs table's status and progress from /dashboard/data/jobs every 5 s.
  function refreshJobs() {
    fetch("data/jobs", {credentials: "same-origin"}).then(function (r) { return r.ok ? r.json() : null; })
      .then(function (body) {
        if (!body) { return; }
        body.jobs.forEach(function (job) {
          var row = document.querySelector('#jobs tr[data-job="' + job.job_id + '"]');
          if (!row) { return; }
          row.querySelector(".status").textContent = job.status;
          var bar = row.querySelector("progress");
          bar.max = job.counts.items;
          bar.value = job.counts.verdicts;
          row.querySelector(".progress span").textContent = job.counts.verdicts + " / " + job.counts.items;
        });
      }).catch(function () { /* the next round tries again */ });
  }

  var data = readJSON("overview-data");
  if (data) {
    overview(data);
    if (document.getElementById("jobs")) { window.setInterval(refreshJobs, 5000); }
  }
  var report = readJSON("report-data");
  if (report) { job(report); }
}());
