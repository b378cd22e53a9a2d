/* dedupkit report: renders the plots (Chart.js) and the cluster views from the embedded JSON. */
(function () {
  "use strict";
  var D = JSON.parse(document.getElementById("report-data").textContent);
  var stageByIndex = {};
  D.stages.forEach(function (s) { stageByIndex[s.index] = s; });

  function el(tag, attrs, children) {
    var e = document.createElement(tag);
    if (attrs) Object.keys(attrs).forEach(function (k) {
      if (k === "text") e.textContent = attrs[k]; else e.setAttribute(k, attrs[k]);
    });
    (children || []).forEach(function (c) { if (c) e.appendChild(typeof c === "string" ? document.createTextNode(c) : c); });
    return e;
  }
  function fmt(v) { return v === null || v === undefined ? "" : Number(v).toLocaleString("en-US"); }

  // ---- plots ----------------------------------------------------------------------------------
  if (window.Chart) {
    Chart.defaults.animation = false;
    Chart.defaults.responsive = false;
    Chart.defaults.font.size = 11;
  }
  function ready(canvas, chart) { canvas.setAttribute("data-chart-ready", chart ? "1" : "0"); }
  function vline(x, ymax, label, color) {
    return { type: "line", label: label, data: [{ x: x, y: 0 }, { x: x, y: ymax }], borderColor: color,
             borderDash: [6, 4], borderWidth: 2, pointRadius: 0, order: 0 };
  }
  function sizePlot(canvas, s) {
    var h = s.size_hist;
    return new Chart(canvas, {
      type: "bar",
      data: { labels: h.labels, datasets: [{ label: "clusters", data: h.clusters, backgroundColor: "#2e5bff" }] },
      options: { plugins: { title: { display: true, text: h.labels.length ? "Cluster size distribution" : "No duplicate clusters" },
                            legend: { display: false } },
                 scales: { x: { title: { display: true, text: "documents in cluster" } },
                           y: { type: Math.max.apply(null, h.clusters.concat([0])) > 20 ? "logarithmic" : "linear", min: Math.max.apply(null, h.clusters.concat([0])) > 20 ? 0.8 : 0, title: { display: true, text: "clusters" },
                               ticks: { callback: function (v) {
                                 var p = Math.pow(10, Math.floor(Math.log10(v))), m = Math.round(v / p * 1000) / 1000;
                                 return (m === 1 || m === 2 || m === 5) && v >= 1 ? fmt(v) : ""; } } } } }
    });
  }
  function scorePlot(canvas, s) {
    var h = s.score_hist, pts = [], ymax = 1;
    for (var i = 0; i < h.counts.length; i++) {
      pts.push({ x: (h.edges[i] + h.edges[i + 1]) / 2, y: h.counts[i] });
      ymax = Math.max(ymax, h.counts[i]);
    }
    var sets = [{ type: "bar", label: "dropped documents", data: pts, backgroundColor: "#e8590c",
                  barPercentage: 1.0, categoryPercentage: 1.0, order: 1 }];
    if (h.threshold !== null && h.threshold !== undefined) sets.push(vline(h.threshold, ymax, "threshold " + h.threshold, "#1d2127"));
    var lo = h.edges.length ? h.edges[0] : 0;
    return new Chart(canvas, {
      data: { datasets: sets },
      options: { plugins: { title: { display: true, text: h.n ? "Score of dropped documents (" + fmt(h.n) + ")" : "No dropped document has a score" } },
                 scales: { x: { type: "linear", min: lo, max: 1, title: { display: true, text: "similarity to representative" } },
                           y: { beginAtZero: true, title: { display: true, text: "documents" } } } }
    });
  }
  function lshPlot(canvas, s) {
    var pts = s.lsh.curve.map(function (p) { return { x: p[0], y: p[1] }; });
    var sets = [{ type: "line", label: s.lsh.bands + " bands x " + s.lsh.rows + " rows", data: pts,
                  borderColor: "#2e5bff", pointRadius: 0, borderWidth: 2, order: 1 }];
    if (s.threshold !== null && s.threshold !== undefined) sets.push(vline(s.threshold, 1, "threshold " + s.threshold, "#b42318"));
    return new Chart(canvas, {
      data: { datasets: sets },
      options: { plugins: { title: { display: true, text: "LSH detection probability" } },
                 scales: { x: { type: "linear", min: 0, max: 1, title: { display: true, text: "Jaccard similarity s" } },
                           y: { min: 0, max: 1, title: { display: true, text: "P(candidate)" } } } }
    });
  }
  var makers = { size: sizePlot, score: scorePlot, lsh: lshPlot };
  Array.prototype.forEach.call(document.querySelectorAll("canvas.plot"), function (canvas) {
    canvas.width = 440; canvas.height = 260;
    var s = stageByIndex[canvas.getAttribute("data-stage")];
    ready(canvas, window.Chart ? makers[canvas.getAttribute("data-kind")](canvas, s) : null);
  });

  // ---- clusters -------------------------------------------------------------------------------
  function memberHead(kind, m, extra, isRep) {
    var parts = [el("b", { text: kind + " " }), el("span", { text: m.doc_id }),
                 " \u00b7 " + m.shard + " row " + m.row];
    if (!isRep && m.score !== null && m.score !== undefined) parts.push(" \u00b7 score " + m.score.toFixed(3));
    if (extra) parts.push(" \u00b7 " + extra);
    if (m.truncated) parts.push(" \u00b7 truncated");
    return el("div", { "class": "mhead" }, parts);
  }
  function textBox(m) {
    if (m.diff) {
      var box = el("div", { "class": "text diff" });
      m.diff.forEach(function (seg) {
        var tag = seg[0] === "-" ? "del" : seg[0] === "+" ? "ins" : "span";
        box.appendChild(el(tag, { text: seg[1] }));
      });
      return box;
    }
    if (m.text === null || m.text === undefined) return el("div", { "class": "text empty", text: "(text unavailable, see the notes above)" });
    return el("div", { "class": "text", text: m.text });
  }
  function clusterView(c, open, highlight) {
    var s = stageByIndex[c.stage_index];
    var minScore = null;
    c.dups.forEach(function (m) { if (m.score !== null && (minScore === null || m.score < minScore)) minScore = m.score; });
    var det = el("details", { "class": "cluster", "data-key": c.key, "data-size": String(c.size) }, [
      el("summary", {}, [s.label + " cluster " + c.id + " \u00b7 " + fmt(c.size) + " documents",
        el("span", { "class": "sub", text: minScore !== null ? "  lowest score " + minScore.toFixed(3) : "" })])
    ]);
    if (open) det.open = true;
    var rep = el("div", { "class": "member rep" }, [memberHead(c.rep.keep ? "kept" : "representative", c.rep, "", true), textBox(c.rep)]);
    var dups = el("div", { "class": "dups" });
    c.dups.forEach(function (m) {
      var w = m.words ? (m.words.removed || m.words.added ? "\u2212" + m.words.removed + " +" + m.words.added + " words" + (m.words.same_ignoring_case ? " (same words ignoring case)" : "") : "same words") : "";
      var same = m.words && !m.words.removed && !m.words.added;
      var body = same ? el("details", { "class": "same" }, [el("summary", { text: "same words as the representative (show)" }), textBox(m)])
                      : textBox(m);
      var box = el("div", { "class": "member dup" + (highlight === m.doc_id ? " hit" : "") },
                   [memberHead(m.keep ? "also kept" : "dropped", m, w), body]);
      dups.appendChild(box);
    });
    if (c.hidden) dups.appendChild(el("p", { "class": "more", text: "and " + fmt(c.hidden) + " more duplicates not listed (dedupkit inspect shows them all)" }));
    if (!c.dups.length) dups.appendChild(el("p", { "class": "more", text: "no other member listed" }));
    det.appendChild(el("div", { "class": "cbody" }, [rep, dups]));
    return det;
  }
  D.stages.forEach(function (s) {
    [["largest", s.largest], ["sample", s.sample]].forEach(function (pair) {
      var box = document.getElementById(pair[0] + "-" + s.index);
      if (!box) return;
      if (!pair[1].length) { box.appendChild(el("p", { "class": "empty", text: "No duplicate clusters in this stage." })); return; }
      pair[1].forEach(function (key, i) { box.appendChild(clusterView(D.clusters[key], pair[0] === "largest" && i < 3)); });
    });
  });

  // ---- search ---------------------------------------------------------------------------------
  var allIndexed = D.stages.every(function (s) { return s.index_complete; });
  function search(q) {
    var out = document.getElementById("search-result");
    out.textContent = "";
    q = (q || "").trim();
    if (!q) return;
    var hits = D.doc_index[q] || [];
    if (!hits.length) {
      out.appendChild(el("p", { "class": "search-miss", text: allIndexed
        ? "\u201c" + q + "\u201d is in no duplicate cluster (it was kept as unique, or it is not in this run)."
        : "\u201c" + q + "\u201d is not in the clusters this page lists (the page samples a large run). Run: dedupkit inspect " + D.root + " --doc " + q }));
      return;
    }
    hits.forEach(function (h) {
      var s = stageByIndex[h[0]], key = s.name + ":" + h[1], c = D.clusters[key];
      if (c) out.appendChild(clusterView(c, true, q));
      else out.appendChild(el("p", { "class": "search-off", text: "\u201c" + q + "\u201d is in " + s.label + " cluster " + h[1] + " (" + fmt(h[2]) +
        " documents); this page does not list that cluster. Run: dedupkit inspect " + D.root + " --doc " + q }));
    });
  }
  document.getElementById("search").addEventListener("submit", function (e) {
    e.preventDefault();
    search(document.getElementById("search-input").value);
  });
  var m = /^#doc=(.+)$/.exec(location.hash);
  if (m) { var q = decodeURIComponent(m[1]); document.getElementById("search-input").value = q; search(q); }

  document.body.setAttribute("data-render-ms", String(Math.round(performance.now())));
  document.body.setAttribute("data-ready", "1");
  if (window.__dedupkitShowErrors) window.__dedupkitShowErrors();
})();
