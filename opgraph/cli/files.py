"""``opgraph analyze``, ``render`` and ``gradcheck``: on a graph file, or a live server's graph."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from opgraph.cli.common import (
    MORE,
    console,
    elide,
    fail,
    friendly_errors,
    print_json,
    progress,
    usage,
)

if TYPE_CHECKING:
    from opgraph.aggregate import Aggregates

FILE_HELP = "A graph file (.opg or .json), as written by `opgraph eval --save` or opgraph.save."
CONNECT_HELP = "Work on a live server's graph instead of a file (tcp://host:port, unix:///path)."


def load_graph(file: Path | None, connect: str | None, name: str | None):
    """The graph to work on: from ``file``, or graph ``name`` on the server at ``connect``."""
    if connect is not None:
        if file is not None:
            raise typer.BadParameter("give either FILE or --connect, not both")
        if not name:
            raise typer.BadParameter("--connect needs --graph NAME")
        from opgraph_client import Client

        from opgraph.fileformat import from_document

        with progress(f"fetching {name!r}") as update, Client(connect) as client:
            document = client.call("graph.export", name)
            return from_document(document, progress=update)
    if file is None:
        raise typer.BadParameter("give a graph FILE, or --connect URL --graph NAME")
    from opgraph.fileformat import load

    with progress(f"loading {file}") as update:
        graph = load(file, progress=update)
    if not graph.name:
        graph.name = str(file)  # so that messages say "graph 'n.opg'", not "graph ''"
    return graph


@contextmanager
def about(file: Path | None, connect: str | None, name: str | None) -> Iterator[None]:
    """Errors about the graph's nodes (``--node 99``) name where the graph came from."""
    from opgraph.errors import NodeNotFoundError

    try:
        yield
    except NodeNotFoundError as exc:
        where = str(file) if connect is None else f"graph {name!r} on {connect}"
        message = str(exc)
        if connect is None and f"graph {str(file)!r}" in message:  # (an unnamed graph's)
            raise fail(message) from None
        raise fail(f"{where}: {message}") from None


class Names:
    """How tables name a node: ``id (label)``; an unlabelled node of a model part by its op
    and part (``65143 (add in l2)``, see `opgraph.aggregate`); else its id."""

    def __init__(self, graph) -> None:
        self.graph = graph
        self._agg: Aggregates | None = None
        self._parts: bool | None = None

    def __call__(self, node_id: int | None) -> str:
        if node_id is None:
            return "-"
        value = self.graph.nodes[node_id]
        if value.label:
            return f"{node_id} ({value.label})"
        name = self._part_name(node_id)
        return f"{node_id} ({name})" if name else str(node_id)

    def _part_name(self, node_id: int) -> str:
        if self._parts is None:
            self._parts = any("." in v.label for v in self.graph.nodes)
        if not self._parts:
            return ""
        if self._agg is None:
            from opgraph.aggregate import aggregates

            self._agg = aggregates(self.graph)
        return self._agg.name_of(node_id).replace("(leaf) in ", "leaf in ", 1)


TABLE_LIMIT = 10
"""Items of each list that ``analyze`` shows in its tables (``--limit`` to change, ``--full``
for all)."""
PATH_LIMIT = 6
"""Nodes of the critical path shown by default: its first four and its last two."""


@friendly_errors
def analyze(
    file: Path = typer.Argument(None, help=FILE_HELP, show_default=False),
    node: int = typer.Option(None, help="Also list the leaves that influence this node."),
    leaf: int = typer.Option(None, help="Also list the nodes this leaf affects."),
    root: int = typer.Option(None, help="The output to analyse (default: the last one)."),
    json_: bool = typer.Option(False, "--json", help="Print the report as JSON (complete, "
                                                     "unless --limit)."),
    full: bool = typer.Option(False, "--full", help="Show every item of every list in the "
                                                    "tables, and every diagnostic group."),
    limit: int = typer.Option(None, min=0, show_default=False,
                              help=f"Show at most N items of each list (tables: "
                                   f"{TABLE_LIMIT} by default); with --json, cut each list "
                                   f"to N (the counts say how many there are)."),
    connect: str = typer.Option(None, help=CONNECT_HELP),
    graph: str = typer.Option(None, "--graph", help="The graph's name on the server."),
) -> None:
    """Analyse a graph: size, depth, width, critical path, dominators, ops, diagnostics.

    Long lists are shortened in the tables, with their count (--full for all); diagnostics
    are grouped by code and site (the source line or model part that made their nodes)."""
    from opgraph.analysis import analyze as run

    if full and limit is not None:
        raise usage("give --full or --limit, not both")
    g = load_graph(file, connect, graph)
    with progress("analysing") as update, about(file, connect, graph):
        report = run(g, root=root, node=node, leaf=leaf, limit=limit if json_ else None,
                     progress=update)
    if json_:
        print_json(report.to_dict())
        return
    show_report(g, report, None if full else TABLE_LIMIT if limit is None else limit,
                path_cap=None if full else PATH_LIMIT if limit is None else limit,
                title=f"graph {g.name or str(file or '')!s}")


