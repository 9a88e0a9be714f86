"""The code blocks of the README and the docs pages, and ways to run them as a reader would.

Shared by ``tests/docs`` and ``tests/plugins`` (whose test puts this directory on
``sys.path``). `blocks` reads the fenced blocks of a file with the headings they sit under;
`run_python` runs Python blocks in a fresh interpreter (see ``snippet_runner.py``);
`shell_session` and `run_at_a_terminal` take a block of ``$ command`` lines with the output
shown under each, and run the commands at a pseudo-terminal, as the reader would see them.
"""

from __future__ import annotations

import fcntl
import json
import os
import pty
import re
import select
import shlex
import struct
import subprocess
import sys
import termios
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
RUNNER = Path(__file__).resolve().with_name("snippet_runner.py")
DEFAULT_URL = "tcp://127.0.0.1:7450"
"""The server address the README's examples use (``make serve``'s)."""


@dataclass(frozen=True)
class Block:
    """A fenced block: its language (``""`` for none), text, fence line, headings and file."""

    lang: str
    text: str
    line: int
    headings: tuple[str, ...]
    path: Path = README

    def under(self, heading: str) -> bool:
        return heading in self.headings

    @property
    def where(self) -> str:
        """``FILE:LINE`` of the fence, the file relative to the repository."""
        return f"{relative(self.path)}:{self.line}"


