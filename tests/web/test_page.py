"""The viewer in a real browser (Debian's Chromium, headless, driven by Playwright): the demo
graph drawn and read, live versions applied in place, a big graph's summary, the learner's
page, and what goes wrong (an unknown graph, a dropped graph, a server that goes away, a
cross-origin page, a token)."""

from __future__ import annotations

import http.server
import math
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from web_harness import ServedViewer, free_port, screenshot

import opgraph
from opgraph import nn

SEED_O = math.tanh(2.0 * -3.0 + 0.0 * 1.0 + 6.881373587019543)


def text(page: Any, selector: str) -> str:
    return page.locator(selector).first.inner_text()


def open_graph(page: Any, srv: ServedViewer, name: str) -> None:
    page.goto(f"{srv.http}#/graph/{name}")
    page.wait_for_selector('body[data-ready="GraphPage"]')


def test_find_the_demo_graph_click_o_and_read_its_grad(page: Any, served: ServedViewer) -> None:
    page.goto(served.http)
    row = page.locator('tr[data-graph="demo"]')
    row.wait_for()
    assert row.locator(".nodes").inner_text() == "10"
    row.locator("a").click()
    o = page.locator('g.value[data-label="o"]')
    o.wait_for()
    # The seed's record: label | data | grad, as text in the page.
    assert o.locator("text.label").text_content() == "o"
    assert o.locator("text.data").text_content() == f"data {SEED_O:.4f}"
    assert o.locator("text.grad").text_content() == "grad 1.0000"
    assert page.locator('g.value[data-label="x1"] text.grad').text_content() == "grad -1.5000"
    o.click()
    details = page.locator(".details")
    assert details.locator(".grad-full").inner_text() == "1"
    assert float(details.locator(".data-full").inner_text()) == pytest.approx(SEED_O)
    assert details.locator(".op").inner_text() == "tanh"
    assert details.locator(".inputs .chip").all_inner_texts() == ["n"]
    assert "none (an output)" in details.locator(".consumers").inner_text()
    assert details.locator(".source").inner_text() == "demo.py:24"
    # What o depends on is highlighted: every other value of the neuron.
    assert page.locator("g.value.anc").count() == 9
    screenshot(page, "demo-o-selected")
    # A click on an input goes there; x1 affects o.
    details.locator(".inputs .chip").click()
    assert page.locator(".details h2").inner_text().startswith("n")
    page.locator(".zoom button", has_text="fit").click()
    page.locator('g.value[data-label="x1"]').click()
    assert page.locator('g.value.desc[data-label="o"]').count() == 1
    # The critical path, from the server's analysis.
    page.locator(".crit-toggle").click()
    page.wait_for_selector("g.value.crit")
    crit = page.eval_on_selector_all("g.value.crit", "els => els.map(e => e.dataset.label)")
    assert crit[-1] == "o" and "x1" in crit


def test_the_layout_has_no_overlapping_records(page: Any, served: ServedViewer) -> None:
    open_graph(page, served, "demo")
    boxes = page.eval_on_selector_all(
        "g.value, g.op", "els => els.map(e => { const r = e.getBoundingClientRect(); "
        "return [r.left, r.top, r.right, r.bottom]; })")
    assert len(boxes) == 15  # 10 values, 5 ops
    for i, a in enumerate(boxes):
        for b in boxes[i + 1:]:
            overlap = min(a[2], b[2]) - max(a[0], b[0]) > 0.5 and \
                min(a[3], b[3]) - max(a[1], b[1]) > 0.5
            assert not overlap, (a, b)
    # Left to right: every op lies between its inputs and its result.
    xs = page.evaluate("""() => {
      const x = (sel) => document.querySelector(sel).getBoundingClientRect().left;
      return [x('g.value[data-label="x1"]'), x('g.op[data-op-of="2"]'),
              x('g.value[data-id="2"]'), x('g.value[data-label="o"]')];
    }""")
    assert xs == sorted(xs)


