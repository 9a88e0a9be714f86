"""The page's files as shipped: the vendored library intact and licensed, nothing fetched from
elsewhere, and the notebook helper's HTML."""

from __future__ import annotations

import hashlib
import re

import pytest
from opgraph_web import static_root

from opgraph.notebook import Viewer, learn, show

STATIC = static_root()


def test_the_vendored_library_is_the_pinned_one() -> None:
    folder = STATIC / "vendor" / "msgpack"
    listed = {}
    for line in (folder / "SHA256SUMS").read_text().splitlines():
        digest, name = line.split(maxsplit=1)
        listed[name.removeprefix("./")] = digest
    present = {p.relative_to(folder).as_posix() for p in folder.rglob("*")
               if p.is_file() and p.name != "SHA256SUMS"}
    assert present == set(listed) == {"msgpack.js", "LICENSE"}, "update vendor/README.md"
    for name, digest in listed.items():
        assert hashlib.sha256((folder / name).read_bytes()).hexdigest() == digest, name
    assert "ISC" in (STATIC / "vendor" / "README.md").read_text()
    assert "Permission to use, copy, modify" in (folder / "LICENSE").read_text()


def test_the_page_loads_nothing_from_elsewhere() -> None:
    """Offline: every script, style and import is one of the page's own files."""
    remote = re.compile(r"""(?:src|href)\s*=\s*["']https?://|import[^;]*["']https?://|"""
                        r"""url\(\s*["']?https?://""")
    for path in STATIC.rglob("*"):
        if path.suffix in (".html", ".js", ".mjs", ".css"):
            assert not remote.search(path.read_text()), path
    imports = re.compile(r"""from\s+["'](\.[^"']+)["']""")
    for path in STATIC.rglob("*.js"):
        for target in imports.findall(path.read_text()):
            assert (path.parent / target).resolve().is_file(), (path, target)


def test_the_notebook_helper_embeds_the_viewer() -> None:
    v = show("demo")
    assert isinstance(v, Viewer) and v.url == "http://127.0.0.1:7451/#/graph/demo"
    html = v._repr_html_()
    assert html.startswith('<iframe src="http://127.0.0.1:7451/#/graph/demo"')
    assert 'height="560"' in html
    assert show().url.endswith("/#/")
    odd = show('a"<b>/c', url="http://localhost:9000/")
    assert odd.url == "http://localhost:9000/#/graph/a%22%3Cb%3E%2Fc"
    assert "<b>" not in odd._repr_html_()
    assert learn().url == "http://127.0.0.1:7451/#/learn/3%2Ax%2A%2A2%20-%204%2Ax%20%2B%205"
    assert show("demo", token="t k").url.endswith("#/graph/demo?token=t%20k")
    with pytest.raises(ValueError, match="http://host:port"):
        show("demo", url="tcp://127.0.0.1:7450")
    with pytest.raises(ValueError, match="graph's name"):
        show("")
    with pytest.raises(ValueError, match="non-empty"):
        learn("  ")
