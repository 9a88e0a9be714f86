"""The README's snippets work when copied, and show what they really print.

Python blocks run in fresh interpreters (the tour in order, as its snippets build on each
other); their ``# value`` comments and the output blocks after them are checked. Shell blocks
with ``$ command`` lines run at a pseudo-terminal and must show what the README shows. The
example plugin's blocks are installed and run by ``tests/plugins/test_example_plugin.py``.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from opgraph_client import Client
from readme_snippets import (
    DEFAULT_URL,
    README,
    ROOT,
    Block,
    assert_ran,
    blocks,
    check_session,
    package_files,
    run_python,
    shell_session,
)
from server_harness import ProcessServer, ThreadedServer

TOUR = "A quick tour: the walk-through, on opgraph"
COMPILED = "nn, and the compiled executor"
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
    snippets = _python(TOUR, but=COMPILED)
    assert len(snippets) >= 4
    assert_ran(run_python(snippets, cwd=tmp_path), snippets)


@pytest.mark.slow
def test_the_compiled_executor_example_runs_alone(tmp_path: Path) -> None:
    snippets = _python(COMPILED)
    assert_ran(run_python(snippets, cwd=tmp_path), snippets)


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


def _picture_size(text: str) -> str:
    return re.sub(r"\((svg|png|dot), \d+ bytes\)", r"(\1, SIZE bytes)", text)


@pytest.mark.slow
def test_the_cli_session(tmp_path: Path) -> None:
    commands = shell_session(_session(CLI))
    assert [c.args[:2] for c in commands][:3] == [["opgraph", "eval"]] * 3
    ran = check_session(commands, cwd=tmp_path, normalise=_picture_size)
    assert {tuple(c.args[:2]) for c, _ in ran} >= {
        ("opgraph", "eval"), ("opgraph", "analyze"), ("opgraph", "render"),
        ("opgraph", "gradcheck"), ("opgraph", "plot")}
    for _, shown in ran:  # the size a picture is said to have is its size
        for name, size in re.findall(r"wrote (\S+) \(\w+, (\d+) bytes\)", shown):
            assert (tmp_path / name).stat().st_size == int(size)


def test_the_server_session(tmp_path: Path) -> None:
    commands = shell_session(_session(SERVER))
    assert commands[0].args[:2] == ["make", "serve"]
    server = ProcessServer()
    try:
        started = server.stderr_lines[0]
        assert commands[0].output == [started.replace(server.url, DEFAULT_URL)]
        check_session(commands, cwd=tmp_path, skip=("make",), replace={DEFAULT_URL: server.url})
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


def test_the_errors_the_readme_quotes() -> None:
    """Each "`EXPR` raises `Error: message`" of the README's text, with ``x = Value(0.5)``."""
    text = " ".join(README.read_text().split())
    claims = re.findall(r"`([^`]+)` raises `(\w+): ([^`]+)`", text)
    assert len(claims) >= 2
    snippets = [Block("python", "import opgraph\nfrom opgraph import Value\nx = Value(0.5)\n"
                      f"try:\n    {expression}\nexcept Exception as error:\n"
                      "    print(f'{type(error).__name__}: {error}')\n", 0, ())
                for expression, _, _ in claims]
    results = run_python(snippets)
    assert [r["problems"] for r in results] == [[]] * len(claims)
    assert [r["stdout"] for r in results] == [f"{name}: {message}\n"
                                              for _, name, message in claims]
