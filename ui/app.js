// Weir's web UI: plain JavaScript over the REST API and its event streams. The run graph is laid
// out by the server (/graph); this file only draws it and keeps its colours live.
"use strict";

const $ = (sel, root = document) => root.querySelector(sel);
const main = $("#main");
const state = {
  token: localStorage.getItem("weir.token") || "",
  ns: localStorage.getItem("weir.ns") || "default",
  user: null,
  streams: [],
};

function h(tag, attrs = {}, ...kids) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "text") el.textContent = v;
    else if (k === "style") el.style.cssText = v; // CSSOM: allowed by the page's CSP
    else el.setAttribute(k, v === true ? "" : v);
  }
  for (const k of kids.flat()) if (k !== null && k !== undefined) el.append(k instanceof Node ? k : String(k));
  return el;
}

function svg(tag, attrs = {}) {
  const el = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, v);
  return el;
}

function badge(phase) {
  return h("span", { class: "badge " + (phase || "Pending"), text: phase || "Pending" });
}

class ApiError extends Error {
  constructor(status, body) {
    super((body && body.error && body.error.message) || "HTTP " + status);
    this.status = status;
    this.code = body && body.error && body.error.code;
  }
}

async function api(method, path, body) {
  const headers = {};
  if (state.token) headers["Authorization"] = "Bearer " + state.token;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const r = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  const text = await r.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch { data = text; }
  if (!r.ok) {
    if (r.status === 401) showLogin(data);
    throw new ApiError(r.status, data);
  }
  return data;
}

// EventSource cannot send headers: the token travels as access_token.
function withToken(path) {
  if (!state.token) return path;
  return path + (path.includes("?") ? "&" : "?") + "access_token=" + encodeURIComponent(state.token);
}

function stream(path, handlers) {
  const es = new EventSource(withToken(path));
  for (const [ev, fn] of Object.entries(handlers)) es.addEventListener(ev, fn);
  state.streams.push(es);
  return es;
}

function closeStreams() {
  for (const s of state.streams) s.close();
  state.streams = [];
}

function canEdit() {
  const u = state.user;
  return !!u && u.role !== "viewer" && (u.namespace === "*" || u.namespace === state.ns);
}

function showLogin(body) {
  closeStreams();
  const input = h("input", { id: "token", placeholder: "weir_…", spellcheck: "false" });
  main.replaceChildren(h("div", { class: "card login" },
    h("h1", { text: "Sign in" }),
    h("p", { text: (body && body.error && body.error.message) || "This server needs a token." }),
    h("p", { text: "Create one with: weir token create --namespace NS --role viewer|editor|admin" }),
    input,
    h("button", { class: "primary", onclick: () => {
      state.token = input.value.trim();
      localStorage.setItem("weir.token", state.token);
      state.user = null;
      route();
    } }, "Sign in")));
}

function fail(e) {
  if (e instanceof ApiError && e.status === 401) return;
  main.append(h("p", { class: "error", text: String(e.message || e) }));
}

function fmtTime(t) { return t ? t.replace("T", " ").replace("Z", "") : ""; }

function duration(a, b) {
  if (!a) return "";
  const ms = (b ? Date.parse(b) : Date.now()) - Date.parse(a);
  const s = Math.max(0, Math.round(ms / 1000));
  return s < 60 ? s + "s" : Math.floor(s / 60) + "m" + (s % 60) + "s";
}

// ---------------------------------------------------------------------------------------------
// charts (SVG, drawn here from the API's numbers)

const PALETTE = ["#2f7fd6", "#d64541", "#2e9d57", "#e0a526", "#8e44ad", "#16a085", "#7f8c8d", "#c0392b"];

function scale(vals, lo, hi) {
  let min = Math.min(...vals), max = Math.max(...vals);
  if (!isFinite(min)) { min = 0; max = 1; }
  if (min === max) { min -= 0.5; max += 0.5; }
  return (v) => lo + ((v - min) / (max - min)) * (hi - lo);
}

