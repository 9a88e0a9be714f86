// A graph drawn as the seed draws it: a record per value (label | data | grad), an op node
// between a value and its inputs, left to right. SVG text, so Ctrl-F, screen readers and
// tests read the numbers. The layout comes from a Web Worker; values change in place.

import { cellWidths, fixed4, layout, recordCells, recordGraph } from "./layout.js";

const SVG = "http://www.w3.org/2000/svg";
const CHAR_W = 7.2;
const CHUNK = 150; // nodes added to the page per animation frame (no long task)
const EDGE_CHUNK = 400; // edges likewise
const FAR = 0.3; // below this zoom, text is not painted

function el(name, attrs = {}, parent = null) {
  const e = document.createElementNS(SVG, name);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  if (parent) parent.appendChild(e);
  return e;
}

const frame = () => new Promise((resolve) => requestAnimationFrame(() => resolve()));

/** The structure of records: ids, ops, inputs (labels and numbers may change in place). */
export function structureKey(records) {
  let key = "";
  for (const r of records) key += `${r.id}:${r.op ?? ""}:${(r.inputs || []).join(",")};`;
  return key;
}

let workerSingleton = null;
let nextJob = 1;
const jobs = new Map();

function worker() {
  if (workerSingleton === null) {
    workerSingleton = new Worker(new URL("./layout-worker.js", import.meta.url),
                                 { type: "module" });
    workerSingleton.onmessage = (event) => {
      const job = jobs.get(event.data.id);
      if (!job) return;
      jobs.delete(event.data.id);
      if (event.data.error) job.reject(new Error(`layout failed: ${event.data.error}`));
      else job.resolve(event.data);
    };
  }
  return workerSingleton;
}

// Started once the page is idle, so it is ready for the first big layout without slowing the
// page's start.
if (typeof requestIdleCallback === "function") requestIdleCallback(() => worker(), { timeout: 2000 });
else setTimeout(() => worker(), 500);

export const MAIN_THREAD_LAYOUT = 200; // records laid out at once, off the worker (< 2 ms)

/** Lay ``records`` out: in the worker, or on the main thread when there are very few. */
export function layoutInWorker(records) {
  if (records.length <= MAIN_THREAD_LAYOUT) {
    const started = performance.now();
    const graph = recordGraph(records);
    const result = layout(graph);
    return Promise.resolve({ graph, result, ms: performance.now() - started });
  }
  const id = nextJob++;
  return new Promise((resolve, reject) => {
    jobs.set(id, { resolve, reject });
    // Only what the layout needs crosses over.
    const slim = records.map((r) => ({ id: r.id, op: r.op, symbol: r.symbol,
                                       inputs: r.inputs, label: r.label, data: r.data,
                                       grad: r.grad }));
    worker().postMessage({ id, records: slim });
  });
}

export class GraphView extends EventTarget {
  /** Events: "select" {id}, "expand" {id} (a stub clicked). */
  constructor(container) {
    super();
    this.container = container;
    this.svg = el("svg", { class: "graph", role: "group", "aria-label": "graph" });
    container.appendChild(this.svg);
    this.viewport = el("g", { class: "viewport" }, this.svg);
    this.edgeLayer = el("g", { class: "edges" }, this.viewport);
    this.nodeLayer = el("g", { class: "nodes" }, this.viewport);
    this.records = new Map();
    this.consumers = new Map();
    this.nodeEls = new Map();
    this.key = "";
    this.selected = null;
    this.critical = [];
    this.size = { width: 0, height: 0 };
    this.t = { x: 20, y: 20, k: 1 };
    this.generation = 0;
    this._panZoom();
  }

