"""``opgraph lsp`` over stdio, driven by pytest-lsp as an editor would, against a real graph
server: hints, refreshes, edits, diagnostics, hovers, lenses, commands, configuration."""

from __future__ import annotations

import asyncio
import math
import os
import textwrap
from pathlib import Path

import pytest
from lsp_harness import (
    LINE,
    MANY,
    SATURATED,
    TIMEOUT,
    VSCODE,
    editor,
    publish,
    run_script,
)
from lsprotocol import types as lsp
from opgraph_lsp.lines import unit_length
from opgraph_lsp.paths import path_to_uri, uri_to_path
from opgraph_lsp.views import num
from pygls.exceptions import JsonRpcException

pytestmark = pytest.mark.asyncio


def x1_is_1(hints: dict[int, list[str]], line: int) -> bool:
    """Whether ``line`` shows x1 = 1 (the neuron run again with x1 changed from 2)."""
    return bool(hints.get(line)) and hints[line][0].startswith("x1 = 1 ∇ ")


# --- inlay hints ---------------------------------------------------------------------------------


async def test_hints_at_line_ends_with_values_gradients_and_a_tooltip(graph_server, neuron_file):
    publish(graph_server.tcp, "neuron", neuron_file)
    async with editor(graph_server.tcp) as ed:
        uri = ed.open(neuron_file)
        got = await ed.wait_hints(uri, lambda h: LINE["o"] in h, "the neuron's hints")
        assert got[LINE["o"]] == ["o = 0.7071 ∇ 1"]
        assert got[LINE["x1"]] == ["x1 = 2 ∇ -1.5"]
        assert got[LINE["x1*w1"]] == ["x1*w1 = -6 ∇ 0.5"]
        assert got[LINE["w2"]] == ["w2 = 1 ∇ 0"]
        assert set(got) == set(LINE.values())  # nothing on blank lines, imports, o.backward()
        hints = {h.position.line: h for h in await ed.hints(uri)}
        lines = neuron_file.read_text().splitlines()
        n = hints[LINE["n"]]
        assert n.position.character == unit_length(lines[LINE["n"]], "utf-16")  # at the end
        assert n.padding_left
        assert n.tooltip.kind == lsp.MarkupKind.Markdown
        assert "graph `neuron` version" in n.tooltip.value
        assert "| `n` #8 | `add` | `x1*w1 + x2*w2`, `b` | 0.881374 | 0.5 |" in n.tooltip.value
        # a range asks only for its lines
        assert {h.position.line for h in await ed.hints(uri, 8, 10)} == {8, 9, 10}


async def test_a_line_of_many_nodes_shows_their_summary(graph_server, tmp_path):
    path = tmp_path / "many.py"
    path.write_text(MANY)
    publish(graph_server.tcp, "many", path, root="out")
    # the statistics of line 4 (0-based 3), recomputed from the script's own values
    out = run_script(path, "out")
    seen, stack, line_nodes = set(), [out], []
    while stack:
        v = stack.pop()
        if id(v) in seen:
            continue
        seen.add(id(v))
        stack.extend(v._prev)
        if v.source is not None and v.source[1] == 4:
            line_nodes.append(v)
    data = [v.data for v in line_nodes]
    norm = math.sqrt(sum(v.grad ** 2 for v in line_nodes))
    async with editor(graph_server.tcp) as ed:
        uri = ed.open(path)
        got = await ed.wait_hints(uri, lambda h: 3 in h and 4 in h, "the summary")
        assert got[3] == [f"{len(line_nodes):,} nodes · data [{num(min(data))}, "
                          f"{num(max(data))}] · ‖∇‖ {num(norm)}"]
        assert got[4] == ["out = 1 ∇ 1"]
        hover = await ed.hover(uri, 3)
        assert f"{len(line_nodes):,} nodes on this line" in hover.contents.value
        assert "ops: `add` 500, `mul` 500; leaves 1" in hover.contents.value


async def test_a_new_publish_asks_the_editor_to_refresh_and_shows_new_values(graph_server,
                                                                             neuron_file):
    publish(graph_server.tcp, "neuron", neuron_file)
    async with editor(graph_server.tcp) as ed:
        uri = ed.open(neuron_file)
        await ed.wait_hints(uri, lambda h: LINE["o"] in h, "the first hints")
        before = ed.refreshes
        neuron_file.write_text(neuron_file.read_text().replace("Value(2.0", "Value(1.0"))
        for _ in range(10):  # a training loop publishing every step
            publish(graph_server.tcp, "neuron", neuron_file)
        await ed.wait_for(lambda: ed.refreshes > before, "workspace/inlayHint/refresh")
        got = await ed.wait_hints(uri, lambda h: x1_is_1(h, LINE["x1"]),
                                  "the new values")
        assert got[LINE["o"]] == [f"o = {num(math.tanh(-3 + 6.8813735870195432))} ∇ 1"]
        await asyncio.sleep(0.5)
        assert ed.refreshes - before < 10  # debounced: fewer refreshes than publishes


