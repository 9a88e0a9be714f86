"""The safe expression parser: what it builds, what it refuses and where; it never runs code."""

from __future__ import annotations

import ast
import builtins
import math
import pickle
import string
import sys
import warnings
from contextlib import contextmanager

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from opgraph import (
    GradRuleError,
    Graph,
    GraphLimitError,
    GraphMismatchError,
    InputTypeError,
    OpDef,
    OpgraphError,
    Value,
    build_registry,
    hookimpl,
    lookup_op,
    topological_order,
)
from opgraph.expr import (
    MAX_DEPTH,
    MAX_LENGTH,
    Built,
    Evaluation,
    ExpressionError,
    ParsedExpression,
    build,
    evaluate,
    parse,
)
from opgraph.registry import set_default_registry

NEURON = "tanh(x1*w1 + x2*w2 + b)"
NEURON_BINDINGS = {"x1": 2.0, "x2": 0.0, "w1": -3.0, "w2": 1.0, "b": 6.8813735870195432}
NEURON_GRADS = {"x1": -1.5, "w1": 1.0, "x2": 0.5, "w2": 0.0, "b": 0.5}


def ops_in(root: Value) -> list[str | None]:
    """The op of every node under ``root``, inputs first."""
    return [v.op for v in topological_order(root)]


# --- the seed's examples -----------------------------------------------------------------------


def test_seed_function_value_and_gradient():
    result = evaluate("3*x**2 - 4*x + 5", x=3)
    assert isinstance(result, Evaluation)
    assert result.value == 20.0
    assert result.grads == {"x": 14.0}
    assert result.root.data == 20.0
    assert result.leaves["x"].label == "x"


def test_seed_function_builds_the_same_graph_as_value_arithmetic():
    root, _ = build("3*x**2 - 4*x + 5", {"x": 3.0})
    x = Value(3.0)
    expected = 3 * x**2 - 4 * x + 5
    assert ops_in(root) == ops_in(expected)
    square = next(v for v in topological_order(root) if v.op == "pow_const")
    assert square.attrs == {"exponent": 2}
    assert square._op == "**2"


def test_seed_neuron():
    result = evaluate(NEURON, **NEURON_BINDINGS)
    assert result.value == 0.7071067811865476
    assert result.grads == pytest.approx(NEURON_GRADS)
    assert list(result.grads) == ["x1", "w1", "x2", "w2", "b"]


def test_neuron_built_into_a_graph():
    g = Graph("demo")
    root, leaves = build(NEURON, NEURON_BINDINGS, g)
    assert root.graph is g
    assert len(g) == 10  # five leaves, two products, two sums, tanh
    assert all(v.graph is g for v in leaves.values())
    assert {v.label for v in g.leaves} == set(NEURON_BINDINGS)
    assert [g.node(v.id) for v in leaves.values()] == list(leaves.values())
    g.backward(root)
    assert root.data == 0.7071067811865476
    assert {name: v.grad for name, v in leaves.items()} == pytest.approx(NEURON_GRADS)


# --- graphs and bindings -----------------------------------------------------------------------


def test_names_bound_to_existing_graph_nodes():
    g = Graph("g")
    x = g.leaf(2.0, "x")
    y = g.leaf(5.0)
    root, leaves = build("x*x + y", {"x": x, "y": y}, graph=g)
    assert leaves == {"x": x, "y": y}
    assert y.label == ""  # a bound value is used as it is
    assert len(g) == 4 and root.id == 3 and root.data == 9.0
    # a computed node can be bound too
    again, _ = build("2 * r", {"r": root}, g)
    assert again.data == 18.0 and again.graph is g


def test_graph_values_without_a_graph_argument_join_their_graph():
    g = Graph("g")
    x = g.leaf(2.0, "x")
    root, _ = build("x + 1", {"x": x})
    assert root.graph is g and len(g) == 3


def test_free_values_as_bindings():
    x = Value(4.0, "mine")
    root, leaves = build("x * x", {"x": x})
    assert leaves["x"] is x and x.label == "mine"
    assert root.graph is None and root.data == 16.0


