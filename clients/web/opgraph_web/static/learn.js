// The learner's page: type an expression, see its graph, move a slider per leaf and watch
// every data and grad change; beside each gradient, the seed's "nudge x by h" slope; f and
// f' plotted with the tangent at x. Everything is computed by the server, on a scratch graph
// of this page's own (dropped when the page is left).

import { GraphView } from "./graphview.js";
import { drawFunction, nice } from "./charts.js";
import { fixed4 } from "./layout.js";
import { h } from "./graphpage.js";

export const DEFAULT_EXPRESSION = "3*x**2 - 4*x + 5";
const H = 0.0001; // the seed's nudge
const POINTS = 101;
const START = { x: 3.0, a: 2.0, b: -3.0, c: 10.0 }; // the seed's values
const SCRATCH_KEY = "opgraph-scratch";

/** The free names of ``expression``: identifiers that are not called (ops are) nor keyword
 * names. The server parses the expression; this only finds what needs a slider. */
export function freeNames(expression) {
  const names = [];
  const re = /[A-Za-z_][A-Za-z0-9_]*/g;
  let m;
  while ((m = re.exec(expression)) !== null) {
    const before = expression[m.index - 1];
    if (before !== undefined && /[0-9.]/.test(before)) continue; // 1e5, 2.5e-3
    const rest = expression.slice(m.index + m[0].length);
    if (/^\s*\(/.test(rest) || /^\s*=(?!=)/.test(rest)) continue;
    if (!names.includes(m[0])) names.push(m[0]);
  }
  return names;
}

function scratchName() {
  let name = null;
  try { name = sessionStorage.getItem(SCRATCH_KEY); } catch { /* no storage */ }
  if (!name) {
    name = `scratch-learn-${Math.random().toString(36).slice(2, 10)}`;
    try { sessionStorage.setItem(SCRATCH_KEY, name); } catch { /* no storage */ }
  }
  return name;
}

export class LearnPage {
  constructor(app, main, expression = DEFAULT_EXPRESSION) {
    this.app = app;
    this.rpc = app.rpc;
    this.graph = scratchName();
    this.plotGraph = `${this.graph}-plot`;
    this.values = {};
    this.leaves = {};
    this.busy = false;
    this.again = false;
    this.plotted = null;
    this.destroyed = false;
    this.build(main, expression);
    this.evaluate();
  }

  build(main, expression) {
    this.input = h("input", { id: "expression", type: "text", value: expression, spellcheck: "false",
                              "aria-label": "expression", size: 40 });
    this.form = h("form", { class: "expr-form", onsubmit: (ev) => { ev.preventDefault(); this.evaluate(); } },
      h("label", { for: "expression" }, "f = "), this.input, h("button", { type: "submit" }, "evaluate"));
    this.error = h("p", { class: "page-message error", role: "alert", hidden: true });
    this.result = h("p", { class: "result", "aria-live": "polite" });
    this.sliders = h("div", { class: "sliders" });
    this.plot = h("div", { class: "plot" });
    this.canvas = h("div", { class: "canvas learn-canvas" });
    this.view = new GraphView(this.canvas);
    this.el = h("section", { class: "learn-page" },
      h("div", { class: "learn-top" },
        h("div", { class: "learn-controls" },
          h("h1", {}, "Learn: a function, its graph and its derivative"),
          h("p", { class: "hint" }, "Type an expression in Python syntax (ops by name: tanh(x), "
            + "exp(x), x**2). Each leaf gets a slider; the server evaluates the graph and its "
            + "gradients as you move it."),
          this.form, this.error, this.result, this.sliders),
        this.plot),
      this.canvas);
    main.replaceChildren(this.el);
    window.addEventListener("pagehide", this.dropScratch);
  }

  dropScratch = () => {
    // Best effort: the server keeps a scratch graph until it is dropped or restarts.
    this.rpc.request("graph.drop", this.graph).catch(() => {});
    this.rpc.request("graph.drop", this.plotGraph).catch(() => {});
  };

  destroy() {
    this.destroyed = true;
    window.removeEventListener("pagehide", this.dropScratch);
    this.dropScratch();
  }

  fail(message) {
    this.error.hidden = !message;
    this.error.textContent = message || "";
  }

  async evaluate() {
    const expression = this.input.value.trim();
    this.expression = expression;
    const names = freeNames(expression);
    const bindings = {};
    for (const n of names) bindings[n] = n in this.values ? this.values[n] : (START[n] ?? 1.0);
    try {
      await this.rpc.request("graph.create", this.graph, { replace: true });
      const r = await this.rpc.request("graph.eval", this.graph, expression, bindings);
      this.root = r.root;
      this.leaves = r.leaves;
      this.values = {};
      for (const n of Object.keys(r.leaves)) this.values[n] = bindings[n];
      await this.rpc.request("graph.backward", this.graph, r.root);
      this.fail("");
    } catch (err) {
      this.fail(err.message);
      return;
    }
    if (location.hash.startsWith("#/learn")) {
      history.replaceState(null, "", `#/learn/${encodeURIComponent(expression)}`);
    }
    this.plotVar = "x" in this.leaves ? "x" : Object.keys(this.leaves)[0];
    this.buildSliders();
    const page = await this.rpc.request("graph.nodes", this.graph, { count: 1000 });
    this.records = page.nodes;
    await this.view.show(page.nodes);
    await this.nudges();
    await this.replot(true);
    this.app.ready(this);
  }

  buildSliders() {
    const rows = Object.keys(this.leaves).sort().map((name) => {
      const v = this.values[name];
      const lo = Math.floor(Math.min(-5, v - 5)), hi = Math.ceil(Math.max(5, v + 5));
      const slider = h("input", { type: "range", min: lo, max: hi, step: "0.01", value: v,
                                  id: `slider-${name}`, "aria-label": `value of ${name}`,
                                  dataset: { leaf: name } });
      const out = h("output", { for: `slider-${name}`, class: "num value" }, fixed4(v));
      const grad = h("span", { class: "num grad" }, "");
      const slope = h("span", { class: "num slope" }, "");
      slider.addEventListener("input", () => this.move(name, Number(slider.value)));
      return h("div", { class: "slider-row", dataset: { leaf: name } },
        h("label", { for: `slider-${name}` }, name), slider, out,
        h("span", { class: "pair" },
          h("span", { class: "what" }, `df/d${name} autograd `), grad,
          h("span", { class: "what" }, ` · nudge (f(${name}+h) − f(${name}))/h, h=${H}: `), slope));
    });
    this.sliders.replaceChildren(...rows);
  }

  move(name, value) {
    this.values[name] = value;
    const row = this.sliders.querySelector(`.slider-row[data-leaf="${name}"]`);
    if (row) row.querySelector("output").textContent = fixed4(value);
    if (this.busy) { this.again = true; return; }
    this.update(name);
  }

  async update(moved) {
    this.busy = true;
    const started = performance.now();
    try {
      do {
        this.again = false;
        const calls = Object.entries(this.leaves).map(([n, id]) =>
          this.rpc.request("node.set", this.graph, id, this.values[n]));
        await Promise.all(calls);
        await this.rpc.request("graph.backward", this.graph, this.root);
        const page = await this.rpc.request("graph.nodes", this.graph, { count: 1000 });
        this.records = page.nodes;
        if (!this.view.update(page.nodes)) await this.view.show(page.nodes, { fit: false });
        await this.nudges();
        await this.replot(moved !== this.plotVar);
      } while (this.again && !this.destroyed);
      this.fail("");
    } catch (err) {
      this.fail(err.message);
    } finally {
      this.busy = false;
      this.app.updated(this, null, performance.now() - started);
    }
  }

  byId(id) {
    return this.records.find((r) => r.id === id);
  }

  /** Each leaf's autograd gradient and the seed's slope (f(v+h) - f(v))/h, both from the server. */
  async nudges() {
    const f = this.byId(this.root).data;
    const names = Object.keys(this.leaves);
    const slopes = await Promise.all(names.map(async (n) => {
      const bumped = { ...this.values, [n]: this.values[n] + H };
      try {
        const r = await this.rpc.request("graph.eval", this.graph, this.expression, bumped, { keep: false });
        return (r.data - f) / H;
      } catch { return NaN; }
    }));
    // f, the gradients and the slopes change together.
    this.result.replaceChildren(h("span", {}, "f = "), h("b", { class: "num f-value" }, fixed4(f)));
    names.forEach((n, k) => {
      const row = this.sliders.querySelector(`.slider-row[data-leaf="${n}"]`);
      if (!row) return;
      row.querySelector(".grad").textContent = fixed4(this.byId(this.leaves[n]).grad);
      row.querySelector(".slope").textContent = fixed4(slopes[k]);
    });
  }

  /** f and f' of the plotted leaf over a range, on a second scratch graph: per point, set
   * the leaf, backpropagate, read f and the leaf's gradient (what `opgraph plot` does). The
   * curves are computed again only when another leaf moved (or the expression changed). */
  async replot(resample) {
    const name = this.plotVar;
    if (name === undefined) { this.plot.replaceChildren(); return; }
    const x = this.values[name];
    if (resample || !this.plotted || x < this.plotted.lo || x > this.plotted.hi) {
      const lo = Math.min(-5, Math.floor(x - 1)), hi = Math.max(5, Math.ceil(x + 1));
      await this.rpc.request("graph.create", this.plotGraph, { replace: true });
      const r = await this.rpc.request("graph.eval", this.plotGraph, this.expression, this.values);
      const xid = r.leaves[name];
      const xs = [];
      for (let i = 0; i < POINTS; i++) xs.push(lo + ((hi - lo) * i) / (POINTS - 1));
      const ys = new Array(POINTS).fill(NaN), dys = new Array(POINTS).fill(NaN);
      // Pipelined: set, backward, get per point, all sent at once and answered in order.
      const pipeline = [];
      for (let i = 0; i < POINTS; i++) {
        pipeline.push(Promise.allSettled([
          this.rpc.request("node.set", this.plotGraph, xid, xs[i]),
          this.rpc.request("graph.backward", this.plotGraph, r.root),
          this.rpc.request("node.get", this.plotGraph, [r.root, xid]),
        ]).then(([set, back, got]) => {
          if (set.status === "fulfilled" && back.status === "fulfilled" && got.status === "fulfilled") {
            ys[i] = got.value.nodes[0].data;
            dys[i] = got.value.nodes[1].grad;
          }
        }));
      }
      await Promise.all(pipeline);
      this.plotted = { xs, ys, dys, lo, hi };
    }
    const fx = this.byId(this.root).data;
    const dfx = this.byId(this.leaves[name]).grad;
    drawFunction(this.plot, { ...this.plotted, x, fx, dfx, name });
    this.plot.dataset.at = nice(x);
  }
}