  /** Draw ``records`` (laid out anew). Resolves once drawn. */
  async show(records, { fit = true } = {}) {
    const generation = ++this.generation;
    const started = performance.now();
    const { graph, result } = await layoutInWorker(records);
    if (generation !== this.generation) return false; // a newer show() took over
    this.layoutMs = performance.now() - started;
    this._index(records);
    this.key = structureKey(records);
    this.stubs = new Set(graph.stubs);
    // The zoom is set before the nodes are added: text too small to read is then never laid out.
    this.size = { width: result.width, height: result.height };
    if (fit) this.fit();
    await this._draw(graph, result, generation);
    if (generation !== this.generation) return false;
    if (this.selected !== null && this.records.has(this.selected)) this.select(this.selected);
    else this.selected = null;
    this.dispatchEvent(new CustomEvent("drawn", { detail: { nodes: records.length } }));
    return true;
  }

  _index(records) {
    this.records = new Map(records.map((r) => [r.id, r]));
    this.consumers = new Map();
    for (const r of records) {
      for (const i of r.inputs || []) {
        if (!this.consumers.has(i)) this.consumers.set(i, []);
        const list = this.consumers.get(i);
        if (!list.includes(r.id)) list.push(r.id);
      }
    }
  }

  async _draw(graph, result, generation) {
    this.edgeLayer.replaceChildren();
    this.nodeLayer.replaceChildren();
    this.nodeEls = new Map();
    this.opEls = new Map();
    this.edgeEls = [];
    const pos = result.pos;
    const byKey = new Map(graph.nodes.map((n) => [n.key, n]));
    // Edges first (under the nodes), a few hundred a frame.
    this._markers();
    let edgeFrag = document.createDocumentFragment();
    let edgeCount = 0;
    for (const [a, b] of graph.edges) {
      const pa = pos[a], pb = pos[b];
      if (!pa || !pb) continue;
      const na = byKey.get(a), nb = byKey.get(b);
      const pts = [[pa.x + na.w / 2, pa.y], ...(result.routes[`${a}>${b}`] || []),
                   [pb.x - nb.w / 2, pb.y]];
      let d = `M${pts[0][0].toFixed(1)},${pts[0][1].toFixed(1)}`;
      for (let k = 1; k < pts.length; k++) {
        const [x0, y0] = pts[k - 1], [x1, y1] = pts[k];
        const mx = (x0 + x1) / 2;
        d += ` C${mx.toFixed(1)},${y0.toFixed(1)} ${mx.toFixed(1)},${y1.toFixed(1)} `
           + `${x1.toFixed(1)},${y1.toFixed(1)}`;
      }
      const path = el("path", { d, class: "edge", "marker-end": "url(#arrow)" });
      path.dataset.from = a;
      path.dataset.to = b;
      edgeFrag.appendChild(path);
      this.edgeEls.push(path);
      if (++edgeCount % EDGE_CHUNK === 0) {
        this.edgeLayer.appendChild(edgeFrag);
        edgeFrag = document.createDocumentFragment();
        await frame();
        if (generation !== this.generation) return;
      }
    }
    this.edgeLayer.appendChild(edgeFrag);
    let frag = document.createDocumentFragment();
    let count = 0;
    for (const node of graph.nodes) {
      const p = pos[node.key];
      const kind = node.key[0];
      const id = Number(node.key.slice(1));
      if (kind === "o") this._opNode(frag, id, node, p);
      else if (this.records.has(id)) this._valueNode(frag, this.records.get(id), node, p);
      else this._stubNode(frag, id, node, p);
      if (++count % CHUNK === 0) {
        this.nodeLayer.appendChild(frag);
        frag = document.createDocumentFragment();
        await frame();
        if (generation !== this.generation) return;
      }
    }
    this.nodeLayer.appendChild(frag);
  }

  _markers() {
    if (this.svg.querySelector("defs")) return;
    const defs = el("defs", {}, null);
    const marker = el("marker", { id: "arrow", viewBox: "0 0 10 10", refX: "10", refY: "5",
                                  markerWidth: "7", markerHeight: "7", orient: "auto-start-reverse" },
                      defs);
    el("path", { d: "M0,0 L10,5 L0,10 z", class: "arrowhead" }, marker);
    this.svg.insertBefore(defs, this.svg.firstChild);
  }