def test_a_value_from_elsewhere_is_refused_in_a_graph():
    g, other = Graph("g"), Graph("other")
    with pytest.raises(GraphMismatchError, match=r"binding 'x'.*graph 'other'"):
        build("x + 1", {"x": other.leaf(1.0)}, g)
    with pytest.raises(GraphMismatchError, match=r"binding 'x'.*no graph"):
        build("x + 1", {"x": Value(1.0)}, g)
    with pytest.raises(GraphMismatchError, match="other bound values"):
        build("x + y", {"x": g.leaf(1.0), "y": other.leaf(1.0)})
    assert len(g) == 1 and len(other) == 2


def test_a_failing_op_leaves_the_graph_untouched():
    g = Graph("g")
    x = g.leaf(-1.0, "x")
    version = g.version
    with pytest.raises(ExpressionError, match="op 'log' failed") as info:
        build("x * 2 + log(x)", {"x": x}, g)
    assert info.value.offset == 8 and info.value.end_offset == 14
    assert isinstance(info.value.__cause__, OpgraphError)
    assert len(g) == 1 and g.version == version


def test_the_node_limit_is_checked_before_any_node_is_added():
    g = Graph("small", max_nodes=4)
    g.leaf(1.0)
    with pytest.raises(GraphLimitError, match="adds 5"):
        build("x * y + 1", {"x": 1.0, "y": 2.0}, g)
    assert len(g) == 1
    build("x * y", {"x": 1.0, "y": 2.0}, g)
    assert len(g) == 4


def test_bad_bindings():
    with pytest.raises(InputTypeError, match=r"binding 'x'.*str"):
        build("x + 1", {"x": "3"})
    with pytest.raises(InputTypeError, match=r"binding 'x'.*bool"):
        build("x + 1", {"x": True})
    with pytest.raises(InputTypeError, match=r"^binding 'x': an int of 401 digits is too big"):
        build("x + 1", {"x": 10**400})  # refused as a number, not an OverflowError
    with pytest.raises(InputTypeError, match="mapping"):
        build("x + 1", [("x", 1.0)])  # type: ignore[arg-type]
    with pytest.raises(InputTypeError, match="must be a string"):
        parse(b"x + 1")  # type: ignore[arg-type]
    with pytest.raises(InputTypeError, match="Graph"):
        build("x", {"x": 1.0}, graph="g")  # type: ignore[arg-type]


def test_unused_bindings_are_ignored_and_numbers_become_float_leaves():
    root, leaves = build("x", {"x": 3, "y": 1.0})
    assert list(leaves) == ["x"] and root is leaves["x"]
    assert type(root.data) is float and root.label == "x"


def test_a_name_used_twice_is_one_leaf():
    root, leaves = build("x * x", {"x": 3.0})
    a, b = root.inputs
    assert a is b is leaves["x"]
    assert evaluate("x * x + x", x=3.0).grads == {"x": 7.0}


def test_unbound_names_are_listed_with_the_first_position():
    with pytest.raises(ExpressionError) as info:
        build("x*y + z*w + y", {"x": 1.0, "ww": 2.0})
    error = info.value
    assert error.reason.startswith("unbound names 'y', 'z', 'w'")
    assert "'w' -> 'ww'" in error.reason
    assert (error.offset, error.end_offset) == (2, 3)
    with pytest.raises(ExpressionError, match=r"^unbound name 'b'"):
        evaluate(NEURON, **{k: v for k, v in NEURON_BINDINGS.items() if k != "b"})


def test_parse_once_build_many_times():
    parsed = parse("a * b + tanh(a)")
    assert isinstance(parsed, ParsedExpression)
    assert parsed.names == ("a", "b")
    assert isinstance(parsed.tree, ast.Expression)
    first = build(parsed, {"a": 1.0, "b": 2.0})
    second = build(parsed, {"a": 0.0, "b": 2.0})
    assert isinstance(first, Built)
    assert first.root.data == pytest.approx(2.0 + math.tanh(1.0))
    assert second.root.data == 0.0


def test_evaluate_resets_the_gradients_of_bound_values():
    x = Value(2.0, "x")
    x.grad = 100.0
    assert evaluate("x * 3", x=x).grads == {"x": 3.0}
    assert evaluate("x * 3", x=x).grads == {"x": 3.0}


def test_evaluate_lets_a_failing_gradient_rule_through():
    with pytest.raises(GradRuleError, match="pow_const"):
        evaluate("relu(x) ** 0.5", x=-1.0)