async def test_hints_follow_edits_and_leave_changed_lines(graph_server, neuron_file):
    publish(graph_server.tcp, "neuron", neuron_file)
    async with editor(graph_server.tcp) as ed:
        uri = ed.open(neuron_file)
        await ed.wait_hints(uri, lambda h: LINE["o"] in h, "hints")
        ed.edit(uri, (0, 0), (0, 0), "# a comment\n# another\n")
        got = await ed.hints_by_line(uri)
        assert got[LINE["o"] + 2] == ["o = 0.7071 ∇ 1"] and LINE["o"] not in got
        n = LINE["n"] + 2
        ed.edit(uri, (n, 4), (n, 4), "2 * ")  # n = 2 * x1w1x2w2 + b: not what ran
        got = await ed.hints_by_line(uri)
        assert n not in got and got[n + 1] == ["o = 0.7071 ∇ 1"]
        ed.edit(uri, (n, 4), (n, 8), "")  # undone: the line is as it ran again
        got = await ed.hints_by_line(uri)
        assert got[n] == ["n = 0.8814 ∇ 0.5"]
        ed.edit(uri, (0, 0), (2, 0), "")  # the two comment lines deleted
        got = await ed.hints_by_line(uri)
        assert got[LINE["o"]] == ["o = 0.7071 ∇ 1"]
        # a save makes the buffer the file the next run reads: edits before it carry over
        ed.edit(uri, (0, 0), (0, 0), "import math\n")
        ed.client.text_document_did_save(lsp.DidSaveTextDocumentParams(
            lsp.TextDocumentIdentifier(uri), text="import math\n" + neuron_file.read_text()))
        got = await ed.hints_by_line(uri)
        assert got[LINE["o"] + 1] == ["o = 0.7071 ∇ 1"]
        neuron_file.write_text("import math\n" + neuron_file.read_text())
        neuron_file.write_text(neuron_file.read_text().replace("Value(2.0", "Value(1.0"))
        publish(graph_server.tcp, "neuron", neuron_file)  # the saved file run again
        got = await ed.wait_hints(uri, lambda h: x1_is_1(h, LINE["x1"] + 1),
                                  "the new run's values on the saved lines")


async def test_documents_of_no_graph_get_nothing(graph_server, neuron_file, tmp_path):
    publish(graph_server.tcp, "neuron", neuron_file)
    other = tmp_path / "other.py"
    other.write_text("x = 1\n")
    async with editor(graph_server.tcp) as ed:
        uri = ed.open(other)
        ed.open(neuron_file)
        await ed.wait_hints(path_to_uri(str(neuron_file)), bool, "the neuron's hints")
        assert await ed.hints(uri) == []
        assert await ed.hover(uri, 0) is None
        assert await ed.client.text_document_code_lens_async(lsp.CodeLensParams(
            lsp.TextDocumentIdentifier(uri))) is None
        assert uri not in ed.client.diagnostics


async def test_a_document_reached_by_symlink_and_percent_encoded_uri(graph_server, tmp_path):
    real_dir = tmp_path / "the project"
    real_dir.mkdir()
    real = real_dir / "neuron.py"
    from lsp_harness import NEURON

    real.write_text(NEURON)
    link = tmp_path / "linked.py"
    os.symlink(real, link)
    publish(graph_server.tcp, "neuron", link)  # the script run through the symlink
    async with editor(graph_server.tcp) as ed:
        uri = ed.open(real)  # the editor opened the real file, a %20 in its URI
        assert "%20" in uri and uri_to_path(uri) == str(real)
        got = await ed.wait_hints(uri, lambda h: LINE["o"] in h, "hints through the symlink")
        assert got[LINE["o"]] == ["o = 0.7071 ∇ 1"]


# --- diagnostics, hover, lenses, commands ------------------------------------------------------


SATURATING_LINE = textwrap.dedent('''\
    from opgraph import Value

    xs = [Value(float(i + 1), label=f"x{i}") for i in range(5)]
    outs = [(x * 10).tanh() for x in xs]
    total = sum(outs, Value(0.0)); total.label = "total"
    total.backward()
''')


