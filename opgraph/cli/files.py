"""``opgraph analyze``, ``render`` and ``gradcheck``: on a graph file, or a live server's graph."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import typer

from opgraph.cli.common import console, fail, friendly_errors, print_json, progress, usage

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


def _describe(graph, node_id) -> str:
    if node_id is None:
        return "-"
    label = graph.nodes[node_id].label
    return f"{node_id} ({label})" if label else str(node_id)


@friendly_errors
def analyze(
    file: Path = typer.Argument(None, help=FILE_HELP, show_default=False),
    node: int = typer.Option(None, help="Also list the leaves that influence this node."),
    leaf: int = typer.Option(None, help="Also list the nodes this leaf affects."),
    root: int = typer.Option(None, help="The output to analyse (default: the last one)."),
    json_: bool = typer.Option(False, "--json", help="Print the report as JSON."),
    connect: str = typer.Option(None, help=CONNECT_HELP),
    graph: str = typer.Option(None, "--graph", help="The graph's name on the server."),
) -> None:
    """Analyse a graph: size, depth, width, critical path, dominators, ops, diagnostics."""
    from opgraph.analysis import analyze as run

    g = load_graph(file, connect, graph)
    with progress("analysing") as update, about(file, connect, graph):
        update(0, 1)
        report = run(g, root=root, node=node, leaf=leaf)
    if json_:
        print_json(report.to_dict())
        return
    from rich.table import Table

    out = console()
    summary = Table("", "", show_header=False, title=f"graph {g.name or str(file or '')!s}")
    path = " -> ".join(_describe(g, i) for i in report.critical_path)
    for key, value in [
        ("nodes", report.nodes), ("edges", report.edges), ("root", _describe(g, report.root)),
        ("leaves", len(report.leaves)), ("depth (generations)", report.depth),
        ("widest generation", report.width), ("critical path", f"{len(report.critical_path)} "
                                                                f"nodes: {path}"),
        ("max fan-in", _fan(g, report.max_fan_in)), ("max fan-out", _fan(g, report.max_fan_out)),
        ("dominators", ", ".join(_describe(g, i) for i in report.dominators) or "-"),
        ("unused", ", ".join(_describe(g, i) for i in report.unused) or "-"),
    ]:
        summary.add_row(key, str(value))
    for key, found in (("influences", report.influences), ("affects", report.affects)):
        for node_id, ids in found.items():
            summary.add_row(f"{key} of {node_id}",
                            ", ".join(_describe(g, i) for i in ids) or "-")
    out.print(summary)
    ops = Table("op", "count", title="ops")
    for name, count in report.ops.items():
        ops.add_row(name, str(count))
    out.print(ops)
    if report.diagnostics:
        diags = Table("severity", "code", "node", "message", title="diagnostics")
        for d in report.diagnostics:
            diags.add_row(d["severity"], d["code"], _describe(g, d["node"]), d["message"])
        out.print(diags)
    else:
        out.print("no diagnostics")


def _fan(graph, fan) -> str:
    return "-" if not fan else f"{fan['count']} at {_describe(graph, fan['node'])}"


@friendly_errors
def render(
    file: Path = typer.Argument(None, help=FILE_HELP, show_default=False),
    output: Path = typer.Option(..., "-o", "--output",
                                help="Where to write the picture; - for stdout."),
    format: str = typer.Option(None, help="svg, png or dot (default: from the suffix of "
                                          "--output, svg for -)."),
    around: int = typer.Option(None, help="Draw only the neighbourhood of this node id."),
    depth: int = typer.Option(2, min=0, help="How far from --around to draw."),
    max_nodes: int = typer.Option(400, min=1, help="Summarise graphs with more nodes."),
    rankdir: str = typer.Option("LR", help="LR, RL, TB or BT."),
    diagnostics: bool = typer.Option(True, "--diagnostics/--no-diagnostics",
                                     help="Colour the nodes that diagnostics point at."),
    connect: str = typer.Option(None, help=CONNECT_HELP),
    graph: str = typer.Option(None, "--graph", help="The graph's name on the server."),
) -> None:
    """Draw a graph (or a node's neighbourhood) to SVG, PNG or DOT with graphviz."""
    import sys

    from opgraph.render import render as draw

    # Checked before any work: a format or direction that cannot be drawn is bad usage (exit 2).
    to_stdout = str(output) == "-"
    fmt = picture_format(format, None if to_stdout else str(output))
    if rankdir not in ("LR", "RL", "TB", "BT"):
        raise typer.BadParameter(f"{rankdir!r} is not one of LR, RL, TB, BT",
                                 param_hint="--rankdir")
    g = load_graph(file, connect, graph)
    with progress("drawing") as update, about(file, connect, graph):
        update(0, 1)
        picture = draw(g, format=fmt, around=around, depth=depth, max_nodes=max_nodes,
                       rankdir=rankdir, diagnostics=diagnostics)
    if to_stdout:
        sys.stdout.buffer.write(picture)
        sys.stdout.buffer.flush()
        return
    output.write_bytes(picture)
    typer.echo(f"wrote {output} ({fmt}, {len(picture)} bytes)", err=True)


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


@friendly_errors
def gradcheck(
    file: Path = typer.Argument(None, help=FILE_HELP, show_default=False),
    root: int = typer.Option(None, help="The output to check (default: the last one)."),
    eps: float = typer.Option(1e-6, help="Finite-difference step."),
    json_: bool = typer.Option(False, "--json", help="Print the report as JSON."),
    connect: str = typer.Option(None, help=CONNECT_HELP),
    graph: str = typer.Option(None, "--graph", help="The graph's name on the server."),
) -> None:
    """Check a graph's gradients against finite differences; exit 1 when any disagrees."""
    from opgraph.gradcheck import gradcheck as check

    g = load_graph(file, connect, graph)
    if not g.nodes:
        raise fail("the graph is empty")
    if root is not None:
        with about(file, connect, graph):
            target = g.node(root)
    else:  # the most recent computed output, as analyze takes it
        computed = [v for v in g.outputs if not v.is_leaf]
        target = (computed or g.outputs)[-1]
    with progress("checking gradients") as update:
        report = check(target, eps=eps, progress=update)
    if json_:
        print_json({"ok": report.ok, "root": report.root,
                    "leaves": [leaf.__dict__ for leaf in report.leaves],
                    "bad_ops": [bad.__dict__ for bad in report.bad_ops]})
    else:
        typer.echo(str(report))
    if not report.ok:
        raise typer.Exit(1)
