// One graph's page: drawn whole when small, opened as the server's summary when big (by model
// part, op and source line, from graph.aggregate), with drill-downs that draw a group's nodes.
// Subscribed: values change in place, the layout is redone only when the structure changed.

import { GraphView } from "./graphview.js";
import { drawHistory, nice } from "./charts.js";
import { fixed4 } from "./layout.js";
import { RpcError } from "./rpc.js";

export const DRAW_LIMIT = 1000; // values drawn at most (a bigger graph opens as its summary)
const HISTORY = 1000; // versions kept in the chart
const TOP_LIMIT = 60; // groups of each kind the summary lists
const WORKING_MS = 300; // a summary not there by then is said to be in the works

export function h(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") e.className = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else if (k === "dataset") Object.assign(e.dataset, v);
    else e.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

function full(v) {
  if (typeof v !== "number") return String(v);
  if (Number.isNaN(v)) return "nan";
  if (!Number.isFinite(v)) return v > 0 ? "inf" : "-inf";
  return String(v);
}

/** ``1 node``, ``2,000 nodes``. */
export function plural(n, one, many = `${one}s`) {
  return `${n.toLocaleString("en")} ${n === 1 ? one : many}`;
}

function basename(path) {
  return String(path).split(/[\\/]/).pop();
}

function range(stat) {
  if (!stat) return "—";
  return `${nice(stat.min)} · ${nice(stat.mean)} · ${nice(stat.max)}`;
}

export class GraphPage {
  constructor(app, name, main) {
    this.app = app;
    this.rpc = app.rpc;
    this.name = name;
    this.mode = "loading";
    this.history = [];
    this.diagnostics = [];
    this.subset = null; // the ids drawn when part of a big graph is drawn
    this.drill = []; // the summary's drill-down path: [{title, options}]
    this.tab = "parts";
    this.refreshing = false;
    this.dirty = null;
    this.destroyed = false;
    this.root = null;
    this.build(main);
    this.load();
  }

  build(main) {
    this.el = h("section", { class: "graph-page", "aria-label": `graph ${this.name}` });
    this.title = h("h1", {}, this.name);
    this.versionEl = h("span", { class: "version", "aria-label": "version" }, "");
    this.countEl = h("span", { class: "count" }, "");
    this.modeEl = h("span", { class: "mode" }, "");
    const button = (label, title, action, cls = "") =>
      h("button", { type: "button", title, class: cls, onclick: action }, label);
    this.critButton = button("critical path", "Show the longest path to the root",
                             () => this.toggleCritical(), "crit-toggle");
    this.backButton = button("◂ summary", "Back to the summary", () => this.backToSummary());
    this.backButton.hidden = true;
    this.zoomButtons = h("span", { class: "zoom" },
      button("fit", "Fit the graph to the window", () => this.view.fit()),
      button("−", "Zoom out", () => this.view.zoom(1 / 1.25)),
      button("+", "Zoom in", () => this.view.zoom(1.25)));
    this.toolbar = h("div", { class: "toolbar" }, this.title, this.versionEl, this.countEl,
                     this.modeEl, h("span", { class: "spacer" }), this.backButton,
                     this.critButton, this.zoomButtons);
    this.message = h("div", { class: "page-message", role: "alert", hidden: true });
    this.canvas = h("div", { class: "canvas" });
    this.summaryEl = h("div", { class: "summary", hidden: true });
    this.view = new GraphView(this.canvas);
    this.view.addEventListener("select", (ev) => this.showDetails(ev.detail.id));
    this.view.addEventListener("expand", (ev) => this.expand(ev.detail.id));
    this.historyEl = h("div", { class: "history" });
    this.historyTitle = h("h2", {}, "root value by version");
    this.details = h("section", { class: "details", "aria-live": "polite" },
                     h("p", { class: "hint" }, "Click a node to see its data, gradient, op, "
                       + "inputs, consumers and source."));
    this.diagList = h("ul", { class: "diags" });
    this.diagTitle = h("h2", {}, "diagnostics");
    const side = h("aside", { class: "side" },
      h("section", { class: "chart-box" }, this.historyTitle, this.historyEl),
      this.details,
      h("section", { class: "diag-box" }, this.diagTitle, this.diagList));
    this.el.append(this.toolbar, this.message,
                   h("div", { class: "body" }, h("div", { class: "stage" }, this.canvas, this.summaryEl), side));
    main.replaceChildren(this.el);
  }

  destroy() {
    this.destroyed = true;
    if (this.rpc.state === "open") this.rpc.request("graph.unsubscribe", this.name).catch(() => {});
  }

  say(text, kind = "error") {
    this.message.hidden = !text;
    this.message.className = `page-message ${kind}`;
    this.message.replaceChildren(...(Array.isArray(text) ? text : [text || ""]));
  }

  setMode(mode) {
    this.mode = mode;
    this.el.dataset.mode = mode;
    this.modeEl.textContent = { full: "whole graph", subset: "part of the graph",
                                summary: "summary", missing: "", loading: "loading…" }[mode] || "";
    this.canvas.hidden = mode === "summary" || mode === "missing";
    this.summaryEl.hidden = mode !== "summary";
    this.backButton.hidden = mode !== "subset";
    this.critButton.hidden = mode !== "full";
    this.zoomButtons.hidden = mode === "summary" || mode === "missing";
    this.app.searchEnabled(mode !== "missing" && mode !== "loading");
  }

  // --- loading ---------------------------------------------------------------------------

  async load() {
    this.setMode("loading");
    let info;
    // Asked at once (answered in order): the graph's size, the subscription, and its first
    // DRAW_LIMIT nodes, which are all of it when it is small enough to draw.
    const asked = this.rpc.request("graph.info", this.name);
    const subscribed = this.rpc.request("graph.subscribe", this.name).catch(() => {});
    const firstPage = this.rpc.request("graph.nodes", this.name, { start: 0, count: DRAW_LIMIT })
      .catch(() => null);
    try {
      info = await asked;
    } catch (err) {
      if (err instanceof RpcError && err.name === "unknown_graph") return this.missing(err);
      return this.say(`cannot open graph ${this.name}: ${err.message}`);
    }
    if (this.destroyed) return;
    this.say("");
    await subscribed;
    this.info = info;
    this.setVersion(info.version, info.nodes);
    this.root = info.outputs && info.outputs.length ? Math.max(...info.outputs) : null;
    const page = await firstPage;
    if (info.nodes <= DRAW_LIMIT) await this.drawWhole(page && page.total === info.nodes ? page : null);
    else await this.openSummary();
    this.loadDiagnostics();
    this.app.ready(this);
  }

  missing(err) {
    this.setMode("missing");
    const waiting = this.rpc.has("graph.subscribe")
      ? "This page will open it as soon as it is created." : "";
    this.say([h("strong", {}, err.text), " ", waiting, " ", h("a", { href: "#/" }, "See the graphs")]);
    // The server tells a subscriber of a name not created yet when it is created.
    this.rpc.request("graph.subscribe", this.name).catch(() => {});
  }

  setVersion(version, nodes) {
    this.version = version;
    this.nodes = nodes;
    this.versionEl.textContent = `version ${Number(version).toLocaleString("en")}`;
    this.countEl.textContent = plural(nodes, "node");
  }

  async drawWhole(given = null) {
    const page = given
      || await this.rpc.request("graph.nodes", this.name, { start: 0, count: Math.max(1, this.nodes) });
    if (this.destroyed) return;
    this.subset = null;
    this.records = page.nodes;
    this.setMode("full");
    this.rootFromRecords();
    await this.view.show(page.nodes);
    this.pushHistory(page.version);
  }

  rootFromRecords() {
    const used = new Set();
    for (const r of this.records) for (const i of r.inputs) used.add(i);
    let root = null;
    for (const r of this.records) if (!used.has(r.id)) root = r;
    this.root = root ? root.id : null;
    this.rootLabel = root ? root.label || `#${root.id}` : null;
  }

  pushHistory(version) {
    let value = null;
    if (this.root !== null && this.records) {
      const r = this.records.find((x) => x.id === this.root);
      if (r) value = r.data;
    }
    if (value === null && this.rootValue !== undefined) value = this.rootValue;
    if (value === null || value === undefined) return;
    const last = this.history[this.history.length - 1];
    if (last && last[0] === version) last[1] = value;
    else this.history.push([version, value]);
    if (this.history.length > HISTORY) this.history.shift();
    const label = this.rootLabel && !this.rootLabel.startsWith("#") ? this.rootLabel
      : `root ${this.rootLabel || (this.root !== null ? `#${this.root}` : "")}`.trim();
    this.historyTitle.textContent = `${label} by version (now ${fixed4(value)})`;
    drawHistory(this.historyEl, this.history, { title: `${label} by version` });
  }

  async loadDiagnostics() {
    try {
      const d = await this.rpc.request("graph.diagnostics", this.name);
      this.setDiagnostics(d.diagnostics || []);
    } catch { /* the list stays as it was */ }
  }

  setDiagnostics(list) {
    this.diagnostics = list;
    const byNode = new Map();
    for (const d of list) {
      for (const n of [d.node, ...(d.related || [])]) {
        if (n === null || n === undefined) continue;
        if (!byNode.has(n)) byNode.set(n, []);
        byNode.get(n).push(d);
      }
    }
    this.diagByNode = byNode;
    this.view.markDiagnostics(byNode);
    this.diagTitle.textContent = `diagnostics (${list.length})`;
    const shown = list.slice(0, 50);
    this.diagList.replaceChildren(...shown.map((d) => h("li", { class: `diag ${d.severity}` },
      h("span", { class: "code" }, d.code), " ",
      d.node !== null && d.node !== undefined
        ? h("a", { href: "#", onclick: (ev) => { ev.preventDefault(); this.goTo(d.node); } }, `#${d.node}`) : "",
      d.count > 1 ? ` ×${d.count}` : "", " ", d.message)));
    if (list.length > shown.length) this.diagList.append(h("li", {}, `… and ${list.length - shown.length} more`));
    if (list.length === 0) this.diagList.append(h("li", { class: "none" }, "none"));
    if (this.view.selected !== null) this.showDetails(this.view.selected);
  }

  // --- live updates ----------------------------------------------------------------------

  onNotification(method, payload) {
    if (!payload || payload.graph !== this.name) return;
    if (method === "graph.changed") this.changed(payload, performance.now());
    else if (method === "graph.diagnostics") this.setDiagnostics(payload.diagnostics || []);
    else if (method === "graph.dropped") this.dropped();
  }

  async changed(payload, received) {
    if (this.mode === "missing") { this.load(); return; }
    if (this.refreshing) { this.dirty = { payload, received }; return; }
    this.refreshing = true;
    try {
      let next = { payload, received };
      while (next && !this.destroyed) {
        this.dirty = null;
        await this.refresh(next.payload);
        this.app.updated(this, next.payload.version, performance.now() - next.received);
        next = this.dirty;
      }
    } catch (err) {
      if (!(err instanceof RpcError && err.name === "unknown_graph")) console.warn(err);
    } finally {
      this.refreshing = false;
    }
  }

  async refresh(payload) {
    const grew = payload.nodes !== this.nodes;
    this.setVersion(payload.version, payload.nodes);
    if (this.mode === "full" || (this.mode === "loading" && grew)) {
      if (payload.nodes > DRAW_LIMIT) { this.drill = []; return this.openSummary(); }
      const page = await this.rpc.request("graph.nodes", this.name, { start: 0, count: Math.max(1, payload.nodes) });
      this.records = page.nodes;
      this.rootFromRecords();
      if (!this.view.update(page.nodes)) await this.view.show(page.nodes, { fit: false });
      this.pushHistory(page.version);
      if (this.view.selected !== null) this.showDetails(this.view.selected);
      return;
    }
    if (grew && payload.nodes <= DRAW_LIMIT) return this.drawWhole();
    if (this.root === null || grew) {
      const info = await this.rpc.request("graph.info", this.name);
      this.root = info.outputs && info.outputs.length ? Math.max(...info.outputs) : null;
    }
    if (this.mode === "subset") {
      // The drawn nodes and the root, in one request.
      const ids = [...this.subset];
      const withRoot = this.root !== null && !this.subset.has(this.root);
      const got = await this.rpc.request("node.get", this.name, withRoot ? [...ids, this.root] : ids)
        .catch(() => null);
      if (got === null) return this.openSummary(); // a drawn node is gone: back to the summary
      const rootRecord = got.nodes.find((r) => r.id === this.root);
      if (rootRecord) {
        this.rootValue = rootRecord.data;
        this.rootLabel = rootRecord.label || `#${this.root}`;
      }
      const drawn = withRoot ? got.nodes.slice(0, -1) : got.nodes;
      this.records = drawn;
      if (!this.view.update(drawn)) await this.view.show(drawn, { fit: false });
      if (this.view.selected !== null) this.showDetails(this.view.selected);
      this.pushHistory(payload.version);
      return;
    }
    // The summary and the root's value, asked at once.
    const root = this.root === null ? Promise.resolve(null)
      : this.rpc.request("node.get", this.name, [this.root]).catch(() => null);
    if (this.mode === "summary") await this.renderSummary(false);
    const r = await root;
    if (r) {
      this.rootValue = r.nodes[0].data;
      this.rootLabel = r.nodes[0].label || `#${this.root}`;
    }
    this.pushHistory(payload.version);
  }

  dropped() {
    this.setMode("missing");
    this.say([h("strong", {}, `graph ${this.name} was dropped`),
              " — this page will open it again if it is created anew. ",
              h("a", { href: "#/" }, "See the graphs")]);
    this.rpc.request("graph.subscribe", this.name).catch(() => {});
  }

  // --- the summary -----------------------------------------------------------------------

  async openSummary() {
    this.subset = null;
    this.records = null;
    this.setMode("summary");
    if (this.root !== null) {
      const r = await this.rpc.request("node.get", this.name, [this.root]).catch(() => null);
      if (r) { this.rootValue = r.nodes[0].data; this.rootLabel = r.nodes[0].label || `#${this.root}`; }
    }
    await this.renderSummary(true);
    this.pushHistory(this.version);
  }

  backToSummary() {
    this.openSummary();
  }

  async renderSummary(fresh) {
    if (!this.rpc.has("graph.aggregate")) {
      this.summaryEl.replaceChildren(h("div", { class: "fallback" },
        h("p", {}, `${this.nodes.toLocaleString("en")} nodes: more than this page draws `
          + `(${DRAW_LIMIT}). This server has no graph.aggregate, so here are its counts.`),
        h("p", {}, `leaves: ${this.info.leaves.length.toLocaleString("en")}, outputs: `
          + `${this.info.outputs.length.toLocaleString("en")}. Find a node by #id to draw it `
          + "and its inputs.")));
      return;
    }
    const level = this.drill[this.drill.length - 1];
    const started = performance.now();
    // The server summarises a version once (a second or more for a million nodes): say so when
    // it takes a while, rather than show an empty page or stale cards.
    const working = fresh ? setTimeout(() => this.working(level), WORKING_MS) : null;
    let answer;
    try {
      if (level) answer = await this.rpc.request("graph.aggregate", this.name, level.options);
      else {
        answer = (!fresh && await this.topValues())
          || await this.rpc.request("graph.aggregate", this.name, { limit: TOP_LIMIT });
        this.top = answer;
      }
    } catch (err) {
      if (level && level.options.by === "call" && err.name === "invalid_params") {
        // A line that made no repeated calls: split it by op instead.
        level.options = { ...level.options, by: "op" };
        return this.renderSummary(fresh);
      }
      this.summaryEl.replaceChildren(h("p", { class: "error" }, err.message));
      return;
    } finally {
      clearTimeout(working);
      this.summaryEl.classList.remove("busy");
    }
    this.summaryMs = performance.now() - started;
    if (this.destroyed) return;
    const crumbs = h("nav", { class: "crumbs", "aria-label": "drill-down" },
      h("a", { href: "#", onclick: (ev) => { ev.preventDefault(); this.drill = []; this.renderSummary(true); } },
        this.name),
      ...this.drill.map((d, k) => [" › ", h("a", { href: "#", onclick: (ev) => {
        ev.preventDefault(); this.drill = this.drill.slice(0, k + 1); this.renderSummary(true);
      } }, d.title)]));
    let body;
    if (!level) body = this.topLevel(answer);
    else body = this.groups(answer, level);
    const total = level ? answer.stats : answer.total;
    const head = h("div", { class: "summary-head" }, crumbs,
      h("div", { class: "totals" }, this.statLine(total)));
    // A new version redoes the cards too (a few dozen, no layout), keeping the scroll.
    const scroll = this.summaryEl.scrollTop;
    this.summaryEl.replaceChildren(head, body);
    if (!fresh) this.summaryEl.scrollTop = scroll;
  }

  /** The summary asked for is taking a while: a note over what is shown (or in its place). */
  working(level) {
    const what = level ? `the nodes of ${level.title}`
      : `the ${plural(this.nodes, "node")} of ${this.name}`;
    const note = h("p", { class: "working", role: "status" },
                   `The server is summarising ${what} (by model part, op and source line)…`);
    this.summaryEl.classList.add("busy");
    const old = this.summaryEl.querySelector(".working");
    if (old) old.replaceWith(note);
    else this.summaryEl.prepend(note);
  }

  /**
   * The top level again for a new version whose nodes are the ones the last summary (this.top)
   * was made of: only what is shown is asked for, the groups of the tab shown and the totals
   * (a drill-down by part, op or line, a third of the summary's work on the server); the
   * rest (the tabs' counts, the lines' periods) is kept. Null, so the caller asks for the whole
   * summary, when there is no such summary or the groups differ from its (keys or counts).
   */
  async topValues() {
    const top = this.top;
    if (!top || top.nodes !== this.nodes || top.graph !== this.name) return null;
    const by = { parts: "part", ops: "op", lines: "line" }[this.tab];
    const q = await this.rpc.request("graph.aggregate", this.name,
                                     { by, limit: TOP_LIMIT, members: 0 });
    let rows, old;
    if (by === "part") {
      old = top.parts.filter((p) => p.depth === 1);
      rows = q.groups.filter((g) => g.key !== null)
        .map((g) => ({ part: g.key, depth: 1, stats: g.stats }));
    } else if (by === "op") {
      old = top.ops;
      rows = q.groups.map((g) => ({ op: g.key, stats: g.stats }));
    } else {
      old = top.lines;
      const before = new Map(old.map((l) => [`${l.file}\n${l.line}`, l]));
      rows = q.groups.map((g) => {
        const was = before.get(`${g.key.file}\n${g.key.line}`) || {};
        return { file: g.key.file, line: g.key.line, period: was.period, calls: was.calls,
                 stats: g.stats };
      });
    }
    const keyOf = (r) => (by === "part" ? r.part : by === "op" ? r.op : `${r.file}\n${r.line}`);
    const shape = (list) => list.map((r) => `${keyOf(r)}\t${r.stats.count}`).sort().join("\n");
    if (q.stats.count !== top.total.count || shape(rows) !== shape(old)) return null;
    return { ...top, version: q.version, total: q.stats, [this.tab]: rows };
  }

  statLine(s) {
    if (!s) return "";
    const ops = Object.entries(s.ops || {}).sort((a, b) => b[1] - a[1]).slice(0, 4)
      .map(([op, n]) => `${op} ×${n.toLocaleString("en")}`).join(", ");
    return h("span", { class: "stat-line" },
      h("b", {}, plural(s.count, "node")), ` (${plural(s.leaves, "leaf", "leaves")}${ops ? `; ${ops}` : ""})`,
      h("span", { class: "kv" }, " data ", h("span", { class: "num" }, range(s.data))),
      h("span", { class: "kv" }, " grad ", h("span", { class: "num" }, range(s.grad))),
      h("span", { class: "kv" }, " ‖grad‖ ", h("span", { class: "num" }, nice(s.grad_norm))),
      s.zero_grad ? h("span", { class: "kv" }, ` ${s.zero_grad.toLocaleString("en")} zero grads`) : "",
      s.nonfinite_data || s.nonfinite_grad
        ? h("span", { class: "kv bad" }, ` ${s.nonfinite_data} non-finite data, ${s.nonfinite_grad} non-finite grads`) : "");
  }

  topLevel(answer) {
    // Model parts in the server's order: by name, numbers as numbers (layer2 before layer10).
    // (Not by their first node id: a captured graph numbers its nodes depth first from the
    // loss, so the last layer's weights come first.)
    const parts = answer.parts.filter((p) => p.depth === 1);
    if (!parts.length && this.tab === "parts") this.tab = "ops";
    // The summary lists TOP_LIMIT parts, shallow first: all of them at the top level unless
    // there are more (then it says how many it shows).
    const cut = answer.parts.length >= TOP_LIMIT && answer.parts.every((p) => p.depth === 1)
      && answer.counts.parts > answer.parts.length;
    const tabs = [["parts", `model parts (${cut ? `first ${parts.length}` : parts.length})`,
                   parts.length],
                  ["ops", `ops (${answer.counts.ops})`, true],
                  ["lines", `source lines (${answer.counts.lines})`, answer.counts.lines]];
    const bar = h("div", { class: "tabs", role: "tablist" }, ...tabs.map(([key, label, enabled]) =>
      h("button", { type: "button", role: "tab", "aria-selected": String(this.tab === key),
                    disabled: !enabled, class: this.tab === key ? "on" : "",
                    onclick: () => { this.tab = key; this.renderSummary(true); } }, label)));
    let cards;
    if (this.tab === "parts") {
      cards = parts.map((p) => this.card(p.part, p.stats, { part: p.part }, `part ${p.part}`));
    } else if (this.tab === "ops") {
      cards = answer.ops.map((o) => this.card(o.op, o.stats, { op: o.op }, `op ${o.op}`));
    } else {
      cards = answer.lines.map((l) => this.card(`${basename(l.file)}:${l.line}`, l.stats,
        { line: { file: l.file, line: l.line } }, `${basename(l.file)}:${l.line}`,
        l.period ? `${l.calls} calls of ${l.period} nodes` : "", l.file));
    }
    const more = cut && this.tab === "parts"
      ? h("p", { class: "more" }, `The first ${parts.length} model parts by name, of more: `
          + "find another by name in the search box, or split the graph by op.") : "";
    return h("div", {}, bar, h("div", { class: "cards" }, ...cards), more);
  }

  groups(answer, level) {
    const rows = answer.groups || [];
    const base = level;
    const cards = rows.map((g) => {
      const options = { ...base.filter };
      let title;
      if (answer.by === "part") {
        if (g.key === null) { title = `(in ${base.filter.part || "no part"} itself)`; }
        else { title = g.key; options.part = g.key; }
      } else if (answer.by === "op") { title = g.key; options.op = g.key; }
      else if (answer.by === "call") { title = `call ${g.key}`; options.call = g.key; }
      else if (answer.by === "position") { title = `position ${g.key}${g.name ? ` (${g.name})` : ""}`; options.position = g.key; }
      else if (answer.by === "line") {
        title = `${basename(g.key.file)}:${g.key.line}`; options.line = g.key;
      } else title = String(g.key);
      const deeper = !(answer.by === "part" && g.key === null)
        && !(answer.by === "op" && base.filter.op !== undefined);
      return this.card(title, g.stats, options, title, "", null, g.members, deeper);
    });
    const more = answer.counts && answer.counts.groups > rows.length
      ? h("p", { class: "more" }, `${rows.length} of ${answer.counts.groups} groups shown`) : "";
    const here = h("div", { class: "here" },
      this.drawButton(answer.stats.count, base.filter, "draw all of them"), " ",
      this.splitButtons(level, answer));
    return h("div", {}, here, h("div", { class: "cards" }, ...cards), more);
  }

  /** A summary card; a click drills into it (by part, then op; a line by call). */
  card(title, stats, filter, crumb, note = "", fileTitle = null, members = null, deeper = true) {
    const open = () => this.drillInto(filter, crumb);
    const ops = Object.entries(stats.ops || {}).sort((a, b) => b[1] - a[1]).slice(0, 3)
      .map(([op, n]) => `${op} ×${n.toLocaleString("en")}`).join(", ");
    const c = h("article", { class: "card", tabindex: "0", title: fileTitle || title,
                             dataset: { group: title } },
      h("h3", {}, title),
      h("div", { class: "n" }, plural(stats.count, "node"),
        stats.leaves ? `, ${plural(stats.leaves, "leaf", "leaves")}` : "", note ? ` · ${note}` : ""),
      ops ? h("div", { class: "ops" }, ops) : "",
      h("dl", {},
        h("dt", {}, "data"), h("dd", { class: "num" }, range(stats.data)),
        h("dt", {}, "grad"), h("dd", { class: "num" }, range(stats.grad)),
        h("dt", {}, "‖grad‖"), h("dd", { class: "num" }, nice(stats.grad_norm)),
        stats.zero_grad ? [h("dt", {}, "zero grads"), h("dd", {}, stats.zero_grad.toLocaleString("en"))] : "",
        stats.nonfinite_data || stats.nonfinite_grad
          ? [h("dt", { class: "bad" }, "non-finite"), h("dd", { class: "bad" }, `${stats.nonfinite_data} data, ${stats.nonfinite_grad} grad`)] : ""),
      h("div", { class: "actions" },
        deeper ? h("button", { type: "button", onclick: (ev) => { ev.stopPropagation(); open(); } }, "open") : "",
        this.drawButton(stats.count, filter, "draw", members)));
    c.addEventListener("click", () => (deeper ? open() : null));
    c.addEventListener("keydown", (ev) => { if (ev.key === "Enter" && deeper) open(); });
    return c;
  }

  drawButton(count, filter, label, members = null) {
    if (count > DRAW_LIMIT) {
      return h("span", { class: "too-big", title: `this page draws at most ${DRAW_LIMIT} nodes` },
               `${count.toLocaleString("en")} nodes: open it to split it up`);
    }
    return h("button", { type: "button", class: "draw", onclick: (ev) => {
      ev.stopPropagation();
      this.drawGroup(filter, count, members);
    } }, `${label} (${count})`);
  }

  /** Open a group: a part by its sub-parts, an op by the parts it is in, a line by its
   * calls (one per sample) when it repeats, else by op. */
  drillInto(filter, title) {
    let by = "part";
    if (filter.line !== undefined) {
      // Per call (one group per sample) when the line repeats; renderSummary falls back to
      // by op when it does not.
      by = filter.call === undefined && filter.position === undefined ? "call" : "op";
    } else if (filter.op !== undefined && filter.part !== undefined) by = "line";
    const options = { ...filter, by, limit: 60, members: 0 };
    this.drill.push({ title, filter, options });
    this.renderSummary(true);
  }

  /** Other ways to split the same nodes (by op, by source line; a line by call, i.e. per
   * sample, or by position in the call). */
  splitButtons(level, answer) {
    const f = level.filter;
    const ways = f.line !== undefined
      ? [["call", "per call"], ["position", "by position"], ["op", "by op"]]
      : [["part", "by part"], ["op", "by op"], ["line", "by source line"]];
    const usable = ways.filter(([by]) => (by !== "call" && by !== "position") || answer.period);
    return h("span", { class: "split" }, "split: ", ...usable.map(([by, label]) =>
      h("button", { type: "button", class: by === level.options.by ? "on" : "", dataset: { by },
                    onclick: () => {
                      level.options = { ...level.options, by };
                      this.renderSummary(true);
                    } }, label)));
  }

  async drawGroup(filter, count, members) {
    let ids = members && members.length >= count ? members : null;
    if (ids === null) {
      const answer = await this.rpc.request("graph.aggregate", this.name,
                                            { ...filter, members: Math.min(count, DRAW_LIMIT) });
      ids = answer.members;
    }
    await this.drawSubset(ids);
  }

  async drawSubset(ids) {
    const got = await this.rpc.request("node.get", this.name, ids);
    this.subset = new Set(ids);
    this.records = got.nodes;
    this.setMode("subset");
    await this.view.show(got.nodes);
  }

  async expand(id) {
    if (this.mode !== "subset") return;
    if (this.subset.size >= DRAW_LIMIT) {
      this.say(`this page draws at most ${DRAW_LIMIT} nodes; go back to the summary to pick fewer`, "info");
      return;
    }
    this.subset.add(id);
    const got = await this.rpc.request("node.get", this.name, [...this.subset]);
    this.records = got.nodes;
    await this.view.show(got.nodes, { fit: false });
    this.view.select(id, true);
    this.view.centre(id);
  }

  // --- a node ----------------------------------------------------------------------------

  async goTo(id) {
    if (this.view.records.has(id)) {
      this.view.select(id, true);
      this.view.centre(id);
      return;
    }
    // Not drawn (a big graph): draw it with its inputs.
    let record;
    try {
      record = (await this.rpc.request("node.get", this.name, [id])).nodes[0];
    } catch (err) {
      this.say(err.message, "info");
      return;
    }
    const ids = [id, ...record.inputs];
    const consumers = await this.consumersOf(id);
    if (Array.isArray(consumers)) ids.push(...consumers.slice(0, 50));
    await this.drawSubset([...new Set(ids)].sort((a, b) => a - b));
    this.view.select(id, true);
    this.view.centre(id);
  }

  /** The nodes that use ``id``: from the drawn records when the whole graph is drawn, else
   * from the server's neighbourhood of the node (graph.render around it, read as DOT). */
  async consumersOf(id) {
    if (this.mode === "full") return this.view.consumers.get(id) || [];
    try {
      const pic = await this.rpc.request("graph.render", this.name,
                                         { format: "dot", around: id, depth: 1, diagnostics: false });
      const out = new Set();
      const re = new RegExp(`\\bn${id} -> n(\\d+)_op\\b`, "g");
      for (const m of pic.data.matchAll(re)) out.add(Number(m[1]));
      const list = [...out].sort((a, b) => a - b);
      // A node with many users is drawn with the first few and "... N more users".
      const more = new RegExp(`\\bn${id}_more_out \\[label="\\S* ?(\\d+) more`).exec(pic.data);
      list.more = more ? Number(more[1]) : 0;
      return list;
    } catch (err) {
      return err.message;
    }
  }

  async showDetails(id) {
    if (id === null || id === undefined) {
      this.details.replaceChildren(h("p", { class: "hint" }, "Click a node to see its data, gradient, op, inputs, consumers and source."));
      return;
    }
    const r = this.view.records.get(id);
    if (!r) return;
    const chip = (n) => h("button", { type: "button", class: "chip", "data-node": n,
                                      onclick: () => this.goTo(n) },
      (this.view.records.get(n) && this.view.records.get(n).label) || `#${n}`);
    const source = r.source
      ? h("span", { title: r.source[0], class: "source" }, `${basename(r.source[0])}:${r.source[1]}`)
      : h("span", { class: "none" }, "not recorded");
    const diags = (this.diagByNode && this.diagByNode.get(id)) || [];
    const consumerBox = h("dd", { class: "consumers" }, "…");
    this.details.replaceChildren(
      h("h2", {}, r.label || `#${r.id}`, " ", h("span", { class: "id" }, `#${r.id}`)),
      h("dl", { class: "node-facts" },
        h("dt", {}, "data"), h("dd", { class: "num data-full" }, full(r.data)),
        h("dt", {}, "grad"), h("dd", { class: "num grad-full" }, full(r.grad)),
        h("dt", {}, "op"), h("dd", { class: "op" }, r.op ? `${r.op}${r.symbol && r.symbol !== r.op ? ` (${r.symbol})` : ""}` : "leaf"),
        Object.keys(r.attrs || {}).length ? [h("dt", {}, "attrs"), h("dd", {}, JSON.stringify(r.attrs))] : "",
        h("dt", {}, "inputs"), h("dd", { class: "inputs" }, r.inputs.length ? r.inputs.map(chip) : "none"),
        h("dt", {}, "consumers"), consumerBox,
        h("dt", {}, "source"), h("dd", {}, source),
        h("dt", {}, "diagnostics"), h("dd", { class: "node-diags" },
          diags.length ? h("ul", {}, ...diags.map((d) => h("li", { class: `diag ${d.severity}` },
            h("span", { class: "code" }, d.code), " ", d.message))) : "none")),
      h("p", { class: "legend" }, h("span", { class: "swatch anc" }), " what it depends on ",
        h("span", { class: "swatch desc" }), " what it affects"));
    const consumers = await this.consumersOf(id);
    if (this.view.selected !== id) return;
    if (typeof consumers === "string") consumerBox.replaceChildren(h("span", { class: "none" }, consumers));
    else if (!consumers.length) consumerBox.replaceChildren("none (an output)");
    else {
      const shown = consumers.slice(0, 24).map(chip);
      const more = consumers.length - shown.length + (consumers.more || 0);
      if (more > 0) shown.push(h("span", { class: "none more" }, ` and ${more} more`));
      consumerBox.replaceChildren(...shown);
    }
  }

  async toggleCritical() {
    if (this.view.critical.length) {
      this.view.showCritical([]);
      this.critButton.classList.remove("on");
      return;
    }
    try {
      const a = await this.rpc.request("graph.analyze", this.name, { diagnostics: false });
      this.view.showCritical(a.critical_path || []);
      this.critButton.classList.add("on");
    } catch (err) {
      this.say(`critical path: ${err.message}`, "info");
    }
  }

  // --- search ----------------------------------------------------------------------------

  async search(text) {
    const q = text.trim();
    if (!q) return [];
    if (this.mode === "full" || this.mode === "subset") {
      const found = this.view.find(q).slice(0, 20);
      if (found.length || this.mode === "full") {
        return found.map((r) => ({ id: r.id, text: `${r.label || `#${r.id}`} #${r.id}`, go: () => this.goTo(r.id) }));
      }
    }
    // A big graph: an id is fetched; a label is a model part (its dotted prefixes).
    if (/^#?\d+$/.test(q)) {
      const id = Number(q.replace("#", ""));
      return [{ id, text: `#${id}`, go: () => this.goTo(id) }];
    }
    if (!this.rpc.has("graph.aggregate")) return [];
    try {
      const a = await this.rpc.request("graph.aggregate", this.name, { part: q, members: 20 });
      return a.members.map((id) => ({ id, text: `#${id} in ${q}`, go: () => this.goTo(id) }));
    } catch {
      return [];
    }
  }
}
