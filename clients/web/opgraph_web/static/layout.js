// A layered layout, left to right, as the seed's graphviz pictures are drawn: every value a
// record node, every op a small node between its inputs and its result. It runs in a Web
// Worker (layout-worker.js), off the page's main thread, and only ever on the nodes the page
// draws (at most DRAW_LIMIT of them: a bigger graph is shown as the server's summary).
//
// Steps, each linear or near-linear in the nodes and edges: layers by longest path from the
// leaves (a leaf then moves next to its first consumer); edges over a few layers broken by
// dummy points (longer ones, such as a weight's uses all along a chain, drawn straight);
// a few barycentre sweeps to order each layer (fewer crossings); positions from the order,
// pulled toward the median of each node's neighbours without overlapping.

export const GAP_X = 46;
export const GAP_Y = 14;
const SWEEPS = 6;
const MAX_SPAN = 6; // layers an edge may span with dummy points (longer ones are drawn straight)
const SETTLE = 4;

/**
 * @param {{nodes: {key: string, w: number, h: number}[], edges: [string, string][]}} graph
 * @returns {{pos: Object<string, {x: number, y: number}>, width: number, height: number,
 *            routes: Object<string, number[][]>}}
 *   pos: each node's centre; routes: the dummy points of each edge "a>b" spanning layers.
 */
export function layout(graph) {
  const n = graph.nodes.length;
  const index = new Map();
  graph.nodes.forEach((node, i) => index.set(node.key, i));
  const succ = Array.from({ length: n }, () => []);
  const pred = Array.from({ length: n }, () => []);
  const edges = [];
  for (const [a, b] of graph.edges) {
    const i = index.get(a), j = index.get(b);
    if (i === undefined || j === undefined || i === j) continue;
    succ[i].push(j);
    pred[j].push(i);
    edges.push([i, j]);
  }
  const layer = layers(n, succ, pred);
  // Break edges that span more than one layer with dummy points.
  const nodesIn = [];
  let maxLayer = 0;
  for (let i = 0; i < n; i++) maxLayer = Math.max(maxLayer, layer[i]);
  for (let l = 0; l <= maxLayer; l++) nodesIn.push([]);
  const h = graph.nodes.map((node) => node.h);
  const w = graph.nodes.map((node) => node.w);
  const vLayer = layer.slice();
  const vUp = pred.map((p) => p.slice());
  const vDown = succ.map((s) => s.slice());
  const chains = [];
  const long = [];
  for (const [i, j] of edges) {
    const span = layer[j] - layer[i];
    if (span <= 1) continue;
    if (span > MAX_SPAN) {
      // A shared leaf used all along a long chain (a weight used at every step) would make
      // dummies for every layer of every use: edges × layers. Such an edge is drawn straight
      // from its source to its target instead, and takes no part in the ordering.
      long.push([i, j]);
      continue;
    }
    const chain = [];
    let prev = i;
    for (let l = layer[i] + 1; l < layer[j]; l++) {
      const d = vLayer.length;
      vLayer.push(l);
      h.push(4);
      w.push(4);
      vUp.push([prev]);
      vDown.push([]);
      replace(vDown[prev], j, d, prev === i);
      chain.push(d);
      prev = d;
    }
    vDown[prev].push(j);
    replace(vUp[j], i, prev, true);
    chains.push([i, j, chain]);
  }
  for (const [i, j] of long) {
    remove(vDown[i], j);
    remove(vUp[j], i);
  }
  const total = vLayer.length;
  for (let v = 0; v < total; v++) nodesIn[vLayer[v]].push(v);
  const order = orderLayers(nodesIn, vUp, vDown, total);
  const y = positions(nodesIn, vUp, vDown, h, total);
  // x from the widest node of each layer.
  const layerW = nodesIn.map((vs) => vs.reduce((m, v) => Math.max(m, w[v]), 0));
  const layerX = [];
  let x = 0;
  for (let l = 0; l <= maxLayer; l++) {
    layerX.push(x + layerW[l] / 2);
    x += layerW[l] + GAP_X;
  }
  let minY = Infinity, maxY = -Infinity;
  for (let v = 0; v < total; v++) {
    minY = Math.min(minY, y[v] - h[v] / 2);
    maxY = Math.max(maxY, y[v] + h[v] / 2);
  }
  if (!isFinite(minY)) { minY = 0; maxY = 0; }
  const pos = {};
  graph.nodes.forEach((node, i) => { pos[node.key] = { x: layerX[layer[i]], y: y[i] - minY }; });
  const routes = {};
  for (const [i, j, chain] of chains) {
    routes[`${graph.nodes[i].key}>${graph.nodes[j].key}`] =
      chain.map((d) => [layerX[vLayer[d]], y[d] - minY]);
  }
  void order;
  return { pos, routes, width: Math.max(0, x - GAP_X), height: maxY - minY };
}

function remove(list, item) {
  const k = list.indexOf(item);
  if (k >= 0) list.splice(k, 1);
}

function replace(list, from, to, once) {
  const k = list.indexOf(from);
  if (k >= 0) list[k] = to;
  else list.push(to);
  void once;
}