def test_a_name_called_expression_can_be_bound():
    assert evaluate("expression * 2", expression=3.0).grads == {"expression": 2.0}


def test_op_names_and_variable_names_do_not_clash():
    assert evaluate("tanh(tanh)", tanh=0.5).value == pytest.approx(math.tanh(0.5))


# --- what numbers and operators become ---------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "exponent"),
    [("x ** 2", 2), ("x ** -1", -1), ("x**2.5", 2.5), ("x ** +3", 3), ("x ** (-(-2))", 2),
     ("x ** 100000", 100000.0), ("pow_const(x, exponent=2)", 2)],
)
def test_constant_exponents_use_pow_const(text, exponent):
    base = 1.0001
    root, _ = build(text, {"x": base})
    assert root.op == "pow_const"
    assert root.attrs == {"exponent": exponent}
    assert type(root.attrs["exponent"]) is type(exponent)
    assert root.data == pytest.approx(base**exponent)


@pytest.mark.parametrize("text", ["x ** y", "2 ** x", "x ** (1 + 1)", "pow(x, 2)", "x ** -y"])
def test_other_exponents_use_pow(text):
    root, _ = build(text, {"x": 2.0, "y": 3.0})
    assert root.op == "pow"


def test_numbers_are_leaves_not_folded():
    root, leaves = build("2 * 3 * x", {"x": 1.0})
    assert leaves.keys() == {"x"}
    assert [v.data for v in topological_order(root) if v.is_leaf] == [2.0, 3.0, 1.0]
    assert ops_in(root) == [None, None, "mul", None, "mul"]
    constant, _ = build("1e3 + 0x10 + 1_000")
    assert constant.data == 2016.0


def test_signs_on_literals_are_part_of_the_number():
    root, _ = build("-3")
    assert root.is_leaf and root.data == -3.0 and root.label == ""
    assert build("--3")[0].data == 3.0
    negated, _ = build("-x", {"x": 2.0})
    assert negated.op == "neg" and negated.data == -2.0
    same, leaves = build("+x", {"x": 2.0})
    assert same is leaves["x"]
    assert build("-2 ** 2")[0].data == -4.0  # Python's precedence: -(2 ** 2)


def test_no_unbounded_integer_arithmetic():
    # as floats these overflow at once; as Python ints they would run for hours
    with pytest.raises(ExpressionError, match=r"op 'pow' failed.*OverflowError"):
        build("9 ** 9 ** 9 ** 9")
    with pytest.raises(ExpressionError, match="too large for a float"):
        parse("x + " + "9" * 400)


def test_every_default_op_by_name():
    x = 0.7
    cases = {
        "add(x, 2)": x + 2, "sub(x, 2)": x - 2, "mul(x, 2)": x * 2, "div(x, 2)": x / 2,
        "neg(x)": -x, "pow(x, 2)": x**2, "pow_const(x, exponent=3)": x**3, "exp(x)": math.exp(x),
        "log(x)": math.log(x), "tanh(x)": math.tanh(x), "sigmoid(x)": 1 / (1 + math.exp(-x)),
        "relu(x)": x, "relu(-x)": 0.0,
    }
    for text, expected in cases.items():
        assert evaluate(text, x=x).value == pytest.approx(expected), text


def test_newlines_comments_and_leading_whitespace():
    assert evaluate("  \n x + 1", x=1.0).value == 2.0
    assert evaluate("(x  # the input\n * 2)", x=3.0).value == 6.0


# --- plugin ops --------------------------------------------------------------------------------


class _TestOps:
    """A third-party plugin: softplus, a three-input op and one with an attribute."""

    @hookimpl
    def opgraph_register_ops(self):
        return [
            OpDef("softplus", 1, lambda x: math.log1p(math.exp(x)),
                  lambda x, out: (1 / (1 + math.exp(-x)),), doc="log(1 + e ** x)"),
            OpDef("fma", 3, lambda a, b, c: a * b + c, lambda a, b, c, out: (b, a, 1.0),
                  doc="a * b + c"),
            OpDef("leaky", 1, lambda x, slope: x if x > 0 else slope * x,
                  lambda x, out, slope: (1.0 if x > 0 else slope,), attrs=("slope",),
                  sample_attrs={"slope": 0.1}, doc="leaky relu"),
        ]