def test_search_by_label_and_by_id(page: Any, served: ServedViewer) -> None:
    open_graph(page, served, "demo")
    page.fill("#search-input", "w1")
    assert page.locator("#search-results button").all_inner_texts() == [
        "w1 #1", "x1*w1 #2", "x1*w1 + x2*w2 #6"]
    page.locator("#search-results button").first.click()
    assert page.locator("g.value.sel").get_attribute("data-label") == "w1"
    page.fill("#search-input", "#7")
    page.press("#search-input", "Enter")
    assert page.locator("g.value.sel").get_attribute("data-label") == "b"


def neuron_graph(x1: float) -> opgraph.Value:
    """The seed's neuron, built locally, with x1 given."""
    from opgraph import Value

    x1v, x2 = Value(x1, label="x1"), Value(0.0, label="x2")
    w1, w2 = Value(-3.0, label="w1"), Value(1.0, label="w2")
    b = Value(6.881373587019543, label="b")
    n = x1v * w1 + x2 * w2 + b
    n.label = "n"
    o = n.tanh()
    o.label = "o"
    o.backward()
    return o


def test_a_published_version_changes_the_page_in_place(page: Any, served: ServedViewer) -> None:
    with served.client() as client:
        client.publish("live", neuron_graph(2.0))
        open_graph(page, served, "live")
        o = page.locator('g.value[data-label="o"]')
        assert o.locator("text.data").text_content() == f"data {SEED_O:.4f}"
        page.evaluate("window.__marker = 'no reload'")
        handle = o.element_handle()
        client.publish("live", neuron_graph(1.0))  # same structure, new values
        new_o = math.tanh(1.0 * -3.0 + 6.881373587019543)
        page.wait_for_function(
            "v => document.querySelector('g.value[data-label=\"o\"] text.data')"
            ".textContent === v", arg=f"data {new_o:.4f}")
        assert page.evaluate("window.__marker") == "no reload"
        # Not laid out again: the very same element, at the same place.
        assert page.evaluate("el => el.isConnected", handle)
        assert page.locator("g.value.changed").count() > 0
        # The root's value across versions, in the chart's title and as a series.
        page.wait_for_function("() => document.querySelector('.chart-box h2')"
                               f".textContent.includes('now {new_o:.4f}')")
        assert page.locator(".history path.series").get_attribute("d").count("L") >= 1
        # A change of structure is drawn anew.
        client.call("graph.eval", "live", "o * 2", {}, {"label": "doubled"})
        page.locator('g.value[data-label="doubled"]').wait_for()
        assert not page.evaluate("el => el.isConnected", handle)
        assert page.evaluate("window.__marker") == "no reload"
        client.call("graph.drop", "live")


def test_an_unknown_graph_says_so_and_opens_once_created(page: Any,
                                                         served: ServedViewer) -> None:
    page.goto(f"{served.http}#/graph/dmeo")
    message = page.locator(".page-message")
    message.wait_for()
    assert "no graph named 'dmeo'; did you mean 'demo'?" in message.inner_text()
    screenshot(page, "unknown-graph")
    with served.client() as client:
        client.call("graph.create", "dmeo", {"replace": True})
        client.call("node.leaf", "dmeo", 4.0, {"label": "late"})
        page.locator('g.value[data-label="late"]').wait_for()
        assert message.is_hidden()
        client.call("graph.drop", "dmeo")


def test_a_dropped_graph_says_so(page: Any, served: ServedViewer) -> None:
    with served.client() as client:
        client.call("graph.create", "brief", {"replace": True})
        client.call("node.leaf", "brief", 1.0, {"label": "a"})
        open_graph(page, served, "brief")
        client.call("graph.drop", "brief")
        message = page.locator(".page-message")
        message.wait_for()
        assert "graph brief was dropped" in message.inner_text()
        # ... and it comes back when it is created again.
        client.call("graph.create", "brief")
        client.call("node.leaf", "brief", 2.0, {"label": "again"})
        page.locator('g.value[data-label="again"]').wait_for()
        client.call("graph.drop", "brief")


@pytest.mark.slow
def test_a_server_that_goes_away_and_comes_back(page: Any) -> None:
    srv = ServedViewer().start()
    try:
        open_graph(page, srv, "demo")
        srv.stop()
        banner = page.locator("#banner")
        banner.wait_for()
        assert "connection to the server was closed" in banner.inner_text()
        assert "Trying again" in banner.inner_text()
        assert page.locator("#status").inner_text() == "disconnected"
        screenshot(page, "server-gone")
        srv.start()  # the same ports
        page.wait_for_selector("#status.open", timeout=20_000)
        assert page.locator("#banner.info").inner_text().startswith("The server restarted")
        page.locator('g.value[data-label="o"]').wait_for()
    finally:
        srv.stop()