def show_report(g, report, cap: int | None, *, path_cap: int | None, title: str) -> None:
    """The tables of an analysis report: each list at most ``cap`` items, the critical path
    ``path_cap``. With None (``--full``), a list too long for its cell is listed in full
    after the tables, one item a line."""
    from rich.table import Table

    out = console()
    name = Names(g)
    below: list[tuple[str, list[str]]] = []

    def cell(key: str, ids, limit: int | None, default: int, counted: bool = True,
             **how) -> str:
        """The items of list ``key`` (counted first when not all are shown)."""
        items = [name(i) for i in ids]
        count = f"{len(items):,} nodes: " if counted else ""
        if limit is None and len(items) > default:
            below.append((f"{key} ({len(items):,} nodes)", items))
            return count + elide(items, default, more="all below", **how)
        if limit is not None and len(items) > limit:
            return count + elide(items, limit, **how)
        return elide(items, limit, **how)

    summary = Table("", "", show_header=False, title=title)
    path = cell("critical path", report.critical_path, path_cap, PATH_LIMIT, counted=False,
                tail=2, sep=" -> ")
    rows = [
        ("nodes", f"{report.nodes:,}"), ("edges", f"{report.edges:,}"),
        ("root", name(report.root)), ("leaves", f"{len(report.leaves):,}"),
        ("depth (generations)", f"{report.depth:,}"),
        ("widest generation", f"{report.width:,}"),
        ("critical path", f"{len(report.critical_path):,} nodes: {path}"),
        ("max fan-in", _fan(name, report.max_fan_in)),
        ("max fan-out", _fan(name, report.max_fan_out)),
        ("dominators", cell("dominators", report.dominators, cap, TABLE_LIMIT)),
        ("unused", cell("unused", report.unused, cap, TABLE_LIMIT)),
    ]
    if report.cycles:
        rows.append(("cycles", elide([" -> ".join(map(str, [*c, c[0]])) for c in report.cycles],
                                     cap, sep="; ")))
    for key, found in (("influences", report.influences), ("affects", report.affects)):
        for node_id, ids in found.items():
            rows.append((f"{key} of {node_id}", cell(f"{key} of {node_id}", ids, cap,
                                                     TABLE_LIMIT)))
    for key, value in rows:
        summary.add_row(key, value)
    out.print(summary)
    ops = Table("op", "count", title="ops")
    for op, count in report.ops.items():
        ops.add_row(op, f"{count:,}")
    out.print(ops)
    show_diagnostics(out, name, report, cap)
    for heading, items in below:
        out.print(f"{heading}:")
        for item in items:
            out.print(f"  {item}")


def show_diagnostics(out, name: Names, report, cap: int | None) -> None:
    """The diagnostics grouped by code and site, with counts; at most ``cap`` groups."""
    from rich.table import Table

    groups = report.diagnostic_groups
    found = len(report.diagnostics)
    if not found:
        out.print("no diagnostics")
        return
    shown = groups if cap is None else groups[:cap]
    title = (f"diagnostics: {found:,}" if len(groups) == found else
             f"diagnostics: {found:,} in {len(groups):,} groups (by code and site)")
    table = Table(title=title)
    for column in ("severity", "code", "node", "count", "site"):
        table.add_column(column, overflow="fold")
    table.add_column("message", ratio=1)
    for group in shown:
        more = group["count"] - 1
        cell = name(group["nodes"][0]) if group["nodes"] else "-"
        if more > 0:
            cell += f" (+{more:,})"
        count = f"{group['count']:,}"
        if group["occurrences"] != group["count"]:
            count += f" ({group['occurrences']:,} nodes)"
        table.add_row(group["severity"], group["code"], cell, count, _site(group["site"]),
                      group["message"])
    out.print(table)
    if len(shown) < len(groups):
        out.print(f"… and {len(groups) - len(shown):,} more groups: "
                  f"{_by_code(groups[len(shown):])}; {MORE}")


