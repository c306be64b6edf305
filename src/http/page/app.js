"use strict";
(function () {
  var params = new URLSearchParams(window.location.search);
  var token = params.get("token");
  var headers = token ? { Authorization: "Bearer " + token } : {};
  var history = [];
  var MAX_POINTS = 120;
  var source = null;

  function $(id) { return document.getElementById(id); }
  function withToken(path) {
    return token ? path + (path.indexOf("?") < 0 ? "?" : "&") + "token=" + encodeURIComponent(token) : path;
  }
  function seconds(v) {
    if (v === null || v === undefined) { return "–"; }
    if (v < 1e-3) { return (v * 1e6).toFixed(0) + " µs"; }
    if (v < 1) { return (v * 1e3).toFixed(v < 0.01 ? 2 : 1) + " ms"; }
    return v.toFixed(2) + " s";
  }
  function percent(v) { return v === null || v === undefined ? "–" : (v * 100).toFixed(1) + "%"; }
  function rate(v) { return v === null || v === undefined ? "–" : v < 10 ? v.toFixed(2) : v.toFixed(0); }
  function cell(row, text, cls) {
    var td = document.createElement("td");
    td.textContent = text;
    if (cls) { td.className = cls; }
    row.appendChild(td);
    return td;
  }
  function errorsText(byType) {
    return Object.keys(byType || {}).sort().map(function (k) { return k + ": " + byType[k]; }).join(", ");
  }

  function renderSummary(s) {
    var t = s.totals;
    $("card-rate").textContent = rate(t.calls_per_s);
    $("card-success").textContent = percent(t.success_rate);
    $("card-p95").textContent = seconds(t.p95_s);
    $("card-inflight").textContent = String(t.in_flight);
    $("card-total").textContent = String(t.since_start.calls);
    var body = $("commands").tBodies[0];
    var rows = document.createDocumentFragment();
    s.commands.forEach(function (c) {
      var tr = document.createElement("tr");
      tr.setAttribute("data-command", c.command);
      if (c.errors > 0) { tr.className = "failing"; }
      cell(tr, c.command);
      cell(tr, String(c.calls), "calls");
      cell(tr, String(c.errors), "errors");
      cell(tr, percent(c.success_rate));
      cell(tr, rate(c.calls_per_s));
      cell(tr, seconds(c.p50_s));
      cell(tr, seconds(c.p95_s));
      cell(tr, seconds(c.p99_s));
      cell(tr, seconds(c.max_s));
      cell(tr, String(c.in_flight));
      cell(tr, errorsText(c.errors_by_type), "errors-by-type");
      rows.appendChild(tr);
    });
    body.replaceChildren(rows);
    $("no-commands").hidden = s.commands.length > 0;
    $("resolution").textContent = "Percentiles: " + s.percentile_resolution + ". Updated " + s.timestamp + ".";
    history.push({ p50: t.p50_s, p95: t.p95_s, p99: t.p99_s });
    if (history.length > MAX_POINTS) { history.shift(); }
    drawChart();
  }

  function drawChart() {
    var canvas = $("chart");
    var ctx = canvas.getContext("2d");
    if (!ctx) { return; }
    var w = canvas.width, h = canvas.height, pad = 36;
    ctx.clearRect(0, 0, w, h);
    var max = 0;
    history.forEach(function (p) { max = Math.max(max, p.p99 || 0, p.p95 || 0, p.p50 || 0); });
    ctx.fillStyle = "#6b6b70";
    ctx.font = "11px sans-serif";
    ctx.fillText(max > 0 ? seconds(max) : "no data", 4, 14);
    ctx.fillText("0", 4, h - 6);
    if (max <= 0) { return; }
    [["p50", "#2f6fd6"], ["p95", "#b26a00"], ["p99", "#b3261e"]].forEach(function (series) {
      ctx.strokeStyle = series[1];
      ctx.lineWidth = 2;
      ctx.beginPath();
      var started = false;
      history.forEach(function (p, i) {
        var v = p[series[0]];
        if (v === null || v === undefined) { started = false; return; }
        var x = pad + (w - pad - 4) * (history.length === 1 ? 1 : i / (MAX_POINTS - 1));
        var y = h - 12 - (h - 28) * (v / max);
        if (started) { ctx.lineTo(x, y); } else { ctx.moveTo(x, y); started = true; }
      });
      ctx.stroke();
    });
  }

  function renderHealth(hl) {
    var banner = $("banner");
    banner.className = "banner " + hl.status;
    $("status").textContent = hl.status;
    var notes = Object.keys(hl.checks).filter(function (k) { return hl.checks[k].status !== "pass"; })
      .map(function (k) { return k + " " + hl.checks[k].status; });
    $("status-detail").textContent = notes.length ? notes.join(", ") : "all checks pass";
  }

  function renderFailures(r) {
    var body = $("failures").tBodies[0];
    var rows = document.createDocumentFragment();
    r.items.forEach(function (item) {
      var tr = document.createElement("tr");
      cell(tr, item.time.replace("T", " ").replace("Z", ""));
      cell(tr, item.command);
      cell(tr, item.error_type || "");
      cell(tr, seconds(item.duration_s));
      cell(tr, item.trace_id || "not sampled", "trace");
      cell(tr, item.span_id || "", "trace");
      rows.appendChild(tr);
    });
    body.replaceChildren(rows);
    $("no-failures").hidden = r.items.length > 0;
  }

  function getJson(path, render) {
    return fetch(withToken(path), { headers: headers, cache: "no-store" })
      .then(function (response) {
        // /health answers 503 with a body when unhealthy.
        if (!response.ok && response.status !== 503) { throw new Error(path + ": HTTP " + response.status); }
        return response.json();
      })
      .then(render)
      .catch(function (e) { $("status-detail").textContent = "cannot reach the service: " + e.message; });
  }

  function connect() {
    if (source) { source.close(); }
    history = [];
    var windowName = $("window").value;
    source = new EventSource(withToken("/api/stream?window=" + encodeURIComponent(windowName)));
    source.addEventListener("summary", function (event) { renderSummary(JSON.parse(event.data)); });
    source.onerror = function () { $("status-detail").textContent = "live stream interrupted; reconnecting…"; };
  }

  function poll() {
    getJson("/health", renderHealth);
    getJson("/api/commands/recent?outcome=error&limit=20", renderFailures);
  }

  $("window").addEventListener("change", connect);
  getJson("/api/commands?window=" + $("window").value, renderSummary);
  connect();
  poll();
  window.setInterval(poll, 2000);
})();
