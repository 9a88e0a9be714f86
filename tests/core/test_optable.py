"""The op table: installed by the registry alone, and `Value`'s op methods bound to it."""

from __future__ import annotations

import pickle
import subprocess
import sys
import types

import pytest

import opgraph
from opgraph import Graph, OpDef, UnknownOpError, Value, build_registry, core, hookimpl, registry


def _plugin(*opdefs):
    @hookimpl
    def opgraph_register_ops():
        return list(opdefs)

    return types.SimpleNamespace(opgraph_register_ops=opgraph_register_ops)


@pytest.fixture
def restore_registry():
    previous = registry.set_default_registry(registry.default_registry())
    yield
    registry.set_default_registry(previous)


def test_the_operators_follow_the_installed_table(restore_registry):
    """The operators are bound to their ops when a table is installed: a new table, new ops."""
    x, y = Value(3.0), Value(4.0)
    assert (x * y).data == 12.0
    odd_mul = OpDef("mul", 2, lambda a, b: a * b + 1.0, lambda a, b, out: (b, a))
    registry.set_default_registry(build_registry([("odd", _plugin(odd_mul))],
                                                 entry_points=False))
    assert (x * y).data == 13.0 and (2.0 * x).data == 7.0
    assert core.lookup("mul") is core.ops()["mul"]
    with pytest.raises(UnknownOpError, match="no op named 'add'"):
        x + y  # (this table has no add)
    with pytest.raises(UnknownOpError, match="'tanh'"):
        x.tanh()
    registry.set_default_registry(None)  # back to the installed plugins, rebuilt on first use
    assert (x * y).data == 12.0 and (x + y).data == 7.0


def test_plugin_methods_come_and_go_with_their_table(restore_registry):
    twice = OpDef("twice", 1, lambda a: 2 * a, lambda a, out: (2.0,))
    x = Value(1.5)
    assert not hasattr(Value, "twice")
    registry.set_default_registry(build_registry([("twice", _plugin(twice))]))
    assert x.twice().data == 3.0 and Value.twice.__doc__ == "op 'twice' from plugin 'twice'"
    registry.set_default_registry(None)
    assert (x + 1.0).data == 2.5  # loads the rebuilt table
    assert not hasattr(Value, "twice")


def test_the_table_is_read_only():
    with pytest.raises(TypeError):
        core.ops()["mul"] = core.lookup("add")  # type: ignore[index]


def test_operators_have_names_and_docs():
    assert Value.__add__.__name__ == "__add__" and Value.__add__.__doc__ == "self + other"
    assert Value.__rsub__.__doc__ == "other - self"
    assert Value.tanh.__qualname__ == "Value.tanh"


def test_a_fresh_process_loads_the_table_on_its_first_value_or_unpickled_one(tmp_path):
    """Before any table is loaded, `Value` and its operators load it on first use: a value
    made by unpickling (no ``__init__``) works at once, and plugin ops are methods."""
    g = Graph("saved")
    a = g.leaf(2.0, "a")
    (a * a).label = "sq"
    path = tmp_path / "g.pickle"
    path.write_bytes(pickle.dumps(g))
    script = (
        "import pickle, sys, opgraph\n"
        "from opgraph.core import optable\n"
        "assert not optable._loaded\n"
        f"g = pickle.loads(open({str(path)!r}, 'rb').read())\n"
        "cube = g.node(1) * g.node(0)\n"
        "assert cube.graph is g and cube.data == 8.0 and optable._loaded\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         check=False)
    assert out.stdout.strip() == "ok", out.stderr
    assert opgraph.core.ops()  # (and here, in this process, the table is loaded already)