class _Pages(http.server.SimpleHTTPRequestHandler):
    body = b""

    def do_GET(self) -> None:  # (the stdlib calls it by this name)
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def other_site() -> Iterator[tuple[str, type[_Pages]]]:
    """A page of another origin (a local http.server on another port)."""
    handler = type("Pages", (_Pages,), {})
    port = free_port()
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", port), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{port}/", handler
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_a_cross_origin_websocket_is_refused_in_the_browser(page: Any, served: ServedViewer,
                                                            other_site: Any) -> None:
    url, handler = other_site
    handler.body = b"<!doctype html><title>elsewhere</title>"
    page.goto(url)
    outcome = page.evaluate("""url => new Promise(resolve => {
        const ws = new WebSocket(url);
        ws.onopen = () => resolve('open');
        ws.onclose = (ev) => resolve('closed ' + ev.code);
    })""", served.ws)
    assert outcome == "closed 1006"  # the handshake was refused (403)
    deadline = time.monotonic() + 10
    while not any("cross-origin WebSocket refused" in line for line in served.log):
        assert time.monotonic() < deadline, served.log
        time.sleep(0.05)


def test_the_notebook_iframe_shows_the_viewer(page: Any, served: ServedViewer,
                                              other_site: Any) -> None:
    from opgraph.notebook import show

    url, handler = other_site  # a notebook's page: another port on localhost
    handler.body = show("demo", url=served.http)._repr_html_().encode()
    page.goto(url.replace("127.0.0.1", "localhost"))
    frame = page.frame_locator("iframe")
    assert frame.locator('g.value[data-label="o"] text.grad').text_content() == "grad 1.0000"


@pytest.mark.slow
def test_the_token_is_asked_once_per_session(page: Any) -> None:
    srv = ServedViewer(token="t0ken").start()
    try:
        page.goto(srv.http)
        form = page.locator("#token-form")
        form.wait_for()
        page.fill("#token-input", "wrong")
        page.press("#token-input", "Enter")
        page.wait_for_function("() => document.querySelector('#token-message')"
                               ".textContent.includes('refused this token')")
        page.fill("#token-input", "t0ken")
        page.press("#token-input", "Enter")
        page.locator('tr[data-graph="demo"]').wait_for()
        assert form.is_hidden()
        page.reload()  # the same tab's session: not asked again
        page.locator('tr[data-graph="demo"]').wait_for()
        assert form.is_hidden()
    finally:
        srv.stop()


def mlp_graph(points: int) -> opgraph.Value:
    """A named MLP's loss over ``points`` samples (more nodes than the page draws)."""
    model = nn.MLP(2, [4, 4, 1])
    xs = [[math.sin(i), math.cos(i * 0.7)] for i in range(points)]
    ys = [1 if i % 2 else -1 for i in range(points)]
    with opgraph.track_source():
        scores = [model(x) for x in xs]  # the line the per-sample drill-down is about
    loss = sum(((1 + -y * s).relu() for y, s in zip(ys, scores, strict=True)),
               opgraph.Value(0.0)) * (1.0 / points)
    loss.backward()
    return loss


