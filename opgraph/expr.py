"""A safe expression language: Python-syntax arithmetic turned into graph nodes, never executed.

``tanh(x1*w1 + x2*w2 + b)`` is read with `ast.parse` (which only parses; nothing is compiled to
code, evaluated or imported) and every piece of the tree is checked against a short allow-list:

- numbers: ``int`` and ``float`` literals (``3``, ``2.5``, ``1e-3``, ``0x10``); not ``True``,
  ``None`` or complex numbers;
- names (``x``, ``w1``): looked up in the bindings given to `build`;
- the binary operators ``+ - * / **`` (ops ``add sub mul div`` and ``pow``/``pow_const``) and
  unary ``-`` (op ``neg``) and ``+`` (no node);
- calls of any installed op by its name, plugin ops included, with positional inputs
  (``tanh(x)``, ``pow(x, y)``, ``softplus(x)``) and keyword arguments only for the op's
  attributes (``pow_const(x, exponent=2)``), whose values must be number or string literals.

``x ** c`` with ``c`` a number literal (optionally signed: ``x ** -1``, ``x**2.5``) is op
``pow_const`` with attribute ``exponent=c``, as ``Value.__pow__`` does; ``x ** y`` with anything
else as exponent is op ``pow``.

Numbers are not folded: each literal becomes a constant leaf (unlabelled, as ``3 * x`` gives in
the seed), so the graph has one node per piece of the text and ``2 * 3 * x`` shows both
constants. A sign written directly before a literal is part of it (``-3`` is the leaf ``-3.0``,
not ``neg(3.0)``), as Python's own compiler does. Literal and bound numbers become ``float``
leaves, so no op ever computes with unbounded Python integers (``9 ** 9 ** 9 ** 9`` overflows a
float at once instead of running for hours). Integer attribute values stay ``int`` up to
2 ** 16 in magnitude (so ``x ** 2`` draws as ``**2``) and become ``float`` above that.

Everything else is refused with `ExpressionError`, which names what was refused and where:
attributes, subscripts, calls of anything but an op (``print(x)``: "no op named 'print'"),
lambdas, comparisons, boolean operators, strings, f-strings, ``:=``, ``*``/``**`` unpacking,
containers, comprehensions, unknown attributes, wrong arity, unbound names (all of them listed),
syntax errors, and expressions over the limits: `MAX_LENGTH` characters and `MAX_DEPTH` levels
of nesting in the syntax tree (a chain ``a + b + c`` nests one level per operator). Both limits
can be lowered or raised per call of `parse`; Python's parser itself refuses more than 200
nested brackets.

The API is three functions::

    parse("3*x**2 - 4*x + 5")                    # -> ParsedExpression(text, tree, names)
    build("tanh(x*w + b)", {"x": 2.0, "w": -3.0, "b": 6.88}, graph=None)  # -> Built(root, leaves)
    evaluate("3*x**2 - 4*x + 5", x=3)            # -> Evaluation(value=20.0, grads={'x': 14.0})
"""

from __future__ import annotations

import ast
import difflib
import numbers
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from opgraph import core
from opgraph.core import Value
from opgraph.errors import (
    LINE_BREAK,
    ArityError,
    AttributeSpecError,
    ExpressionError,
    GraphLimitError,
    GraphMismatchError,
    InputTypeError,
    RuleError,
    UnknownOpError,
)
from opgraph.graph import Graph
from opgraph.opdef import OpDef

__all__ = [
    "MAX_DEPTH",
    "MAX_LENGTH",
    "Built",
    "Evaluation",
    "ExpressionError",
    "ParsedExpression",
    "build",
    "evaluate",
    "parse",
]

MAX_LENGTH = 10_000
"""The longest expression `parse` accepts by default, in characters."""

MAX_DEPTH = 200
"""The deepest nesting of the syntax tree `parse` accepts by default."""

_MAX_INT_ATTRIBUTE = 2**16  # larger int attribute values become floats (see the module doc)
_NEWLINE = LINE_BREAK