def _by_code(groups) -> str:
    """What groups hold, by code: ``unused-leaf 5,000 (1 group), saturated-tanh 200 (20
    groups)``, most first."""
    count: dict[str, list[int]] = {}
    for group in groups:
        seen = count.setdefault(group["code"], [0, 0])
        seen[0] += group["count"]
        seen[1] += 1
    parts = sorted(count.items(), key=lambda item: (-item[1][0], item[0]))
    return ", ".join(f"{code} {n:,} ({k:,} group{'s' if k > 1 else ''})"
                     for code, (n, k) in parts)


def _site(site) -> str:
    if not site:
        return "-"
    if "part" in site:
        return site["part"]
    return f"{_short_path(site['file'])}:{site['line']}"


def _short_path(path: str) -> str:
    """``path`` relative to the working directory when it is inside it, else its name."""
    import os

    try:
        relative = os.path.relpath(path)
    except ValueError:  # (another drive, on Windows)
        relative = ".."
    return os.path.basename(path) if relative.startswith("..") else relative


def _fan(name: Names, fan) -> str:
    return "-" if not fan else f"{fan['count']:,} at {name(fan['node'])}"


@friendly_errors
def render(
    file: Path = typer.Argument(None, help=FILE_HELP, show_default=False),
    output: Path = typer.Option(..., "-o", "--output",
                                help="Where to write the picture; - for stdout."),
    format: str = typer.Option(None, help="svg, png or dot (default: from the suffix of "
                                          "--output, svg for -)."),
    around: int = typer.Option(None, help="Draw only the neighbourhood of this node id."),
    depth: int = typer.Option(2, min=0, help="How far from --around to draw."),
    part: str = typer.Option(None, help="Draw the inside of this model part (a prefix of "
                                        "labels such as layer1 or layer1.neuron3), "
                                        "summarised."),
    by: str = typer.Option("auto", help="How a summary groups the nodes: part (the model "
                                        "parts that dotted labels such as layer0.neuron3.w1 "
                                        "name), op (generation and op), or auto (part when "
                                        "labels name parts)."),
    max_nodes: int = typer.Option(400, min=1, help="Summarise graphs with more nodes."),
    rankdir: str = typer.Option("LR", help="LR, RL, TB or BT."),
    diagnostics: bool = typer.Option(True, "--diagnostics/--no-diagnostics",
                                     help="Colour the nodes that diagnostics point at."),
    connect: str = typer.Option(None, help=CONNECT_HELP),
    graph: str = typer.Option(None, "--graph", help="The graph's name on the server."),
) -> None:
    """Draw a graph (or a node's neighbourhood) to SVG, PNG or DOT with graphviz.

    A graph over --max-nodes is drawn as a summary: by model part when its labels name parts
    (opgraph.nn's), else by generation and op; the line on stderr says so, and why."""
    import sys

    from opgraph.render import SUMMARY_BY, layout, plan

    # Checked before any work: a format or direction that cannot be drawn is bad usage (exit 2).
    to_stdout = str(output) == "-"
    fmt = picture_format(format, None if to_stdout else str(output))
    if rankdir not in ("LR", "RL", "TB", "BT"):
        raise typer.BadParameter(f"{rankdir!r} is not one of LR, RL, TB, BT",
                                 param_hint="--rankdir")
    if by not in SUMMARY_BY:
        raise typer.BadParameter(f"{by!r} is not one of {', '.join(SUMMARY_BY)}",
                                 param_hint="--by")
    if part is not None and around is not None:
        raise usage("give --around (a neighbourhood) or --part (a part's inside), not both")
    if part is not None and by == "op":
        raise usage("--part draws a summary by part: leave out --by op")
    g = load_graph(file, connect, graph)
    with progress("drawing") as update, about(file, connect, graph):
        update(0, 2)
        picture = plan(g, format=fmt, around=around, depth=depth, max_nodes=max_nodes,
                       rankdir=rankdir, diagnostics=diagnostics, by=by, part=part)
        update(1, 2)
        data = layout(picture)
        update(2, 2)
    if to_stdout:
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
    else:
        output.write_bytes(data)
        typer.echo(f"wrote {output} ({fmt}, {len(data)} bytes)", err=True)
    if picture.drawn == "summary":
        typer.echo(summary_note(picture, part), err=True)


