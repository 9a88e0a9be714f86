"""Plugins: discovery through real entry-point metadata, clashes, broken and malformed plugins,
the default plugins, and op checks."""

from __future__ import annotations

import importlib.metadata
import math
import warnings

import pluggy
import pytest

import opgraph
from opgraph import (
    Graph,
    OpDef,
    OpDefError,
    OpgraphPluginWarning,
    PluginConflictError,
    Value,
)
from opgraph.registry import build_registry

DEFAULT_OPS = {"add", "sub", "mul", "div", "neg", "pow", "pow_const", "exp", "log", "tanh",
               "sigmoid", "relu"}

SOFTPLUS = '''
    """softplus, shipped the way a third-party op plugin would be."""
    import math

    from opgraph import OpDef, hookimpl


    def _softplus(x):
        return math.log1p(math.exp(-abs(x))) + max(x, 0.0)


    def _softplus_grad(x, out):
        if x >= 0:
            return (1.0 / (1.0 + math.exp(-x)),)
        e = math.exp(x)
        return (e / (1.0 + e),)


    @hookimpl
    def opgraph_register_ops():
        return [OpDef("softplus", 1, _softplus, _softplus_grad, doc="log(1 + e ** x)",
                      domain=((-4.0, 4.0),))]
'''


def _module_defining(name: str, body: str = "x * 2.0") -> str:
    return f'''
    from opgraph import OpDef, hookimpl


    @hookimpl
    def opgraph_register_ops():
        return [OpDef({name!r}, 1, lambda x: {body}, lambda x, out: (2.0,))]
    '''