function axisLabel(x, y, text, anchor = "start") {
  const t = svg("text", { x, y, "text-anchor": anchor, class: "axis" });
  t.textContent = text;
  return t;
}

// lines: [{label, points: [{x, y}]}]
function lineChart(title, lines, w = 460, h = 220) {
  const pad = { l: 52, r: 12, t: 24, b: 28 };
  const xs = lines.flatMap((l) => l.points.map((p) => p.x)), ys = lines.flatMap((l) => l.points.map((p) => p.y));
  const sx = scale(xs, pad.l, w - pad.r), sy = scale(ys, h - pad.b, pad.t);
  const s = svg("svg", { width: w, height: h + 16 * Math.ceil(lines.length / 3), class: "chart", "data-metric": title });
  s.append(axisLabel(pad.l, 14, title));
  s.append(svg("line", { x1: pad.l, y1: h - pad.b, x2: w - pad.r, y2: h - pad.b, class: "frame" }));
  s.append(svg("line", { x1: pad.l, y1: pad.t, x2: pad.l, y2: h - pad.b, class: "frame" }));
  const fmt = (v) => (Math.abs(v) >= 1000 || (Math.abs(v) < 0.01 && v !== 0) ? v.toExponential(2) : +v.toFixed(4));
  s.append(axisLabel(pad.l - 4, pad.t + 4, fmt(Math.max(...ys)), "end"), axisLabel(pad.l - 4, h - pad.b, fmt(Math.min(...ys)), "end"));
  s.append(axisLabel(pad.l, h - pad.b + 14, fmt(Math.min(...xs))), axisLabel(w - pad.r, h - pad.b + 14, fmt(Math.max(...xs)), "end"));
  lines.forEach((l, k) => {
    const colour = PALETTE[k % PALETTE.length];
    const pts = l.points.map((p) => `${sx(p.x).toFixed(1)},${sy(p.y).toFixed(1)}`);
    if (pts.length === 1) s.append(svg("circle", { cx: sx(l.points[0].x), cy: sy(l.points[0].y), r: 3, fill: colour, class: "series" }));
    else s.append(svg("polyline", { points: pts.join(" "), stroke: colour, fill: "none", "stroke-width": 1.6, class: "series" }));
    const lx = pad.l + (k % 3) * ((w - pad.l) / 3), ly = h + 4 + 16 * Math.floor(k / 3);
    s.append(svg("rect", { x: lx, y: ly - 8, width: 10, height: 10, fill: colour }));
    s.append(axisLabel(lx + 14, ly + 1, l.label.length > 22 ? l.label.slice(0, 21) + "…" : l.label));
  });
  return s;
}

// points: [{x, y, label}]
function scatterChart(xName, yName, points, w = 520, h = 320) {
  const pad = { l: 56, r: 16, t: 20, b: 36 };
  const sx = scale(points.map((p) => p.x), pad.l, w - pad.r), sy = scale(points.map((p) => p.y), h - pad.b, pad.t);
  const s = svg("svg", { width: w, height: h, class: "chart", id: "scatter" });
  s.append(svg("line", { x1: pad.l, y1: h - pad.b, x2: w - pad.r, y2: h - pad.b, class: "frame" }));
  s.append(svg("line", { x1: pad.l, y1: pad.t, x2: pad.l, y2: h - pad.b, class: "frame" }));
  s.append(axisLabel((pad.l + w) / 2, h - 6, xName, "middle"), axisLabel(4, pad.t - 6, yName));
  for (const p of points) {
    const c = svg("circle", { cx: sx(p.x), cy: sy(p.y), r: 5, fill: PALETTE[0], class: "point" });
    const t = svg("title"); t.textContent = `${p.label}: ${xName}=${p.x}, ${yName}=${p.y}`; c.append(t);
    s.append(c);
  }
  return s;
}

