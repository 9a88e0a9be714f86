"""The README's example plugin package, installed for real and found through its entry point."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "examples" / "softplus_plugin"


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """The example package pip-installed into a folder of its own (not into the venv)."""
    target = tmp_path_factory.mktemp("site")
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
         "--target", str(target), str(PACKAGE)],
        check=True, capture_output=True, timeout=300,
    )
    return target


def _opgraph(target: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(target)}
    return subprocess.run([sys.executable, "-m", "opgraph", *args], env=env,
                          capture_output=True, text=True, timeout=120)


def test_installed_plugin_is_listed_with_its_plugin_name(installed):
    result = _opgraph(installed, "ops", "--json")
    assert result.returncode == 0, result.stderr
    ops = {op["name"]: op for op in json.loads(result.stdout)}
    assert ops["softplus"]["plugin"] == "softplus"
    assert ops["softplus"]["doc"] == "log(1 + e ** x), a smooth relu"
    assert ops["add"]["plugin"] == "arithmetic"


def test_installed_plugin_passes_ops_check(installed):
    result = _opgraph(installed, "ops", "check", "--op", "softplus")
    assert result.returncode == 0, result.stderr
    assert "softplus (softplus): ok" in result.stdout


def test_installed_plugin_op_in_expressions_and_as_a_method(installed):
    result = _opgraph(installed, "eval", "softplus(x) * 2", "x=0.5", "--json")
    assert result.returncode == 0, result.stderr
    got = json.loads(result.stdout)
    assert got["value"] == pytest.approx(2 * 0.9740769841801067, rel=1e-12)
    assert got["grads"]["x"] == pytest.approx(2 / (1 + 2.718281828459045 ** -0.5), rel=1e-12)
    code = ("from opgraph import Value; x = Value(0.5); y = x.softplus(); y.backward();"
            "print(y.data, x.grad)")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(installed)}, timeout=60)
    assert run.returncode == 0, run.stderr
    data, grad = map(float, run.stdout.split())
    assert data == pytest.approx(0.9740769841801067, rel=1e-12)
    assert grad == pytest.approx(0.6224593312018546, rel=1e-12)


def test_without_the_plugin_the_op_is_unknown():
    result = subprocess.run([sys.executable, "-m", "opgraph", "eval", "softplus(x)", "x=1"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "no op named 'softplus'" in result.stderr
    assert "Traceback" not in result.stderr