@pytest.mark.slow
def test_a_big_graph_opens_as_the_summary_and_draws_a_part(page: Any,
                                                          served: ServedViewer) -> None:
    with served.client() as client:
        client.publish("mlp", mlp_graph(60))
        total = client.call("graph.info", "mlp")["nodes"]
        assert total > 1000
        summary = client.call("graph.aggregate", "mlp")
        open_graph(page, served, "mlp")
        assert page.locator(".toolbar .mode").inner_text() == "summary"
        assert page.locator("svg.graph g.value").count() == 0  # nothing laid out
        parts = {p["part"]: p["stats"]["count"] for p in summary["parts"] if p["depth"] == 1}
        cards = page.locator(".cards .card")
        shown = {c.locator("h3").inner_text(): c.locator(".n").inner_text()
                 for c in cards.all()}
        assert list(shown) == list(parts) == ["layer0", "layer1", "layer2"]  # by name
        for part, count in parts.items():
            assert shown[part].startswith(f"{count:,} nodes")
        screenshot(page, "summary")
        # Drill down: a layer's neurons, then draw one of them.
        page.locator('.card[data-group="layer0"] .actions button', has_text="open").click()
        neuron = page.locator('.card[data-group="layer0.neuron1"]')
        neuron.wait_for()
        neuron.locator("button", has_text="open").click()
        page.locator(".here button.draw").click()
        page.locator('g.value[data-label="layer0.neuron1.w0"]').wait_for()
        assert page.locator(".toolbar .mode").inner_text() == "part of the graph"
        drawn = page.locator("svg.graph g.value").count()
        assert 0 < drawn <= 1000
        # The parameter's consumers are outside what is drawn: the server lists them.
        page.locator('g.value[data-label="layer0.neuron1.w0"]').click()
        page.locator(".consumers .chip").first.wait_for()
        w0 = int(page.locator("g.value.sel").get_attribute("data-id"))
        records = client.call("graph.nodes", "mlp", {"count": total})["nodes"]
        users = [r["id"] for r in records if w0 in r["inputs"]]
        chips = [int(t.lstrip("#")) for t in page.locator(".consumers .chip").all_inner_texts()]
        more = page.locator(".consumers .more")
        hidden = int(more.inner_text().split()[1]) if more.count() else 0
        assert set(chips) <= set(users) and len(chips) + hidden == len(users) == 60
        # A new version updates the drawn part in place.
        handle = page.locator('g.value[data-label="layer0.neuron1.w0"]').element_handle()
        client.publish("mlp", mlp_graph(60))  # new weights, the same structure
        version = client.call("graph.info", "mlp")["version"]
        page.wait_for_function("v => document.body.dataset.version === v", arg=str(version))
        assert page.evaluate("el => el.isConnected", handle)
        new_w0 = client.call("node.get", "mlp", [w0])["nodes"][0]["data"]
        assert page.locator(f'g.value[data-id="{w0}"] text.data').text_content() == \
            f"data {new_w0:.4f}"
        page.locator("button", has_text="summary").click()  # back where it was drilled
        page.locator(".crumbs", has_text="layer0.neuron1").wait_for()
        page.locator(".crumbs a").first.click()  # and up to the top
        page.locator('.card[data-group="layer0"]').wait_for()
        client.call("graph.drop", "mlp")


def test_the_learners_page_with_a_slider(page: Any, served: ServedViewer) -> None:
    page.goto(f"{served.http}#/learn")
    page.wait_for_selector('body[data-ready="LearnPage"]')
    # The seed's first function at x = 3: f = 20, df/dx = 14, the nudge's slope 14.0003.
    assert text(page, ".f-value") == "20.0000"
    row = page.locator('.slider-row[data-leaf="x"]')
    assert row.locator(".grad").inner_text() == "14.0000"
    assert row.locator(".slope").inner_text() == "14.0003"
    assert page.locator('g.value[data-label="x"] text.grad').text_content() == "grad 14.0000"
    assert page.locator(".plot path.series.f").get_attribute("d").count("L") > 50
    screenshot(page, "learn")
    # Slide x to 2/3, where the seed finds the slope 0.
    page.eval_on_selector("#slider-x", "el => { el.value = '0.67'; "
                          "el.dispatchEvent(new Event('input')); }")
    page.wait_for_function("() => document.querySelector('.f-value').textContent === '3.6667'")
    assert row.locator(".grad").inner_text() == "0.0200"
    assert float(row.locator(".slope").inner_text()) == pytest.approx(0.0203, abs=1e-3)
    assert page.locator('g.value[data-label="x"] text.data').text_content() == "data 0.6700"
    assert page.locator(".plot").get_attribute("data-at") == "0.67"
    # Every data and grad of the graph followed: the root's record too.
    assert page.locator("g.value text.data", has_text="data 3.6667").count() == 1
    # Another expression, with three leaves: three sliders.
    page.fill("#expression", "a*b + c")
    page.press("#expression", "Enter")
    page.locator('.slider-row[data-leaf="c"]').wait_for()
    assert page.locator(".slider-row").count() == 3
    page.wait_for_function("() => document.querySelector('.f-value').textContent === '4.0000'")
    assert page.locator('.slider-row[data-leaf="a"] .grad').inner_text() == "-3.0000"
    # A wrong expression says what is wrong, and where.
    page.fill("#expression", "3*x +")
    page.press("#expression", "Enter")
    error = page.locator(".learn-page .page-message.error")
    error.wait_for()
    assert error.inner_text().startswith("bad_expression:")


