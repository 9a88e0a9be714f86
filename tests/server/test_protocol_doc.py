"""docs/protocol.md documents every method and every error the server has."""

from __future__ import annotations

from pathlib import Path

import pytest
from opgraph_server.errors import CATALOGUE
from opgraph_server.methods import METHODS

DOC = (Path(__file__).resolve().parents[2] / "docs" / "protocol.md").read_text()


@pytest.mark.parametrize("name", sorted(CATALOGUE))
def test_every_error_is_in_the_table(name: str) -> None:
    spec = CATALOGUE[name]
    assert f"| `{name}` | {spec.code} | {spec.kind} |" in DOC


def _section(name: str) -> str:
    """The text under the ``###`` heading that names ``name``, up to the next heading."""
    for part in DOC.split("\n### ")[1:]:
        heading = part.split("\n", 1)[0]
        if f"`{name}(" in heading:
            return part
    raise AssertionError(f"no heading names {name}")


@pytest.mark.parametrize("name", sorted(METHODS))
def test_every_method_has_a_section(name: str) -> None:
    assert _section(name)


@pytest.mark.parametrize("name", sorted(METHODS))
def test_every_option_is_mentioned(name: str) -> None:
    section = _section(name)
    for option in METHODS[name].options:
        assert f"`{option}`" in section or f"{option}" in section.split("\n", 1)[0], (
            f"option {option!r} of {name} is not documented in its section")