def summary_note(picture, part: str | None) -> str:
    """The line that says a picture is a summary, why, and how to see more of it."""
    if part is not None:
        return (f"drew the inside of part {part!r}, summarised by model part; --part "
                f"{part}.NAME goes one level down, --around ID --depth D draws a node's "
                "neighbourhood whole")
    more = ", --part NAME the inside of a part" if picture.summary == "model part" else ""
    return (f"summarised by {picture.summary}: {picture.reason}; --around ID --depth D draws "
            f"a node's neighbourhood whole{more}")


PICTURE_SUFFIXES = {".svg": "svg", ".png": "png", ".dot": "dot", ".gv": "dot"}


def picture_format(format: str | None, output: str | None) -> str:
    """The picture format from ``--format`` and the output's suffix (None: stdout), which
    must agree: ``--format png -o out.svg`` is refused rather than PNG bytes in a .svg."""
    from opgraph.draw import FORMATS

    if format is not None and format not in FORMATS:
        raise typer.BadParameter(f"{format!r} is not one of {', '.join(FORMATS)}",
                                 param_hint="--format")
    if output is None:
        return format or "svg"
    suffix = Path(output).suffix.lower()
    implied = PICTURE_SUFFIXES.get(suffix)
    if format is None:
        if implied is None:
            raise usage(f"cannot tell the picture format from {output!r}: name it .svg, .png "
                        f"or .dot, or give --format")
        return implied
    if implied is not None and implied != format:
        raise usage(f"--format {format} does not match {output!r}, whose suffix says "
                    f"{implied}: change one of them")
    return format


GRADCHECK_LIMIT = 10
"""Leaves that agree (and, apart, that disagree) listed by ``gradcheck`` unless ``--full``."""


@friendly_errors
def gradcheck(
    file: Path = typer.Argument(None, help=FILE_HELP, show_default=False),
    root: int = typer.Option(None, help="The output to check (default: the last one)."),
    eps: float = typer.Option(1e-6, help="Finite-difference step."),
    sample: int = typer.Option(None, min=1, show_default=False,
                               help="Check N leaves drawn at random (from the --leaf ones, "
                                    "if given), not all of them."),
    seed: int = typer.Option(0, help="The random seed of --sample (the same seed draws the "
                                     "same leaves)."),
    leaf: list[int] = typer.Option(None, "--leaf", show_default=False,
                                   help="Check only this leaf (an id; repeatable)."),
    full: bool = typer.Option(False, "--full", help=f"List every leaf checked (else at most "
                                                    f"{GRADCHECK_LIMIT} that agree, and "
                                                    f"{GRADCHECK_LIMIT} that do not)."),
    json_: bool = typer.Option(False, "--json", help="Print the report as JSON."),
    connect: str = typer.Option(None, help=CONNECT_HELP),
    graph: str = typer.Option(None, "--graph", help="The graph's name on the server."),
) -> None:
    """Check a graph's gradients against finite differences; exit 1 when any disagrees.

    Each leaf costs two forward passes over the nodes it affects: on a big graph, --sample N
    checks a random few (seeded: --seed), --leaf ID the ones you name."""
    from opgraph.gradcheck import gradcheck as check

    g = load_graph(file, connect, graph)
    if not g.nodes:
        raise fail("the graph is empty")
    with about(file, connect, graph):
        if root is not None:
            target = g.node(root)
        else:  # the most recent computed output, as analyze takes it
            computed = [v for v in g.outputs if not v.is_leaf]
            target = (computed or g.outputs)[-1]
        for i in leaf or ():
            g.node(i)  # an id not in the graph: named with the file
    with progress("checking gradients", eta=True) as update:
        report = check(target, eps=eps, progress=update, leaves=leaf or None, sample=sample,
                       seed=seed)
    if json_:
        print_json({"ok": report.ok, "root": report.root,
                    "checked": len(report.leaves), "total_leaves": report.total_leaves,
                    "chosen": report.chosen, "sample": report.sample, "seed": report.seed,
                    "leaves": [checked.__dict__ for checked in report.leaves],
                    "bad_ops": [bad.__dict__ for bad in report.bad_ops]})
    else:
        out = report.lines(None if full else GRADCHECK_LIMIT)
        if not full and len(out) < len(report.lines()):
            out.append(f"  ({MORE})")
        typer.echo("\n".join(out))
    if not report.ok:
        raise typer.Exit(1)
