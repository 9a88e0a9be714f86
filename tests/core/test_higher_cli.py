"""The CLI's second order (issue 16): ``opgraph eval EXPR x=3 --order 2``, ``opgraph plot EXPR
--order 2`` and ``opgraph ops check`` of the graph rules."""

from __future__ import annotations

import json
import math
import types

import matplotlib
import pytest
from typer.testing import CliRunner

from opgraph import OpDef, hookimpl
from opgraph.cli import app

matplotlib.use("Agg")


def invoke(*args: object):
    return CliRunner().invoke(app, [str(a) for a in args], env={"COLUMNS": "200"})


def test_eval_order_2_prints_value_gradient_and_second_derivative():
    result = invoke("eval", "3*x**2 - 4*x + 5", "x=3", "--order", "2")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert "second derivative" in lines[2]
    row = next(line for line in lines if line.startswith("│ x "))
    assert [cell.strip() for cell in row.strip("│").split("│")] == ["x", "3.0", "14.0", "6.0"]
    assert any("(result)" in line and "20.0" in line for line in lines)


def test_eval_order_2_json_has_the_hessian_by_name():
    result = invoke("eval", "x*y**2 + tanh(x)", "x=1", "y=2", "--order", "2", "--json")
    assert result.exit_code == 0, result.output
    got = json.loads(result.stdout)
    t = math.tanh(1.0)
    assert got["grads"] == pytest.approx({"x": 4 + 1 - t * t, "y": 4.0})
    assert got["hessian"]["x"] == pytest.approx({"x": -2 * t * (1 - t * t), "y": 4.0})
    assert got["hessian"]["y"] == pytest.approx({"x": 4.0, "y": 2.0})
    plain = json.loads(invoke("eval", "x*y", "x=1", "y=2", "--json").stdout)
    assert "hessian" not in plain  # without --order 2 the output is as it was


def test_eval_order_2_prints_the_hessian_for_several_names():
    result = invoke("eval", "x*y", "x=1", "y=2", "--order", "2")
    assert result.exit_code == 0, result.output
    assert "Hessian" in result.stdout
    rows = [line for line in result.stdout.splitlines() if line.startswith("│ ")]
    cells = [[c.strip() for c in r.strip("│").split("│")] for r in rows]
    assert ["x", "0.0", "1.0"] in cells and ["y", "1.0", "0.0"] in cells


def test_eval_order_3_is_bad_usage():
    assert invoke("eval", "x", "x=1", "--order", "3").exit_code == 2


def _softplus(with_graph_rule: bool = False):
    @hookimpl
    def opgraph_register_ops():
        return [OpDef("softplus", 1, lambda x: math.log1p(math.exp(x)),
                      lambda x, out: (1 / (1 + math.exp(-x)),),
                      grad_graph=(lambda x, out: (1.0 / (1.0 + (-x).exp()),))
                      if with_graph_rule else None)]

    return ("softplus-cli", types.SimpleNamespace(opgraph_register_ops=opgraph_register_ops))


def test_eval_order_2_over_an_op_without_a_graph_rule_names_it(install_ops):
    install_ops(_softplus())
    assert invoke("eval", "softplus(x)", "x=1").exit_code == 0
    result = invoke("eval", "softplus(x)", "x=1", "--order", "2")
    assert result.exit_code == 1
    (line,) = result.stderr.splitlines()
    assert line.startswith("error: --order 2: op 'softplus' from plugin 'softplus-cli'")
    assert "grad_graph" in line


@pytest.fixture
def plotted(monkeypatch):
    """The curves ``Axes.plot`` is given, by label."""
    from matplotlib.axes import Axes

    curves: dict[str, tuple[list[float], list[float]]] = {}
    original = Axes.plot

    def plot(self, xs, ys, *args, label=None, **kwargs):
        curves[label] = (list(xs), list(ys))
        return original(self, xs, ys, *args, label=label, **kwargs)

    monkeypatch.setattr(Axes, "plot", plot)
    return curves


