"""The web viewer inline in a notebook: ``opgraph.notebook.show("demo")`` as a cell's last line.

The seed is a notebook walk-through; this shows a live graph (values and gradients updating as
the notebook publishes new versions) beside the code. The page itself is served by a graph
server listening on ``http://`` (``make serve``, or ``opgraph serve --listen
http://127.0.0.1:7451``); the notebook only embeds it, as an IFrame, so nothing here talks to
the server or needs IPython: `Viewer` has a ``_repr_html_``, which Jupyter, VS Code and
IPython's rich display all use.

    import opgraph.notebook as nb
    nb.show("demo")                     # the graph 'demo', drawn, live
    nb.learn("3*x**2 - 4*x + 5")        # the learner's page with that expression
    nb.show()                           # the list of graphs
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from urllib.parse import quote, urlsplit

DEFAULT_VIEWER = "http://127.0.0.1:7451"
"""Where ``make serve`` serves the viewer."""

__all__ = ["DEFAULT_VIEWER", "Viewer", "learn", "show"]


def _base(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{url!r}: the viewer's address is http://host:port (the server's "
                         f"--listen http://... address, e.g. {DEFAULT_VIEWER})")
    return f"{parts.scheme}://{parts.netloc}/"


@dataclass(frozen=True)
class Viewer:
    """A page of the viewer, shown inline by notebooks (``_repr_html_``: an IFrame)."""

    url: str
    width: str = "100%"
    height: int = 560

    def _repr_html_(self) -> str:
        src = html.escape(self.url, quote=True)
        width = html.escape(str(self.width), quote=True)
        return (f'<iframe src="{src}" width="{width}" height="{int(self.height)}" '
                f'style="border:1px solid #ddd;border-radius:4px" '
                f'title="opgraph viewer" loading="lazy"></iframe>')

    def __str__(self) -> str:
        return self.url


def _page(fragment: str, url: str, token: str | None, width: str, height: int) -> Viewer:
    page = _base(url) + "#" + fragment
    if token:
        # In the fragment, which the browser does not send to the server; the page keeps it for
        # its session and removes it from the address. (It is in the notebook's output, though:
        # leave it out, and the page asks for it once, if the notebook is shared.)
        page += "?token=" + quote(token, safe="")
    return Viewer(page, width, height)


def show(graph: str | None = None, *, url: str = DEFAULT_VIEWER, token: str | None = None,
         width: str = "100%", height: int = 560) -> Viewer:
    """The viewer of ``graph`` (or, with None, the list of the server's graphs)."""
    if graph is not None and (not isinstance(graph, str) or not graph):
        raise ValueError(f"graph must be a graph's name, got {graph!r}")
    fragment = "/" if graph is None else "/graph/" + quote(graph, safe="")
    return _page(fragment, url, token, width, height)


def learn(expression: str = "3*x**2 - 4*x + 5", *, url: str = DEFAULT_VIEWER,
          token: str | None = None, width: str = "100%", height: int = 640) -> Viewer:
    """The learner's page: ``expression`` with a slider per leaf, f and f' plotted."""
    if not isinstance(expression, str) or not expression.strip():
        raise ValueError(f"expression must be a non-empty string, got {expression!r}")
    return _page("/learn/" + quote(expression, safe=""), url, token, width, height)
