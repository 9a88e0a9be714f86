"""Fixtures of the web viewer's tests: a served viewer, Chromium, and a page that fails its
test on any uncaught JavaScript error."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from web_harness import CHROMIUM, WAIT_MS, ServedViewer, launch, screenshot


@pytest.fixture(scope="module")
def served() -> Iterator[ServedViewer]:
    """A server (with the demo graph) shared by a module's tests."""
    srv = ServedViewer().start()
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    if CHROMIUM is None:
        pytest.skip("chromium is not installed (`make test` installs it with apt-get)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = launch(p)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def page(browser: Any, request: pytest.FixtureRequest) -> Iterator[Any]:
    """A fresh tab (its own session storage); an uncaught error in the page fails the test.
    What the tab showed last is saved as a screenshot named after the test."""
    context = browser.new_context(viewport={"width": 1400, "height": 820})
    context.set_default_timeout(WAIT_MS)
    tab = context.new_page()
    errors: list[str] = []
    tab.on("pageerror", lambda exc: errors.append(str(exc)))
    try:
        yield tab
    finally:
        screenshot(tab, f"last-{request.node.name}")
        context.close()
    assert not errors, f"uncaught errors in the page: {errors}"