_BINARY_OPS: dict[type[ast.operator], tuple[str, str]] = {
    ast.Add: ("+", "add"),
    ast.Sub: ("-", "sub"),
    ast.Mult: ("*", "mul"),
    ast.Div: ("/", "div"),
    ast.Pow: ("**", "pow"),
}
_OTHER_BINARY: dict[type[ast.operator], str] = {
    ast.FloorDiv: "//", ast.Mod: "%", ast.MatMult: "@", ast.LShift: "<<", ast.RShift: ">>",
    ast.BitOr: "|", ast.BitXor: "^", ast.BitAnd: "&",
}
_COMPARE: dict[type[ast.cmpop], str] = {
    ast.Eq: "==", ast.NotEq: "!=", ast.Lt: "<", ast.LtE: "<=", ast.Gt: ">", ast.GtE: ">=",
    ast.Is: "is", ast.IsNot: "is", ast.In: "in", ast.NotIn: "not",
}
_REFUSED_KINDS: dict[type[ast.AST], str] = {
    ast.Lambda: "lambda expressions are",
    ast.IfExp: "conditional expressions (... if ... else ...) are",
    ast.NamedExpr: "assignment expressions (:=) are",
    ast.Starred: "unpacking with '*' is",
    ast.JoinedStr: "f-strings are",
    ast.FormattedValue: "f-strings are",
    ast.Tuple: "tuples are",
    ast.List: "lists are",
    ast.Dict: "dicts are",
    ast.Set: "sets are",
    ast.ListComp: "comprehensions are",
    ast.SetComp: "comprehensions are",
    ast.DictComp: "comprehensions are",
    ast.GeneratorExp: "generator expressions are",
    ast.Await: "'await' is",
    ast.Yield: "'yield' is",
    ast.YieldFrom: "'yield' is",
    ast.Slice: "slices are",
}


# --- the error -------------------------------------------------------------------------------


class OpFailedInExpression(ExpressionError, RuleError):
    """An op of a well-formed expression failed on its values (``log(x)`` at ``x = -1``).

    Both an `ExpressionError` (it points at the op in the text) and a `RuleError` (the work
    failed, not the request): the server answers ``op_failed`` and the CLI exits 1.
    """

    def __init__(self, reason: str, text: str, offset: int, end_offset: int | None = None,
                 cause: RuleError | None = None):
        ExpressionError.__init__(self, reason, text, offset, end_offset)
        self.op = cause.op if cause is not None else ""
        self.node = cause.node if cause is not None else ""
        self.cause = cause.cause if cause is not None else None


class _Refusal(Exception):
    """One refused piece of the tree (collected while checking; the leftmost one is raised)."""

    def __init__(self, reason: str, start: int, end: int, walk: tuple[ast.AST, ...] = ()):
        super().__init__(reason)
        self.reason = reason
        self.start = start
        self.end = end
        self.walk = walk  # children still worth checking (they may hold an earlier problem)


# --- parsing ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Step:
    """One instruction of a parsed expression, in evaluation (post-)order."""

    kind: str  # "const" (value: the number), "name" (value: the name), "op" (value: op name)
    value: Any
    start: int
    end: int
    arity: int = 0
    attrs: tuple[tuple[str, Any], ...] = ()


@dataclass(frozen=True)
class ParsedExpression:
    """A checked expression, ready for `build` any number of times.

    ``text`` is the source, ``tree`` its `ast.Expression`, ``names`` the variable names it
    uses, in order of first appearance.
    """

    text: str
    tree: ast.Expression = field(repr=False, compare=False)
    names: tuple[str, ...]
    _steps: tuple[_Step, ...] = field(default=(), repr=False, compare=False)