@pytest.mark.slow
def test_a_source_line_splits_per_call(page: Any, served: ServedViewer) -> None:
    """The line that ran once per sample opens as one group per call; a call is drawn."""
    with served.client() as client:
        client.publish("mlp2", mlp_graph(60))
        summary = client.call("graph.aggregate", "mlp2")
        (line,) = summary["lines"]
        assert line["calls"] == 60
        open_graph(page, served, "mlp2")
        page.locator(".tabs button", has_text="source lines").click()
        card = page.locator(f'.card[data-group="test_page.py:{line["line"]}"]')
        card.wait_for()
        assert page.locator(".cards .card").count() == 1
        card.locator("button", has_text="open").click()
        page.locator('.card[data-group="call 59"]').wait_for()
        assert page.locator(".cards .card").count() == 60
        assert page.locator('.here .split button[data-by="call"]').get_attribute("class") == "on"
        first = page.locator('.card[data-group="call 0"]')
        count = int(first.locator(".n").inner_text().split()[0])
        assert count == line["period"]
        first.locator("button.draw").click()
        page.wait_for_function("n => document.querySelectorAll('svg.graph g.value').length >= n",
                               arg=count)
        # The call's nodes are drawn; what they use from elsewhere (the weights) as stubs.
        assert page.locator("svg.graph g.stub").count() > 0
        stub = page.locator("svg.graph g.stub").first
        stub_id = stub.get_attribute("data-stub")
        stub.click()  # expand: the node is drawn with the rest
        page.locator(f'svg.graph g.value[data-id="{stub_id}"]').wait_for()
        # Split the same nodes another way: by position in the call.
        page.locator("button", has_text="summary").click()
        page.locator('.here .split button[data-by="position"]').click()
        page.locator('.card[data-group^="position 0"]').wait_for()
        assert page.locator(".cards .card").count() == min(60, line["period"])
        client.call("graph.drop", "mlp2")


def test_a_long_chain_over_shared_leaves_is_laid_out_in_linear_space(page: Any,
                                                                     served: ServedViewer) -> None:
    """x = tanh(x*w + b) 300 times: w and b are used in every layer. Their edges must not be
    broken into a dummy point per layer crossed (300 uses x 600 layers), only the short ones."""
    page.goto(served.http)
    page.wait_for_selector("body[data-ready]")
    counts = page.evaluate("""async () => {
      const { layout, recordGraph } = await import('./layout.js');
      const recs = [{id: 0, op: null, inputs: []}, {id: 1, op: null, inputs: []},
                    {id: 2, op: null, inputs: []}];
      let x = 2;
      for (let i = 3; i < 903; i += 3) {
        recs.push({id: i, op: 'mul', inputs: [x, 0]}, {id: i + 1, op: 'add', inputs: [i, 1]},
                  {id: i + 2, op: 'tanh', inputs: [i + 1]});
        x = i + 2;
      }
      const g = recordGraph(recs);
      const r = layout(g);
      const points = Object.values(r.routes).reduce((s, pts) => s + pts.length, 0);
      return { edges: g.edges.length, points,
               chain: [r.pos.v2.x, r.pos.o3.x, r.pos.v3.x, r.pos.v902.x] };
    }""")
    assert counts["points"] <= 6 * counts["edges"], counts
    assert counts["chain"] == sorted(counts["chain"])  # still left to right


ASKED = """() => {
  // Every request the page sends from now on, with its parameters; with window.__slow set,
  // graph.aggregate is sent that many ms late (a server slow to summarise).
  if (window.__asked) { window.__asked = []; return; }
  const rpc = window.opgraph.rpc;
  const send = rpc._call.bind(rpc);
  window.__asked = [];
  rpc.addEventListener("notification", (ev) => window.__asked.push(["(notified)", ev.detail]));
  rpc._call = (method, params) => {
    window.__asked.push([method, params]);
    if (method === "graph.aggregate" && window.__slow) {
      return new Promise((resolve) => setTimeout(resolve, window.__slow))
        .then(() => send(method, params));
    }
    return send(method, params);
  };
}"""