/** Longest path from the sources; then each source moves up to just before its first use. */
export function layers(n, succ, pred) {
  const indeg = pred.map((p) => p.length);
  const layer = new Array(n).fill(0);
  const queue = [];
  for (let i = 0; i < n; i++) if (indeg[i] === 0) queue.push(i);
  let head = 0;
  while (head < queue.length) {
    const i = queue[head++];
    for (const j of succ[i]) {
      layer[j] = Math.max(layer[j], layer[i] + 1);
      if (--indeg[j] === 0) queue.push(j);
    }
  }
  if (queue.length < n) {
    // A cycle (a graph should have none): place what is left after everything else.
    let top = 0;
    for (const i of queue) top = Math.max(top, layer[i]);
    for (let i = 0; i < n; i++) if (indeg[i] > 0) layer[i] = top + 1;
  }
  for (let i = 0; i < n; i++) {
    if (pred[i].length === 0 && succ[i].length > 0) {
      let first = Infinity;
      for (const j of succ[i]) first = Math.min(first, layer[j]);
      layer[i] = first - 1;
    }
  }
  return layer;
}

function orderLayers(nodesIn, up, down, total) {
  const rank = new Float64Array(total);
  for (const vs of nodesIn) vs.forEach((v, k) => { rank[v] = k; });
  const sweep = (layers, neighbours) => {
    for (const vs of layers) {
      const key = new Map();
      for (const v of vs) {
        const nb = neighbours[v];
        if (nb.length === 0) { key.set(v, rank[v]); continue; }
        let s = 0;
        for (const u of nb) s += rank[u];
        key.set(v, s / nb.length);
      }
      vs.sort((a, b) => key.get(a) - key.get(b) || rank[a] - rank[b]);
      vs.forEach((v, k) => { rank[v] = k; });
    }
  };
  for (let s = 0; s < SWEEPS; s++) {
    if (s % 2 === 0) sweep(nodesIn.slice(1), up);
    else sweep(nodesIn.slice(0, -1).reverse(), down);
  }
  return rank;
}

function positions(nodesIn, up, down, h, total) {
  const y = new Float64Array(total);
  for (const vs of nodesIn) {
    let at = 0;
    for (const v of vs) { y[v] = at + h[v] / 2; at += h[v] + GAP_Y; }
    const shift = (at - GAP_Y) / 2;
    for (const v of vs) y[v] -= shift;
  }
  const settle = (vs, neighbours) => {
    const want = vs.map((v) => {
      const nb = neighbours[v];
      if (nb.length === 0) return y[v];
      const ys = nb.map((u) => y[u]).sort((a, b) => a - b);
      const m = ys.length >> 1;
      return ys.length % 2 ? ys[m] : (ys[m - 1] + ys[m]) / 2;
    });
    // Place in order, as close to the wish as the previous node allows; then the same from
    // the other end, and take the mean: no overlap, little drift.
    const a = new Float64Array(vs.length), b = new Float64Array(vs.length);
    for (let k = 0; k < vs.length; k++) {
      const min = k ? a[k - 1] + (h[vs[k - 1]] + h[vs[k]]) / 2 + GAP_Y : -Infinity;
      a[k] = Math.max(want[k], min);
    }
    for (let k = vs.length - 1; k >= 0; k--) {
      const max = k < vs.length - 1 ? b[k + 1] - (h[vs[k + 1]] + h[vs[k]]) / 2 - GAP_Y : Infinity;
      b[k] = Math.min(want[k], max);
    }
    for (let k = 0; k < vs.length; k++) y[vs[k]] = (a[k] + b[k]) / 2;
    // The mean of two non-overlapping placements does not overlap either.
  };
  for (let s = 0; s < SETTLE; s++) {
    for (const vs of nodesIn.slice(1)) settle(vs, up);
    for (const vs of nodesIn.slice(0, -1).reverse()) settle(vs, down);
  }
  return y;
}

/**
 * The layout graph of node records (as graph.nodes returns them): a record per value and an
 * op node per computed value, edges input -> op -> value. Inputs that are not among the
 * records become stubs ("#id", to expand on click). Widths come from the text drawn, in a
 * monospace font of `charW` pixels a character.
 */
export function recordGraph(records, charW = 7.2, fmt = fixed4) {
  const nodes = [];
  const edges = [];
  const have = new Set(records.map((r) => r.id));
  const stubs = new Set();
  for (const r of records) {
    const cells = recordCells(r, fmt);
    const w = cellWidths(cells, charW).reduce((s, c) => s + c, 0);
    nodes.push({ key: `v${r.id}`, w, h: 26 });
    if (r.op !== null && r.op !== undefined) {
      const sym = r.symbol || r.op;
      nodes.push({ key: `o${r.id}`, w: Math.max(28, sym.length * charW + 18), h: 24 });
      edges.push([`o${r.id}`, `v${r.id}`]);
      for (const i of r.inputs) {
        if (!have.has(i) && !stubs.has(i)) {
          stubs.add(i);
          nodes.push({ key: `v${i}`, w: (`#${i}`.length) * charW + 16, h: 22 });
        }
        edges.push([`v${i}`, `o${r.id}`]);
      }
    }
  }
  return { nodes, edges, stubs: [...stubs] };
}

/** The three cells of a value's record: label (or #id), data, grad. */
export function recordCells(r, fmt = fixed4) {
  return [r.label || `#${r.id}`, `data ${fmt(r.data)}`, `grad ${fmt(r.grad)}`];
}

/** Each cell's width: room for its text, and for a number of the usual width (so values can
 * change in place without outgrowing their cell). */
export function cellWidths(cells, charW = 7.2) {
  return cells.map((c, k) => Math.max(c.length, k ? 12 : 2) * charW + 14);
}

/** A number as the seed prints it (%.4f); NaN and infinities by name. */
export function fixed4(v) {
  if (typeof v !== "number") return String(v);
  if (Number.isNaN(v)) return "nan";
  if (!Number.isFinite(v)) return v > 0 ? "inf" : "-inf";
  return v.toFixed(4);
}