// every metric of some runs, one chart per metric name, one line per (run, node) series
function metricCharts(byRun) {
  const names = [...new Set(byRun.flatMap(([, m]) => m.series.map((x) => x.name)))].sort();
  return names.map((name) => lineChart(name, byRun.flatMap(([run, m]) => m.series.filter((x) => x.name === name).map((x) => ({
    label: (byRun.length > 1 ? run + " " : "") + x.nodeName,
    points: x.points.map((p, i) => ({ x: p.step ?? i, y: p.value })),
  })))));
}

// lineage as nested lists: artifact → the node that produced it → that node's inputs → …
function lineageTree(v) {
  const params = (p) => Object.entries(p || {}).map(([k, x]) => `${k}=${x}`).join(" ");
  const node = (n) => h("li", { class: "lin-node" }, h("b", { text: n.nodeName || n.node }), ` run ${n.run}, template ${n.template} `,
    h("small", { text: params(n.parameters) }), h("ul", {}, (n.inputs || n.outputs || []).map(art)));
  const art = (a) => h("li", { class: "lin-artifact" }, h("code", { text: a.artifact }), ` blake3 ${String(a.blake3).slice(0, 12)}…`,
    a.fetchedFrom ? ` fetched from ${a.fetchedFrom}` : "", h("ul", {}, (a.producedBy || a.usedBy || []).map(node)));
  return h("ul", { class: "lineage" }, v.artifact ? art(v) : node(v));
}

// ---------------------------------------------------------------------------------------------
// runs list

async function runsPage(params) {
  const phase = params.get("phase") || "";
  const labels = params.get("labels") || "";
  const prefix = params.get("prefix") || "";
  const q = new URLSearchParams({ limit: "100" });
  if (phase) q.set("phase", phase);
  if (labels) q.set("labelSelector", labels);
  if (prefix) q.set("namePrefix", prefix);
  const sel = h("select", { id: "f-phase" }, ["", "Running", "Succeeded", "Failed", "Error"].map(
    (p) => h("option", { value: p, selected: p === phase }, p || "any phase")));
  const lab = h("input", { id: "f-labels", placeholder: "labels: k=v,k2", value: labels });
  const pre = h("input", { id: "f-prefix", placeholder: "name prefix", value: prefix });
  const apply = () => {
    const p = new URLSearchParams();
    if (sel.value) p.set("phase", sel.value);
    if (lab.value) p.set("labels", lab.value);
    if (pre.value) p.set("prefix", pre.value);
    location.hash = "#/?" + p.toString();
  };
  const body = h("tbody");
  const compare = () => {
    const picked = [...body.querySelectorAll("input.pick:checked")].map((c) => c.value);
    if (picked.length) location.hash = "#/compare?runs=" + picked.map(encodeURIComponent).join(",");
  };
  main.replaceChildren(h("h1", { text: "Runs in " + state.ns }),
    h("div", { class: "filters" }, sel, lab, pre, h("button", { onclick: apply }, "Filter"),
      h("button", { id: "compare", onclick: compare }, "Compare selected"),
      h("a", { href: "#/experiments" + (labels ? "?labels=" + encodeURIComponent(labels) : "") }, "Parameters vs metrics…")),
    h("table", { id: "runs" }, h("thead", {}, h("tr", {}, ["", "Name", "Phase", "Created", "Finished", "Message"].map((t) => h("th", { text: t })))), body));
  let list;
  try { list = await api("GET", `/api/v1/workflows/${state.ns}?${q}`); } catch (e) { return fail(e); }
  const rows = new Map();
  for (const r of list.items) {
    const tr = h("tr", { "data-run": r.name },
      h("td", {}, h("input", { type: "checkbox", class: "pick", value: r.name })),
      h("td", {}, h("a", { href: `#/runs/${r.namespace}/${r.name}` }, r.name)),
      h("td", {}, badge(r.phase)), h("td", { text: fmtTime(r.createdAt) }),
      h("td", { text: fmtTime(r.finishedAt) }), h("td", { text: r.message }));
    rows.set(r.name, tr);
    body.append(tr);
  }
  let reload = null;
  stream(`/api/v1/workflow-events/${state.ns}`, {
    workflow: (ev) => {
      const d = JSON.parse(ev.data);
      const tr = rows.get(d.run);
      if (tr && d.phase) tr.children[2].replaceChildren(badge(d.phase));
      if (!tr && !reload) reload = setTimeout(() => route(), 500);
    },
  });
}

