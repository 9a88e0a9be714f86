"""The README's snippets work when copied, and show what they really print.

Python blocks run in fresh interpreters (the tour in order, as its snippets build on each
other); their ``# value`` comments and the output blocks after them are checked. Shell blocks
with ``$ command`` lines run at a pseudo-terminal and must show what the README shows. The
example plugin's blocks are installed and run by ``tests/plugins/test_example_plugin.py``.
The docs pages' snippets are run by ``test_doc_pages.py``.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from opgraph_client import Client
from readme_snippets import (
    DEFAULT_URL,
    DOCS,
    README,
    ROOT,
    Block,
    assert_ran,
    blocks,
    check_pictures,
    check_session,
    opgraph_args,
    package_files,
    picture_size,
    run_python,
    shell_session,
)
from server_harness import ProcessServer, ThreadedServer

TOUR = "A quick tour: the walk-through, on opgraph"
PLUGIN = "Writing an op plugin"
CLI = "The CLI"
SERVER = "The server"
CLIENT = "Python client"

RUN_HERE = {TOUR, CLIENT}
"""Headings whose Python blocks the tests below run (the plugin's are installed instead)."""


def _python(heading: str, *, but: str | None = None) -> list[Block]:
    found = [b for b in blocks() if b.lang == "python" and b.under(heading)
             and (but is None or not b.under(but))]
    assert found, f"no Python block under {heading!r} in README.md"
    return found


def _session(heading: str) -> Block:
    """The first block of ``$ ...`` lines directly under ``heading``."""
    for block in blocks():
        if block.headings[-1:] == (heading,) and block.text.startswith("$ "):
            return block
    raise AssertionError(f"no shell block under {heading!r} in README.md")


def test_every_python_block_is_run_somewhere() -> None:
    untested = [b.line for b in blocks() if b.lang == "python"
                and not any(b.under(h) for h in RUN_HERE | {PLUGIN})]
    assert untested == [], f"README.md: Python blocks no test runs, at lines {untested}"


def test_the_tour_runs_in_order_and_says_what_it_prints(tmp_path: Path) -> None:
    snippets = _python(TOUR)
    assert len(snippets) >= 4
    assert_ran(run_python(snippets, cwd=tmp_path), snippets)


def _svg_texts(svg: str) -> list[str]:
    return sorted(re.findall(r"<text[^>]*>([^<]*)</text>", svg))


def test_the_committed_picture_is_made_as_the_readme_says(tmp_path: Path) -> None:
    """The README's two steps, from the tour's neuron, draw docs/seed-neuron.svg."""
    text = " ".join(README.read_text().split())
    made = re.search(r"\[docs/seed-neuron\.svg\]\(docs/seed-neuron\.svg\) is this neuron as "
                     r"`opgraph render` draws it, made by `([^`]+)`, then `([^`]+)`", text)
    assert made, "README.md: no sentence says how docs/seed-neuron.svg was made"
    save, command = made.groups()
    snippets = [*_python(TOUR), Block("python", save + "\n", 0, ())]
    assert [r["problems"] for r in run_python(snippets, cwd=tmp_path)] == [[]] * len(snippets)
    args = command.split()
    run = subprocess.run(opgraph_args(args), cwd=tmp_path, capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 0, run.stderr
    drawn = (tmp_path / args[args.index("-o") + 1]).read_text()
    committed = (DOCS / "seed-neuron.svg").read_text()
    assert _svg_texts(drawn) == _svg_texts(committed), "docs/seed-neuron.svg is out of date"
    assert drawn.count("<g id=\"node") == committed.count("<g id=\"node") == 15


def test_the_client_example_runs_twice() -> None:
    """The second run meets the graph the first one made (so it must replace it)."""
    (snippet,) = _python(CLIENT)
    server = ThreadedServer(unix=False)
    try:
        for _ in range(2):
            assert_ran(run_python([snippet], replace={DEFAULT_URL: server.tcp}), [snippet])
        with Client(server.tcp) as client:
            assert {g["name"] for g in client.call("graph.list")} == {"demo", "mine", "local"}
    finally:
        server.stop()


def test_the_cli_session(tmp_path: Path) -> None:
    commands = shell_session(_session(CLI))
    assert [c.args[:2] for c in commands] == [["opgraph", "eval"]] * 2 + [["opgraph", "render"]]
    ran = check_session(commands, cwd=tmp_path, normalise=picture_size)
    check_pictures(ran, tmp_path)


def test_the_server_session(tmp_path: Path) -> None:
    commands = shell_session(_session(SERVER))
    assert commands[0].args[:2] == ["make", "serve"]
    data = tmp_path / "data.sqlite3"  # (as make serve runs it: TCP, the viewer, a store)
    server = ProcessServer("--data", str(data),
                           listen=("tcp://127.0.0.1:0", "http://127.0.0.1:0"))
    try:
        tcp, http = server.urls
        said = [line.replace(str(data), ".../.opgraph/data.sqlite3").replace(tcp, DEFAULT_URL)
                .replace(http, "http://127.0.0.1:7451/") for line in server.stderr_lines
                if not re.match(r"\d{4}-\d\d-\d\d ", line)]  # (log lines carry the time)
        assert commands[0].output == said[:len(commands[0].output)]
        assert len(commands[0].output) == 2
        check_session(commands, cwd=tmp_path, skip=("make",), replace={DEFAULT_URL: tcp})
    finally:
        server.stop()


def test_the_methods_listed_are_the_servers() -> None:
    from opgraph_server.methods import METHODS

    text = README.read_text()
    listed = re.search(r"^Methods: (.*?)\.\n\n", text, re.S | re.M)
    assert listed, "README.md: no 'Methods:' paragraph"
    assert re.findall(r"`([\w.]+)`", listed.group(1)) == list(METHODS)


def test_the_plugin_blocks_are_the_example_package() -> None:
    """``pip install ./examples/softplus_plugin`` installs what the README shows."""
    package = ROOT / "examples" / "softplus_plugin"
    files = package_files(PLUGIN)
    assert set(files) == {"pyproject.toml", "opgraph_softplus.py"}
    for name, text in files.items():
        assert text == (package / name).read_text(), f"README.md's {name} is not {package}"


def test_a_graph_kept_through_a_restart_as_the_readme_says(tmp_path: Path) -> None:
    """The README's two shell commands that keep a graph past a restart, run by bash."""
    text = " ".join(README.read_text().split())
    spans = re.findall(r"`(opgraph call URL graph\.(?:export|import) [^`]*)`", text)
    assert len(spans) == 2, spans
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    before, after = ThreadedServer(unix=False), ThreadedServer(unix=False)
    try:
        with Client(before.tcp) as client:
            g = client.create_graph("mine")
            g.apply("tanh", [g.leaf(0.5, "x")["id"]], label="y")
            kept = g.nodes()["nodes"]
        for span, server in zip(spans, (before, after), strict=True):
            command = span.replace("URL", server.tcp)
            run = subprocess.run(["bash", "-c", command], cwd=tmp_path, env=env,
                                 capture_output=True, text=True, timeout=60)
            assert run.returncode == 0, f"{command}\n{run.stderr}"
        with Client(after.tcp) as client:
            assert client.graph("mine").nodes()["nodes"] == kept
    finally:
        before.stop()
        after.stop()
