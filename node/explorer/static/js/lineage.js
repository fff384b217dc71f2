// The lineage graph (Cytoscape.js, dagre layout) of /explorer/lineage/{ref}: the graph is
// fetched from GET /v1/lineage/{ref}; the depth box shows the nodes up to that distance
// from the root; selecting a node shows it, a link to its page, and highlights the path to
// it from the root. The table below the graph lists the same nodes for screen readers.
(function () {
  "use strict";
  var box = document.getElementById("graph");
  if (!box || typeof window.cytoscape !== "function") return;
  if (typeof window.cytoscapeDagre === "function") window.cytoscape.use(window.cytoscapeDagre);

  function colours() {
    var css = getComputedStyle(document.documentElement);
    function c(name) { return css.getPropertyValue(name).trim(); }
    return { fg: c("--fg"), bg: c("--bg"), line: c("--muted"), accent: c("--accent"), path: c("--path"),
             model: c("--node-model"), data: c("--node-data"), who: c("--node-who") };
  }

  function href(node) {
    var id = node.id;
    if (/^[0-9a-f]{64}$/.test(id)) return "/explorer/records/" + id;
    if (id.indexOf("dataset:") === 0) return "/explorer/datasets/" + encodeURIComponent(node.name || id.slice(8));
    if (id.indexOf("key:") === 0) return "/explorer/search?q=" + id.slice(4);
    return null;
  }

  function depths(graph) {
    var near = {};
    graph.edges.forEach(function (e) {
      (near[e.from] = near[e.from] || []).push(e.to);
      (near[e.to] = near[e.to] || []).push(e.from);
    });
    var depth = {}; depth[graph.root] = 0;
    var todo = [graph.root];
    while (todo.length) {
      var n = todo.shift();
      (near[n] || []).forEach(function (m) {
        if (!(m in depth)) { depth[m] = depth[n] + 1; todo.push(m); }
      });
    }
    return depth;
  }

  function style(c) {
    return [
      { selector: "node", style: { label: "data(label)", color: c.fg, "font-size": 11, "text-valign": "bottom",
          "text-margin-y": 4, "background-color": c.who, width: 18, height: 18, "text-wrap": "ellipsis", "text-max-width": 140 } },
      { selector: "node[kind = 'model_version']", style: { "background-color": c.model, shape: "round-rectangle", width: 26 } },
      { selector: "node[kind = 'dataset'], node[kind = 'dataset_version'], node[kind = 'annotation']",
        style: { "background-color": c.data, shape: "barrel" } },
      { selector: "edge", style: { width: 1.5, "line-color": c.line, "target-arrow-color": c.line,
          "target-arrow-shape": "triangle", "curve-style": "bezier", "arrow-scale": 0.8 } },
      { selector: ".path", style: { "line-color": c.path, "target-arrow-color": c.path, "background-color": c.path, width: 3 } },
      { selector: "node:selected", style: { "border-width": 3, "border-color": c.accent } },
      { selector: ".hidden", style: { display: "none" } }
    ];
  }

  function panel(node, url) {
    var aside = document.getElementById("selected");
    aside.textContent = "";
    var h = document.createElement("h2"); h.textContent = node.label; aside.append(h);
    var p = document.createElement("p"); p.textContent = node.kind.replace(/_/g, " "); aside.append(p);
    if (url) {
      var a = document.createElement("a"); a.href = url; a.textContent = "Open its page"; a.id = "selected-link";
      aside.append(a);
    }
  }

  fetch("/v1/lineage/" + box.getAttribute("data-ref"), { headers: { accept: "application/json" } })
    .then(function (r) { if (!r.ok) throw new Error("HTTP " + r.status); return r.json(); })
    .then(function (graph) {
      var depth = depths(graph);
      var els = graph.nodes.map(function (n) {
        return { group: "nodes", data: { id: n.id, label: n.label, kind: n.kind, depth: depth[n.id] || 0, node: n } };
      }).concat(graph.edges.map(function (e, i) {
        return { group: "edges", data: { id: "e" + i, source: e.from, target: e.to, relation: e.relation } };
      }));
      var cy = window.cytoscape({ container: box, elements: els, style: style(colours()),
        layout: { name: "dagre", rankDir: "LR", nodeSep: 12, rankSep: 60 } });
      var input = document.getElementById("depth");
      function limit() {
        var d = parseInt(input.value, 10);
        if (isNaN(d)) return;
        cy.batch(function () {
          cy.nodes().forEach(function (n) { n.toggleClass("hidden", n.data("depth") > d); });
        });
        box.setAttribute("data-depth", String(d));
      }
      input.addEventListener("input", limit);
      limit();
      cy.on("tap", "node", function (evt) {
        var n = evt.target;
        cy.elements().removeClass("path");
        // The path through the records (who signed what only where nothing else leads there).
        var root = cy.getElementById(graph.root);
        var weight = function (e) { return /^(signed_by|member_of)$/.test(e.data("relation")) ? 10 : 1; };
        var path = cy.elements(":visible").dijkstra({ root: root, weight: weight, directed: false }).pathTo(n);
        path.addClass("path");
        box.setAttribute("data-selected", n.id());
        panel(n.data("node"), href(n.data("node")));
      });
      cy.on("dbltap", "node", function (evt) {
        var url = href(evt.target.data("node"));
        if (url) window.location.href = url;
      });
      document.addEventListener("themechange", function () { cy.style(style(colours())); });
      window.matchMedia("(prefers-color-scheme: dark)").addEventListener("change", function () { cy.style(style(colours())); });
      box.setAttribute("data-ready", "true");
      window.provledgerLineage = cy;
    })
    .catch(function (e) {
      box.textContent = "The graph could not be loaded (" + e.message + "); the table below lists it.";
      box.setAttribute("data-ready", "error");
    });
})();
