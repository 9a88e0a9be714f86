"""The wheel holds the four import names and registers the default plugins as entry points."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_wheel_layout_and_entry_points(tmp_path: Path) -> None:
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps",
                    "--no-build-isolation", "--wheel-dir", str(tmp_path), str(ROOT)],
                   check=True, capture_output=True, timeout=300)
    (wheel,) = tmp_path.glob("opgraph-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert tops == {"opgraph", "opgraph_plugins", "opgraph_server", "opgraph_client", "opgraph_lsp",
                    "opgraph_web"}
    assert "opgraph/hookspecs.py" in names and "opgraph_server/protocol.py" in names
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    text = zipfile.ZipFile(wheel).read(entry_points).decode()
    assert "[opgraph]" in text
    for plugin in ("arithmetic", "exponential", "activations", "diagnostics"):
        assert f"{plugin} = opgraph_plugins.{plugin}" in text
    assert "opgraph = opgraph.cli:main" in text