class _Source:
    """Maps the parser's (line, UTF-8 byte column) positions to character offsets in the text."""

    def __init__(self, text: str, skipped: int) -> None:
        self.text = text
        self.skipped = skipped  # leading whitespace not given to the parser
        body = text[skipped:]
        self.starts = [0] + [m.end() for m in _NEWLINE.finditer(body)]
        self.lines = [
            body[start:end]
            for start, end in zip(self.starts, [*self.starts[1:], len(body)], strict=True)
        ]
        self.encoded: dict[int, bytes] = {}

    def offset(self, lineno: int, col: int, *, chars: bool = False) -> int:
        """The text offset of a parser position (``chars``: the column counts characters)."""
        lineno = max(1, min(lineno, len(self.lines)))
        line = self.lines[lineno - 1]
        if not chars and not line.isascii():
            data = self.encoded.get(lineno)
            if data is None:
                data = self.encoded[lineno] = line.encode("utf-8")
            col = len(data[:col].decode("utf-8", errors="ignore"))
        return self.skipped + self.starts[lineno - 1] + max(0, min(col, len(line)))

    def span(self, node: ast.AST) -> tuple[int, int]:
        """Start and end offsets of ``node``."""
        start = self.offset(node.lineno, node.col_offset)  # type: ignore[attr-defined]
        end_line = getattr(node, "end_lineno", None) or node.lineno  # type: ignore[attr-defined]
        end_col = getattr(node, "end_col_offset", None)
        end = start if end_col is None else self.offset(end_line, end_col)
        return start, max(start, end)

    def segment(self, node: ast.AST, limit: int = 40) -> str:
        """The source of ``node``, cut to ``limit`` characters."""
        start, end = self.span(node)
        return _shorten(self.text[start:end], limit)

    def find(self, token: str, start: int, end: int) -> tuple[int, int]:
        """The span of ``token`` in ``text[start:end]`` outside comments, or the whole range."""
        line_start = start
        for line_end, next_start in [
            *((m.start(), m.end()) for m in _NEWLINE.finditer(self.text, start, end)),
            (end, end),
        ]:
            code = self.text[line_start:line_end].split("#", 1)[0]
            index = code.find(token)
            if index >= 0:
                return line_start + index, line_start + index + len(token)
            line_start = next_start
        return start, end

    def refuse(self, reason: str, node: ast.AST, walk: tuple[ast.AST, ...] = ()) -> _Refusal:
        """A refusal located at ``node``."""
        start, end = self.span(node)
        return _Refusal(reason, start, end, walk)


