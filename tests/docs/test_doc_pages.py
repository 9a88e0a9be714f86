"""The docs pages' snippets work when copied, and what the README and the pages say holds.

Each page's Python blocks run in order in a fresh interpreter, their ``# value`` comments and
the output blocks after them checked, as the README's are (``test_readme.py``). The shell
sessions of docs/cli.md run at a pseudo-terminal. Also checked: the errors the texts quote,
that every relative link leads somewhere, and that the README's benchmark figures are those of
the run docs/benchmarks.md shows.

docs/protocol.md and docs/neovim.md are checked by the server's and the Neovim client's tests.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
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
    picture_size,
    relative,
    run_python,
    shell_session,
)
from server_harness import ProcessServer

CHECKED_ELSEWHERE = {"protocol.md", "neovim.md"}
PAGES = sorted(p for p in DOCS.glob("*.md") if p.name not in CHECKED_ELSEWHERE)
"""The pages these tests answer for."""

RUN_IN_ORDER = ["python-api.md", "plugins.md", "higher-order.md",
                pytest.param("compiled.md", marks=pytest.mark.slow)]
"""Pages whose Python blocks run, in order, in one interpreter each."""

CLI = DOCS / "cli.md"


def _page(name: str) -> Path:
    return DOCS / name


def _names(params: list) -> set[str]:
    return {p if isinstance(p, str) else p.values[0] for p in params}


def test_every_python_block_of_the_pages_is_run() -> None:
    assert {p.name for p in PAGES} >= _names(RUN_IN_ORDER)
    untested = [b.where for page in PAGES if page.name not in _names(RUN_IN_ORDER)
                for b in blocks(page) if b.lang == "python"]
    assert untested == [], f"Python blocks no test runs: {untested}"


@pytest.mark.parametrize("name", RUN_IN_ORDER)
def test_the_python_blocks_of_a_page_run_in_order(name: str, tmp_path: Path) -> None:
    snippets = [b for b in blocks(_page(name)) if b.lang == "python"]
    assert snippets, f"docs/{name}: no Python block"
    assert_ran(run_python(snippets, cwd=tmp_path), snippets)


# --- what the texts quote --------------------------------------------------------------------


@pytest.mark.parametrize("path", [README, *PAGES], ids=relative)
def test_the_errors_a_text_quotes(path: Path) -> None:
    """Each "`EXPR` raises `Error: message`" of the text, run with ``x = Value(0.5)``."""
    text = " ".join(path.read_text().split())
    claims = re.findall(r"`([^`]+)` raises `(\w+): ([^`]+)`", text)
    if path in (README, _page("python-api.md")):
        assert len(claims) >= 2, f"{relative(path)}: the errors it quotes are gone"
    if not claims:
        return
    snippets = [Block("python", "import opgraph\nfrom opgraph import Value\nx = Value(0.5)\n"
                      f"try:\n    {expression}\nexcept Exception as error:\n"
                      "    print(f'{type(error).__name__}: {error}')\n", 0, (), path)
                for expression, _, _ in claims]
    results = run_python(snippets)
    assert [r["problems"] for r in results] == [[]] * len(claims)
    assert [r["stdout"] for r in results] == [f"{name}: {message}\n"
                                              for _, name, message in claims]


def _slug(heading: str) -> str:
    """The anchor GitHub gives a heading."""
    return re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")


def _prose(path: Path) -> str:
    """``path``'s text without its code blocks."""
    return re.sub(r"^```.*?^```", "", path.read_text(), flags=re.S | re.M)


def _anchors(path: Path) -> set[str]:
    return {_slug(heading) for heading in re.findall(r"^#+ (.*)$", _prose(path), re.M)}


@pytest.mark.parametrize("path", [README, *PAGES], ids=relative)
def test_every_relative_link_leads_somewhere(path: Path) -> None:
    broken = []
    for target in re.findall(r"\]\(([^)\s]+)\)", _prose(path)):
        if re.match(r"\w+://", target):
            continue
        file, _, anchor = target.partition("#")
        linked = (path.parent / file).resolve() if file else path
        missing = anchor and linked.suffix == ".md" and anchor not in _anchors(linked)
        if not linked.exists() or missing:
            broken.append(target)
    assert broken == [], f"{relative(path)}: links to nowhere: {broken}"


def test_the_readme_benchmark_figures_are_the_runs_shown() -> None:
    """Every figure of the README's benchmark tables (but the targets) is in the output that
    docs/benchmarks.md shows."""
    readme = README.read_text()
    section = readme[readme.index("## Benchmarks"):readme.index("\n## ", readme.index(
        "## Benchmarks") + 1)]
    rows = [line.strip("|").split("|") for line in section.splitlines()
            if line.startswith("| ") and not line.startswith("| workload")
            and not line.startswith("| server")]
    assert len(rows) >= 8
    shown = "".join(b.text for b in blocks(_page("benchmarks.md")) if not b.lang)
    figures = [figure for row in rows for cell in row[1:-1]
               for figure in re.findall(r"\d[\d,.]*(?: ms| s|x|%| requests/s)", cell)]
    assert len(figures) >= 15
    assert [f for f in figures if f not in shown] == []


# --- docs/cli.md's sessions ------------------------------------------------------------------


def _sessions(heading: str) -> list[Block]:
    found = [b for b in blocks(CLI) if b.headings[-1:] == (heading,) and b.text.startswith("$ ")]
    assert found, f"docs/cli.md: no shell block under {heading!r}"
    return found


@pytest.mark.slow
def test_the_cli_pages_session(tmp_path: Path) -> None:
    (block,) = _sessions("A session")
    commands = shell_session(block)
    ran = check_session(commands, cwd=tmp_path, normalise=picture_size, path=CLI)
    assert {tuple(c.args[:2]) for c, _ in ran} >= {
        ("opgraph", "eval"), ("opgraph", "analyze"), ("opgraph", "render"),
        ("opgraph", "gradcheck"), ("opgraph", "plot")}
    check_pictures(ran, tmp_path)


def test_the_cli_pages_errors_and_json(tmp_path: Path) -> None:
    """The usage errors and the JSON of a result that is not finite, as docs/cli.md shows."""
    blocks_ = _sessions("Exit codes, errors and warnings") + [
        b for b in _sessions("JSON output") if "opgraph call" not in b.text]
    commands = [c for b in blocks_ for c in shell_session(b)]
    assert len(commands) >= 4
    check_session(commands, cwd=tmp_path, path=CLI)


def test_the_cli_pages_call() -> None:
    commands = [c for b in _sessions("JSON output") for c in shell_session(b)
                if c.args[:2] == ["opgraph", "call"]]
    assert commands
    server = ProcessServer()
    try:
        check_session(commands, cwd=ROOT, replace={DEFAULT_URL: server.url}, path=CLI)
    finally:
        server.stop()