def test_plot_order_2_draws_f_f_prime_and_f_second(tmp_path, plotted):
    out = tmp_path / "f.png"
    result = invoke("plot", "3*x**2 - 4*x + 5", "--order", "2", "-o", out, "--points", "11",
                    "--range", "-2:3")
    assert result.exit_code == 0, result.output
    assert out.stat().st_size > 0
    xs, f = plotted["f(x) = 3*x**2 - 4*x + 5"]
    _, d1 = plotted["f'(x) (autograd)"]
    _, d2 = plotted["f''(x) (autograd of autograd)"]
    assert f == pytest.approx([3 * x * x - 4 * x + 5 for x in xs])
    assert d1 == pytest.approx([6 * x - 4 for x in xs])
    assert d2 == [6.0] * 11


def test_plot_order_2_of_tanh_and_of_relu_on_both_sides_of_its_kink(tmp_path, plotted):
    assert invoke("plot", "tanh(x)", "--order", "2", "-o", tmp_path / "t.png",
                  "--points", "9").exit_code == 0
    xs, d2 = plotted["f''(x) (autograd of autograd)"]
    assert d2 == pytest.approx([-2 * math.tanh(x) * (1 - math.tanh(x) ** 2) for x in xs])
    assert invoke("plot", "relu(x)*x", "--order", "2", "-o", tmp_path / "r.png",
                  "--points", "10", "--range", "-1:1").exit_code == 0
    xs, d1 = plotted["f'(x) (autograd)"]
    _, d2 = plotted["f''(x) (autograd of autograd)"]
    assert d1 == pytest.approx([2 * x if x > 0 else 0.0 for x in xs])
    assert d2 == [2.0 if x > 0 else 0.0 for x in xs]


def test_plot_without_order_draws_two_curves(tmp_path, plotted):
    assert invoke("plot", "x*x", "-o", tmp_path / "p.png", "--points", "5").exit_code == 0
    assert set(plotted) == {"f(x) = x*x", "f'(x) (autograd)"}


def test_plot_order_2_over_an_op_without_a_graph_rule_names_it(install_ops, tmp_path):
    install_ops(_softplus())
    result = invoke("plot", "softplus(x)", "--order", "2", "-o", tmp_path / "s.png")
    assert result.exit_code == 1
    assert result.stderr.startswith("error: --order 2: op 'softplus' from plugin 'softplus-cli'")
    assert invoke("plot", "softplus(x)", "-o", tmp_path / "s.png").exit_code == 0


def test_ops_check_checks_the_graph_rules():
    result = invoke("ops", "check", "--points", "4")
    assert result.exit_code == 0, result.output
    for line in result.stdout.splitlines():
        assert line.startswith("ok    ") and line.endswith("; graph rule ok to second order")
    reports = json.loads(invoke("ops", "check", "--op", "tanh", "--points", "3", "--json").stdout)
    assert reports[0]["graph_rule"] == {"ok": True, "failures": []}


def test_ops_check_of_an_op_without_a_graph_rule_keeps_its_line(install_ops):
    install_ops(_softplus())
    result = invoke("ops", "check", "--op", "softplus", "--points", "5")
    assert result.exit_code == 0
    assert result.stdout == "ok    softplus (softplus-cli): ok at 5 points\n"
    reports = json.loads(invoke("ops", "check", "--op", "softplus", "--json").stdout)
    assert reports[0]["graph_rule"] is None and reports[0]["ok"] is True


def test_ops_check_fails_on_a_wrong_second_derivative(install_ops):
    @hookimpl
    def opgraph_register_ops():  # right first derivative, as a constant: wrong second
        return [OpDef("softplus", 1, lambda x: math.log1p(math.exp(x)),
                      lambda x, out: (1 / (1 + math.exp(-x)),),
                      grad_graph=lambda x, out: (1 / (1 + math.exp(-x.data)),))]

    install_ops(("softplus-bad", types.SimpleNamespace(opgraph_register_ops=opgraph_register_ops)))
    result = invoke("ops", "check", "--op", "softplus", "--points", "3")
    assert result.exit_code == 1
    assert result.stdout.startswith("FAIL  softplus (softplus-bad): ok at 3 points; graph rule: "
                                    "3 disagreement(s) in 3 points")
    assert result.stderr == ("error: graph gradient rule disagrees with the float rule or with "
                             "finite differences of it: softplus\n")
    install_ops(_softplus(with_graph_rule=True))
    assert invoke("ops", "check", "--op", "softplus", "--points", "3").exit_code == 0
