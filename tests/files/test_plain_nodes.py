"""The loader's quick path for nodes in the writer's plain form (`fileformat._PlainNodes`)
against the field-by-field path (``strict=True`` always takes it): the same graph, node for
node, from the same document, whatever each node holds."""

from __future__ import annotations

import math

from hypothesis import given, settings
from hypothesis import strategies as st

from opgraph import fileformat

OPS = [("add", 2, {}), ("mul", 2, {}), ("tanh", 1, {}), ("relu", 1, {}), ("log", 1, {}),
       ("pow_const", 1, {"exponent": 2}), ("exp", 1, {}), ("nope", 1, {})]
numbers = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-5, 5))
grads = st.one_of(st.floats(-1e3, 1e3), st.integers(-3, 3), st.just(None))
sources = st.one_of(st.none(), st.tuples(st.sampled_from(["a.py", "b.py"]), st.integers(0, 9)))


@st.composite
def documents(draw):
    nodes = []
    for i in range(draw(st.integers(1, 12))):
        node: dict = {"id": i}
        if i < 2 or draw(st.booleans()):
            node.update(op=None, data=draw(numbers))
        else:
            op, arity, attrs = draw(st.sampled_from(OPS))
            node.update(op=op, inputs=[draw(st.integers(0, i - 1)) for _ in range(arity)])
            if attrs:
                node["attrs"] = attrs
            if draw(st.booleans()):
                node["data"] = draw(numbers)
        grad = draw(grads)
        if grad is not None:
            node["grad"] = grad
        if draw(st.booleans()):
            node["label"] = draw(st.sampled_from(["", "x", "w0"]))
        source = draw(sources)
        if source is not None:
            node["source"] = list(source)
        nodes.append(node)
    return {"format": "opgraph-graph", "version": 1, "name": "g", "nodes": nodes}


def described(doc: dict, strict: bool):
    """``(nodes, None)`` as built, or ``(None, error message)``."""
    try:
        graph = fileformat.from_document(doc, strict=strict)
    except Exception as exc:
        return None, f"{type(exc).__name__}: {exc}"
    return [(v.op, [i.id for i in v.inputs], v.attrs, v.label, v.source, v.data, v.grad)
            for v in graph.nodes], None


def same(a, b) -> bool:
    return a == b or (isinstance(a, float) and isinstance(b, float) and math.isnan(a)
                      and math.isnan(b))


@settings(max_examples=400, deadline=None)
@given(documents())
def test_the_quick_path_builds_what_the_careful_one_builds(doc) -> None:
    # Stored data of computed nodes is replaced by the recomputation in both (strict refuses
    # a disagreement): compare with the computed nodes' data left out.
    for node in doc["nodes"]:
        if node.get("op") is not None:
            node.pop("data", None)
    quick, quick_error = described(doc, strict=False)
    careful, careful_error = described(doc, strict=True)
    assert quick_error == careful_error
    if quick is not None:
        assert len(quick) == len(careful)
        for q, c in zip(quick, careful, strict=True):
            assert q[:5] == c[:5] and same(q[5], c[5]) and same(q[6], c[6]), (q, c)
            assert type(q[5]) is float and type(q[6]) is float


def test_loading_while_sources_are_tracked_keeps_the_files_sources() -> None:
    import opgraph

    doc = {"format": "opgraph-graph", "version": 1, "name": "g", "nodes": [
        {"id": 0, "op": None, "data": 1.0},
        {"id": 1, "op": "tanh", "inputs": [0], "source": ["m.py", 3]},
        {"id": 2, "op": "exp", "inputs": [1]}]}
    with opgraph.track_source():
        graph = fileformat.from_document(doc)
    assert [v.source for v in graph.nodes] == [None, ("m.py", 3), None]
