"""Data is a double at every door: ints become floats on entry (issue 10, defect 1).

``Value(3)`` holds ``3.0``, as a float64 tensor would in PyTorch or JAX, so no chain of ops can
compute with exact Python integers whose size doubles with every ``x * x``. Constant exponents
are attributes, not data: ``x ** 2`` keeps its int exponent (and draws as ``**2``).
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest

import opgraph
from opgraph import ForwardError, Graph, InputTypeError, OpDef, Value


def test_an_int_becomes_a_float() -> None:
    v = Value(3)
    assert type(v.data) is float and v.data == 3.0
    assert repr(v) == "Value(data=3.0)"
    assert type(Value(np.int64(-4)).data) is float
    assert type(Value(Fraction(1, 4)).data) is float and Value(Fraction(1, 4)).data == 0.25
    assert type((Value(2.0) * 3).data) is float  # a number operand becomes a float leaf
    assert type((3 + Value(2.0)).data) is float
    assert type(opgraph.apply("add", 1, 2).data) is float


def test_squaring_an_int_leaf_stays_a_float_and_overflows_to_infinity() -> None:
    x = Value(3)
    for step in range(30):
        x = x * x
        assert type(x.data) is float, step
    assert x.data == math.inf


def test_graph_leaves_and_set_convert_too() -> None:
    g = Graph("ints")
    leaf = g.leaf(3, "x")
    assert type(leaf.data) is float
    square = leaf * leaf
    g.set(leaf.id, 7)
    assert type(leaf.data) is float and square.data == 49.0 and type(square.data) is float


def test_constant_exponents_stay_attributes_of_their_own_type() -> None:
    y = Value(3) ** 2
    assert y.attrs == {"exponent": 2} and type(y.attrs["exponent"]) is int
    assert y._op == "**2" and y.data == 9.0
    with pytest.raises(ForwardError, match="pow_const"):
        Value(3) ** 10**400  # a float power: refused at once, not computed exactly


@pytest.mark.parametrize("make", [
    lambda n: Value(n),
    lambda n: Graph("g").leaf(n),
    lambda n: Value(1.0) * n,
    lambda n: opgraph.apply("neg", n),
])
def test_a_number_too_big_for_a_double_is_refused(make) -> None:
    for number, shown in [(10**400, "an int of 401 digits"), (-(10**5000), "5001 digits"),
                          (Fraction(10**400, 3), "Fraction(")]:
        with pytest.raises(InputTypeError, match="too big for a float") as info:
            make(number)
        assert shown in str(info.value)
        assert len(str(info.value)) < 200


def test_bools_and_non_numbers_are_still_refused() -> None:
    for bad in (True, "3", None, 1j):
        with pytest.raises(InputTypeError, match="expected a real number"):
            Value(bad)


def _plugin_op(forward) -> OpDef:
    return OpDef("odd", 1, forward, lambda x, out: (0.0,))


@pytest.mark.parametrize("eager", [True, False])
def test_a_forward_rule_returning_an_int_gives_a_float(install_ops, ops_plugin,
                                                       eager: bool) -> None:
    install_ops(("odd", ops_plugin(_plugin_op(lambda x: math.floor(x) * 10**300))))
    x = Value(2.5) if eager else Graph("g").leaf(2.5)
    y = x.odd()
    assert type(y.data) is float and y.data == 2e300
    z = y * y  # no exact integer square of a 300-digit number: a float overflow
    assert z.data == math.inf


def test_a_forward_rule_returning_an_int_too_big_is_a_forward_error(install_ops,
                                                                    ops_plugin) -> None:
    install_ops(("odd", ops_plugin(_plugin_op(lambda x: 10**400))))
    with pytest.raises(ForwardError, match=r"op 'odd' .* returned an int of 401 digits, "
                                           r"too big for a float"):
        Value(1.0).odd()
    install_ops(("odd", ops_plugin(_plugin_op(lambda x: True))))
    with pytest.raises(ForwardError, match="returned bool True, not a real number"):
        Value(1.0).odd()
