"""Fixtures for the language server's tests: a real graph server on a free port, and the
seed's neuron as a script (see lsp_harness.py for the rest)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "server"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from lsp_harness import NEURON
from server_harness import ThreadedServer


@pytest.fixture
def graph_server() -> Iterator[ThreadedServer]:
    """A graph server (no demo graph) on a free loopback port."""
    srv = ThreadedServer(demo=False, unix=False)
    yield srv
    srv.stop()


@pytest.fixture
def neuron_file(tmp_path: Path) -> Path:
    """The seed's neuron, one node per line, as a file."""
    path = tmp_path / "neuron.py"
    path.write_text(NEURON)
    return path