@pytest.fixture
def plugin_ops():
    old = set_default_registry(build_registry([("test-ops", _TestOps())]))
    try:
        yield
    finally:
        set_default_registry(old)


def test_plugin_ops_by_name(plugin_ops):
    result = evaluate("softplus(x) + fma(x, y, 1) + leaky(-x, slope=0.5)", x=1.0, y=2.0)
    assert result.value == pytest.approx(math.log1p(math.e) + 3.0 - 0.5)
    assert result.grads["x"] == pytest.approx(1 / (1 + math.exp(-1)) + 2.0 - 0.5)
    with pytest.raises(ExpressionError, match="did you mean 'softplus'") as info:
        parse("1 + sofplus(x)")
    assert info.value.offset == 4
    with pytest.raises(ExpressionError, match="'fma' takes 3 inputs, got 2") as info:
        parse("fma(x, y)")
    with pytest.raises(ExpressionError, match=r"no attribute 'slop'.*did you mean 'slope'") as info:
        parse("leaky(x, slop=1)")
    assert info.value.offset == 9


def test_plugin_ops_are_unknown_without_the_plugin():
    with pytest.raises(ExpressionError, match="no op named 'softplus'"):
        parse("softplus(x)")


# --- refusals, each with its position ----------------------------------------------------------

REFUSED = [
    # text, offset, end offset, words in the reason
    ("x.__class__", 1, 11, "attribute access ('x.__class__')"),
    ("1 + x . real", 6, 12, "attribute access"),
    ("x.y(1)", 1, 3, "attribute access"),
    ("__import__('os')", 0, 10, "no op named '__import__'"),
    ("__import__('os').system('ls')", 0, 10, "no op named '__import__'"),
    ("print(x)", 0, 5, "no op named 'print'"),
    ("tanhh(x)", 0, 5, "no op named 'tanhh'; did you mean 'tanh'?"),
    ("x + eval('1')", 4, 8, "no op named 'eval'"),
    ("x[0]", 1, 4, "subscripts ('x[0]')"),
    ("x + y[1:2]", 5, 10, "subscripts"),
    ("lambda: 1", 0, 9, "lambda expressions are not allowed"),
    ("(lambda: x)()", 1, 10, "only ops can be called"),
    ("tanh(x)(y)", 0, 7, "only ops can be called"),
    ("x < y", 2, 3, "comparisons ('x < y')"),
    ("x + (y == 1)", 7, 9, "comparisons"),
    ("x is not y", 2, 4, "comparisons"),
    ("x and y", 2, 5, "boolean operators ('and')"),
    ("x or y", 2, 4, "boolean operators ('or')"),
    ("not x", 0, 5, "the operator 'not' is not allowed"),
    ("~x", 0, 2, "the operator '~'"),
    ("x // y", 2, 4, "the operator '//' is not supported"),
    ("x % 2", 2, 3, "the operator '%'"),
    ("x @ y", 2, 3, "the operator '@'"),
    ("x ^ y", 2, 3, "the operator '^'"),
    ("'abc'", 0, 5, "strings ('abc') are not allowed"),
    ("x + 'abc'", 4, 9, "strings"),
    ("b'abc'", 0, 6, "bytes"),
    ("f'{x}'", 0, 6, "f-strings are not allowed"),
    ("x + f'{x.y}'", 4, 12, "f-strings"),
    ("(y := 2)", 1, 7, "assignment expressions (:=)"),
    ("tanh(*x)", 5, 7, "unpacking with '*'"),
    ("tanh(**x)", 5, 8, "unpacking with '**'"),
    ("True", 0, 4, "True is not allowed"),
    ("x * None", 4, 8, "None is not allowed"),
    ("...", 0, 3, "Ellipsis is not allowed"),
    ("2j * x", 0, 2, "complex numbers (2j)"),
    ("x, y", 0, 4, "tuples"),
    ("[x]", 0, 3, "lists"),
    ("{x: 1}", 0, 6, "dicts"),
    ("{x}", 0, 3, "sets"),
    ("[x for x in y]", 0, 14, "comprehensions"),
    ("(x for x in y)", 0, 14, "generator expressions"),
    ("x if y else 1", 0, 13, "conditional expressions"),
    ("await x", 0, 7, "'await'"),
    ("(yield x)", 1, 8, "'yield'"),
    ("tanh(x, y)", 0, 10, "op 'tanh' takes 1 input, got 2"),
    ("add(x)", 0, 6, "op 'add' takes 2 inputs, got 1"),
    ("tanh(x, foo=1)", 8, 13, "op 'tanh' takes no attributes, got 'foo'"),
    ("pow_const(x, exp=2)", 13, 18, "has no attribute 'exp' (it takes exponent)"),
    ("pow_const(x)", 0, 12, "needs attribute 'exponent'"),
    ("pow_const(x, exponent=y)", 22, 23, "must be a number or a string literal"),
    ("pow_const(x, exponent=2, exponent=3)", 25, 35, "given twice"),
    ("x +", 3, 3, "invalid syntax: the expression ends too early"),
    ("x y", 2, 3, "invalid syntax"),
    ("x = 1", 2, 3, "invalid syntax"),
    ("(x + 1", 0, 1, "'(' was never closed"),
    ("x)", 1, 2, "unmatched ')'"),
    ("'abc", 0, 1, "unterminated string"),
    ("import os", 0, 1, "invalid syntax"),
    ("x $ y", 2, 3, "invalid syntax"),
    ("", 0, 0, "the expression is empty"),
    (" \n\t", 0, 3, "the expression is empty"),
    ("x\0", 1, 2, "a null character"),
    ("x + \ud800", 4, 5, "lone surrogate"),
]


