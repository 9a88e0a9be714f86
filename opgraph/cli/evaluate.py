"""``opgraph eval`` and ``opgraph plot``: expressions from the command line."""

from __future__ import annotations

from pathlib import Path

import typer

from opgraph.cli.common import (
    console,
    fail,
    friendly_errors,
    parse_binding,
    print_json,
    usage,
    warn_if_not_finite,
)

EXPR_HELP = "A Python-syntax expression over names, numbers and ops: 'tanh(x*w + b)'."


def _bindings(pairs: list[str]) -> dict[str, float]:
    bound: dict[str, float] = {}
    for text in pairs:
        name, value = parse_binding(text)
        if name in bound:
            raise usage(f"{name!r} is given twice ({text!r}); give each name one value")
        bound[name] = value
    return bound


def _expression_error(exc) -> typer.Exit:
    """A bad expression is bad usage (exit 2), an op failing on the values is failed work
    (exit 1, as ``log(x)`` at ``x=-1``): one line with the position, and for a person at a
    terminal the text with a caret under the problem as well."""
    import sys

    from opgraph.cli.common import EXIT_FAILED, EXIT_USAGE
    from opgraph.errors import RuleError

    code = EXIT_FAILED if isinstance(exc, RuleError) or _clashed(exc) else EXIT_USAGE
    return fail(f"{exc}\n{exc.excerpt()}" if sys.stderr.isatty() else str(exc), code)


def _clashed(exc: BaseException) -> bool:
    """Whether ``exc`` comes of an op that two plugins define: the installation is at fault,
    not the command line (exit 1, not 2)."""
    from opgraph.errors import UnknownOpError
    from opgraph.registry import default_registry

    cause = exc.__cause__
    return isinstance(cause, UnknownOpError) and cause.name in default_registry().clashes


