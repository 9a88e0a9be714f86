"""The web viewer's speed in a real browser: ``python bench/web.py`` (``--quick`` skips the
1,000,000-node graph).

A fresh ``opgraph serve`` (TCP and HTTP listeners) in its own process, Debian's Chromium headless
driven by Playwright, on this machine. Each figure against the bar issue 15 sets:

1. the demo graph's page interactive (loaded, connected, drawn, and a click on ``o`` showing its
   gradient): under 1 s;
2. the moons step graph (about 66,000 nodes) opened as the server's summary: under 2 s (the
   first open of a version, when the server computes the summary, and a later one);
3. a value update applied: for the demo, from the moment a client sends ``node.set`` to the
   page's text changed (the wall clock both processes share); for a moons step published (its
   values only, ``graph.publish_values``) while the page shows the summary, and while one of
   its neurons is drawn, from the page's notification to its text changed (the publish itself,
   the client's and the server's work, is printed beside): under 100 ms (medians of 5 steps);
4. a 1,000,000-node graph (a labelled chain made on the server): opened as its summary, a part
   drilled into and 900 of its nodes drawn, a node found by id, and a change of a leaf (the
   whole graph recomputed) followed: no long task (the browser's Long Tasks API) over 200 ms.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "web"))
sys.path.insert(0, str(ROOT / "tests"))

from web_harness import CHROMIUM, ServedViewer, launch  # noqa: E402

LONG_TASKS = """
window.__longtasks = [];
new PerformanceObserver((list) => {
  for (const e of list.getEntries()) window.__longtasks.push([e.startTime, e.duration]);
}).observe({ type: "longtask", buffered: true });
"""

CHANGED = """([selector, before]) => ({ changed: new Promise((resolve, reject) => {
  // The element may be replaced (a summary redrawn): it is looked up again at each change.
  const now = () => { const el = document.querySelector(selector); return el && el.textContent; };
  if (now() !== before) { resolve(performance.timeOrigin + performance.now()); return; }
  const obs = new MutationObserver(() => {
    if (now() !== before) {
      obs.disconnect();
      resolve(performance.timeOrigin + performance.now());
    }
  });
  obs.observe(document.body, { characterData: true, childList: true, subtree: true });
  setTimeout(() => { obs.disconnect(); reject(new Error(`${selector} did not change`)); }, 60000);
}) })"""


def ready_ms(page, kind: str) -> float:
    """Milliseconds from navigation to the page saying it shows what was asked."""
    page.wait_for_selector(f'body[data-ready="{kind}"]', timeout=120_000)
    return page.evaluate("window.opgraph.app.stats.readyAt")


def demo_interactive(browser, srv: ServedViewer, runs: int = 5) -> list[float]:
    times = []
    for _ in range(runs):
        context = browser.new_context(viewport={"width": 1400, "height": 820})
        page = context.new_page()
        page.goto(f"{srv.http}#/graph/demo")
        page.wait_for_selector('g.value[data-label="o"]')
        page.click('g.value[data-label="o"]')
        page.wait_for_selector(".details .grad-full")
        times.append(page.evaluate("performance.now()"))
        context.close()
    return times


def demo_update(browser, srv: ServedViewer, runs: int = 20) -> list[float]:
    """node.set of x1 on the demo graph, sent -> the o record's data text changed."""
    page = browser.new_context(viewport={"width": 1400, "height": 820}).new_page()
    page.goto(f"{srv.http}#/graph/demo")
    page.wait_for_selector('g.value[data-label="o"]')
    selector = 'g.value[data-label="o"] text.data'
    out = []
    with srv.client() as client:
        for i in range(runs):
            before = page.text_content(selector)
            waiting = page.evaluate_handle(CHANGED, [selector, before])
            sent = time.time() * 1000
            client.call("node.set", "demo", 0, 2.1 + 0.1 * (i % 2))  # o: 0.5237, 0.2742
            out.append(page.evaluate("w => w.changed", waiting) - sent)
        client.call("node.set", "demo", 0, 2.0)
    page.context.close()
    return out


STEPS = 5  # moons steps published for each update figure (their median is printed)