// ---------------------------------------------------------------------------------------------
// one run

async function runPage(ns, name) {
  let wf;
  try { wf = await api("GET", `/api/v1/workflows/${ns}/${name}`); } catch (e) { return fail(e); }
  const nodes = new Map(Object.entries(wf.status.nodes || {}));
  const phaseEl = h("span", { id: "run-phase" }, badge(wf.status.phase));
  const actions = h("span", { class: "actions" });
  const graphBox = h("div", { class: "graph", id: "graph" });
  const panel = h("div", { class: "panel", id: "panel" }, h("p", { text: "Click a node for its inputs, outputs, logs and artifacts." }));
  const vlist = h("div", { class: "vlist", id: "nodes" });
  const charts = h("div", { class: "charts", id: "metrics" });
  main.replaceChildren(h("h1", {}, h("span", { text: name }), phaseEl, actions),
    h("div", { class: "run" }, graphBox, panel), vlist, charts);
  async function drawMetrics() {
    let m;
    try { m = await api("GET", `/api/v1/workflows/${ns}/${name}/metrics`); } catch (e) { return; }
    charts.replaceChildren(...(m.series.length ? [h("h2", { text: "Metrics" }), ...metricCharts([[name, m]])] : []));
  }
  let graph = null, selected = null, logStream = null;

  function setPhase(p) { phaseEl.replaceChildren(badge(p)); wf.status.phase = p; drawActions(); }

  function drawActions() {
    actions.replaceChildren();
    if (!canEdit()) return;
    const p = wf.status.phase;
    const done = ["Succeeded", "Failed", "Error"].includes(p);
    const act = (label, verb, opts = {}) => h("button", { id: "btn-" + verb, class: opts.cls, onclick: async () => {
      try {
        if (verb === "delete") { await api("DELETE", `/api/v1/workflows/${ns}/${name}`); location.hash = "#/"; return; }
        const r = await api("PUT", `/api/v1/workflows/${ns}/${name}/${verb}`, {});
        if (verb === "resubmit") location.hash = `#/runs/${ns}/${r.metadata.name}`;
      } catch (e) { fail(e); }
    } }, label);
    if (!done) actions.append(act("Stop", "stop"), act("Terminate", "terminate", { cls: "danger" }), act("Suspend", "suspend"), act("Resume", "resume"));
    if (p === "Failed" || p === "Error") actions.append(act("Retry", "retry"));
    actions.append(act("Resubmit", "resubmit"));
    if (done) actions.append(act("Delete", "delete", { cls: "danger" }));
  }

  function colour(id) {
    const n = nodes.get(id);
    const g = graphBox.querySelector(`g.node[data-id="${CSS.escape(id)}"]`);
    if (g && n) { g.setAttribute("data-phase", n.phase); return true; }
    // a member of a collapsed group: recount the group
    if (graph) for (const [gid, members] of Object.entries(graph.groups)) {
      if (!members.includes(id)) continue;
      const counts = {};
      for (const m of members) { const p = (nodes.get(m) || {}).phase || "Pending"; counts[p] = (counts[p] || 0) + 1; }
      const gg = graphBox.querySelector(`g.node[data-id="${CSS.escape(gid)}"]`);
      if (gg) {
        const ph = ["Failed", "Error", "Running", "Pending"].find((p) => counts[p]) ||
          Object.entries(counts).sort((a, b) => b[1] - a[1])[0][0];
        gg.setAttribute("data-phase", ph);
        gg.querySelector("text.sub").textContent = Object.entries(counts).map(([p, c]) => `${c} ${p}`).join(" · ");
      }
      return true;
    }
    return false;
  }

  async function drawGraph() {
    try { graph = await api("GET", `/api/v1/workflows/${ns}/${name}/graph`); } catch (e) { return fail(e); }
    const s = svg("svg", { width: graph.width, height: graph.height + 20, id: "graph-svg" });
    const pos = new Map(graph.nodes.map((n) => [n.id, n]));
    for (const e of graph.edges) {
      const a = pos.get(e.from), b = pos.get(e.to);
      if (!a || !b) continue;
      const x1 = a.x + 85, y1 = a.y + 38, x2 = b.x + 85, y2 = b.y, my = (y1 + y2) / 2;
      s.append(svg("path", { class: "edge", d: `M${x1},${y1} C${x1},${my} ${x2},${my} ${x2},${y2}` }));
    }
    for (const n of graph.nodes) {
      const g = svg("g", { class: "node" + (n.id === selected ? " selected" : ""), "data-id": n.id, "data-phase": n.phase, "data-type": n.type, transform: `translate(${n.x},${n.y})` });
      g.append(svg("rect", { width: 170, height: 38 }));
      const t = svg("text", { x: 10, y: n.counts ? 16 : 23 });
      t.textContent = n.label.length > 24 ? n.label.slice(0, 23) + "…" : n.label;
      g.append(t);
      if (n.counts) {
        const sub = svg("text", { x: 10, y: 31, class: "sub" });
        sub.textContent = Object.entries(n.counts).map(([p, c]) => `${c} ${p}`).join(" · ");
        g.append(sub);
      }
      const title = svg("title");
      title.textContent = `${n.label} (${n.type}): ${n.phase}`;
      g.append(title);
      g.addEventListener("click", () => select(n.id));
      s.append(g);
    }
    graphBox.replaceChildren(s);
  }

  // every node in a virtualised list: only the rows in view exist
  function drawList() {
    const all = [...nodes.values()].sort((a, b) => (a.startedAt || "~").localeCompare(b.startedAt || "~"));
    const rowH = 26, inner = h("div", { style: `height:${all.length * rowH}px` });
    vlist.replaceChildren(inner);
    const paint = () => {
      const first = Math.floor(vlist.scrollTop / rowH), count = Math.ceil(vlist.clientHeight / rowH) + 2;
      inner.replaceChildren(...all.slice(first, first + count).map((n, k) => h("div", {
        class: "row", style: `top:${(first + k) * rowH}px`, "data-id": n.id, onclick: () => select(n.id),
      }, badge(n.phase), " ", n.displayName, " ", h("small", { text: n.type }))));
    };
    vlist.onscroll = paint;
    paint();
  }

  function select(id) {
    selected = id;
    for (const g of graphBox.querySelectorAll("g.node")) g.classList.toggle("selected", g.dataset.id === id);
    if (logStream) { logStream.close(); logStream = null; }
    if (id.startsWith("group:")) return showGroup(id);
    const n = nodes.get(id);
    if (!n) return;
    const dl = h("dl");
    const row = (k, v) => { if (v !== undefined && v !== null && v !== "") dl.append(h("dt", { text: k }), h("dd", { text: v })); };
    row("phase", n.phase); row("type", n.type); row("template", n.templateName);
    row("started", fmtTime(n.startedAt)); row("finished", fmtTime(n.finishedAt));
    row("duration", duration(n.startedAt, n.finishedAt)); row("message", n.message);
    for (const p of (n.inputs && n.inputs.parameters) || []) row("in: " + p.name, p.value);
    const out = n.outputs || {};
    for (const p of out.parameters || []) row("out: " + p.name, p.value);
    row("result", out.result); row("exit code", out.exitCode);
    const retries = (n.children || []).map((c) => nodes.get(c)).filter((c) => c && n.type === "Retry");
    const kids = [h("h2", { id: "node-title", text: n.displayName }), dl];
    if (retries.length) kids.push(h("h3", { text: "Attempts" }), h("ul", {}, retries.map((r) => h("li", {}, h("a", { href: "#", onclick: (e) => { e.preventDefault(); select(r.id); } }, r.displayName), " ", badge(r.phase)))));
    if ((out.artifacts || []).length) {
      const lin = h("div", { id: "lineage" });
      kids.push(h("h3", { text: "Artifacts" }), h("ul", { id: "artifacts" }, out.artifacts.map((a) => h("li", {},
        h("a", { href: withToken(`/api/v1/artifact-files/${ns}/workflows/${name}/${n.id}/outputs/${a.name}`) }, a.name),
        ` ${a.size} bytes, blake3 ${String(a.blake3).slice(0, 12)}… `,
        h("a", { href: "#", class: "lineage-link", onclick: async (e) => {
          e.preventDefault();
          try { lin.replaceChildren(h("h3", { text: "Lineage of " + a.name }), lineageTree(await api("GET", `/api/v1/lineage/${ns}?target=${a.blake3}`))); } catch (err) { fail(err); }
        } }, "lineage")))), lin);
    }
    if (n.type === "Pod") {
      const pre = h("pre", { class: "logs", id: "logs" });
      kids.push(h("h3", { text: "Logs" }), pre);
      logStream = stream(`/api/v1/workflows/${ns}/${name}/log?follow=true&nodeId=${encodeURIComponent(n.id)}`, {
        log: (ev) => { pre.append(ev.data + "\n"); pre.scrollTop = pre.scrollHeight; },
        end: () => { if (logStream) { logStream.close(); logStream = null; } },
      });
    }
    panel.replaceChildren(...kids);
  }

  function showGroup(gid) {
    const members = (graph && graph.groups[gid]) || [];
    const box = h("div", { class: "vlist", style: "height:50vh" });
    const inner = h("div", { style: `height:${members.length * 26}px` });
    box.append(inner);
    const paint = () => {
      const first = Math.floor(box.scrollTop / 26), count = Math.ceil(box.clientHeight / 26) + 2;
      inner.replaceChildren(...members.slice(first, first + count).map((id, k) => {
        const n = nodes.get(id) || { displayName: id, phase: "Pending" };
        return h("div", { class: "row", style: `top:${(first + k) * 26}px`, onclick: () => select(id) }, badge(n.phase), " ", n.displayName);
      }));
    };
    box.onscroll = paint;
    panel.replaceChildren(h("h2", { text: `${members.length} nodes` }), box);
    paint();
  }

  drawActions();
  await drawGraph();
  drawList();
  drawMetrics();
  let regraph = null, relist = null;
  stream(`/api/v1/workflow-events/${ns}?name=${encodeURIComponent(name)}`, {
    workflow: (ev) => {
      const d = JSON.parse(ev.data);
      if (d.type === "DELETED") { location.hash = "#/"; return; }
      let unknown = false;
      for (const n of d.nodes || []) {
        nodes.set(n.id, n);
        if (!colour(n.id)) unknown = true;
        if (n.id === selected && !logStream) select(n.id);
      }
      if (d.phase) setPhase(d.phase);
      if ((d.nodes || []).some((n) => n.outputs && n.outputs.metrics)) drawMetrics();
      if (unknown && !regraph) regraph = setTimeout(async () => { regraph = null; await drawGraph(); }, 300);
      if (!relist) relist = setTimeout(() => { relist = null; drawList(); }, 500);
    },
    resync: () => route(),
  });
}