  _valueNode(parent, r, node, p) {
    const cells = recordCells(r, fixed4);
    const widths = cellWidths(cells, CHAR_W);
    const w = node.w, h = node.h;
    const g = el("g", { class: "node value", transform: `translate(${(p.x - w / 2).toFixed(1)},`
                                                         + `${(p.y - h / 2).toFixed(1)})`,
                        tabindex: "0", role: "button" }, parent);
    g.dataset.id = r.id;
    g.dataset.label = r.label || "";
    el("rect", { class: "box", width: w.toFixed(1), height: h, rx: 3 }, g);
    let x = 0;
    const names = ["label", "data", "grad"];
    cells.forEach((text, k) => {
      if (k) el("line", { class: "sep", x1: x.toFixed(1), x2: x.toFixed(1), y1: 0, y2: h }, g);
      const t = el("text", { class: `cell ${names[k]}`, x: (x + widths[k] / 2).toFixed(1),
                             y: h / 2 + 4.5, "text-anchor": "middle" }, g);
      t.textContent = text;
      x += widths[k];
    });
    this._describe(g, r);
    this.nodeEls.set(r.id, g);
    const activate = (ev) => { ev.stopPropagation(); this.select(r.id, true); };
    g.addEventListener("click", activate);
    g.addEventListener("keydown", (ev) => { if (ev.key === "Enter" || ev.key === " ") activate(ev); });
  }

  _describe(g, r) {
    const what = r.op ? `${r.label || `#${r.id}`} = ${r.op}` : `${r.label || `#${r.id}`} (leaf)`;
    g.setAttribute("aria-label", `${what}: data ${fixed4(r.data)}, grad ${fixed4(r.grad)}`);
  }

  _opNode(parent, id, node, p) {
    const r = this.records.get(id);
    const g = el("g", { class: "node op", transform: `translate(${p.x.toFixed(1)},${p.y.toFixed(1)})` },
                 parent);
    g.dataset.opOf = id;
    el("ellipse", { rx: (node.w / 2).toFixed(1), ry: node.h / 2 }, g);
    const t = el("text", { y: 4.5, "text-anchor": "middle" }, g);
    t.textContent = r ? (r.symbol || r.op) : "?";
    this.opEls.set(id, g);
    g.addEventListener("click", (ev) => { ev.stopPropagation(); this.select(id, true); });
  }

  _stubNode(parent, id, node, p) {
    const g = el("g", { class: "node stub", transform: `translate(${(p.x - node.w / 2).toFixed(1)},`
                                                        + `${(p.y - node.h / 2).toFixed(1)})`,
                        tabindex: "0", role: "button" }, parent);
    g.dataset.stub = id;
    g.setAttribute("aria-label", `node #${id}, not drawn: expand`);
    el("rect", { width: node.w.toFixed(1), height: node.h, rx: 3 }, g);
    const t = el("text", { x: node.w / 2, y: node.h / 2 + 4, "text-anchor": "middle" }, g);
    t.textContent = `#${id}`;
    const expand = (ev) => {
      ev.stopPropagation();
      this.dispatchEvent(new CustomEvent("expand", { detail: { id } }));
    };
    g.addEventListener("click", expand);
    g.addEventListener("keydown", (ev) => { if (ev.key === "Enter") expand(ev); });
  }