def publish_steps(page, client, loss, model, selector: str) -> dict[str, list[float]]:
    """Publish ``STEPS`` moons steps (every weight moved, as SGD would move it: values only,
    so ``graph.publish_values``), each once the page shows the one before; per step: the
    server's publish, the page's text at ``selector`` changed after the publish began (the
    wall clock both processes share), and the page's own share (notified -> page changed)."""
    out: dict[str, list[float]] = {"publish": [], "shown": [], "applied": []}
    params = model.parameters()
    for step in range(STEPS):
        seen = page.evaluate("window.opgraph.app.stats.updates.length")
        before = page.text_content(selector)
        for p in params:
            p.data += 0.125 if step % 2 == 0 else -0.0625
        waiting = page.evaluate_handle(CHANGED, [selector, before])
        sent = time.time() * 1000
        started = time.perf_counter()
        client.publish("moons", loss)
        out["publish"].append((time.perf_counter() - started) * 1000)
        out["shown"].append(page.evaluate("w => w.changed", waiting) - sent)
        page.wait_for_function(f"() => window.opgraph.app.stats.updates.length > {seen}")
        out["applied"].append(page.evaluate("window.opgraph.app.stats.updates.at(-1).ms"))
    return out


def moons(browser, srv: ServedViewer) -> dict[str, float]:
    from scale_graphs import moons_step

    results: dict[str, float] = {}
    _, loss, _, model = moons_step()
    with srv.client() as client:
        client.publish("moons", loss)
        results["nodes"] = client.call("graph.info", "moons")["nodes"]
        for label in ("first open", "later open"):
            context = browser.new_context(viewport={"width": 1400, "height": 820})
            page = context.new_page()
            page.goto(f"{srv.http}#/graph/moons")
            results[label] = ready_ms(page, "GraphPage")
            page.wait_for_selector(".cards .card")
            if label == "first open":
                # Steps published while the summary is shown (its layer0 card's numbers).
                steps = publish_steps(page, client, loss, model, '.card[data-group="layer0"] dl')
                prefix = "summary "
            else:
                # Draw one neuron of the first layer, then publish the next steps.
                page.click('.card[data-group="layer0"] .actions button:has-text("open")')
                page.click('.card[data-group="layer0.neuron3"] .actions button:has-text("open")')
                page.click(".here button.draw")
                selector = 'g.value[data-label="layer0.neuron3.w0"] text.data'
                page.wait_for_selector(selector, state="attached")  # (text: not shown far out)
                steps = publish_steps(page, client, loss, model, selector)
                prefix = ""
            results[prefix + "publish (server)"] = statistics.median(steps["publish"])
            results[prefix + "update after publish"] = statistics.median(steps["shown"])
            results[prefix + "update applied"] = statistics.median(steps["applied"])
            results[prefix + "update applied (max)"] = max(steps["applied"])
            context.close()
    return results