@pytest.mark.parametrize(("text", "offset", "end", "words"), REFUSED,
                         ids=[repr(case[0]) for case in REFUSED])
def test_refused_with_position(text, offset, end, words):
    with pytest.raises(ExpressionError) as info:
        build(text, {"x": 1.0, "y": 2.0})
    error = info.value
    assert words in error.reason
    assert (error.offset, error.end_offset) == (offset, end), error.reason
    assert error.text == text
    assert "\n" not in str(error)
    assert str(error).startswith(error.reason)
    assert str(error).endswith(f"column {error.col + 1})")


def test_leftmost_problem_is_reported():
    with pytest.raises(ExpressionError, match="no op named 'print'"):
        parse("print(x.y)")
    with pytest.raises(ExpressionError, match="attribute access") as info:
        parse("x.y + print(z)")
    assert info.value.offset == 1


def test_error_attributes_lines_and_excerpt():
    text = "tanh(x) +\n  sigmoid(y.z)"
    with pytest.raises(ExpressionError) as info:
        parse(f"({text})")
    error = info.value
    assert (error.lineno, error.col) == (2, 11)
    assert error.offset == len("(tanh(x) +\n  sigmoid(y")
    assert str(error) == "attribute access ('y.z') is not allowed (at line 2, column 12)"
    assert error.excerpt() == "  sigmoid(y.z))\n           ^^"
    assert isinstance(error, OpgraphError) and isinstance(error, ValueError)
    copy = pickle.loads(pickle.dumps(error))
    assert str(copy) == str(error) and copy.offset == error.offset


def test_positions_count_characters_not_bytes():
    with pytest.raises(ExpressionError) as info:
        parse("éé + ü.x")
    assert info.value.offset == 6 and info.value.excerpt() == "éé + ü.x\n      ^^"


def test_positions_after_windows_and_old_mac_line_breaks():
    with pytest.raises(ExpressionError) as info:
        parse("(x +\r\n y +\r z.w)")
    error = info.value
    assert (error.lineno, error.col, error.offset) == (3, 2, 13)


def test_excerpt_of_a_long_line_is_cut():
    text = "x + " * 40 + "y.z" + " + x" * 40
    with pytest.raises(ExpressionError) as info:
        parse(text, max_depth=1000)
    first, carets = info.value.excerpt().split("\n")
    assert first.startswith("...") and first.endswith("...") and len(first) <= 80
    assert first[carets.index("^"):].startswith(".z")


# --- limits ------------------------------------------------------------------------------------


