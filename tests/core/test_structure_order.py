"""`core.structure_order`: the topological order, and a key equal exactly for graphs of the same
structure. The truth it is checked against is the graph file's document without its values
(the same ops, attributes, inputs, labels and sources, node for node)."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import opgraph
from opgraph import Value, core, fileformat

SYMBOLS = ("+", "*", "-", "tanh", "relu", "pow2", "pow3")


def build(recipe: list[tuple[str, int, int, str]], leaves: list[float]) -> Value:
    """A graph from a recipe: each step applies an op to two earlier values chosen by index
    (so values are shared as the recipe says), with a label."""
    values = [Value(x, label=f"x{i}") for i, x in enumerate(leaves)]
    for symbol, i, j, label in recipe:
        a, b = values[i % len(values)], values[j % len(values)]
        if symbol == "+":
            v = a + b
        elif symbol == "*":
            v = a * b
        elif symbol == "-":
            v = a - b
        elif symbol == "tanh":
            v = a.tanh()
        elif symbol == "relu":
            v = a.relu()
        else:
            v = a ** int(symbol[-1])
        v.label = label
        values.append(v)
    return values[-1]


def shape(root: Value) -> list[dict]:
    return [{k: n[k] for k in ("op", "inputs", "attrs", "label", "source")}
            for n in fileformat.to_document(root)["nodes"]]


steps = st.lists(st.tuples(st.sampled_from(SYMBOLS), st.integers(0, 50), st.integers(0, 50),
                           st.sampled_from(["", "h"])), min_size=1, max_size=25)


@settings(max_examples=300, deadline=None)
@given(steps, steps, st.integers(1, 4), st.integers(1, 4))
def test_the_key_is_equal_exactly_when_the_structure_is(a, b, leaves_a, leaves_b) -> None:
    rng = random.Random(0)
    root_a = build(a, [rng.uniform(-2, 2) for _ in range(leaves_a)])
    root_b = build(b, [rng.uniform(-2, 2) for _ in range(leaves_b)])
    order_a, key_a = core.structure_order(root_a)
    order_b, key_b = core.structure_order(root_b)
    assert order_a == core.topological_order(root_a)
    assert order_b == core.topological_order(root_b)
    assert (key_a == key_b) == (shape(root_a) == shape(root_b))


@settings(max_examples=100, deadline=None)
@given(steps, st.integers(1, 4))
def test_the_same_recipe_with_other_numbers_has_the_same_key(recipe, leaves) -> None:
    one = build(recipe, [0.5 + i for i in range(leaves)])
    two = build(recipe, [-1.25 * i for i in range(leaves)])
    assert core.structure_order(one)[1] == core.structure_order(two)[1]


def test_inputs_swapped_or_shared_otherwise_are_told_apart() -> None:
    def key(make):
        a, b = Value(1.0), Value(2.0)
        return core.structure_order(make(a, b))[1]

    # The same ops in the same order, wired differently: (a*b)*a against (a*b)*b, the inputs
    # of a second product swapped, a node shared against two. (a+b against b+a is the same
    # structure: a sum of the first two leaves placed.)
    assert key(lambda a, b: (a * b) * a) != key(lambda a, b: (a * b) * b)
    assert key(lambda a, b: a + b) == key(lambda a, b: b + a)
    assert key(lambda a, b: (a * b) + (a * b)) != key(lambda a, b: (a * b) + (b * a))
    c = Value(3.0)
    assert key(lambda a, b: (a + b) * (a + b)) != key(lambda a, b: (a + b) * (c + b))


def test_attributes_labels_and_sources_count() -> None:
    def key(root):
        return core.structure_order(root)[1]

    x = Value(2.0)
    assert key(x ** 2) != key(x ** 3)  # pow_const's exponent is an attribute
    assert key(x * 2) == key(x * 2)
    labelled = x * 2
    labelled.label = "y"
    assert key(labelled) != key(x * 2)
    with opgraph.track_source():
        here = x * 2
        there = x * 2
    assert key(here) != key(there)  # two lines of this file


def test_a_leaf_and_a_deep_chain() -> None:
    leaf = Value(1.0)
    order, key = core.structure_order(leaf)
    assert order == [leaf]
    v = leaf
    for _ in range(100_000):  # no recursion
        v = v + 1.0
    order, key = core.structure_order(v)
    assert len(order) == 200_001 and order[-1] is v
    assert len(key[0]) == 100_000 * 3  # each add: a -1 for the new input, then -1 and -2


@settings(max_examples=200, deadline=None)
@given(steps, st.integers(1, 4))
def test_a_remembered_backward_walk_is_the_walk_and_the_pass_the_pass(recipe, leaves) -> None:
    numbers = [0.3 * i - 0.4 for i in range(leaves)]
    plain, remembered = build(recipe, numbers), build(recipe, numbers)
    old = core.remember_walks(False)
    try:
        plain.backward()
        expected_order, expected_key = core.structure_order(plain)
        core.remember_walks(True)
        remembered.backward()
        order, key = core.structure_order(remembered)  # the pass's walk, taken
        assert key == expected_key
        assert [v.grad for v in order] == [v.grad for v in expected_order]
        assert [v.data for v in order] == [v.data for v in expected_order]
        again_order, again_key = core.structure_order(remembered)  # walked afresh
        assert again_order == order and again_key == key
    finally:
        core.remember_walks(old)


def test_a_remembered_walk_is_for_its_root_only_and_not_kept_by_a_failed_pass() -> None:
    from opgraph.core import passes

    old = core.remember_walks(True)
    try:
        a, b = Value(2.0), Value(-1.0)
        first = (a * b).tanh()
        first.backward()
        assert passes._last_walk is not None and passes._last_walk[0] is first
        other = a + b
        assert core.structure_order(other)[0] == [a, b, other]  # walked: not first's walk
        x = Value(0.0)
        y = x ** 0.5  # its gradient rule fails at 0 (0.0 ** -0.5)
        x.grad = 7.0
        with pytest.raises(opgraph.GradRuleError):
            y.backward()
        assert x.grad == 7.0  # restored
        assert passes._last_walk is None  # a failed pass keeps no walk
        core.remember_walks(False)
        first.backward()
        assert passes._last_walk is None  # off: nothing kept
    finally:
        core.remember_walks(old)


def test_a_remembered_walk_of_a_deep_chain() -> None:
    from opgraph import gcpolicy

    old = core.remember_walks(True)
    try:
        x = Value(0.5)
        v = x
        for _ in range(100_000):  # deeper than gcpolicy.DEEP: the pass pauses the collector
            v = v * 1.0 + 0.0
        v.backward()
        assert gcpolicy.pauses() == 0  # the pause is given back
        assert x.grad == 1.0
        order, key = core.structure_order(v)
        core.remember_walks(False)
        assert (order, key) == core.structure_order(v)
    finally:
        core.remember_walks(old)