def big_chain(srv: ServedViewer, nodes: int) -> float:
    """A chain x = tanh(x * w + b), each node labelled by its block of 900 (parts)."""
    started = time.perf_counter()
    with srv.client() as client:
        client.call("graph.create", "big", {"replace": True})
        w = client.call("node.leaf", "big", 0.5, {"label": "w"})["id"]
        b = client.call("node.leaf", "big", 0.1, {"label": "b"})["id"]
        x: object = client.call("node.leaf", "big", 0.3, {"label": "x"})["id"]
        made = 3
        while made < nodes:
            steps = []
            for _ in range(min(90_000, nodes - made) // 3):
                k, n = len(steps), made + len(steps)
                block = f"block{n // 900}"  # 300 steps of three nodes a block
                steps.append({"op": "mul", "inputs": [x, w], "label": f"{block}.mul{n}"})
                steps.append({"op": "add", "inputs": [f"${k}", b], "label": f"{block}.add{n}"})
                steps.append({"op": "tanh", "inputs": [f"${k + 1}"], "label": f"{block}.out{n}"})
                x = f"${k + 2}"
            if not steps:
                break
            ids = client.call("graph.batch", "big", steps)["ids"]
            x = ids[-1]
            made += len(ids)
        client.call("graph.backward", "big", x)
    return time.perf_counter() - started


def million(browser, srv: ServedViewer, nodes: int, verbose: bool = False) -> dict[str, float]:
    results = {"build (s)": big_chain(srv, nodes)}
    context = browser.new_context(viewport={"width": 1400, "height": 820})
    context.add_init_script(LONG_TASKS)
    page = context.new_page()
    page.goto(f"{srv.http}#/graph/big")
    results["open as summary (ms)"] = ready_ms(page, "GraphPage")
    page.wait_for_selector('.card[data-group="block42"]', timeout=120_000)
    page.click('.card[data-group="block42"] .actions button:has-text("open")')
    page.wait_for_selector(".here button.draw", timeout=120_000)
    started = time.perf_counter()
    page.click(".here button.draw")
    page.wait_for_selector("svg.graph g.value", timeout=120_000)
    page.wait_for_function("() => document.querySelectorAll('svg.graph g.value').length >= 900",
                           timeout=120_000)
    results["draw 900 of its nodes (ms)"] = (time.perf_counter() - started) * 1000
    page.fill("#search-input", "#777777")
    page.press("#search-input", "Enter")
    page.wait_for_selector('g.value.sel[data-id="777777"]', timeout=120_000)
    page.click("button:has-text('summary')")
    page.wait_for_selector(".cards .card", timeout=120_000)
    with srv.client() as client:
        version = client.call("node.set", "big", 0, 0.4)["version"]  # every node recomputed
    page.wait_for_function("v => document.body.dataset.version === v", arg=str(version),
                           timeout=120_000)
    tasks = page.evaluate("window.__longtasks")
    results["long tasks"] = len(tasks)
    results["longest task (ms)"] = max((d for _, d in tasks), default=0.0)
    if verbose:
        print("  long tasks (start, ms):", [(round(t), round(d)) for t, d in tasks])
        print("  requests (method, sent, answered):",
              [(m, round(a), round(b)) for m, a, b in page.evaluate("window.opgraph.rpc.timings")])
    context.close()
    return results


def row(what: str, value: float, bar: float | None, unit: str = "ms") -> str:
    verdict = "" if bar is None else ("  ok" if value < bar else f"  OVER the {bar:g} {unit} bar")
    return f"  {what:<44} {value:10.1f} {unit}{verdict}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="skip the 1,000,000-node graph")
    parser.add_argument("--nodes", type=int, default=1_000_000, help="the big graph's size")
    parser.add_argument("--verbose", action="store_true",
                        help="list the big graph's long tasks and the page's requests")
    args = parser.parse_args()
    if CHROMIUM is None:
        sys.exit("bench/web.py: chromium is not installed (make test installs it)")
    from playwright.sync_api import sync_playwright

    srv = ServedViewer().start()
    try:
        with sync_playwright() as p:
            browser = launch(p)
            print("web viewer, Chromium headless, on this machine (bars from issue 15)")
            times = demo_interactive(browser, srv)
            print(row("demo page interactive (median of 5)", statistics.median(times), 1000))
            ups = sorted(demo_update(browser, srv))
            print(row("demo value update applied (median of 20)", statistics.median(ups), 100))
            print(row("demo value update applied (max)", ups[-1], 100))
            m = moons(browser, srv)
            print(f"  moons step graph: {m['nodes']:,.0f} nodes")
            print(row("moons opened as summary (first open)", m["first open"], 2000))
            print(row("moons opened as summary (later open)", m["later open"], 2000))
            for prefix, shown in (("summary ", "summary"), ("", "a neuron drawn")):
                print(f"  moons steps published (values only), {shown}, median of {STEPS}:")
                print(row("  publish of a step (client and server)",
                          m[prefix + "publish (server)"], None))
                print(row("  update shown, publish included", m[prefix + "update after publish"],
                          None))
                print(row("  update applied (notified -> page changed)",
                          m[prefix + "update applied"], 100))
                print(row("  update applied (max)", m[prefix + "update applied (max)"], None))
            if not args.quick:
                big = million(browser, srv, args.nodes, args.verbose)
                print(f"  {args.nodes:,} nodes built on the server in {big['build (s)']:.1f} s")
                print(row("big graph opened as summary", big["open as summary (ms)"], None))
                print(row("900 of its nodes drawn", big["draw 900 of its nodes (ms)"], None))
                print(f"  {'long tasks (over 50 ms) in all of it':<44} {big['long tasks']:10.0f}")
                print(row("longest task", big["longest task (ms)"], 200))
            browser.close()
    finally:
        srv.stop()


if __name__ == "__main__":
    main()