def relative(path: Path) -> str:
    """``path`` as the repository names it (``docs/cli.md``)."""
    try:
        return str(path.resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


def blocks(path: Path = README) -> list[Block]:
    """Every fenced block of ``path``, in order."""
    found: list[Block] = []
    headings: list[tuple[int, str]] = []
    fence: tuple[int, str] | None = None
    body: list[str] = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if fence is None:
            if line.startswith("```"):
                fence, body = (number, line[3:].strip()), []
            elif heading := re.match(r"(#+) (.*)", line):
                level = len(heading.group(1))
                headings = [h for h in headings if h[0] < level] + [(level, heading.group(2))]
        elif line.startswith("```"):
            found.append(Block(fence[1], "\n".join(body) + "\n", fence[0],
                               tuple(h for _, h in headings), path))
            fence = None
        else:
            body.append(line)
    assert fence is None, f"{path}:{fence[0]}: a code block is not closed"
    return found


def output_after(block: Block) -> Block | None:
    """The plain block right after ``block`` (nothing between them): what it prints."""
    path = block.path
    found = blocks(path)
    index = found.index(block)
    if index + 1 == len(found):
        return None
    following = found[index + 1]
    lines = path.read_text().splitlines()
    block_end = block.line + block.text.count("\n")  # the closing fence's line
    between = lines[block_end:following.line - 1]
    if following.lang or any(text.strip() for text in between):
        return None
    return following


def package_files(heading: str = "Writing an op plugin") -> dict[str, str]:
    """The files of the README's example plugin: blocks that start ``# FILENAME``."""
    files = {}
    for block in blocks():
        first, _, rest = block.text.partition("\n")
        named = re.fullmatch(r"# ([\w.-]+\.(?:py|toml))", first)
        if block.under(heading) and named:
            files[named.group(1)] = rest
    return files


def run_python(snippets: list[Block], *, replace: Mapping[str, str] | None = None,
               env: Mapping[str, str] | None = None, cwd: Path | None = None,
               timeout: float = 180) -> list[dict]:
    """Run ``snippets`` in order in one fresh interpreter; a result per snippet that ran.

    ``replace`` changes text in the snippets first (a server's real address for the README's
    default one). Each result has ``line``, ``stdout`` and ``problems`` (claims that did not
    hold, or the traceback that stopped the run). Tracebacks name each snippet's own file.
    """
    payload = []
    for block in snippets:
        text = block.text
        for old, new in (replace or {}).items():
            text = text.replace(old, new)
        payload.append({"text": text, "line": block.line, "file": str(block.path)})
    run = subprocess.run([sys.executable, str(RUNNER)], input=json.dumps(payload),
                         capture_output=True, text=True, timeout=timeout, cwd=cwd,
                         env={**os.environ, **(env or {})})
    assert run.returncode == 0, run.stderr
    return json.loads(run.stdout)


def assert_ran(results: list[dict], snippets: list[Block]) -> None:
    """Every snippet ran, every claim held, and each printed what its text shows after it."""
    assert [r["line"] for r in results] == [b.line for b in snippets], results[-1]["problems"]
    problems = [p for r in results for p in r["problems"]]
    assert not problems, "\n".join(problems)
    for block, result in zip(snippets, results, strict=True):
        shown = output_after(block)
        if shown is not None:
            assert result["stdout"] == shown.text, (
                f"{shown.where}: the snippet printed\n{result['stdout']}")


# --- shell sessions -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Command:
    """``$ command  # comment`` with the output shown under it."""

    text: str
    args: list[str]
    comment: str
    output: list[str]
    line: int

    @property
    def exit_code(self) -> int | None:
        """The exit code the text gives: ``# exit N``, or nonzero for an ``error:``, or 0."""
        said = re.search(r"\bexit (\d+)", self.comment)
        if said:
            return int(said.group(1))
        if self.output and self.output[0].startswith("error:"):
            return None  # some failure
        return 0


def _split(text: str) -> tuple[list[str], str]:
    args = shlex.split(text, comments=True)
    for found in re.finditer(r"\s#", text):
        if shlex.split(text[:found.start()]) == args:
            return args, text[found.end():].strip()
    return args, ""


def shell_session(block: Block) -> list[Command]:
    """The commands of a block of ``$ ...`` lines, each with the lines shown after it."""
    commands: list[Command] = []
    for number, line in enumerate(block.text.splitlines(), block.line + 1):
        if line.startswith("$ "):
            args, comment = _split(line[2:])
            commands.append(Command(line[2:], args, comment, [], number))
        elif commands:
            commands[-1].output.append(line)
    while commands and commands[-1].output and not commands[-1].output[-1].strip():
        commands[-1].output.pop()
    for command in commands:
        while command.output and not command.output[-1].strip():
            command.output.pop()
    return commands


def matches(shown: list[str], printed: str) -> bool:
    """Whether ``printed`` is what ``shown`` shows: ``...`` stands for any text (a line of
    just ``...`` for any number of lines); trailing spaces do not count."""
    pattern = ""
    for line in shown:
        if line.strip() == "...":
            pattern += r"(?:[^\n]*\n)*?"
        else:
            pattern += re.escape(line.rstrip()).replace(r"\.\.\.", r"[^\n]*") + r"\n"
    text = "".join(line.rstrip() + "\n" for line in printed.splitlines())
    return re.fullmatch(pattern, text) is not None


_CONTROL = re.compile(r"\x1b\[([0-9;?]*)([A-Za-z])|\x1b\][^\x07]*\x07|\r\n|[\r\n\b]")


def screen(output: str) -> str:
    """What ``output`` (a program's bytes to a terminal) leaves on the screen: text that
    progress bars erase is gone, colours are dropped. Knows the sequences rich writes."""
    lines: list[list[str]] = [[]]
    row = col = 0

    def write(text: str) -> None:
        nonlocal col
        line = lines[row]
        line.extend(" " * (col - len(line)))
        line[col:col + len(text)] = list(text)
        col += len(text)

    position = 0
    for found in _CONTROL.finditer(output):
        write(output[position:found.start()])
        position = found.end()
        token, (number, letter) = found.group(), found.groups("")
        if token in ("\n", "\r\n"):
            row, col = row + 1, 0
            if row == len(lines):
                lines.append([])
        elif token == "\r":
            col = 0
        elif token == "\b":
            col = max(col - 1, 0)
        elif letter == "A":
            row = max(row - int(number or 1), 0)
        elif letter == "K":
            if number == "2":
                lines[row] = []
            elif number in ("", "0"):
                del lines[row][col:]
        elif letter == "G":
            col = int(number or 1) - 1
        # colours (m), showing and hiding the cursor (h, l): nothing on the screen
    write(output[position:])
    text = "\n".join("".join(line).rstrip() for line in lines)
    return text.rstrip("\n") + "\n" if text.strip() else ""


def run_at_a_terminal(args: list[str], *, cwd: Path, env: Mapping[str, str] | None = None,
                      columns: int = 120, timeout: float = 120) -> tuple[int, str]:
    """Run ``args`` with stdout and stderr on a pseudo-terminal: ``(exit code, the screen
    it left)`` (see `screen`)."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, columns, 0, 0))
    environment = {**os.environ, "NO_COLOR": "1", "TERM": "xterm", "COLUMNS": str(columns),
                   **(env or {})}
    process = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=slave, stderr=slave,
                               cwd=cwd, env=environment)
    os.close(slave)
    chunks: list[bytes] = []
    deadline = time.monotonic() + timeout
    try:
        while True:
            left = deadline - time.monotonic()
            ready, _, _ = select.select([master], [], [], max(left, 0))
            if not ready:
                process.kill()
                raise AssertionError(f"{shlex.join(args)} did not finish in {timeout} s")
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the last writer closed the terminal
                break
            if not data:
                break
            chunks.append(data)
    finally:
        os.close(master)
        code = process.wait(timeout)
    return code, screen(b"".join(chunks).decode(errors="replace"))


def opgraph_args(args: list[str]) -> list[str]:
    """``opgraph ARGS`` as this interpreter runs it; other commands as they are."""
    if args and args[0] == "opgraph":
        return [sys.executable, "-m", "opgraph", *args[1:]]
    return args


def check_session(commands: list[Command], *, cwd: Path, env: Mapping[str, str] | None = None,
                  replace: Mapping[str, str] | None = None, skip: tuple[str, ...] = (),
                  normalise: Callable[[str], str] = lambda text: text,
                  path: Path = README) -> list[tuple[Command, str]]:
    """Run each command (but those starting with a word of ``skip``) and check that it exits
    as the text (``path``) says and shows what the text shows; returns ``(command, shown)``.

    ``normalise`` is applied to what a command shows and to what the text shows before they
    are compared (for what varies between machines, such as the size of a picture).
    """
    ran = []
    for command in commands:
        if command.args[0] in skip:
            continue
        args = command.args
        for old, new in (replace or {}).items():
            args = [a.replace(old, new) for a in args]
        code, shown = run_at_a_terminal(opgraph_args(args), cwd=cwd, env=env)
        where = f"{relative(path)}:{command.line}: $ {command.text}"
        expected = command.exit_code
        if expected is None:
            assert code != 0, f"{where}\nexited 0, the text shows an error\n{shown}"
        else:
            assert code == expected, f"{where}\nexited {code}, not {expected}\n{shown}"
        assert matches([normalise(line) for line in command.output], normalise(shown)), (
            f"{where}\nshows:\n{shown}\nthe text shows:\n" + "\n".join(command.output))
        ran.append((command, shown))
    return ran


def picture_size(text: str) -> str:
    """``text`` with the sizes of pictures left out (they vary with graphviz's version)."""
    return re.sub(r"\((svg|png|dot), \d+ bytes\)", r"(\1, SIZE bytes)", text)


def check_pictures(ran: list[tuple[Command, str]], folder: Path) -> None:
    """The size a picture is said to have (``wrote F (svg, N bytes)``) is its size."""
    for _, shown in ran:
        for name, size in re.findall(r"wrote (\S+) \(\w+, (\d+) bytes\)", shown):
            assert (folder / name).stat().st_size == int(size), f"{name} is not {size} bytes"