@friendly_errors
def eval_(
    expression: str = typer.Argument(..., help=EXPR_HELP),
    bindings: list[str] = typer.Argument(None, help="Values of the names: x=3 w=-0.5 ..."),
    json_: bool = typer.Option(False, "--json", help='Print {"value": ..., "grads": {...}}.'),
    save: Path = typer.Option(None, help="Also write the graph to this file (.opg or .json)."),
    svg: Path = typer.Option(None, help="Also draw the graph to this SVG file."),
) -> None:
    """Evaluate an expression: its value and the gradient with respect to every name.

    Example: opgraph eval "3*x**2 - 4*x + 5" x=3   (value 20, d/dx 14). Numbers, bound or
    written in the expression, are floats (IEEE doubles). An expression may start with a
    minus sign: opgraph eval "-x + 1" x=2. A value or gradient that is NaN or infinite is
    named in a warning on stderr (and is null in --json).
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
    warn_if_not_finite({"value": root.data, **{f"d/d{name}": g for name, g in grads.items()}})
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
    range_: str = typer.Option(None, "--range", show_default=False,
                               help="The interval of x, as LOW:HIGH.  [default: -5:5]"),
    at: float = typer.Option(None, help="Draw the tangent at this x (the default range grows "
                                        "to include it; a --range given must)."),
    points: int = typer.Option(200, min=2, max=100_000, help="How many points to plot."),
    bindings: list[str] = typer.Argument(None, help="Values of other names: a=2 ..."),
) -> None:
    """Plot a function and its derivative (from autograd), as the seed plots f(x).

    Points where the function or its derivative is undefined or infinite are left out (and
    counted); near a pole the y axis is clipped so that the rest of the curve keeps its shape.
    """
    import math

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from opgraph.errors import RuleError
    from opgraph.expr import ExpressionError, build, parse
    from opgraph.graph import Graph

    low, high = _interval(range_ or DEFAULT_RANGE)
    notes: list[str] = []
    if at is not None and not low <= at <= high:
        if range_ is not None:
            raise usage(f"--at {at:g} is outside --range {range_}; widen the range to include "
                        f"it")
        margin = (high - low) / 10
        low, high = min(low, at - margin), max(high, at + margin)
        notes.append(f"range extended to {low:g}:{high:g} to include --at {at:g}")
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
        raise usage(
            f"the expression must have exactly one free name to plot, it has "
            f"{', '.join(map(repr, names)) if names else 'none'} (bind the others as name=value)")
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
    xs, ys, dys = [], [], []  # NaN where undefined: the lines break there
    for i in range(points):
        xv = low + i * step
        try:
            graph.set(x.id, xv)
            graph.backward(root)
            y, dy = root.data, x.grad
        except Exception:
            y = dy = math.nan  # outside the function's domain (log of a negative number, ...)
        if not (math.isfinite(y) and math.isfinite(dy)):
            y = dy = math.nan  # a pole, or log(0): nothing to draw there
        xs.append(xv)
        ys.append(y)
        dys.append(dy)
    drawn = sum(math.isfinite(y) for y in ys)
    if not drawn:
        raise fail(f"the expression is undefined everywhere in [{low:g}, {high:g}]")
    if drawn < points:
        notes.append(f"{points - drawn} of {points} left out, where f or f' is undefined or "
                     f"infinite")
    fig, ax = plt.subplots(figsize=(7, 4.5))
    tangent = None
    if at is not None:
        try:
            graph.set(x.id, at)
            graph.backward(root)
        except Exception as exc:
            raise fail(f"cannot draw the tangent: f is undefined at {var} = {at:g} ({exc})"
                       ) from None
        tangent = (root.data, x.grad)
        if not (math.isfinite(tangent[0]) and math.isfinite(tangent[1])):
            raise fail(f"cannot draw the tangent: f({at:g}) = {tangent[0]!r}, f'({at:g}) = "
                       f"{tangent[1]!r}")
    window = y_window([v for v in ys + dys if math.isfinite(v)]
                      + ([tangent[0]] if tangent else []))
    if window is not None:
        ys, dys = _break_jumps(ys, window), _break_jumps(dys, window)
        notes.append(f"y axis clipped to {window[0]:.4g}:{window[1]:.4g}, the curves go beyond")
    ax.plot(xs, ys, label=f"f({var}) = {expression}")
    ax.plot(xs, dys, label=f"f'({var}) (autograd)", linestyle="--")
    if tangent is not None:
        fa, slope = tangent
        ax.plot([low, high], [fa + slope * (low - at), fa + slope * (high - at)],
                label=f"tangent at {var}={at:g}: slope {slope:.6g}", linewidth=0.8)
        ax.plot([at], [fa], "o")
    finite = [v for v in ys + dys if math.isfinite(v)] + ([tangent[0]] if tangent else [])
    bottom, top = window or (min(finite), max(finite))
    pad = (top - bottom) * 0.05 or 1.0
    ax.set_ylim(bottom - pad, top + pad)  # (the tangent line does not widen the axis)
    ax.set_xlim(low, high)
    ax.axhline(0, color="grey", linewidth=0.5)
    ax.grid(True, alpha=0.3)
    ax.set_xlabel(var)
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    fig.savefig(output, format=fmt, dpi=100)
    plt.close(fig)
    extra = "".join(f"; {note}" for note in notes)
    typer.echo(f"wrote {output} ({drawn} points{extra})", err=True)


DEFAULT_RANGE = "-5:5"


def y_window(values: list[float]) -> tuple[float, float] | None:
    """The y range to show for these (finite) values: None (all of them) unless some lie far
    out of scale with the rest, as near a pole of ``1/x``; then the range between Tukey-style
    fences around the 10th and 90th percentiles, so that the curve keeps its shape."""
    if len(values) < 4:
        return None
    ordered = sorted(values)
    last = len(ordered) - 1
    q1, q9 = ordered[last // 10], ordered[last - last // 10]
    spread = q9 - q1 or max(abs(q1), 1.0)
    bottom, top = q1 - 1.5 * spread, q9 + 1.5 * spread
    if ordered[0] >= bottom and ordered[-1] <= top:
        return None
    return max(ordered[0], bottom), min(ordered[-1], top)


def _break_jumps(values: list[float], window: tuple[float, float]) -> list[float]:
    """``values`` with a NaN put where the curve jumps across the whole window (a pole), so
    that no line is drawn from one end of the axis to the other."""
    import math

    bottom, top = window
    out = list(values)
    for i in range(1, len(values)):
        a, b = values[i - 1], values[i]
        if math.isfinite(a) and math.isfinite(b) and ((a > top and b < bottom)
                                                      or (a < bottom and b > top)):
            out[i] = math.nan
    return out


def _interval(text: str) -> tuple[float, float]:
    import math

    low, sep, high = text.partition(":")
    try:
        lo, hi = float(low), float(high)
    except ValueError:
        raise typer.BadParameter(f"{text!r} is not LOW:HIGH (e.g. -5:5)",
                                 param_hint="--range") from None
    if not sep or not lo < hi:
        raise typer.BadParameter(f"{text!r}: LOW must be below HIGH", param_hint="--range")
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise typer.BadParameter(f"{text!r}: LOW and HIGH must be finite numbers",
                                 param_hint="--range")
    return lo, hi