def _quiet_build(**kwargs):
    """build_registry(), turning plugin warnings into errors so that none goes unseen."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", OpgraphPluginWarning)
        return build_registry(**kwargs)


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


# --- discovery ------------------------------------------------------------------------------------


def test_plugin_found_through_entry_point_metadata(make_dist):
    make_dist("softplus_ops", {"softplus": "softplus_ops"}, {"softplus_ops": SOFTPLUS})
    found = {ep.name: ep.value for ep in importlib.metadata.entry_points(group="opgraph")}
    assert found["softplus"] == "softplus_ops"  # the metadata really is installed

    registry = _quiet_build()
    assert registry.problems == []
    op = registry["softplus"]
    assert op.plugin == "softplus"
    assert op.arity == 1 and op.symbol == "softplus" and op.doc == "log(1 + e ** x)"
    assert "softplus" in registry and "softplus" in registry.names()
    assert set(registry.names()) >= DEFAULT_OPS
    assert opgraph.check_op(op).ok
    # the default registry of this process is not touched by building another
    assert "softplus" not in opgraph.default_registry()


def test_entry_point_op_works_everywhere_once_installed(make_dist, install_ops):
    make_dist("softplus_ops", {"softplus": "softplus_ops"}, {"softplus_ops": SOFTPLUS})
    registry = install_ops()
    assert opgraph.default_registry() is registry
    assert opgraph.lookup_op("softplus").plugin == "softplus"

    x = Value(0.5, label="x")
    y = x.softplus()
    assert y.data == pytest.approx(math.log(1 + math.exp(0.5)), rel=1e-15)
    assert y._op == "softplus" and y.op == "softplus"
    z = opgraph.apply("softplus", x) * y
    z.backward()
    assert x.grad == pytest.approx(2 * y.data * _sigmoid(0.5), rel=1e-12)
    assert opgraph.gradcheck(z).ok

    g = Graph("g")
    g.leaf(-1.0, "a")
    node = g.apply("softplus", [0], label="sp")
    assert node.data == pytest.approx(math.log(1 + math.exp(-1.0)), rel=1e-15)
    g.backward(node)
    assert g.node(0).grad == pytest.approx(_sigmoid(-1.0), rel=1e-12)
    assert "{ sp | data" in opgraph.draw_dot(node).source


# --- clashes --------------------------------------------------------------------------------------


def test_two_plugins_defining_one_op_name(make_dist):
    """The op is left out (which one was meant cannot be known), every other op works, and
    the problem names the plugins, their distributions and versions, and what to uninstall."""
    make_dist("sp_one", {"sp_one": "sp_one_mod"}, {"sp_one_mod": SOFTPLUS})
    make_dist("sp_two", {"sp_two": "sp_two_mod"},
              {"sp_two_mod": _module_defining("softplus")})
    with pytest.warns(OpgraphPluginWarning) as record:
        registry = build_registry()
    message = ("op 'softplus' is defined by two plugins: 'sp_one' (from sp-one 0.1) and "
               "'sp_two' (from sp-two 0.1), so it is left out; to fix it, uninstall the one "
               "you do not want (pip uninstall sp-one, or pip uninstall sp-two), or rename "
               "the op in one of them")
    assert [str(w.message) for w in record] == [message]
    clash = registry.clashes["softplus"]
    assert registry.problems == [clash] and str(clash) == message
    assert clash.op == "softplus" and [op.plugin for op in clash.definitions] == ["sp_one",
                                                                                "sp_two"]
    assert "softplus" not in registry and set(registry.names()) >= DEFAULT_OPS
    with pytest.raises(opgraph.UnknownOpError) as info:
        registry["softplus"]
    assert str(info.value) == message
    # and raise_on_clash makes it an error, with the same names
    with pytest.raises(PluginConflictError) as raised:
        build_registry(raise_on_clash=True)
    err = raised.value
    assert err.op == "softplus" and set(err.plugins) == {"sp_one", "sp_two"}
    assert str(err) == message.replace(", so it is left out", "")


def test_a_clashing_op_is_refused_on_use_with_the_clash(make_dist, install_ops):
    make_dist("sp_one", {"sp_one": "sp_one_mod"}, {"sp_one_mod": SOFTPLUS})
    make_dist("sp_two", {"sp_two": "sp_two_mod"},
              {"sp_two_mod": _module_defining("softplus")})
    with pytest.warns(OpgraphPluginWarning):
        install_ops()
    assert (Value(2.0) * 3).data == 6.0  # everything else works
    for use in (lambda: opgraph.lookup_op("softplus"), lambda: opgraph.apply("softplus", 1.0),
                lambda: Graph("g").apply("softplus", [])):
        with pytest.raises(opgraph.UnknownOpError, match=r"^op 'softplus' is defined by two "
                                                         r"plugins: .*pip uninstall sp-one"):
            use()
    with pytest.raises(opgraph.UnknownOpError,
                       match=r"^no op named 'softplsu'; did you mean 'softplus'"):
        opgraph.lookup_op("softplsu")


def test_plugin_redefining_a_default_op(make_dist):
    make_dist("my_tanh", {"my_tanh": "my_tanh_mod"}, {"my_tanh_mod": _module_defining("tanh")})
    with pytest.warns(OpgraphPluginWarning):
        registry = build_registry()
    (problem,) = registry.problems
    version = importlib.metadata.version("opgraph")
    assert str(problem) == (
        f"op 'tanh' is defined by two plugins: 'activations' (built into opgraph {version}) "
        f"and 'my_tanh' (from my-tanh 0.1), so it is left out; to fix it, uninstall my-tanh "
        f"(pip uninstall my-tanh), or rename its op, which opgraph itself defines")
    with pytest.raises(PluginConflictError) as info:
        build_registry(raise_on_clash=True)
    assert set(info.value.plugins) == {"activations", "my_tanh"}
    assert "'tanh'" in str(info.value)


def test_one_distribution_defining_an_op_twice(make_dist):
    make_dist("twice", {"first": "twice_a", "second": "twice_b"},
              {"twice_a": _module_defining("double"), "twice_b": _module_defining("double")})
    with pytest.warns(OpgraphPluginWarning, match=r"'first' \(from twice 0.1\) and 'second' "
                                                  r"\(from twice 0.1\).*rename one of the "
                                                  r"ops in twice, which defines it more than"):
        registry = build_registry()
    assert "double" not in registry


def test_conflict_between_directly_registered_plugins(ops_plugin):
    first = ops_plugin(OpDef("double", 1, lambda x: 2 * x, lambda x, out: (2.0,)))
    second = ops_plugin(OpDef("double", 1, lambda x: x + x, lambda x, out: (2.0,)))
    third = ops_plugin(OpDef("double", 1, lambda x: x * 2, lambda x, out: (2.0,)))
    plugins = [("first", first), ("second", second), ("third", third)]
    with pytest.raises(PluginConflictError) as info:
        build_registry(plugins=plugins, entry_points=False, raise_on_clash=True)
    assert info.value.op == "double" and set(info.value.plugins) == {"first", "second"}
    assert str(info.value) == (
        "op 'double' is defined by three plugins: 'first' (registered directly, not "
        "installed), 'second' (registered directly, not installed) and 'third' (registered "
        "directly, not installed); to fix it, register only one of them, or rename the op in "
        "one")
    with pytest.warns(OpgraphPluginWarning, match="'double' is defined by three plugins"):
        registry = build_registry(plugins=plugins, entry_points=False)
    assert len(registry) == 0 and list(registry.clashes) == ["double"]


def test_two_distributions_using_one_entry_point_name(make_dist):
    make_dist("dupe_a", {"dupe": "dupe_a_mod"}, {"dupe_a_mod": _module_defining("dupe_a")})
    make_dist("dupe_b", {"dupe": "dupe_b_mod"}, {"dupe_b_mod": _module_defining("dupe_b")})
    with pytest.warns(OpgraphPluginWarning, match="dupe"):
        registry = build_registry()
    problems = [p for p in registry.problems if p.plugin == "dupe"]
    assert len(problems) == 1
    assert "already registered" in problems[0].message
    # one of the two made it; the other was reported, not silently dropped
    assert ("dupe_a" in registry) != ("dupe_b" in registry)


# --- broken plugins -------------------------------------------------------------------------------


def test_plugin_that_fails_to_import(make_dist):
    make_dist("mixed_ops", {"broken": "broken_ops", "softplus": "softplus_ops"},
              {"broken_ops": 'raise RuntimeError("needs libfoo, which is missing")\n',
               "softplus_ops": SOFTPLUS})
    with pytest.warns(OpgraphPluginWarning, match="broken") as record:
        registry = build_registry()
    (problem,) = [p for p in registry.problems if p.plugin == "broken"]
    assert "broken_ops" in problem.message
    assert "RuntimeError" in problem.message and "needs libfoo" in problem.message
    assert "'broken'" in str(problem)
    assert any("broken" in str(w.message) for w in record)
    # the others still load
    assert registry["softplus"].plugin == "softplus"
    assert set(registry.names()) >= DEFAULT_OPS


@pytest.mark.parametrize(
    ("source", "target", "error"),
    [
        (None, "no_such_module_for_opgraph", "ModuleNotFoundError"),
        ("def broken(:\n", "syntax_ops", "SyntaxError"),
        ("import math\n", "syntax_ops:missing_attribute", "AttributeError"),
    ],
)
def test_other_import_failures(make_dist, source, target, error):
    module = target.split(":")[0]
    make_dist("bad_ops", {"badplugin": target}, {module: source} if source else {})
    with pytest.warns(OpgraphPluginWarning, match="badplugin"):
        registry = build_registry()
    (problem,) = [p for p in registry.problems if p.plugin == "badplugin"]
    assert error in problem.message
    assert set(registry.names()) >= DEFAULT_OPS


def test_hook_that_raises(ops_plugin):
    @opgraph.hookimpl
    def opgraph_register_ops():
        raise ValueError("config file missing")

    import types

    bad = types.SimpleNamespace(opgraph_register_ops=opgraph_register_ops)
    good = ops_plugin(OpDef("double", 1, lambda x: 2 * x, lambda x, out: (2.0,)))
    with pytest.warns(OpgraphPluginWarning, match="'raiser'"):
        registry = build_registry(plugins=[("raiser", bad), ("good", good)])
    (problem,) = registry.problems
    assert problem.plugin == "raiser" and "config file missing" in problem.message
    assert "double" in registry and set(registry.names()) >= DEFAULT_OPS


def test_hook_with_a_wrong_signature_is_refused(ops_plugin):
    @opgraph.hookimpl
    def opgraph_register_ops(unexpected):
        return []

    import types

    bad = types.SimpleNamespace(opgraph_register_ops=opgraph_register_ops)
    with pytest.warns(OpgraphPluginWarning, match="'wrongsig'"):
        registry = build_registry(plugins=[("wrongsig", bad)], entry_points=False)
    (problem,) = registry.problems
    assert problem.plugin == "wrongsig" and "register" in problem.message


# --- malformed op definitions ---------------------------------------------------------------------


def _fwd(x):
    return x


def _grad(x, out):
    return (1.0,)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(name="soft plus"), "not a Python identifier"),
        (dict(name="lambda"), "not a Python identifier"),
        (dict(name=""), "not a Python identifier"),
        (dict(name=3), "not a Python identifier"),
        (dict(arity=0), "arity must be a positive int"),
        (dict(arity=1.0), "arity must be a positive int"),
        (dict(arity=2), "forward rule"),  # forward takes one input
        (dict(forward=lambda a, b: a), "forward rule"),
        (dict(grad=lambda x: (1.0,)), "grad rule"),  # no room for the output
        (dict(grad=lambda x, y, out: (1.0,)), "grad rule"),
        (dict(forward="x + 1"), "must be callable"),
        (dict(symbol=""), "symbol"),
        (dict(attrs=("k",)), "rule"),  # the rules take no attribute k
        (dict(forward=lambda x, k: x, grad=lambda x, out, k: (k,), attrs=("k",)),
         "sample_attrs"),
        (dict(domain=((1.0, 0.0),)), "domain"),
        (dict(domain=((0.0, 1.0), (0.0, 1.0))), "domain"),
        (dict(doc=None), "doc"),
    ],
)
def test_malformed_opdef_is_refused(kwargs, message):
    fields = dict(name="ident", arity=1, forward=_fwd, grad=_grad) | kwargs
    with pytest.raises(OpDefError, match=message):
        OpDef(**fields)


def test_opdef_accepts_rules_with_defaults_and_attributes():
    op = OpDef("scale", 1, lambda x, k: k * x, lambda x, out, k: (k,), attrs=("k",),
               sample_attrs={"k": 3.0}, symbol="*{k}")
    assert op.format_symbol({"k": 3.0}) == "*3.0"
    assert OpDef("varargs", 3, lambda *xs: sum(xs), lambda *a: (1.0,) * 3).arity == 3


def _malformed_plugins():
    good = OpDef("fine", 1, _fwd, _grad)

    def not_identifier():
        return [good, OpDef("soft plus", 1, _fwd, _grad)]

    def arity_mismatch():
        return [good, OpDef("pair", 2, _fwd, _grad)]

    def not_an_opdef():
        return [good, {"name": "dicty", "arity": 1}]

    def returns_a_string():
        return "softplus"

    return {
        "not_identifier": (not_identifier, "not a Python identifier"),
        "arity_mismatch": (arity_mismatch, "forward rule"),
        "not_an_opdef": (not_an_opdef, "not an OpDef"),
        "returns_a_string": (returns_a_string, "not an OpDef"),
    }


@pytest.mark.parametrize("plugin_name", sorted(_malformed_plugins()))
def test_malformed_definitions_refused_naming_the_plugin(plugin_name):
    import types

    hook, message = _malformed_plugins()[plugin_name]
    plugin = types.SimpleNamespace(opgraph_register_ops=opgraph.hookimpl(hook))
    with pytest.warns(OpgraphPluginWarning, match=f"plugin '{plugin_name}'"):
        registry = build_registry(plugins=[(plugin_name, plugin)])
    (problem,) = registry.problems
    assert problem.plugin == plugin_name
    assert message in problem.message
    assert f"plugin {plugin_name!r}" in str(problem)
    # the plugin's ops are left out together; the other plugins are untouched
    assert "fine" not in registry
    assert set(registry.names()) >= DEFAULT_OPS


def test_malformed_definition_from_an_installed_distribution(make_dist):
    source = '''
    from opgraph import OpDef, hookimpl


    @hookimpl
    def opgraph_register_ops():
        return [OpDef("halve", 2, lambda x: x / 2, lambda x, out: (0.5,))]
    '''
    make_dist("halve_ops", {"halver": "halve_ops"}, {"halve_ops": source})
    with pytest.warns(OpgraphPluginWarning, match="'halver'"):
        registry = build_registry()
    (problem,) = [p for p in registry.problems if p.plugin == "halver"]
    assert "'halve'" in problem.message and "forward" in problem.message
    assert "halve" not in registry


# --- the default plugins --------------------------------------------------------------------------


def test_default_plugins_come_through_entry_points():
    eps = {ep.name: ep.value for ep in importlib.metadata.entry_points(group="opgraph")}
    assert eps["arithmetic"] == "opgraph_plugins.arithmetic"
    assert eps["exponential"] == "opgraph_plugins.exponential"
    assert eps["activations"] == "opgraph_plugins.activations"
    registry = opgraph.default_registry()
    assert registry is opgraph.default_registry()  # built once
    assert registry.get("add").plugin == "arithmetic"
    assert registry.get("pow_const").plugin == "arithmetic"
    assert registry.get("exp").plugin == "exponential"
    assert registry.get("log").plugin == "exponential"
    assert registry.get("tanh").plugin == "activations"
    assert registry.get("relu").plugin == "activations"
    assert set(registry.names()) >= DEFAULT_OPS
    assert registry.problems == []
    assert registry.get("nope") is None
    # without entry points there is no op at all: the engine has no arithmetic of its own
    assert len(build_registry(entry_points=False)) == 0


def test_engine_operators_use_whatever_op_the_table_holds(install_ops, ops_plugin):
    weird_add = OpDef("add", 2, lambda a, b: a * 10 + b, lambda a, b, out: (10.0, 1.0),
                      symbol="(+)")
    install_ops(("weird", ops_plugin(weird_add)), entry_points=False)
    x = Value(1.0) + Value(2.0)
    assert x.data == 12.0 and x._op == "(+)"
    with pytest.raises(opgraph.UnknownOpError, match="no op named 'mul'"):
        Value(1.0) * Value(2.0)
    with pytest.raises(opgraph.UnknownOpError):
        Value(1.0).tanh()


def test_hookimpl_marker_is_opgraphs():
    assert isinstance(opgraph.hookimpl, pluggy.HookimplMarker)
    assert opgraph.hookimpl.project_name == "opgraph"
    from opgraph import hookspecs

    assert hookspecs.opgraph_register_ops.__doc__
    assert hookspecs.opgraph_diagnostics.__doc__


# --- checking ops ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(opgraph.default_registry().names()))
def test_check_op_passes_for_every_default_op(name):
    op = opgraph.default_registry()[name]
    report = opgraph.check_op(op, points=50)
    assert report.ok, str(report)
    assert report.points == 50 and report.op == name and report.plugin == op.plugin
    assert str(report) == f"{name} ({op.plugin}): ok at 50 points"


def _bad_sin():
    return OpDef("badsin", 1, math.sin, lambda x, out: (-math.cos(x),), doc="sin, wrong grad")


def test_check_op_fails_for_a_wrong_gradient_rule():
    op = OpDef("badsin", 1, math.sin, lambda x, out: (-math.cos(x),), plugin="trig")
    report = opgraph.check_op(op, points=20)
    assert not report.ok
    assert 0 < len(report.failures) <= 20
    first = report.failures[0]
    assert first.input_index == 0
    assert first.analytic == pytest.approx(-math.cos(first.inputs[0]))
    assert first.numeric == pytest.approx(math.cos(first.inputs[0]), abs=1e-6)
    text = str(report)
    assert text.startswith("badsin (trig):")
    assert "disagreement" in text and "rule says" in text and "finite differences" in text


@pytest.mark.parametrize(
    ("grad", "message"),
    [
        (lambda x, out: (1.0, 2.0), "returned 2 numbers for 1 inputs"),
        (lambda x, out: (1 / 0,), "ZeroDivisionError"),
        (lambda x, out: ("one",), "not a number"),
    ],
)
def test_check_op_reports_broken_rules_without_crashing(grad, message):
    op = OpDef("broken", 1, math.sin, grad)
    report = opgraph.check_op(op, points=5)
    assert not report.ok
    assert len(report.failures) == 5
    assert message in report.failures[0].message


def test_check_op_samples_inside_the_domain():
    seen = []

    def forward(x):
        seen.append(x)
        return math.sqrt(x)

    op = OpDef("root", 1, forward, lambda x, out: (0.5 / out,), domain=((0.5, 2.0),))
    assert opgraph.check_op(op, points=30).ok
    assert seen and all(0.5 - 1e-5 <= x <= 2.0 + 1e-5 for x in seen)


def test_gradcheck_names_a_bad_op_in_a_graph(install_ops, ops_plugin):
    install_ops(("trig", ops_plugin(_bad_sin())))
    x = Value(0.3, label="x")
    w = Value(2.0, label="w")
    y = (x * w).badsin() + x
    y.label = "y"
    y.backward()
    grads = [v.grad for v in opgraph.topological_order(y)]
    report = opgraph.gradcheck(y)
    assert not report.ok and not bool(report)
    assert [v.grad for v in opgraph.topological_order(y)] == grads  # left as they were
    (bad,) = report.bad_ops
    assert bad.op == "badsin" and bad.plugin == "trig" and bad.input_index == 0
    assert bad.inputs == pytest.approx((0.6,))
    leaves = {leaf.label: leaf for leaf in report.leaves}
    assert not leaves["x"].ok and not leaves["w"].ok
    assert leaves["x"].numeric == pytest.approx(2 * math.cos(0.6) + 1, rel=1e-6)
    text = str(report)
    assert "FAILED" in text and "'badsin'" in text and "'trig'" in text
    assert "BAD" in text and "'x'" in text


def test_gradcheck_passes_for_a_good_graph():
    x = Value(0.3, label="x")
    w = Value(-1.1, label="w")
    y = (x * w).tanh() + (x / w).exp() - x.sigmoid() * w**2 + (x + 1).log()
    report = opgraph.gradcheck(y)
    assert report.ok, str(report)
    assert {leaf.label for leaf in report.leaves} >= {"x", "w"}
    assert str(report).startswith("gradcheck of ")
    assert "ok" in str(report).splitlines()[0]