def test_length_limit():
    assert MAX_LENGTH == 10_000
    parse("x" * MAX_LENGTH)
    with pytest.raises(ExpressionError, match="10,001 characters long; the limit is 10,000") as e:
        parse("x" * (MAX_LENGTH + 1))
    assert e.value.offset == MAX_LENGTH
    with pytest.raises(ExpressionError, match="9 characters long; the limit is 5"):
        parse("x + y + z", max_length=5)


def test_depth_limit():
    assert MAX_DEPTH == 200
    parse("+".join(["x"] * 200))  # 199 additions and their operands: 200 levels
    with pytest.raises(ExpressionError, match="nested more than 200 levels deep") as info:
        parse("+".join(["x"] * 201))
    assert info.value.offset == 0
    parse("+".join(["x"] * 201), max_depth=400)
    with pytest.raises(ExpressionError, match="more than 3 levels"):
        parse("tanh(tanh(tanh(x)))", max_depth=3)


@pytest.mark.parametrize(
    "text",
    ["-" * 9_999 + "x", "(" * 300 + "x" + ")" * 300, "x**" * 3_333 + "x", "x+" * 4_999 + "x",
     "tanh(" * 1_500 + "x" + ")" * 1_500, "[" * 5_000 + "]" * 5_000, "x" + ".a" * 4_999,
     "not " * 2_499 + "x", "lambda:" * 1_428],
)
def test_deep_expressions_are_refused_cleanly(text):
    assert len(text) <= MAX_LENGTH
    with pytest.raises(ExpressionError, match=r"nest|invalid syntax|not allowed"):
        parse(text)


def test_big_int_literal_is_refused_cleanly():
    with pytest.raises(ExpressionError, match="invalid syntax: Exceeds the limit"):
        parse("1" * 5_000)


# --- nothing is ever executed ------------------------------------------------------------------


@contextmanager
def nothing_runs():
    """Fail on eval, exec, compile to code, or an import of a module not yet loaded."""
    lookup_op("add")  # load the plugins first: importing them compiles their code
    real_compile, real_import = builtins.compile, builtins.__import__

    def no_eval(*args, **kwargs):
        raise AssertionError("eval or exec called")

    def only_ast(source, filename, mode, flags=0, *args, **kwargs):
        if not flags & ast.PyCF_ONLY_AST:
            raise AssertionError(f"compile to code called on {source!r:.60}")
        return real_compile(source, filename, mode, flags, *args, **kwargs)

    def loaded_only(name, *args, **kwargs):
        if name not in sys.modules:
            raise AssertionError(f"import of {name!r}")
        return real_import(name, *args, **kwargs)

    saved = builtins.eval, builtins.exec, builtins.compile, builtins.__import__
    builtins.eval = builtins.exec = no_eval
    builtins.compile = only_ast
    builtins.__import__ = loaded_only
    try:
        yield
    finally:
        builtins.eval, builtins.exec, builtins.compile, builtins.__import__ = saved


def build_or_refuse(text: str) -> None:
    """Build ``text`` with x and y bound; anything but an `ExpressionError` fails the test."""
    with nothing_runs():
        try:
            root, _ = build(text, {"x": 1.5, "y": -0.5})
        except ExpressionError as error:
            assert 0 <= error.offset <= error.end_offset <= len(text)
            assert error.lineno >= 1 and error.col >= 0
            str(error)
            error.excerpt()
        else:
            assert isinstance(root, Value)


def test_payloads_do_not_run(tmp_path):
    marker = tmp_path / "ran"
    payloads = [
        f"__import__('os').system('touch {marker}')",
        f"open('{marker}', 'w')",
        f"exec(\"open('{marker}', 'w')\")",
        "().__class__.__bases__[0].__subclasses__()",
        "x.__globals__['__builtins__']",
        "(lambda: __import__('os'))()",
        f"[c for c in ().__class__.__base__.__subclasses__() if c.__name__ == '{marker}']",
        "breakpoint()",
        "globals()",
        "getattr(x, '__class__')",
    ]
    for text in payloads:
        with pytest.raises(ExpressionError):
            build_or_refuse_strict(text)
    assert not marker.exists()


def build_or_refuse_strict(text: str) -> None:
    with nothing_runs():
        build(text, {"x": 1.0})