  /**
   * New values for the drawn nodes. Returns false (and changes nothing) when the structure
   * differs, so the caller lays the graph out again; else updates the text in place.
   */
  update(records) {
    if (structureKey(records) !== this.key) return false;
    for (const r of records) {
      const old = this.records.get(r.id);
      const g = this.nodeEls.get(r.id);
      if (!g) continue;
      const cells = recordCells(r, fixed4);
      const texts = g.querySelectorAll("text.cell");
      let changed = false;
      cells.forEach((text, k) => {
        if (texts[k] && texts[k].textContent !== text) {
          texts[k].textContent = text;
          changed = true;
        }
      });
      if (old && (old.label || "") !== (r.label || "")) g.dataset.label = r.label || "";
      if (changed) {
        this._describe(g, r);
        g.classList.remove("changed");
        void g.getBBox; // (restart the flash)
        g.classList.add("changed");
      }
    }
    this._index(records);
    return true;
  }

  /** Mark nodes that have diagnostics: {node: [diagnostic, ...]}. */
  markDiagnostics(byNode) {
    for (const [id, g] of this.nodeEls) {
      const found = byNode.get(id);
      g.classList.remove("diag-error", "diag-warning", "diag-info", "diag-hint");
      if (found && found.length) {
        const order = ["error", "warning", "info", "hint"];
        const worst = found.map((d) => d.severity).sort((a, b) => order.indexOf(a) - order.indexOf(b))[0];
        g.classList.add(`diag-${worst}`);
      }
    }
  }

  /** What ``id`` depends on (its ancestors) and what it affects (descendants), drawn nodes only. */
  lineage(id) {
    const up = new Set(), down = new Set();
    const stack = [id];
    while (stack.length) {
      const r = this.records.get(stack.pop());
      for (const i of (r && r.inputs) || []) if (!up.has(i)) { up.add(i); stack.push(i); }
    }
    stack.push(id);
    while (stack.length) {
      for (const c of this.consumers.get(stack.pop()) || []) {
        if (!down.has(c)) { down.add(c); stack.push(c); }
      }
    }
    return { up, down };
  }

  select(id, fromUser = false) {
    this.selected = id;
    const { up, down } = id === null ? { up: new Set(), down: new Set() } : this.lineage(id);
    const lit = id !== null;
    this.svg.classList.toggle("lit", lit);
    const role = (n) => (n === id ? "sel" : up.has(n) ? "anc" : down.has(n) ? "desc" : null);
    for (const [n, g] of this.nodeEls) {
      g.classList.remove("sel", "anc", "desc");
      const r = role(n);
      if (r) g.classList.add(r);
    }
    for (const [n, g] of this.opEls) {
      g.classList.remove("sel", "anc", "desc");
      if (lit && (n === id || up.has(n))) g.classList.add("anc");
      else if (lit && down.has(n)) g.classList.add("desc");
    }
    // Edges: v{a} -> o{b} (a feeds b's op) and o{b} -> v{b}.
    for (const path of this.edgeEls) {
      const b = Number(path.dataset.to.slice(1));
      const a = Number(path.dataset.from.slice(1));
      const fromValue = path.dataset.from[0] === "v";
      path.classList.toggle("anc", lit && (b === id || up.has(b)));
      path.classList.toggle("desc", lit && down.has(b) && (!fromValue || a === id || down.has(a)));
    }
    if (fromUser) this.dispatchEvent(new CustomEvent("select", { detail: { id } }));
  }

  /** Draw the critical path (node ids) over the graph; [] clears it. */
  showCritical(ids) {
    this.critical = ids;
    const on = new Set(ids);
    for (const [n, g] of this.nodeEls) g.classList.toggle("crit", on.has(n));
    for (const [n, g] of this.opEls) g.classList.toggle("crit", on.has(n));
    for (const path of this.edgeEls) {
      const a = Number(path.dataset.from.slice(1)), b = Number(path.dataset.to.slice(1));
      const inPath = path.dataset.from[0] === "o" ? on.has(a) && a === b
        : on.has(a) && on.has(b) && ids.indexOf(b) === ids.indexOf(a) + 1;
      path.classList.toggle("crit", inPath);
    }
  }

