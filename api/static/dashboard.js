// /dashboard's charts: drawn with plotly from the JSON the page embeds (the numbers of
// /v1/stats/agreement, with per_day and group_by, and of /v1/jobs/{id}/report); no inline script,
// no CDN.
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

  // error bars of a statistic with a "<name>_ci95" beside it
  function interval(points, name) {
    return {type: "data", symmetric: false,
            array: points.map(function (p) { return p[name + "_ci95"] ? p[name + "_ci95"][1] - p[name] : null; }),
            arrayminus: points.map(function (p) { return p[name + "_ci95"] ? p[name] - p[name + "_ci95"][0] : null; })};
  }

  // one line per profile · model of a per-day statistic
  function perJudge(series, name, withInterval) {
    return series.map(function (s) {
      var trace = {type: "scatter", mode: "lines+markers", name: s.profile + " · " + s.model, x: days(s.points),
                   text: s.points.map(function (p) { return "/v1/stats/agreement?" + p.query; }),
                   y: s.points.map(function (p) { return p[name]; })};
      if (withInterval) { trace.error_y = interval(s.points, name); }
      return trace;
    });
  }

  function coverage(id, curve) {
    draw(id, [{type: "scatter", mode: "lines+markers", name: "accuracy",
               x: curve.map(function (c) { return c.coverage; }),
               y: curve.map(function (c) { return c.accuracy; }),
               text: curve.map(function (c) { return "certainty ≥ " + c.threshold + " (n " + c.n + ")"; })}],
         {xaxis: {title: {text: "coverage"}, range: [0, 1.02]}, yaxis: {title: {text: "accuracy"}}});
  }

  function reliability(id, bins) {
    var used = (bins || []).filter(function (b) { return b.n > 0; });
    draw(id, [
      {type: "scatter", mode: "lines", name: "calibrated", x: [0.5, 1], y: [0.5, 1], line: {dash: "dot", color: "#999"}},
      {type: "scatter", mode: "lines+markers", name: "accuracy",
       x: used.map(function (b) { return b.confidence; }), y: used.map(function (b) { return b.accuracy; }),
       text: used.map(function (b) { return "[" + b.lo + ", " + b.hi + "): n " + b.n; })}],
      {xaxis: {title: {text: "mean confidence"}, range: [0.48, 1.02]}, yaxis: {title: {text: "accuracy"}, range: [0, 1.02]}});
  }

  function overview(data) {
    var rate = {yaxis: {range: [0, 1]}};
    draw("chart-accuracy", perJudge(data.series, "accuracy", false), rate);
    draw("chart-kappa", perJudge(data.series, "cohen_kappa", true), {yaxis: {range: [-1, 1]}});
    draw("chart-alpha", perJudge(data.series, "krippendorff_alpha", true), {yaxis: {range: [-1, 1]}});
    draw("chart-first-position", perJudge(data.series, "first_position_rate", false), rate);
    draw("chart-consistency", perJudge(data.series, "position_consistency", false), rate);
    draw("chart-longer", perJudge(data.series, "prefers_longer", false), rate);
    coverage("chart-coverage", data.totals.coverage_curve || []);
    reliability("chart-reliability", data.totals.reliability);
    draw("chart-cost", [{type: "bar", name: "cost (USD)", x: days(data.per_day),
                         y: data.per_day.map(function (p) { return p.cost_usd; })}]);
    draw("chart-calls", [{type: "bar", name: "calls", x: days(data.per_day),
                          y: data.per_day.map(function (p) { return p.calls; })}]);
  }

  function groups(data) {
    var names = Object.keys(data.report.by_group || {});
    var rows = names.map(function (n) { return data.report.by_group[n]; });
    var kappa = rows.map(function (r) {
      var k = r.cohen_kappa || {};
      return {cohen_kappa: k.value, cohen_kappa_ci95: k.ci95};
    });
    function column(name) { return rows.map(function (r) { return r[name]; }); }
    draw("chart-groups-accuracy", [
      {type: "bar", name: "accuracy", x: names, y: column("accuracy")},
      {type: "bar", name: "Cohen's κ", x: names, y: kappa.map(function (k) { return k.cohen_kappa; }),
       error_y: interval(kappa, "cohen_kappa")}], {barmode: "group", yaxis: {range: [-1, 1]}});
    draw("chart-groups-bias", [
      {type: "bar", name: "first position", x: names, y: column("first_position_rate")},
      {type: "bar", name: "position consistency", x: names, y: column("position_consistency")},
      {type: "bar", name: "prefers longer", x: names, y: column("prefers_longer")}],
      {barmode: "group", yaxis: {range: [0, 1]}});
  }

  function job(report) {
    coverage("chart-coverage", report.coverage_curve || []);
    reliability("chart-reliability", report.reliability);
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
  var grouped = readJSON("groups-data");
  if (grouped && grouped.report) { groups(grouped); }
  var report = readJSON("report-data");
  if (report) { job(report); }
}());
