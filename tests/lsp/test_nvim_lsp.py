"""A real Neovim (the Debian 0.7.2 headless build) using its built-in LSP client against
``opgraph lsp``: diagnostics and hover on the seed's neuron, and diagnostics that follow edits.
(Neovim 0.7 has no inlay hints; 0.10 and later show them: see docs/editors.md.)"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from lsp_harness import NEURON, lsp_command
from opgraph_client import Client

import opgraph

NVIM = shutil.which("nvim")
HARNESS = Path(__file__).with_name("nvim_lsp.lua")
DOC_CHECK = Path(__file__).with_name("nvim_doc_check.lua")
DOCS = Path(__file__).resolve().parents[2] / "docs" / "editors.md"

pytestmark = pytest.mark.skipif(NVIM is None, reason="nvim is not installed")

# The seed's neuron, then a second neuron driven into saturation on its own leaves.
FILE = NEURON + textwrap.dedent('''\

    sx = Value(3.0, label="sx")
    big = (sx * 10).tanh(); big.label = "big"
    big.backward()
''')
O_LINE = 13  # o = n.tanh()
BIG_LINE = 17  # big = (sx * 10).tanh()


def test_neovim_0_7_shows_diagnostics_and_hover_from_opgraph_lsp(graph_server, tmp_path):
    path = tmp_path / "seed_neuron.py"
    path.write_text(FILE)
    with opgraph.track_source():
        import runpy

        namespace = runpy.run_path(str(path))
    with Client(graph_server.tcp) as client:
        client.publish("neuron", namespace["o"])
        client.publish("saturated", namespace["big"])
    out = tmp_path / "seen.json"
    env = {**os.environ, "OPGRAPH_OUT": str(out), "OPGRAPH_FILE": str(path),
           "OPGRAPH_HOVER_LINE": str(O_LINE),
           "OPGRAPH_LSP_CMD": json.dumps(lsp_command(graph_server.tcp))}
    subprocess.run([NVIM, "--headless", "-u", "NONE", "-i", "NONE", "-n",
                    "-c", f"luafile {HARNESS}"], env=env, cwd=tmp_path, timeout=120,
                   stdin=subprocess.DEVNULL, capture_output=True, check=False)
    seen = json.loads(out.read_text())
    assert "error" not in seen, seen.get("error")
    assert seen["version"].startswith("NVIM v0.7")
    assert seen["capabilities"] == {"hover": True, "inlay": True, "code_lens": True}

    saturated = [d for d in seen["diagnostics"] if d["code"] == "saturated-tanh"]
    assert len(saturated) == 1
    (d,) = saturated
    assert d["lnum"] == BIG_LINE and d["col"] == 0 and d["source"] == "opgraph"
    assert d["severity"] == 2  # vim.diagnostic.severity.WARN

    assert seen["hover"].startswith("**opgraph** graph `neuron` version")
    assert "| `o` #9 | `tanh` | `n` | 0.707107 | 1 |" in seen["hover"]
    window = "\n".join(seen["hover_window"])
    assert "opgraph" in window and "0.707107" in window  # what K shows

    moved = [d for d in seen["after_insert"] if d["code"] == "saturated-tanh"]
    assert [d["lnum"] for d in moved] == [BIG_LINE + 2]
    assert not [d for d in seen["after_edit"] if d["code"] == "saturated-tanh"]
    assert seen["stopped"] is True
    assert seen["messages"] == []  # the graph server was there: nothing to say




def lua_block(page: Path, first_line: str) -> str:
    """The ```lua block of ``page`` that starts with ``first_line``."""
    for block in re.findall(r"```lua\n(.*?)```", page.read_text(), flags=re.S):
        if block.startswith(first_line):
            return block
    raise AssertionError(f"{page}: no lua block starting {first_line!r}")


def test_the_neovim_0_7_snippet_of_the_docs_draws_the_servers_hints(graph_server, tmp_path):
    snippet = lua_block(DOCS, "-- Neovim 0.7 to 0.9")
    assert "'tcp://127.0.0.1:7450'" in snippet
    init = tmp_path / "init.lua"
    init.write_text(snippet.replace("'tcp://127.0.0.1:7450'", repr(graph_server.tcp)))
    path = tmp_path / "neuron.py"
    path.write_text(FILE)
    with opgraph.track_source():
        import runpy

        namespace = runpy.run_path(str(path))
    with Client(graph_server.tcp) as client:
        client.publish("neuron", namespace["o"])
        client.publish("saturated", namespace["big"])
    out = tmp_path / "seen.json"
    env = {**os.environ, "OPGRAPH_OUT": str(out),
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    subprocess.run([NVIM, "--headless", "-u", str(init), "-i", "NONE", "-n", str(path),
                    "-c", f"luafile {DOC_CHECK}"], env=env, cwd=tmp_path, timeout=120,
                   stdin=subprocess.DEVNULL, capture_output=True, check=False)
    seen = json.loads(out.read_text())
    assert "error" not in seen, seen.get("error")
    hints = {h["line"]: h["text"].strip() for h in seen["hints"]}
    assert hints[O_LINE] == "neuron: o = 0.7071 ∇ 1"  # (two graphs in the file: named)
    assert hints[BIG_LINE].startswith("saturated: ") and "big = 1 ∇ " in hints[BIG_LINE]
    assert any(d["lnum"] == BIG_LINE and "saturated" in d["message"]
               for d in seen["diagnostics"])