async def test_diagnostics_at_the_nodes_lines_grouped_with_code_severity_and_source(
        graph_server, tmp_path):
    path = tmp_path / "saturating.py"
    path.write_text(SATURATING_LINE)
    publish(graph_server.tcp, "sat", path, root="total")
    async with editor(graph_server.tcp) as ed:
        uri = ed.open(path)
        await ed.wait_for(lambda: ed.client.diagnostics.get(uri), "publishDiagnostics")
        diags = ed.client.diagnostics[uri]
        saturated = [d for d in diags if d.code == "saturated-tanh"]
        assert len(saturated) == 1  # five nodes on one line: one diagnostic, counted
        d = saturated[0]
        assert d.range.start.line == 3 and d.range.start.character == 0
        assert d.range.end.character == len(SATURATING_LINE.splitlines()[3])
        assert d.source == "opgraph"
        assert d.severity == lsp.DiagnosticSeverity.Warning
        assert "(5 on this line)" in d.message
        assert d.data["graph"] == "sat" and d.data["count"] == 5
        hover = await ed.hover(uri, 3)
        assert "`saturated-tanh`" in hover.contents.value
        # an edit of that line: its diagnostic goes, as the code it describes is gone
        ed.edit(uri, (3, 0), (3, 0), "#")
        await ed.wait_for(lambda: not [d for d in ed.client.diagnostics[uri]
                                       if d.code == "saturated-tanh"], "the diagnostic cleared")
        listed = await ed.command("opgraph.diagnostics", "sat")
        assert listed["graph"] == "sat"
        group = next(g for g in listed["groups"] if g["code"] == "saturated-tanh")
        assert group["line"] == 4 and group["count"] == 5 and len(group["nodes"]) == 5


async def test_hover_is_markdown_with_each_node(graph_server, neuron_file):
    publish(graph_server.tcp, "neuron", neuron_file)
    async with editor(graph_server.tcp) as ed:
        uri = ed.open(neuron_file)
        await ed.wait_hints(uri, bool, "hints")
        hover = await ed.hover(uri, LINE["o"])
        assert hover.contents.kind == lsp.MarkupKind.Markdown
        value = hover.contents.value
        assert value.startswith("**opgraph** graph `neuron` version")
        assert "| `o` #9 | `tanh` | `n` | 0.707107 | 1 |" in value
        assert hover.range.start.line == LINE["o"]
        assert await ed.hover(uri, 1) is None  # a blank line


async def test_code_lenses_and_commands(graph_server, neuron_file, tmp_path):
    publish(graph_server.tcp, "neuron", neuron_file)
    async with editor(graph_server.tcp) as ed:
        uri = ed.open(neuron_file)
        await ed.wait_hints(uri, bool, "hints")
        lenses = await ed.client.text_document_code_lens_async(lsp.CodeLensParams(
            lsp.TextDocumentIdentifier(uri)))
        commands = [(lens.command.title, lens.command.command, list(lens.command.arguments))
                    for lens in lenses]
        assert ("gradcheck", "opgraph.gradcheck", ["neuron"]) in commands
        assert ("render", "opgraph.render", ["neuron"]) in commands
        assert commands[0][0].startswith("opgraph neuron v") and "10 nodes" in commands[0][0]
        assert all(lens.range.start.line == LINE["x1"] for lens in lenses)

        check = await ed.command("opgraph.gradcheck", "neuron")
        assert check["ok"] is True and check["leaves"] == 5 and check["root"] == 9
        await ed.wait_for(lambda: any("gradcheck of 'neuron'" in m.message
                                      for m in ed.messages), "the gradcheck message")

        picture = await ed.command("opgraph.render", "neuron")
        path = Path(uri_to_path(picture["uri"]))
        assert path.read_text().lstrip().startswith(("<?xml", "<svg"))
        assert picture["drawn"] == "graph" and picture["nodes"] == 10

        around = await ed.command("opgraph.render", "neuron", uri, LINE["x1*w1"], 1)
        assert around["drawn"] == "neighbourhood" and around["nodes"] < 10
        assert Path(uri_to_path(around["uri"])).exists()

        with pytest.raises(JsonRpcException, match="no node of graph 'neuron'"):
            await ed.command("opgraph.render", "neuron", uri, 1)
        with pytest.raises(JsonRpcException, match="unknown_graph"):
            await ed.command("opgraph.gradcheck", "nope")