  /** Drawn nodes whose label contains ``text``, or whose id it is (#7 or 7). */
  find(text) {
    const q = text.trim().toLowerCase();
    if (!q) return [];
    const asId = /^#?\d+$/.test(q) ? Number(q.replace("#", "")) : null;
    const out = [];
    for (const r of this.records.values()) {
      if (r.id === asId || (r.label && r.label.toLowerCase().includes(q))) out.push(r);
    }
    out.sort((a, b) => (a.id === asId ? -1 : b.id === asId ? 1 : a.id - b.id));
    return out;
  }

  /** Bring node ``id`` to the middle of the view. */
  centre(id) {
    const g = this.nodeEls.get(id);
    if (!g) return;
    const box = g.getBBox();
    const m = g.transform.baseVal.consolidate().matrix;
    const cx = m.e + box.width / 2, cy = m.f + box.height / 2;
    const rect = this.svg.getBoundingClientRect();
    this.t.x = rect.width / 2 - cx * this.t.k;
    this.t.y = rect.height / 2 - cy * this.t.k;
    this._apply();
  }

  fit() {
    const rect = this.svg.getBoundingClientRect();
    const w = Math.max(1, this.size.width), h = Math.max(1, this.size.height);
    const k = Math.min(2, Math.max(0.05, Math.min((rect.width - 40) / w, (rect.height - 40) / h)));
    this.t = { k, x: (rect.width - w * k) / 2, y: (rect.height - h * k) / 2 };
    this._apply();
  }

  zoom(factor, cx = null, cy = null) {
    const rect = this.svg.getBoundingClientRect();
    const x = cx ?? rect.width / 2, y = cy ?? rect.height / 2;
    const k = Math.min(8, Math.max(0.02, this.t.k * factor));
    this.t.x = x - (x - this.t.x) * (k / this.t.k);
    this.t.y = y - (y - this.t.y) * (k / this.t.k);
    this.t.k = k;
    this._apply();
  }

  _apply() {
    const { x, y, k } = this.t;
    this.viewport.setAttribute("transform", `translate(${x.toFixed(1)},${y.toFixed(1)}) scale(${k.toFixed(4)})`);
    // Too small to read: the text is not laid out nor drawn (it stays in the page, for search,
    // and each record's aria-label still says it).
    this.svg.classList.toggle("far", k < FAR);
  }

  _panZoom() {
    let drag = null;
    this.svg.addEventListener("wheel", (ev) => {
      ev.preventDefault();
      const rect = this.svg.getBoundingClientRect();
      this.zoom(Math.exp(-ev.deltaY * 0.0015), ev.clientX - rect.left, ev.clientY - rect.top);
    }, { passive: false });
    this.svg.addEventListener("pointerdown", (ev) => {
      if (ev.button !== 0) return;
      drag = { x: ev.clientX, y: ev.clientY, tx: this.t.x, ty: this.t.y, moved: false };
    });
    window.addEventListener("pointermove", (ev) => {
      if (!drag) return;
      const dx = ev.clientX - drag.x, dy = ev.clientY - drag.y;
      if (Math.abs(dx) + Math.abs(dy) > 3) drag.moved = true;
      if (!drag.moved) return;
      this.t.x = drag.tx + dx;
      this.t.y = drag.ty + dy;
      this._apply();
      this.svg.classList.add("panning");
    });
    window.addEventListener("pointerup", () => {
      if (drag && drag.moved) {
        // A drag is not a click: swallow the click that follows.
        const swallow = (e) => { e.stopPropagation(); };
        this.svg.addEventListener("click", swallow, { capture: true, once: true });
        setTimeout(() => this.svg.removeEventListener("click", swallow, { capture: true }), 0);
      }
      drag = null;
      this.svg.classList.remove("panning");
    });
    this.svg.addEventListener("click", () => {
      if (this.selected !== null) {
        this.select(null);
        this.dispatchEvent(new CustomEvent("select", { detail: { id: null } }));
      }
    });
  }
}
