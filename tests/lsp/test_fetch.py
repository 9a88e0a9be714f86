"""What the language server reads from a real graph server: the lines of the open documents
only, the same through ``graph.aggregate`` as node by node, and the statistics right against a
plain recomputation from the script's own values."""

from __future__ import annotations

import math
import textwrap
from pathlib import Path

import pytest
from lsp_harness import run_script
from opgraph_client import AsyncClient, Client
from opgraph_lsp.fetch import Fetcher, TooBig

A = textwrap.dedent('''\
    import runpy
    from pathlib import Path

    from opgraph import Value

    made = runpy.run_path(str(Path(__file__).with_name("b.py")))["make"](300)
    ws = [Value(0.5 - i / 7) for i in range(40)]
    acts = [(w * m).relu() for w, m in zip(ws, made)]
    total = sum(acts, Value(0.0))
    out = total.tanh(); out.label = "out"
    out.backward()
''')
B = textwrap.dedent('''\
    from opgraph import Value


    def make(n):
        return [Value(float(i) / n - 0.25) for i in range(n)]
''')


@pytest.fixture
def two_files(tmp_path: Path) -> tuple[Path, Path]:
    a, b = tmp_path / "a.py", tmp_path / "b.py"
    a.write_text(A)
    b.write_text(B)
    return a, b


def recompute(root, file: str) -> dict[int, list]:
    """The nodes of each line of ``file`` under ``root``, from the script's own values."""
    seen, stack, lines = set(), [root], {}
    while stack:
        v = stack.pop()
        if id(v) in seen:
            continue
        seen.add(id(v))
        stack.extend(v._prev)
        if v.source is not None and v.source[0] == file:
            lines.setdefault(v.source[1], []).append(v)
    return lines


@pytest.mark.asyncio
@pytest.mark.parametrize("way", ["aggregate", "pages"])
async def test_only_the_wanted_files_lines_are_kept_and_their_statistics_are_right(
        graph_server, two_files, way):
    a, b = two_files
    root = run_script(a, "out")
    with Client(graph_server.tcp) as c:
        c.publish("g", root)
        methods = set(c.server_info["methods"])
        total = c.call("graph.info", "g")["nodes"]
    assert "graph.aggregate" in methods
    if way == "pages":
        methods.discard("graph.aggregate")
    client = await AsyncClient.connect(graph_server.tcp)
    try:
        fetcher = Fetcher(client.call, methods, page=100)  # (small pages: several of them)
        got = await fetcher.lines("g", lambda f: f == str(a))
    finally:
        await client.close()
    assert set(got.files) == {str(a)}  # b.py's nodes are not kept ...
    assert got.all_files == {str(a), str(b)}  # ... only its name
    expected = recompute(root, str(a))
    assert set(got.files[str(a)]) == set(expected)
    for line, values in expected.items():
        data = got.files[str(a)][line]
        assert data.count == len(values), line
        finite = [v.data for v in values if math.isfinite(v.data)]
        assert data.stats["data"]["min"] == min(finite)
        assert data.stats["data"]["max"] == max(finite)
        assert data.stats["grad_norm"] == pytest.approx(
            math.sqrt(sum(v.grad ** 2 for v in values)))
        assert data.stats["zero_grad"] == sum(v.grad == 0 for v in values)
        if len(values) <= fetcher.few:
            assert sorted(n.data for n in data.nodes) == sorted(v.data for v in values)
        else:
            assert data.nodes == []
    assert got.files[str(a)][10].label() == f"out = {root.data:.4g} ∇ 1"
    assert got.nodes == total


@pytest.mark.asyncio
async def test_a_graph_too_big_to_read_node_by_node_says_so(graph_server, two_files):
    a, _ = two_files
    with Client(graph_server.tcp) as c:
        c.publish("g", run_script(a, "out"))
        total = c.call("graph.info", "g")["nodes"]
    client = await AsyncClient.connect(graph_server.tcp)
    try:
        fetcher = Fetcher(client.call, [], max_paged_nodes=100)
        with pytest.raises(TooBig, match=f"has {total} nodes; without graph.aggregate"):
            await fetcher.lines("g", lambda f: True)
    finally:
        await client.close()