def _shorten(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def parse(
    expression: str, *, max_length: int = MAX_LENGTH, max_depth: int = MAX_DEPTH
) -> ParsedExpression:
    """Check ``expression`` and return it parsed; raise `ExpressionError` on anything refused.

    Op names, input counts and attributes are checked against the installed ops; names are
    not looked up until `build`.
    """
    if not isinstance(expression, str):
        raise InputTypeError(
            f"an expression must be a string, got {type(expression).__name__} {expression!r:.80}"
        )
    text = expression
    if len(text) > max_length:
        raise ExpressionError(
            f"the expression is {len(text):,} characters long; the limit is {max_length:,}",
            text, max_length, len(text),
        )
    if "\0" in text:
        at = text.index("\0")
        raise ExpressionError("a null character is not allowed", text, at, at + 1)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ExpressionError(
            f"character {text[exc.start]!r} (a lone surrogate) is not allowed",
            text, exc.start, exc.end,
        ) from None
    body = text.lstrip(" \t\f\r\n")
    if not body.strip():
        raise ExpressionError("the expression is empty", text, 0, len(text))
    source = _Source(text, len(text) - len(body))
    try:
        with warnings.catch_warnings():
            # "invalid escape sequence", "'is' with a literal", ...: the parts they are about
            # are refused anyway, and a server or the CLI must not print them
            warnings.simplefilter("ignore", SyntaxWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
            tree = ast.parse(body, mode="eval")
    except SyntaxError as exc:
        raise _syntax_error(exc, source) from None
    except (RecursionError, MemoryError):
        raise ExpressionError(
            f"the expression is nested too deeply to parse (the limit is {max_depth} levels)",
            text, 0, len(text),
        ) from None
    except ValueError as exc:  # defensive: the checks above cover what CPython refuses so
        raise ExpressionError(f"the expression cannot be parsed: {exc}", text, 0) from None
    steps, names = _check(tree, source, max_depth)
    return ParsedExpression(text, tree, names, steps)


def _syntax_error(exc: SyntaxError, source: _Source) -> ExpressionError:
    text = source.text
    message = exc.msg or "invalid syntax"
    lineno, column = exc.lineno or 0, exc.offset or 0
    if lineno < 1 or column < 1:
        # CPython reports "ran out of input" as line 0 or column 0
        offset = len(text.rstrip())
        if message == "invalid syntax":
            message = "invalid syntax: the expression ends too early"
    else:
        offset = source.offset(lineno, column - 1, chars=True)
    if len(message) > 100:  # CPython's advice on its integer-digit limit runs to 250 characters
        message = message.split(";", 1)[0]
    if not message.startswith("invalid syntax"):
        message = f"invalid syntax: {message}"
    return ExpressionError(message, text, offset, offset + 1)


def _check(tree: ast.Expression, source: _Source, max_depth: int):
    """Check every node of ``tree``; return the evaluation steps and the names used."""
    refusals: list[_Refusal] = []
    shapes: dict[int, tuple[tuple[ast.AST, ...], _Step | None]] = {}
    stack: list[tuple[ast.AST, int]] = [(tree.body, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > max_depth:
            refusals.append(source.refuse(
                f"the expression is nested more than {max_depth} levels deep", node))
            continue
        try:
            children, step = _classify(node, source)
        except _Refusal as refusal:
            refusals.append(refusal)
            children = refusal.walk
        else:
            shapes[id(node)] = (children, step)
        stack.extend((child, depth + 1) for child in reversed(children))
    if refusals:
        first = min(refusals, key=lambda r: r.start)  # stable: the outer one on a tie
        # (the cause, if any: an op name left out by a plugin clash is not a bad expression)
        raise ExpressionError(first.reason, source.text, first.start, first.end
                              ) from first.__cause__

    steps: list[_Step] = []
    names: dict[str, None] = {}
    todo: list[tuple[ast.AST, bool]] = [(tree.body, False)]
    while todo:
        node, expanded = todo.pop()
        children, step = shapes[id(node)]
        if expanded or not children:
            if step is not None:
                steps.append(step)
                if step.kind == "name":
                    names.setdefault(step.value, None)
            continue
        todo.append((node, True))
        todo.extend((child, False) for child in reversed(children))
    return tuple(steps), tuple(names)


def _classify(node: ast.AST, source: _Source) -> tuple[tuple[ast.AST, ...], _Step | None]:
    """The inputs of an allowed node and the step that computes it; raise `_Refusal` if not."""
    if isinstance(node, ast.Name):
        start, end = source.span(node)
        return (), _Step("name", node.id, start, end)
    literal = _literal_number(node)
    if literal is not None:
        start, end = source.span(node)
        return (), _Step("const", _as_float(literal, node, source), start, end)
    if isinstance(node, ast.Constant):
        raise source.refuse(_constant_refusal(node.value), node)
    if isinstance(node, ast.BinOp):
        return _classify_binop(node, source)
    if isinstance(node, ast.UnaryOp):
        if isinstance(node.op, ast.UAdd):
            return (node.operand,), None
        if isinstance(node.op, ast.USub):
            _op_for("neg", "unary '-'", node, source)
            start, end = source.span(node)
            return (node.operand,), _Step("op", "neg", start, end, 1)
        symbol = "not" if isinstance(node.op, ast.Not) else "~"
        raise source.refuse(f"the operator {symbol!r} is not allowed (only + - * / **)", node,
                            (node.operand,))
    if isinstance(node, ast.Call):
        return _classify_call(node, source)
    if isinstance(node, ast.Attribute):
        end = source.span(node)[1]
        _, value_end = source.span(node.value)
        dot, _ = source.find(".", value_end, end)
        raise _Refusal(f"attribute access ({source.segment(node)!r}) is not allowed",
                       dot, end, (node.value,))
    if isinstance(node, ast.Subscript):
        end = source.span(node)[1]
        _, value_end = source.span(node.value)
        bracket, _ = source.find("[", value_end, end)
        raise _Refusal(f"subscripts ({source.segment(node)!r}) are not allowed",
                       bracket, end, (node.value,))
    if isinstance(node, ast.Compare):
        _, left_end = source.span(node.left)
        right_start, _ = source.span(node.comparators[0])
        symbol = _COMPARE.get(type(node.ops[0]), "==")
        start, end = source.find(symbol, left_end, right_start)
        raise _Refusal(f"comparisons ({source.segment(node)!r}) are not allowed",
                       start, end, (node.left, *node.comparators))
    if isinstance(node, ast.BoolOp):
        symbol = "and" if isinstance(node.op, ast.And) else "or"
        _, left_end = source.span(node.values[0])
        right_start, _ = source.span(node.values[1])
        start, end = source.find(symbol, left_end, right_start)
        raise _Refusal(f"boolean operators ({symbol!r}) are not allowed", start, end,
                       tuple(node.values))
    kind = _REFUSED_KINDS.get(type(node), f"{type(node).__name__} expressions are")
    raise source.refuse(f"{kind} not allowed ({source.segment(node)!r})", node)


def _literal_number(node: ast.AST) -> int | float | None:
    """The number a (possibly signed) int or float literal stands for, else None."""
    sign = 1
    while isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
        if isinstance(node.op, ast.USub):
            sign = -sign
        node = node.operand
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        return sign * node.value
    return None


def _as_float(number: int | float, node: ast.AST, source: _Source) -> float:
    try:
        return float(number)
    except OverflowError:
        raise source.refuse(
            f"the number {source.segment(node, 20)} is too large for a float", node) from None


def _constant_refusal(value: object) -> str:
    if isinstance(value, bool) or value is None or value is Ellipsis:
        return f"{value!r} is not allowed (only numbers and names)"
    if isinstance(value, complex):
        return f"complex numbers ({value!r}) are not allowed"
    if isinstance(value, bytes):
        return f"bytes ({_shorten(repr(value), 30)}) are not allowed"
    if isinstance(value, str):
        return (f"strings ({_shorten(repr(value), 30)}) are not allowed "
                "(only as an op attribute value)")
    return f"{type(value).__name__} constants are not allowed"


def _classify_binop(node: ast.BinOp, source: _Source):
    _, left_end = source.span(node.left)
    right_start, _ = source.span(node.right)
    kind = type(node.op)
    if kind not in _BINARY_OPS:
        symbol = _OTHER_BINARY.get(kind, type(node.op).__name__)
        start, end = source.find(symbol, left_end, right_start)
        raise _Refusal(f"the operator {symbol!r} is not supported (only + - * / **)",
                       start, end, (node.left, node.right))
    symbol, name = _BINARY_OPS[kind]
    start, end = source.span(node)
    if kind is ast.Pow:
        exponent = _literal_number(node.right)
        if exponent is not None:
            _op_for("pow_const", "'**' with a constant exponent", node, source)
            value = _attribute_number(exponent, node.right, source)
            return (node.left,), _Step("op", "pow_const", start, end, 1, (("exponent", value),))
    _op_for(name, f"the operator {symbol!r}", node, source)
    return (node.left, node.right), _Step("op", name, start, end, 2)


def _attribute_number(number: int | float, node: ast.AST, source: _Source) -> int | float:
    if type(number) is int and abs(number) <= _MAX_INT_ATTRIBUTE:
        return number
    return _as_float(number, node, source)


def _op_for(name: str, what: str, node: ast.AST, source: _Source) -> OpDef:
    """The op behind an operator; refused if no installed plugin provides it."""
    try:
        return core.lookup(name)
    except UnknownOpError as exc:
        if exc.reason:  # known but unusable (two plugins define it): say why
            raise source.refuse(f"{what} needs the op {name!r}: {exc}", node) from exc
        raise source.refuse(
            f"{what} needs the op {name!r}, which no installed plugin provides", node) from exc


def _classify_call(node: ast.Call, source: _Source):
    func = node.func
    if not isinstance(func, ast.Name):
        if isinstance(func, ast.Attribute | ast.Subscript):
            return (func, *node.args), None  # refused where they stand, with their position
        raise source.refuse(
            f"only ops can be called, by their name ({source.segment(node)!r})", func,
            tuple(node.args))
    inputs = tuple(node.args)
    try:
        op = core.lookup(func.id)
    except UnknownOpError as exc:
        raise source.refuse(str(exc), func, inputs) from exc  # (the cause: for the CLI)
    for arg in node.args:
        if isinstance(arg, ast.Starred):
            others = tuple(a for a in inputs if a is not arg)
            raise source.refuse("unpacking with '*' is not allowed", arg, (arg.value, *others))
    attrs: dict[str, Any] = {}
    for keyword in node.keywords:
        if keyword.arg is None:
            raise source.refuse("unpacking with '**' is not allowed", keyword, inputs)
        if keyword.arg not in op.attrs:
            raise source.refuse(_unknown_attribute(op, keyword.arg), keyword, inputs)
        if keyword.arg in attrs:
            raise source.refuse(f"attribute {keyword.arg!r} is given twice", keyword, inputs)
        attrs[keyword.arg] = _attribute_value(op, keyword, source)
    if len(inputs) != op.arity:
        raise source.refuse(
            f"op {op.name!r} takes {op.arity} input{'s' * (op.arity != 1)}, got {len(inputs)} "
            f"({source.segment(node)!r})", node, inputs)
    missing = [a for a in op.attrs if a not in attrs]
    if missing:
        example = ", ".join(f"{a}=..." for a in missing)
        raise source.refuse(
            f"op {op.name!r} needs attribute{'s' * (len(missing) != 1)} "
            f"{', '.join(map(repr, missing))} (write {op.name}(..., {example}))", node, inputs)
    start, end = source.span(node)
    ordered = tuple((a, attrs[a]) for a in op.attrs)
    return inputs, _Step("op", op.name, start, end, op.arity, ordered)


def _unknown_attribute(op: OpDef, given: str) -> str:
    if not op.attrs:
        return f"op {op.name!r} takes no attributes, got {given!r}"
    message = f"op {op.name!r} has no attribute {given!r} (it takes {', '.join(op.attrs)})"
    close = difflib.get_close_matches(given, op.attrs, n=1)
    return message + (f"; did you mean {close[0]!r}?" if close else "")


def _attribute_value(op: OpDef, keyword: ast.keyword, source: _Source) -> int | float | str:
    number = _literal_number(keyword.value)
    if number is not None:
        return _attribute_number(number, keyword.value, source)
    value = keyword.value
    if isinstance(value, ast.Constant) and type(value.value) is str:
        return value.value
    raise source.refuse(
        f"attribute {keyword.arg!r} of op {op.name!r} must be a number or a string literal, "
        f"not {source.segment(value)!r}", value)


# --- building --------------------------------------------------------------------------------


class Built(NamedTuple):
    """What `build` returns: the root node and the value used for each name."""

    root: Value
    leaves: dict[str, Value]


def build(
    expression: str | ParsedExpression,
    bindings: Mapping[str, float | Value] | None = None,
    graph: Graph | None = None,
) -> Built:
    """Turn ``expression`` into nodes; return the root and the value behind each name.

    ``bindings`` gives every name the expression uses either a number (a new leaf holding it
    as a float, labelled with the name) or an existing `Value` (used as it is). Names the
    expression does not use are ignored.

    With ``graph``, every new node is added to that graph and bound values must already belong
    to it; the build is all or nothing (a failing op leaves the graph as it was). Without, the
    new nodes are free values, unless a bound value belongs to a graph: then they join that
    graph, as arithmetic on its values does.

    Raises `ExpressionError` for a refused expression, an unbound name or an op that fails on
    its inputs (located at that op); `InputTypeError` for a binding that is neither a number
    nor a `Value`; `GraphMismatchError` or `GraphLimitError` when the graph cannot take it.
    """
    parsed = expression if isinstance(expression, ParsedExpression) else parse(expression)
    bindings = {} if bindings is None else bindings
    if not isinstance(bindings, Mapping):
        raise InputTypeError(f"bindings must be a mapping of names to numbers or Values, got "
                             f"{type(bindings).__name__}")
    given = _check_bindings(parsed, bindings)
    target = _target_graph(given, graph)
    if target is None:
        return _run(parsed, given, None)
    new_nodes = sum(
        step.kind != "name" for step in parsed._steps
    ) + sum(not isinstance(v, Value) for v in given.values())
    if target.max_nodes is not None and len(target) + new_nodes > target.max_nodes:
        raise GraphLimitError(
            f"graph {target.name!r} holds {len(target)} nodes; the expression adds {new_nodes}, "
            f"which would pass its limit of {target.max_nodes}"
        )
    # A dry run on free copies first: ops fail there, if at all, so the graph is only touched
    # by a build that succeeds (forward rules are deterministic).
    copies = {
        name: Value(v.data, v.label) if isinstance(v, Value) else v for name, v in given.items()
    }
    _run(parsed, copies, None)
    return _run(parsed, given, target)


def _check_bindings(parsed: ParsedExpression, bindings: Mapping[Any, Any]) -> dict[str, Any]:
    """The bindings of the names the expression uses; unbound names are an `ExpressionError`."""
    given: dict[str, Any] = {}
    missing = []
    for name in parsed.names:
        if name not in bindings:
            missing.append(name)
            continue
        value = bindings[name]
        if isinstance(value, Value):
            given[name] = value
        elif isinstance(value, numbers.Real) and not isinstance(value, bool):
            given[name] = core.check_data(value, f"binding {name!r}")  # a float, or refused
        else:
            raise InputTypeError(f"binding {name!r}: expected a number or a Value, got "
                                 f"{type(value).__name__} {value!r:.80}")
    if missing:
        first = next(s for s in parsed._steps if s.kind == "name" and s.value == missing[0])
        listed = ", ".join(map(repr, missing))
        reason = f"unbound name{'s' * (len(missing) != 1)} {listed}"
        spare = [k for k in bindings if isinstance(k, str) and k not in parsed.names]
        hints = [
            f"{name!r} -> {close[0]!r}"
            for name in missing
            for close in [difflib.get_close_matches(name, spare, n=1)]
            if close
        ]
        if hints:
            reason += f" (did you mean {', '.join(hints)}?)"
        raise ExpressionError(reason, parsed.text, first.start, first.end)
    return given


def _target_graph(given: Mapping[str, Any], graph: Graph | None) -> Graph | None:
    """The graph new nodes go to; bound values must all belong to it."""
    if graph is not None and not isinstance(graph, Graph):
        raise InputTypeError(f"graph must be a Graph or None, got {type(graph).__name__}")
    target = graph
    for name, value in given.items():
        if not isinstance(value, Value):
            continue
        home = value.graph
        if graph is not None and home is not graph:
            where = "no graph" if home is None else f"graph {home.name!r}"
            raise GraphMismatchError(f"binding {name!r}: {core.describe(value)} belongs to "
                                     f"{where}, not to graph {graph.name!r}")
        if home is not None:
            if target is not None and home is not target:
                raise GraphMismatchError(
                    f"binding {name!r}: {core.describe(value)} belongs to graph "
                    f"{home.name!r}, but other bound values belong to graph {target.name!r}")
            target = home
    return target


def _run(parsed: ParsedExpression, given: Mapping[str, Any], graph: Graph | None) -> Built:
    """Execute the steps, creating leaves and applying ops (in ``graph`` when given)."""
    stack: list[Value] = []
    leaves: dict[str, Value] = {}
    for step in parsed._steps:
        if step.kind == "const":
            stack.append(Value(step.value) if graph is None else graph.leaf(step.value))
        elif step.kind == "name":
            value = leaves.get(step.value)
            if value is None:
                bound = given[step.value]
                if isinstance(bound, Value):
                    value = bound
                elif graph is None:
                    value = Value(bound, step.value)
                else:
                    value = graph.leaf(bound, step.value)
                leaves[step.value] = value
            stack.append(value)
        else:
            inputs = stack[len(stack) - step.arity:]
            del stack[len(stack) - step.arity:]
            try:
                op = core.lookup(step.value)
                node = core.apply_op(op, inputs, dict(step.attrs))
            except RuleError as exc:
                # The expression is fine; an op failed on these values (log of -1): the work
                # failed, which callers tell apart from a bad expression by this class.
                raise OpFailedInExpression(str(exc), parsed.text, step.start, step.end,
                                           cause=exc) from exc
            except (ArityError, AttributeSpecError, UnknownOpError) as exc:
                raise ExpressionError(str(exc), parsed.text, step.start, step.end) from exc
            stack.append(node)
    (root,) = stack
    return Built(root, leaves)


# --- evaluating ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Evaluation:
    """The value of an expression and d value / d name for every name it uses."""

    value: float
    grads: dict[str, float]
    root: Value = field(repr=False, compare=False)
    leaves: dict[str, Value] = field(repr=False, compare=False)


def evaluate(expression: str | ParsedExpression, /, **bindings: float | Value) -> Evaluation:
    """Build ``expression`` from free values, run ``backward()``, return value and gradients.

    ``evaluate("3*x**2 - 4*x + 5", x=3)`` gives ``value=20.0`` and ``grads={'x': 14.0}``.
    Gradients of bound `Value`\\ s (and of what they depend on) are reset before the backward
    pass. Raises what `build` raises, and `GradRuleError` if a gradient rule fails.
    """
    root, leaves = build(expression, bindings)
    root.zero_grad()
    root.backward()
    return Evaluation(
        value=float(root.data),
        grads={name: value.grad for name, value in leaves.items()},
        root=root,
        leaves=leaves,
    )