def test_dunder_names_are_only_names():
    with pytest.raises(ExpressionError, match="unbound name '__builtins__'"):
        build_or_refuse_strict("__builtins__ + 1")
    assert evaluate("__class__ * 2", __class__=3.0).value == 6.0


TOKENS = [
    "x", "y", "z", "1", "2.5", "-", "+", "*", "/", "**", "//", "(", ")", ",", ".", "[", "]", ":",
    "tanh", "pow", "pow_const", "exp", "log", "relu", "print", "__import__", "exponent=",
    "exponent", "=", "'s'", "f'{x}'", "lambda", "if", "else", "and", "not", "==", "<", "1j",
    "True", "None", ":=", "*x", "**x", " ", "\n", "#", "__class__", "0", "1e308", "1e999",
    "\\", "'", '"', "@", "~", "yield", "await", "{", "}",
]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.sampled_from(TOKENS), max_size=25).map("".join))
def test_token_soup_only_raises_expression_error(text):
    build_or_refuse(text)


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=string.printable, max_size=80))
def test_printable_strings_only_raise_expression_error(text):
    build_or_refuse(text)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=80))
def test_any_unicode_only_raises_expression_error(text):
    build_or_refuse(text)


# --- random valid expressions agree with Value arithmetic --------------------------------------

_UNARY = ["tanh", "exp", "sigmoid", "relu", "neg"]


def _expressions(leaf):
    """(text, function of x and y over Values) pairs, built from ``leaf``."""

    def extend(children):
        binary = st.tuples(children, st.sampled_from(["+", "-", "*"]), children).map(
            lambda t: (f"({t[0][0]} {t[1]} {t[2][0]})",
                       lambda x, y, a=t[0][1], op=t[1], b=t[2][1]: {
                           "+": lambda p, q: p + q,
                           "-": lambda p, q: p - q,
                           "*": lambda p, q: p * q,
                       }[op](a(x, y), b(x, y))))
        unary = st.tuples(st.sampled_from(_UNARY), children).map(
            lambda t: (f"{t[0]}({t[1][0]})",
                       lambda x, y, name=t[0], a=t[1][1]: getattr(a(x, y), name)()
                       if name != "neg" else -a(x, y)))
        power = st.tuples(children, st.sampled_from([2, 3, -1, 0.5])).map(
            lambda t: (f"relu({t[0][0]}) ** {t[1]}" if t[1] in (0.5,) else
                       f"({t[0][0]}) ** {t[1]}",
                       lambda x, y, a=t[0][1], e=t[1]: (a(x, y).relu() if e == 0.5 else a(x, y))
                       ** e))
        return st.one_of(binary, unary, power)

    return st.recursive(leaf, extend, max_leaves=8)


_LEAVES = st.one_of(
    st.just(("x", lambda x, y: x)),
    st.just(("y", lambda x, y: y)),
    st.floats(0.1, 3.0).map(lambda c: (repr(c), lambda x, y, c=c: Value(c))),
)


@settings(max_examples=150, deadline=None)
@given(_expressions(_LEAVES), st.floats(0.2, 2.0), st.floats(0.2, 2.0))
def test_random_expressions_match_value_arithmetic(case, x0, y0):
    text, function = case
    x, y = Value(x0), Value(y0)
    try:
        expected = function(x, y)
    except OpgraphError:  # e.g. 0 ** -1; the expression must fail the same way
        with pytest.raises(ExpressionError):
            evaluate(text, x=x0, y=y0)
        return
    if not isinstance(expected, Value):
        expected = Value(float(expected))
    if not math.isfinite(expected.data):
        return
    try:
        expected.backward()
    except GradRuleError:  # e.g. the derivative of relu(x) ** 0.5 at 0
        with pytest.raises(GradRuleError):
            evaluate(text, x=x0, y=y0)
        return
    got = evaluate(text, x=x0, y=y0)
    assert got.value == pytest.approx(expected.data, rel=1e-12, abs=1e-12)
    for name, leaf in (("x", x), ("y", y)):
        if name in got.grads:
            assert got.grads[name] == pytest.approx(leaf.grad, rel=1e-9, abs=1e-9)


def test_parser_warnings_are_not_printed():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for text in ["1if x else y", "'\\d'", "x is 1", "0x1for"]:
            with pytest.raises(ExpressionError):
                parse(text)
