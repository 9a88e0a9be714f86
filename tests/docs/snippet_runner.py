"""Run Python snippets of the README or a docs page as a reader pastes them; check their claims.

Usage: ``python snippet_runner.py`` with a JSON list of ``{"text", "line", "file"}`` on stdin;
prints a JSON list with ``{"line", "stdout", "problems"}`` per snippet that ran. The snippets run
one after another in one namespace (later ones use the names earlier ones made), statement by
statement, compiled with their text's own file name and line numbers, so a traceback points
at the text.

A top-level expression statement followed by a comment that parses as a Python expression,
on its own line or the next, claims its value::

    o.data                 # 0.7071067811865476
    x1.grad, w1.grad
    # (-1.4999999999999996, 0.9999999999999998)

The claim holds when the value's ``repr`` is the comment, up to the order of set elements
(``{Value(data=-2.0), Value(data=4.0)}`` has no fixed order). A comment that does not parse
(``# recomputes what depends on x``) is a description and claims nothing.
"""

from __future__ import annotations

import ast
import contextlib
import io
import json
import sys
import tokenize
import traceback
from typing import Any


class _SortSets(ast.NodeTransformer):
    def visit_Set(self, node: ast.Set) -> ast.Set:
        self.generic_visit(node)
        node.elts.sort(key=ast.unparse)
        return node


def canonical(text: str) -> str | None:
    """``text`` as one spelling of its expression (sets sorted), or None if it is not one."""
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError:
        return None
    return ast.unparse(_SortSets().visit(tree))


def _comments(text: str) -> tuple[dict[int, str], set[int]]:
    """The comment on each line (1-based) and the lines that hold nothing but a comment."""
    found: dict[int, str] = {}
    alone: set[int] = set()
    code_lines: set[int] = set()
    for token in tokenize.generate_tokens(io.StringIO(text).readline):
        if token.type == tokenize.COMMENT:
            found[token.start[0]] = token.string[1:].strip()
        elif token.type not in (tokenize.NL, tokenize.NEWLINE, tokenize.INDENT,
                                tokenize.DEDENT, tokenize.ENDMARKER):
            code_lines.update(range(token.start[0], token.end[0] + 1))
    alone = {line for line in found if line not in code_lines}
    return found, alone


def _claim(stmt: ast.stmt, body: list[ast.stmt], comments: dict[int, str],
           alone: set[int]) -> str | None:
    """The value ``stmt`` claims to have, if it is an expression statement that claims one."""
    if not isinstance(stmt, ast.Expr):
        return None
    end = stmt.end_lineno or stmt.lineno
    if any(other.lineno == end and other.col_offset > stmt.col_offset for other in body):
        return None  # not the last statement on its line: the comment is not about it
    text = comments.get(end) if end not in alone else None
    if text is None and end + 1 in alone:
        text = comments[end + 1]
    if text is None or canonical(text) is None:
        return None
    return text


def run_snippet(text: str, line: int, filename: str, namespace: dict[str, Any]) -> list[str]:
    """Run one snippet in ``namespace``; the claims that did not hold (empty when all did)."""
    tree = ast.parse(text, filename)
    ast.increment_lineno(tree, line)  # the text's line numbers in tracebacks
    comments, alone = _comments(text)
    comments = {n + line: c for n, c in comments.items()}
    alone = {n + line for n in alone}
    problems = []
    for stmt in tree.body:
        claim = _claim(stmt, tree.body, comments, alone)
        if claim is None:
            module = ast.Module(body=[stmt], type_ignores=[])
            exec(compile(module, filename, "exec"), namespace)
            continue
        assert isinstance(stmt, ast.Expr)
        value = eval(compile(ast.Expression(stmt.value), filename, "eval"), namespace)
        got = repr(value)
        if canonical(got) != canonical(claim):
            problems.append(f"{filename}:{stmt.lineno}: {ast.unparse(stmt)} is {got}, "
                            f"but the text says {claim}")
    return problems


def main() -> None:
    snippets = json.load(sys.stdin)
    namespace: dict[str, Any] = {"__name__": "__main__"}
    results = []
    for snippet in snippets:
        out = io.StringIO()
        try:
            with contextlib.redirect_stdout(out):
                problems = run_snippet(snippet["text"], snippet["line"], snippet["file"],
                                       namespace)
        except BaseException:
            problems = [traceback.format_exc()]
        results.append({"line": snippet["line"], "stdout": out.getvalue(), "problems": problems})
        if problems and problems[0].startswith("Traceback"):
            break  # later snippets would fail for want of what this one makes
    json.dump(results, sys.stdout)


if __name__ == "__main__":
    main()
