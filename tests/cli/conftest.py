"""Fixtures for the CLI tests: graph files, a plugin op with a wrong gradient rule (in this
process, and as an installed distribution for subprocesses), and running ``opgraph`` for real."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import types
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from neurons import seed_neuron
from typer.testing import CliRunner, Result

import opgraph
from opgraph import Graph, registry
from opgraph.cli import app

# A plugin op whose gradient rule is wrong: d(x*x)/dx is 2x, the rule says x.
BAD_OPS_SOURCE = textwrap.dedent('''
    from opgraph import OpDef, hookimpl


    def _forward(x):
        return x * x


    def _wrong_grad(x, out):
        return (x,)  # should be 2 * x


    @hookimpl
    def opgraph_register_ops():
        return [OpDef("badsquare", 1, forward=_forward, grad=_wrong_grad,
                      doc="x * x, with a wrong gradient rule")]
''')
BAD_OPS_MODULE = "opgraph_cli_test_badops"


@pytest.fixture
def neuron_file(tmp_path: Path) -> Path:
    """The seed's neuron after backward, saved as a msgpack graph file."""
    return opgraph.save(seed_neuron(), tmp_path / "neuron.opg", name="neuron")


@pytest.fixture
def neuron_ids(neuron_file: Path) -> dict[str, int]:
    """The node ids of ``neuron_file`` by label."""
    return {v.label: v.id for v in opgraph.load(neuron_file).nodes}


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


@pytest.fixture
def invoke(runner: CliRunner) -> Callable[..., Result]:
    """``invoke(*args)``: run the CLI in this process; stdout and stderr kept apart, tables
    as wide as they need (no wrapping at 80 columns)."""

    def run(*args: object) -> Result:
        return runner.invoke(app, [str(a) for a in args], env={"COLUMNS": "200"})

    return run


@pytest.fixture
def opgraph_cmd(tmp_path: Path) -> Callable[..., subprocess.CompletedProcess]:
    """``opgraph_cmd(*args, pythonpath=None)``: run ``python -m opgraph`` as a real process."""

    def run(*args: object, pythonpath: Path | None = None) -> subprocess.CompletedProcess:
        env = dict(os.environ)
        env.pop("PYTHONPATH", None)
        if pythonpath is not None:
            env["PYTHONPATH"] = str(pythonpath)
        return subprocess.run(
            [sys.executable, "-m", "opgraph", *map(str, args)],
            capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120,
        )

    return run


@pytest.fixture
def bad_ops_site(tmp_path: Path) -> Path:
    """A folder holding an installed distribution ``badops`` whose entry point (group
    ``opgraph``) is a plugin with op ``badsquare``; put it on PYTHONPATH to install it."""
    site = tmp_path / "site"
    info = site / "badops-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: badops\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[opgraph]\nbadops = {BAD_OPS_MODULE}\n")
    (site / f"{BAD_OPS_MODULE}.py").write_text(BAD_OPS_SOURCE)
    return site


@pytest.fixture
def bad_ops_installed() -> Iterator[registry.Registry]:
    """The same plugin installed in this process (the default registry, restored after)."""
    module = types.ModuleType(BAD_OPS_MODULE)
    exec(compile(BAD_OPS_SOURCE, f"<{BAD_OPS_MODULE}>", "exec"), module.__dict__)
    previous = registry.set_default_registry(registry.default_registry())
    built = registry.build_registry(plugins=[("badops", module)])
    registry.set_default_registry(built)
    try:
        yield built
    finally:
        registry.set_default_registry(previous)


@pytest.fixture
def bad_grad_file(tmp_path: Path, bad_ops_installed: registry.Registry) -> Path:
    """A graph file using op ``badsquare``: y = badsquare(x) at x = 3, after backward."""
    g = Graph("bad")
    x = g.leaf(3.0, "x")
    y = g.apply("badsquare", [x], label="y")
    g.backward(y)
    assert x.grad == 3.0  # what the wrong rule says; the truth is 6
    return opgraph.save(g, tmp_path / "bad.opg")