// ---------------------------------------------------------------------------------------------
// templates and cron

async function templatesPage() {
  let list;
  try { list = await api("GET", `/api/v1/workflow-templates/${state.ns}`); } catch (e) { return fail(e); }
  main.replaceChildren(h("h1", { text: "Workflow templates in " + state.ns }),
    h("table", { id: "templates" }, h("thead", {}, h("tr", {}, ["Name", "Version", "Created", ""].map((t) => h("th", { text: t })))),
      h("tbody", {}, list.items.map((t) => h("tr", {},
        h("td", {}, h("a", { id: "template-" + t.metadata.name, href: `#/templates/${t.metadata.name}` }, t.metadata.name)),
        h("td", { text: t.metadata.resourceVersion }), h("td", { text: fmtTime(t.metadata.creationTimestamp) }),
        h("td", {}, canEdit() ? h("a", { href: `#/templates/${t.metadata.name}` }, "Submit…") : ""))))));
}

async function submitPage(tname) {
  let t;
  try { t = await api("GET", `/api/v1/workflow-templates/${state.ns}/${tname}`); } catch (e) { return fail(e); }
  const params = ((t.spec.arguments || {}).parameters) || [];
  const inputs = params.map((p) => {
    const field = p.enum
      ? h("select", { name: "param-" + p.name }, p.enum.map((v) => h("option", { value: v, selected: v === p.value }, v)))
      : h("input", { name: "param-" + p.name, value: p.value || "" });
    return [p.name, field, h("div", { class: "param" }, h("label", { text: p.name }), field, p.description ? h("small", { text: p.description }) : null)];
  });
  const msg = h("p", { class: "error" });
  const form = h("form", { id: "submit-form", onsubmit: async (e) => {
    e.preventDefault();
    try {
      const wf = await api("POST", `/api/v1/workflows/${state.ns}/submit`, {
        resourceKind: "WorkflowTemplate", resourceName: tname,
        submitOptions: { parameters: inputs.map(([n, f]) => n + "=" + f.value) },
      });
      location.hash = `#/runs/${state.ns}/${wf.metadata.name}`;
    } catch (err) { msg.textContent = err.message; }
  } }, inputs.map((x) => x[2]), h("button", { class: "primary", id: "submit", type: "submit" }, "Submit"), msg);
  main.replaceChildren(h("h1", { text: `Submit ${tname} (version ${t.metadata.resourceVersion})` }), h("div", { class: "card" }, form));
}

