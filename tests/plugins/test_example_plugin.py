"""The README's example plugin package, installed for real and found through its entry point.

The package is made of the README's own blocks (``# pyproject.toml``, ``# opgraph_softplus.py``;
``tests/docs`` checks that they are the files of ``examples/softplus_plugin``), so what the
README shows is what installs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import msgpack
import pytest
from readme_snippets import blocks, check_session, package_files, shell_session
from server_harness import ProcessServer, connect, pack

PLUGIN = "Writing an op plugin"


def _install(package: Path, target: Path) -> None:
    """pip-install ``package`` into ``target`` (a folder of its own, not the venv)."""
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
         "--target", str(target), str(package)],
        check=True, capture_output=True, timeout=300,
    )


@pytest.fixture(scope="module")
def readme_package(tmp_path_factory) -> Path:
    """The README's plugin blocks written out as a package folder."""
    package = tmp_path_factory.mktemp("opgraph-softplus")
    files = package_files(PLUGIN)
    assert set(files) == {"pyproject.toml", "opgraph_softplus.py"}
    for name, text in files.items():
        (package / name).write_text(text)
    return package


@pytest.fixture(scope="module")
def installed(tmp_path_factory, readme_package: Path) -> Path:
    """The README's example package, pip-installed into a folder of its own."""
    target = tmp_path_factory.mktemp("site")
    _install(readme_package, target)
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


def test_the_readme_session_after_installing(installed: Path, tmp_path: Path) -> None:
    """``opgraph ops check --op softplus`` and ``opgraph eval ...`` show what the README shows."""
    (block,) = [b for b in blocks() if b.under(PLUGIN) and b.text.startswith("$ ")]
    commands = shell_session(block)
    assert commands[0].args[:2] == ["pip", "install"]  # done by the fixture
    ran = check_session(commands, cwd=tmp_path, env={"PYTHONPATH": str(installed)},
                        skip=("pip",))
    assert len(ran) == len(commands) - 1 >= 2


def _ops_list(url: str) -> list[str]:
    sock = connect(url)
    try:
        sock.sendall(pack([0, 1, "ops.list", []]))
        unpacker = msgpack.Unpacker(raw=False)
        while True:
            data = sock.recv(65536)
            assert data, "the server closed the connection"
            unpacker.feed(data)
            for message in unpacker:
                assert message[2] is None, message[2]
                return [op["name"] for op in message[3]]
    finally:
        sock.close()


@pytest.mark.slow
def test_a_running_server_knows_a_plugin_only_after_a_restart(
        readme_package: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """What the README says: the plugins are read once, when a program starts using ops."""
    target = tmp_path / "site"
    target.mkdir()
    monkeypatch.setenv("PYTHONPATH", str(target))  # where the plugin will be installed
    server = ProcessServer()
    try:
        assert "softplus" not in _ops_list(server.url)
        _install(readme_package, target)
        assert "softplus" not in _ops_list(server.url)  # installed, but not read again
    finally:
        server.stop()
    server = ProcessServer()
    try:
        assert "softplus" in _ops_list(server.url)
    finally:
        server.stop()
