// The dashboard's charts, drawn by the vendored uPlot from JSON the page embeds.
// Without JavaScript the page still shows the same numbers in its tables.
(function () {
  "use strict";
  var COLORS = ["#0969da", "#1a7f37", "#8250df", "#bc4c00"];

  function readJson(id) {
    var node = document.getElementById(id);
    return node ? JSON.parse(node.textContent) : null;
  }

  // Whiskers: a vertical line from low to high at each point that has an interval.
  function whiskers(lows, highs, color) {
    return function (u, seriesIdx) {
      var ctx = u.ctx;
      ctx.save();
      ctx.strokeStyle = color;
      ctx.lineWidth = 1.5 * devicePixelRatio;
      for (var i = 0; i < u.data[0].length; i++) {
        if (lows[i] == null || highs[i] == null) continue;
        var x = u.valToPos(u.data[0][i], "x", true);
        var y0 = u.valToPos(lows[i], u.series[seriesIdx].scale, true);
        var y1 = u.valToPos(highs[i], u.series[seriesIdx].scale, true);
        var cap = 4 * devicePixelRatio;
        ctx.beginPath();
        ctx.moveTo(x, y0); ctx.lineTo(x, y1);
        ctx.moveTo(x - cap, y0); ctx.lineTo(x + cap, y0);
        ctx.moveTo(x - cap, y1); ctx.lineTo(x + cap, y1);
        ctx.stroke();
      }
      ctx.restore();
    };
  }

  function width(node) { return Math.max(320, node.clientWidth || 800); }

  function history(node, data) {
    var names = Object.keys(data.metrics);
    if (!data.x.length || !names.length) { node.textContent = "No metric to plot yet."; return; }
    var rows = [data.x], series = [{ label: "version" }], hooks = [];
    names.forEach(function (name, k) {
      var m = data.metrics[name], color = COLORS[k % COLORS.length];
      var lows = m.low, highs = m.high;
      rows.push(m.values);
      series.push({ label: name, stroke: color, width: 2, points: { show: true, size: 6 },
                    spanGaps: true });
      hooks.push({ idx: k + 1, draw: whiskers(lows, highs, color) });
    });
    var opts = {
      width: width(node), height: 260, series: series,
      scales: { x: { time: false }, y: { range: function (u, min, max) {
        names.forEach(function (name) {
          data.metrics[name].low.forEach(function (v) { if (v != null && v < min) min = v; });
          data.metrics[name].high.forEach(function (v) { if (v != null && v > max) max = v; });
        });
        var pad = (max - min) * 0.08 || 0.01;
        return [min - pad, max + pad];
      } } },
      axes: [{ label: "version" }, {}],
      hooks: { drawSeries: [function (u, idx) {
        hooks.forEach(function (h) { if (h.idx === idx) h.draw(u, idx); });
      }] },
    };
    node.textContent = "";
    new uPlot(opts, rows, node);
  }

  function drift(node, data) {
    if (!data.x.length) { node.textContent = "No drift report yet."; return; }
    var opts = {
      width: width(node), height: 220,
      series: [{ label: "window end" },
               { label: "share of columns drifted", stroke: "#cf222e", width: 2,
                 points: { show: true, size: 6 } }],
      scales: { y: { range: [0, 1] } },
      axes: [{}, { values: function (u, ticks) {
        return ticks.map(function (v) { return Math.round(v * 100) + "%"; });
      } }],
    };
    node.textContent = "";
    new uPlot(opts, [data.x, data.share], node);
  }

  document.addEventListener("DOMContentLoaded", function () {
    var h = document.getElementById("history-chart");
    if (h) history(h, readJson("history-data"));
    var d = document.getElementById("drift-chart");
    if (d) drift(d, readJson("drift-data"));
  });
})();