async function cronPage() {
  let list;
  try { list = await api("GET", `/api/v1/cron-workflows/${state.ns}`); } catch (e) { return fail(e); }
  main.replaceChildren(h("h1", { text: "Cron workflows in " + state.ns }),
    h("table", { id: "crons" }, h("thead", {}, h("tr", {}, ["Name", "Schedule", "Time zone", "Suspended", "Version"].map((t) => h("th", { text: t })))),
      h("tbody", {}, list.items.map((c) => h("tr", {},
        h("td", { text: c.metadata.name }), h("td", { text: c.spec.schedule || (c.spec.schedules || []).join(", ") }),
        h("td", { text: c.spec.timezone || "" }), h("td", { text: c.spec.suspend ? "yes" : "" }),
        h("td", { text: c.metadata.resourceVersion }))))),
    h("p", { text: "Firing on schedule comes with the triggers feature; these are stored and versioned." }));
}

// ---------------------------------------------------------------------------------------------
// experiments: runs compared, parameters against a metric

async function comparePage(params) {
  const runs = (params.get("runs") || "").split(",").filter(Boolean);
  let byRun;
  try { byRun = await Promise.all(runs.map(async (r) => [r, await api("GET", `/api/v1/workflows/${state.ns}/${r}/metrics`)])); } catch (e) { return fail(e); }
  const pkeys = [...new Set(byRun.flatMap(([, m]) => Object.keys(m.parameters)))].sort();
  const mkeys = [...new Set(byRun.flatMap(([, m]) => Object.keys(m.final)))].sort();
  const table = h("table", { id: "compare-table" },
    h("thead", {}, h("tr", {}, h("th"), byRun.map(([r]) => h("th", {}, h("a", { href: `#/runs/${state.ns}/${r}` }, r))))),
    h("tbody", {},
      pkeys.map((k) => h("tr", {}, h("td", { text: "param " + k }), byRun.map(([, m]) => h("td", { text: m.parameters[k] ?? "-" })))),
      mkeys.map((k) => h("tr", {}, h("td", { text: "metric " + k }), byRun.map(([, m]) => h("td", { text: m.final[k] ?? "-" }))))));
  main.replaceChildren(h("h1", { text: `Comparing ${runs.length} runs` }), table, h("div", { class: "charts" }, metricCharts(byRun)));
}

