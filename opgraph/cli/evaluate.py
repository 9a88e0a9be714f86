"""``opgraph eval`` and ``opgraph plot``: expressions from the command line."""

from __future__ import annotations

from pathlib import Path

import typer

from opgraph.cli.common import console, friendly_errors, parse_binding, print_json

EXPR_HELP = "A Python-syntax expression over names, numbers and ops: 'tanh(x*w + b)'."


def _bindings(pairs: list[str]) -> dict[str, float]:
    bound: dict[str, float] = {}
    for text in pairs:
        name, value = parse_binding(text)
        if name in bound:
            raise typer.BadParameter(f"{name!r} is given twice")
        bound[name] = value
    return bound


def _expression_error(exc) -> typer.Exit:
    """A bad expression is bad usage (exit 2), an op failing on the values is failed work
    (exit 1, as ``log(x)`` at ``x=-1``): one line with the position, and for a person at a
    terminal the text with a caret under the problem as well."""
    import sys

    from opgraph.cli.common import EXIT_FAILED, EXIT_USAGE, fail
    from opgraph.errors import RuleError

    code = EXIT_FAILED if isinstance(exc, RuleError) else EXIT_USAGE
    return fail(f"{exc}\n{exc.excerpt()}" if sys.stderr.isatty() else str(exc), code)


@friendly_errors
def eval_(
    expression: str = typer.Argument(..., help=EXPR_HELP),
    bindings: list[str] = typer.Argument(None, help="Values of the names: x=3 w=-0.5 ..."),
    json_: bool = typer.Option(False, "--json", help='Print {"value": ..., "grads": {...}}.'),
    save: Path = typer.Option(None, help="Also write the graph to this file (.opg or .json)."),
    svg: Path = typer.Option(None, help="Also draw the graph to this SVG file."),
) -> None:
    """Evaluate an expression: its value and the gradient with respect to every name.

    Example: opgraph eval "3*x**2 - 4*x + 5" x=3   (value 20, d/dx 14)
    """
    from opgraph.expr import ExpressionError, build

    bound = _bindings(bindings or [])
    try:
        root, leaves = build(expression, bound)
    except ExpressionError as exc:
        raise _expression_error(exc) from None
    root.backward()
    grads = {name: leaf.grad for name, leaf in leaves.items()}
    if save is not None:
        from opgraph.fileformat import save as save_graph

        save_graph(root, save)
    if svg is not None:
        from opgraph.render import render

        svg.write_bytes(render(root, format="svg"))
    if json_:
        print_json({"value": root.data, "grads": grads})
        return
    from rich.table import Table

    table = Table("name", "value", "gradient", title=expression)
    for name, leaf in leaves.items():
        table.add_row(name, repr(leaf.data), repr(grads[name]))
    table.add_section()
    table.add_row("(result)", repr(root.data), "")
    console().print(table)
    for path in (save, svg):
        if path is not None:
            typer.echo(f"wrote {path}", err=True)


@friendly_errors
def plot(
    expression: str = typer.Argument(..., help="An expression in one free name: '3*x**2 - 4*x'."),
    output: Path = typer.Option(..., "-o", "--output", help="The picture: .png, .svg or .pdf."),
    range_: str = typer.Option("-5:5", "--range", help="The interval of x, as LOW:HIGH."),
    at: float = typer.Option(None, help="Draw the tangent at this x."),
    points: int = typer.Option(200, min=2, max=100_000, help="How many points to plot."),
    bindings: list[str] = typer.Argument(None, help="Values of other names: a=2 ..."),
) -> None:
    """Plot a function and its derivative (from autograd), as the seed plots f(x)."""
    import math

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from opgraph.errors import RuleError
    from opgraph.expr import ExpressionError, build, parse
    from opgraph.graph import Graph

    low, high = _interval(range_)
    fmt = output.suffix.lower().lstrip(".")
    if fmt not in ("png", "svg", "pdf"):
        raise typer.BadParameter(f"{output}: write a .png, .svg or .pdf file",
                                 param_hint="--output")
    bound = _bindings(bindings or [])
    try:
        names = [n for n in parse(expression).names if n not in bound]
    except ExpressionError as exc:
        raise _expression_error(exc) from None
    if len(names) != 1:
        raise typer.BadParameter(
            f"the expression must have exactly one free name to plot, it has {names or 'none'}"
            " (bind the others as name=value)")
    var = names[0]
    graph = Graph("plot")
    x = graph.leaf(low, var)
    step = (high - low) / (points - 1)
    root = first_error = None
    # Build at the first point where the function is defined (log(x) on -5:5 starts at 0.05),
    # not just at LOW; a failed build leaves the graph as it was.
    for i in range(points):
        graph.set(x.id, low + i * step)
        try:
            root, _ = build(expression, {**bound, var: x}, graph=graph)
            break
        except ExpressionError as exc:
            first_error = first_error or exc
            if not isinstance(exc.__cause__, RuleError):
                break  # not a domain problem: the same at every point
    if root is None:
        raise _expression_error(first_error) from None
    xs, ys, dys = [], [], []
    for i in range(points):
        xv = low + i * step
        try:
            graph.set(x.id, xv)
            graph.backward(root)
        except Exception:
            continue  # outside the function's domain (log of a negative number, ...)
        if not (math.isfinite(root.data) and math.isfinite(x.grad)):
            continue  # a pole, or log(0): nothing to draw there
        xs.append(xv)
        ys.append(root.data)
        dys.append(x.grad)
    if not xs:
        raise typer.BadParameter(f"the expression is undefined everywhere in [{low}, {high}]")
    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.plot(xs, ys, label=f"f({var}) = {expression}")
    ax.plot(xs, dys, label=f"f'({var}) (autograd)", linestyle="--")
    if at is not None:
        graph.set(x.id, at)
        graph.backward(root)
        fa, slope = root.data, x.grad
        ax.plot([low, high], [fa + slope * (low - at), fa + slope * (high - at)],
                label=f"tangent at {var}={at:g}: slope {slope:.6g}", linewidth=0.8)
        ax.plot([at], [fa], "o")
        ax.set_ylim(min(min(ys), min(dys)) - 1, max(max(ys), max(dys)) + 1)
    ax.axhline(0, color="grey", linewidth=0.5)
    ax.grid(True, alpha=0.3)
    ax.set_xlabel(var)
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    fig.savefig(output, format=fmt, dpi=100)
    plt.close(fig)
    typer.echo(f"wrote {output} ({len(xs)} points)")


def _interval(text: str) -> tuple[float, float]:
    low, sep, high = text.partition(":")
    try:
        lo, hi = float(low), float(high)
    except ValueError:
        raise typer.BadParameter(f"{text!r} is not LOW:HIGH (e.g. -5:5)",
                                 param_hint="--range") from None
    if not sep or not lo < hi:
        raise typer.BadParameter(f"{text!r}: LOW must be below HIGH", param_hint="--range")
    return lo, hi