def cards_text(page: Any) -> dict[str, str]:
    return {c.get_attribute("data-group"): c.inner_text()
            for c in page.locator(".cards .card").all()}


@pytest.mark.slow
def test_a_new_version_of_a_summary_asks_only_for_the_tab_shown(page: Any,
                                                                  served: ServedViewer) -> None:
    """A step published again (values only): the top level asks for the groups of its tab and
    the totals (a drill-down by part, then by op), not the whole summary, and shows what a page
    opened afresh shows; the chart writes versions out whole."""
    with served.client() as client:
        client.publish("mlp3", mlp_graph(60))
        open_graph(page, served, "mlp3")
        page.locator('.card[data-group="layer0"]').wait_for()
        version = client.call("graph.info", "mlp3")["version"]
        assert version >= 1000
        assert page.locator(".history svg text").all_text_contents()[-1] == f"{version:,}"
        for tab, by in (("model parts", "part"), ("ops", "op")):
            if by == "op":
                page.locator(".tabs button", has_text="ops").click()
                page.locator('.card[data-group="relu"]').wait_for()
            before = cards_text(page)
            page.evaluate(ASKED)
            client.publish("mlp3", mlp_graph(60))  # new weights, the same structure
            new = client.call("graph.info", "mlp3")["version"]
            page.wait_for_function("v => document.body.dataset.version === v", arg=str(new))
            assert page.locator(".toolbar .version").inner_text() == f"version {new:,}"
            asked = [p for m, p in page.evaluate("window.__asked") if m == "graph.aggregate"]
            assert asked == [["mlp3", {"by": by, "limit": 60, "members": 0}]], (tab, asked)
            shown = cards_text(page)
            assert shown != before and set(shown) == set(before)
            totals = page.locator(".summary .totals").inner_text()
            # What a page opened afresh (the whole summary) shows of the same version.
            fresh = page.context.new_page()
            open_graph(fresh, served, "mlp3")
            if by == "op":
                fresh.locator(".tabs button", has_text="ops").click()
                fresh.locator('.card[data-group="relu"]').wait_for()
            assert cards_text(fresh) == shown
            assert fresh.locator(".summary .totals").inner_text() == totals
            fresh.close()
        axis = page.locator(".history svg text").all_text_contents()[-2:]
        assert axis == [f"{version:,}", f"{new:,}"]
        client.call("graph.drop", "mlp3")


@pytest.mark.slow
def test_a_summary_that_takes_a_while_says_so(page: Any, served: ServedViewer) -> None:
    """Asked for and not there yet: the page says the server is summarising (not an empty
    page). More top-level parts than the summary lists: the tab says how many it shows. One
    node is '1 node'."""
    with served.client() as client:
        client.call("graph.create", "parts", {"replace": True})
        x: object = client.call("node.leaf", "parts", 0.5, {"label": "a"})["id"]
        steps = []
        for k in range(1200):
            steps.append({"op": "tanh", "inputs": [x], "label": f"p{k // 10}.t{k}"})
            x = f"${k}"
        client.call("graph.batch", "parts", steps)
        page.goto(served.http)
        page.wait_for_selector('body[data-ready="ListPage"]')
        page.evaluate(ASKED)
        page.evaluate("window.__slow = 1500; location.hash = '#/graph/parts'")
        note = page.locator(".summary .working")
        note.wait_for()
        assert "summarising the 1,201 nodes of parts" in note.inner_text()
        page.locator('.card[data-group="p0"]').wait_for()
        assert note.count() == 0
        tab = page.locator(".tabs button", has_text="model parts").inner_text()
        assert tab == "model parts (first 60)"
        assert page.locator(".summary .more").inner_text().startswith("The first 60 model parts")
        assert page.locator('.card[data-group="a"] .n').inner_text() == "1 node, 1 leaf"
        page.evaluate("window.__slow = 0")
        client.call("graph.drop", "parts")