async function experimentsPage(params) {
  const labels = params.get("labels") || "";
  const q = new URLSearchParams({ limit: "200", phase: "Succeeded" });
  if (labels) q.set("labelSelector", labels);
  let list;
  try { list = await api("GET", `/api/v1/workflows/${state.ns}?${q}`); } catch (e) { return fail(e); }
  let byRun;
  try { byRun = await Promise.all(list.items.map(async (r) => [r.name, await api("GET", `/api/v1/workflows/${state.ns}/${r.name}/metrics`)])); } catch (e) { return fail(e); }
  byRun = byRun.filter(([, m]) => Object.keys(m.final).length);
  const pkeys = [...new Set(byRun.flatMap(([, m]) => Object.keys(m.parameters)))].sort();
  const mkeys = [...new Set(byRun.flatMap(([, m]) => Object.keys(m.final)))].sort();
  const lab = h("input", { id: "x-labels", placeholder: "labels: example=ml-pipeline", value: labels });
  const px = h("select", { id: "x-param" }, pkeys.map((k) => h("option", { value: k, selected: k === params.get("param") }, k)));
  const my = h("select", { id: "x-metric" }, mkeys.map((k) => h("option", { value: k, selected: k === params.get("metric") }, k)));
  const plot = h("div", { class: "card" });
  const draw = () => {
    const pts = byRun.map(([r, m]) => ({ x: parseFloat(m.parameters[px.value]), y: m.final[my.value], label: r }))
      .filter((p) => isFinite(p.x) && isFinite(p.y));
    plot.replaceChildren(pts.length ? scatterChart(px.value, my.value, pts) : h("p", { text: "No run has both a numeric parameter and the metric." }));
  };
  px.addEventListener("change", draw); my.addEventListener("change", draw);
  main.replaceChildren(h("h1", { text: `Parameters vs metrics over ${byRun.length} runs` }),
    h("div", { class: "filters" }, lab, h("button", { onclick: () => { location.hash = "#/experiments?labels=" + encodeURIComponent(lab.value); } }, "Filter"),
      "parameter", px, "metric", my), plot);
  draw();
}