async def test_vscode_capabilities_diagnostics_hover_lenses_and_no_inlay_refresh(
        graph_server, tmp_path):
    path = tmp_path / "sat.py"
    path.write_text(SATURATED)
    publish(graph_server.tcp, "sat", path)
    async with editor(graph_server.tcp, VSCODE) as ed:
        uri = ed.open(path)
        await ed.wait_for(lambda: ed.client.diagnostics.get(uri), "publishDiagnostics")
        (d,) = [d for d in ed.client.diagnostics[uri] if d.code == "saturated-tanh"]
        assert d.range.start.line == 4 and d.source == "opgraph"
        hover = await ed.hover(uri, 4)
        assert "| `o` #3 | `tanh` | `n` |" in hover.contents.value
        lenses = await ed.client.text_document_code_lens_async(lsp.CodeLensParams(
            lsp.TextDocumentIdentifier(uri)))
        assert lenses
        publish(graph_server.tcp, "sat", path)
        await ed.wait_for(lambda: ed.lens_refreshes > 0, "workspace/codeLens/refresh")
        assert ed.refreshes == 0  # VS Code 1.65's client has no inlay hint refresh


async def test_neovim_0_7_capabilities_hover_and_diagnostics(graph_server, tmp_path):
    path = tmp_path / "sat.py"
    path.write_text(SATURATED)
    publish(graph_server.tcp, "sat", path)
    async with editor(graph_server.tcp, "neovim@v0.7.0") as ed:
        uri = ed.open(path)
        await ed.wait_for(lambda: ed.client.diagnostics.get(uri), "publishDiagnostics")
        hover = await ed.hover(uri, 4)
        assert hover.contents.kind == lsp.MarkupKind.Markdown
        publish(graph_server.tcp, "sat", path)
        await asyncio.sleep(0.5)
        assert ed.refreshes == 0 and ed.lens_refreshes == 0  # it has neither refresh


# --- configuration -----------------------------------------------------------------------------


async def test_the_url_from_initialization_options_and_from_settings(graph_server, neuron_file,
                                                                     tmp_path):
    from server_harness import ThreadedServer

    publish(graph_server.tcp, "neuron", neuron_file)
    dead = "tcp://127.0.0.1:9"  # (discard: nothing listens)
    async with editor(dead, options={"url": graph_server.tcp}) as ed:
        uri = ed.open(neuron_file)
        await ed.wait_hints(uri, lambda h: LINE["o"] in h, "hints from the option's server")
        assert not [m for m in ed.messages if m.type == lsp.MessageType.Warning]
        other = ThreadedServer(demo=False, unix=False)
        try:
            neuron_file.write_text(neuron_file.read_text().replace("Value(2.0", "Value(1.0"))
            publish(other.tcp, "neuron", neuron_file)
            ed.client.workspace_did_change_configuration(lsp.DidChangeConfigurationParams(
                settings={"opgraph": {"url": other.tcp}}))
            await ed.wait_hints(uri, lambda h: x1_is_1(h, LINE["x1"]),
                                "hints from the other server")
            ed.client.workspace_did_change_configuration(lsp.DidChangeConfigurationParams(
                settings={"opgraph": {"url": "http://nope"}}))
            await ed.wait_for(lambda: [m for m in ed.messages if m.type == lsp.MessageType.Error
                                       and "the setting 'url'" in m.message
                                       and "http://nope" in m.message], "the error")
            assert x1_is_1(await ed.hints_by_line(uri), LINE["x1"])
        finally:
            other.stop()


async def test_commands_name_the_graph_when_it_is_missing(graph_server, neuron_file):
    async with editor(graph_server.tcp) as ed:
        with pytest.raises(JsonRpcException, match="name the graph as the first argument"):
            await ed.command("opgraph.gradcheck")
        publish(graph_server.tcp, "neuron", neuron_file)
        uri = ed.open(neuron_file)
        await ed.wait_hints(uri, bool, "hints")
        result = await asyncio.wait_for(ed.command("opgraph.gradcheck"), TIMEOUT)
        assert result["graph"] == "neuron"  # the one graph the documents show



async def test_gradcheck_of_a_graph_of_many_leaves_checks_a_sample(graph_server, tmp_path):
    path = tmp_path / "many.py"
    path.write_text(MANY)
    publish(graph_server.tcp, "many", path, root="out")
    async with editor(graph_server.tcp) as ed:
        uri = ed.open(path)
        await ed.wait_hints(uri, bool, "hints")
        check = await ed.command("opgraph.gradcheck", "many")
        assert check["leaves"] == 100 and check["total_leaves"] == 501
        await ed.wait_for(lambda: [m for m in ed.messages
                                   if "100 leaves (a sample of the 501)" in m.message],
                          "the gradcheck message")
        every = await ed.command("opgraph.gradcheck", "many", {"sample": 501})
        assert every["leaves"] == 501
