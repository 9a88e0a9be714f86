"""Calling an op's rules, and what counts as their failure: shared by every pass that runs them.

The eager engine (`opgraph.core`) and the compiled executor (`opgraph.compiled`) judge a rule's
result by the same tests, written here once:

- a forward rule fails if it raises, or returns what `result_problem` names (a bool, a complex
  number, a string, None, an array: anything that is not a real number);
- a gradient rule fails if it raises, or returns anything but one partial per input, each a
  number `is_partial` accepts (a real number, as `math.fsum` takes one).

Nodes are described in messages by `describe` (label and/or id, and data).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence
from typing import Any

from opgraph.errors import ForwardError, GradRuleError
from opgraph.opdef import OpDef


def is_real(x: object) -> bool:
    """Whether ``x`` is a real number a forward rule may return (bools are not)."""
    return isinstance(x, numbers.Real) and not isinstance(x, bool)


def result_problem(out: object) -> str | None:
    """What is wrong with ``out`` as a forward rule's result, or None if it is a real number."""
    return None if is_real(out) else "not a real number"


def is_partial(d: object) -> bool:
    """Whether ``d`` is a partial derivative the engine takes: a real number, as `math.fsum`
    takes one (ints, bools and numpy scalars included), not a complex number or an array."""
    try:
        math.fsum((d,))
    except (TypeError, ValueError, OverflowError):
        return False
    return True


def describe(value: Any) -> str:
    """How error messages name a node: its label and/or id, and its data."""
    parts = []
    if value.label:
        parts.append(repr(value.label))
    if value.id is not None:
        parts.append(f"id {value.id}")
    name = " ".join(parts) if parts else "unlabelled value"
    return f"{name} (data {value.data!r})"


def describe_all(values: Sequence[Any]) -> str:
    """`describe` of each value, comma-separated."""
    return ", ".join(describe(v) for v in values)


def forward_failed(op: OpDef, inputs: Sequence[Any], exc: BaseException) -> ForwardError:
    """The error for ``op``'s forward rule raising ``exc`` on ``inputs`` (Values)."""
    return ForwardError(
        f"op {op.name!r} failed on {describe_all(inputs)}: forward rule raised "
        f"{type(exc).__name__}: {exc}",
        op=op.name, node=describe_all(inputs), cause=exc,
    )


def checked_result(out: Any, op: OpDef, inputs: Sequence[Any]) -> float:
    """A forward rule's result ``out`` that is not a float, as the float a node holds: an int
    (or another real number) is converted, so that no chain of ops computes with exact integers
    of growing size; anything else, or an int too big for a double, is a `ForwardError`."""
    problem = result_problem(out)
    if problem is None:
        try:
            return float(out)
        except (OverflowError, ValueError):
            problem = f"{show_number(out)}, too big for a float"
    else:
        problem = f"{type(out).__name__} {show_number(out)}, {problem}"
    raise ForwardError(
        f"op {op.name!r} on {describe_all(inputs)}: forward rule returned {problem}",
        op=op.name, node=describe_all(inputs),
    )


def show_number(data: Any) -> str:
    """``repr(data)``, cut short: an int of thousands of digits is named by its size."""
    if isinstance(data, int) and not isinstance(data, bool) and data.bit_length() > 200:
        return f"an int of {int(data.bit_length() * 0.30103) + 1} digits"  # (about)
    try:
        text = repr(data)
    except Exception:  # a hostile __repr__
        return type(data).__name__
    return text if len(text) <= 60 else text[:57] + "..."


def run_forward(op: OpDef, inputs: Sequence[Any], attrs: Mapping[str, Any] | None) -> float:
    """``op``'s forward rule over the data of ``inputs`` (Values), checked: a real number, or
    `ForwardError` naming the op and the inputs."""
    args = [v.data for v in inputs]
    try:
        out = op.forward(*args, **attrs) if attrs else op.forward(*args)
    except Exception as exc:
        raise forward_failed(op, inputs, exc) from exc
    return out if type(out) is float else checked_result(out, op, inputs)


def grad_failed(node: Any, exc: BaseException) -> GradRuleError:
    """The error for the gradient rule of ``node``'s op failing with ``exc``."""
    op = node.opdef
    name = op.name if op else "?"
    cause = f"{type(exc).__name__}: {exc}"
    if isinstance(exc, ValueError | TypeError) and op is not None:
        cause += f" (a gradient rule returns one number per input, here {op.arity})"
    where = f"node {describe(node)} over {describe_all(node.inputs)}"
    return GradRuleError(f"op {name!r} gradient rule failed at {where}: {cause}",
                         op=name, node=describe(node), cause=exc)


def non_number_rule(order: Sequence[Any]) -> tuple[Any, Exception] | None:
    """The first node of ``order`` whose gradient rule returns a partial `is_partial` refuses,
    with the error to report (a rule that raises is skipped: the pass itself reports that)."""
    for node in order:
        op = node.opdef
        if op is None:
            continue
        try:
            local = op.grad(*[v.data for v in node.inputs], node.data, **node.attrs)
        except Exception:
            continue
        for d in local:
            if not is_partial(d):
                return node, TypeError(f"it returned {type(d).__name__} {d!r}, not a real number")
    return None