// ---------------------------------------------------------------------------------------------
// routing

async function route() {
  closeStreams();
  let hash = location.hash.replace(/^#/, "") || "/";
  const [path, query = ""] = hash.split("?");
  const params = new URLSearchParams(query);
  if (params.get("token")) {
    state.token = params.get("token");
    localStorage.setItem("weir.token", state.token);
    params.delete("token");
    history.replaceState(null, "", "#" + path + (params.toString() ? "?" + params : ""));
  }
  $("#ns").value = state.ns;
  if (!state.user) {
    try { state.user = await api("GET", "/api/v1/userinfo"); } catch (e) { return fail(e); }
    $("#who").textContent = `${state.user.actor} · ${state.user.role} of ${state.user.namespace}`;
    if (state.user.namespace !== "*" && !localStorage.getItem("weir.ns")) { state.ns = state.user.namespace; $("#ns").value = state.ns; }
  }
  const parts = path.split("/").filter(Boolean);
  main.replaceChildren();
  if (parts[0] === "runs" && parts.length === 3) return runPage(parts[1], parts[2]);
  if (parts[0] === "templates" && parts[1]) return submitPage(parts[1]);
  if (parts[0] === "templates") return templatesPage();
  if (parts[0] === "cron") return cronPage();
  if (parts[0] === "compare") return comparePage(params);
  if (parts[0] === "experiments") return experimentsPage(params);
  return runsPage(params);
}

$("#ns").addEventListener("change", (e) => {
  state.ns = e.target.value.trim() || "default";
  localStorage.setItem("weir.ns", state.ns);
  route();
});
window.addEventListener("hashchange", route);
route();
