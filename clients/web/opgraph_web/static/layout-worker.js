// The layout off the page's main thread: {id, records} in, {id, graph, result} out.
import { layout, recordGraph } from "./layout.js";

self.onmessage = (event) => {
  const { id, records } = event.data;
  try {
    const graph = recordGraph(records);
    const started = performance.now();
    const result = layout(graph);
    self.postMessage({ id, graph, result, ms: performance.now() - started });
  } catch (err) {
    self.postMessage({ id, error: String(err && err.stack || err) });
  }
};
