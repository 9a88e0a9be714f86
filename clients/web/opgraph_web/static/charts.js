// Small SVG charts: the root's value across versions, and f with f' and the tangent.

const SVG = "http://www.w3.org/2000/svg";

function el(name, attrs = {}, parent = null) {
  const e = document.createElementNS(SVG, name);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  if (parent) parent.appendChild(e);
  return e;
}

function nice(v) {
  if (!Number.isFinite(v)) return String(v);
  const a = Math.abs(v);
  if (a !== 0 && (a >= 1e5 || a < 1e-3)) return v.toExponential(2);
  return Number(v.toPrecision(4)).toString();
}

/** Axes from [x0, x1] x [y0, y1] onto a ``w`` x ``h`` box with margins. */
function scales(x0, x1, y0, y1, w, h, m = { l: 46, r: 10, t: 10, b: 22 }) {
  if (x1 === x0) { x0 -= 1; x1 += 1; }
  if (y1 === y0) { y0 -= 1; y1 += 1; }
  const sx = (x) => m.l + ((x - x0) / (x1 - x0)) * (w - m.l - m.r);
  const sy = (y) => h - m.b - ((y - y0) / (y1 - y0)) * (h - m.t - m.b);
  return { sx, sy, x0, x1, y0, y1, m };
}

function axes(svg, s, w, h) {
  const g = el("g", { class: "axes" }, svg);
  el("line", { x1: s.m.l, x2: w - s.m.r, y1: h - s.m.b, y2: h - s.m.b }, g);
  el("line", { x1: s.m.l, x2: s.m.l, y1: s.m.t, y2: h - s.m.b }, g);
  const labels = [[s.y0, s.sy(s.y0)], [s.y1, s.sy(s.y1)]];
  for (const [v, y] of labels) {
    const t = el("text", { x: s.m.l - 4, y: y + 4, "text-anchor": "end" }, g);
    t.textContent = nice(v);
  }
  const ends = s.only !== undefined ? [[s.only, "middle"]] : [[s.x0, "start"], [s.x1, "end"]];
  for (const [v, anchor] of ends) {
    const t = el("text", { x: s.sx(v), y: h - 6, "text-anchor": anchor }, g);
    t.textContent = s.integers ? v.toLocaleString("en") : nice(v);
  }
  if (s.y0 < 0 && s.y1 > 0) {
    el("line", { class: "zero", x1: s.m.l, x2: w - s.m.r, y1: s.sy(0), y2: s.sy(0) }, g);
  }
  if (s.x0 < 0 && s.x1 > 0) {
    el("line", { class: "zero", x1: s.sx(0), x2: s.sx(0), y1: s.m.t, y2: h - s.m.b }, g);
  }
}

/** A polyline path through the finite points (a gap wherever y is not finite). */
function path(xs, ys, s, clip) {
  let d = "", pen = false;
  for (let i = 0; i < xs.length; i++) {
    const y = ys[i];
    if (!Number.isFinite(y) || y < clip[0] || y > clip[1]) { pen = false; continue; }
    d += `${pen ? "L" : "M"}${s.sx(xs[i]).toFixed(1)},${s.sy(y).toFixed(1)}`;
    pen = true;
  }
  return d;
}

/** The root's value per version: [[version, value], ...]. */
export function drawHistory(container, points, { width = 320, height = 130, title = "" } = {}) {
  container.replaceChildren();
  const svg = el("svg", { class: "chart", width, height, role: "img",
                          "aria-label": title || "value per version" }, container);
  const finite = points.filter(([, v]) => Number.isFinite(v));
  if (finite.length === 0) {
    const t = el("text", { x: width / 2, y: height / 2, "text-anchor": "middle", class: "empty" }, svg);
    t.textContent = "no values yet";
    return svg;
  }
  const xs = finite.map((p) => p[0]), ys = finite.map((p) => p[1]);
  const s = scales(Math.min(...xs), Math.max(...xs), Math.min(...ys), Math.max(...ys), width, height);
  s.integers = true; // versions: written out whole (65,818, not 6.58e+4)
  if (xs.length && Math.min(...xs) === Math.max(...xs)) s.only = xs[0]; // one version: one label
  axes(svg, s, width, height);
  el("path", { class: "series", d: path(xs, ys, s, [-Infinity, Infinity]) }, svg);
  const last = finite[finite.length - 1];
  el("circle", { class: "last", r: 3, cx: s.sx(last[0]), cy: s.sy(last[1]) }, svg);
  return svg;
}

/**
 * f and f' over xs (NaN where undefined), the tangent at (x, fx) with slope dfx.
 * The y range covers f and f' (robustly: a pole does not flatten the rest).
 */
export function drawFunction(container, { xs, ys, dys, x, fx, dfx, name = "x" },
                             { width = 440, height = 260 } = {}) {
  container.replaceChildren();
  const svg = el("svg", { class: "chart function", width, height, role: "img",
                          "aria-label": `f(${name}) and f'(${name}), with the tangent at ${name} = ${nice(x)}` },
                 container);
  const vals = [...ys, ...dys, fx].filter(Number.isFinite).sort((a, b) => a - b);
  if (vals.length === 0) return svg;
  const q = (p) => vals[Math.min(vals.length - 1, Math.max(0, Math.round(p * (vals.length - 1))))];
  let lo = q(0.02), hi = q(0.98);
  const pad = (hi - lo) * 0.08 || 1;
  lo -= pad; hi += pad;
  const s = scales(xs[0], xs[xs.length - 1], lo, hi, width, height);
  axes(svg, s, width, height);
  const clip = [lo - (hi - lo), hi + (hi - lo)];
  el("path", { class: "series f", d: path(xs, ys, s, clip) }, svg);
  el("path", { class: "series df", d: path(xs, dys, s, clip) }, svg);
  if (Number.isFinite(fx) && Number.isFinite(dfx)) {
    const span = (xs[xs.length - 1] - xs[0]) / 4;
    const tx = [x - span, x + span];
    el("path", { class: "series tangent",
                 d: path(tx, tx.map((t) => fx + dfx * (t - x)), s, [-Infinity, Infinity]) }, svg);
    el("circle", { class: "at", r: 4, cx: s.sx(x), cy: s.sy(fx) }, svg);
  }
  const legend = el("g", { class: "legend" }, svg);
  [["f", `f(${name})`], ["df", `f'(${name})`], ["tangent", "tangent"]].forEach(([cls, text], k) => {
    const y = 16 + k * 15;
    el("line", { class: `series ${cls}`, x1: width - 100, x2: width - 80, y1: y - 4, y2: y - 4 }, legend);
    const t = el("text", { x: width - 76, y }, legend);
    t.textContent = text;
  });
  return svg;
}

export { nice };
