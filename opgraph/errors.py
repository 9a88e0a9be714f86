"""The exceptions opgraph raises.

Every error derives from :class:`OpgraphError`, and where a built-in exception means the same
thing (a wrong type, a missing key) it derives from that too, so ``except TypeError`` keeps
working. Each message names what went wrong and where: the op, the node (label or id) and the
cause.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable


class OpgraphError(Exception):
    """Base class of every error opgraph raises on purpose."""


# --- ops and the engine --------------------------------------------------------------------------


class UnknownOpError(OpgraphError, KeyError):
    """An op name that no installed plugin provides."""

    def __init__(self, name: str, known: Iterable[str] = (), *, reason: str | None = None):
        self.name = name
        self.reason = reason
        self.suggestions = difflib.get_close_matches(str(name), list(known), n=3)
        hint = f"; did you mean {self.suggestions[0]!r}?" if self.suggestions else ""
        # ``reason`` replaces "no op named ..." where the name is known but unusable (two
        # plugins define it)
        super().__init__(reason or f"no op named {name!r}{hint}")

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0])


class ArityError(OpgraphError, TypeError):
    """An op applied to the wrong number of inputs."""


class InputTypeError(OpgraphError, TypeError):
    """Something that is not a real number (or a Value) used where one is needed."""


class AttributeSpecError(OpgraphError, TypeError):
    """An op applied with attributes it does not take, or without ones it needs."""


class RuleError(OpgraphError, ArithmeticError):
    """An op's forward or gradient rule failed.

    Attributes: ``op`` (the op's name), ``node`` (a description of the node or its inputs),
    ``cause`` (the original exception, or None when the rule returned something wrong).
    """

    def __init__(self, message: str, *, op: str, node: str, cause: BaseException | None = None):
        super().__init__(message)
        self.op = op
        self.node = node
        self.cause = cause


class ForwardError(RuleError):
    """An op's forward rule raised, or returned something that is not a real number."""


class GradRuleError(RuleError):
    """An op's local-gradient rule raised, or returned something other than one number per input."""


class NoGradGraphError(GradRuleError):
    """``create_graph=True`` over an op without a graph form of its gradient rule
    (``OpDef.grad_graph``), or whose graph rule was refused when the op was installed."""


# --- graphs --------------------------------------------------------------------------------------


class GraphError(OpgraphError):
    """A misuse of an explicit :class:`~opgraph.graph.Graph`."""


class GraphMismatchError(GraphError, ValueError):
    """Values that do not fit the graph they are used with: an op over values of different
    graphs, or values for another number of nodes (`Graph.assign`)."""


class NodeNotFoundError(GraphError, KeyError):
    """A node id that does not exist in the graph."""

    def __str__(self) -> str:
        return str(self.args[0])


class GraphLimitError(GraphError):
    """Adding nodes would take a graph over its ``max_nodes`` limit."""


class NotALeafError(GraphError, ValueError):
    """An attempt to set the data of a node that an op computes."""


# --- plugins -------------------------------------------------------------------------------------


class PluginError(OpgraphError):
    """A problem with a plugin or the op definitions it delivers."""


class OpDefError(PluginError, ValueError):
    """A malformed op definition (bad name, arity not matching its rules, ...)."""


class PluginConflictError(PluginError):
    """Two plugins define the same op name."""

    def __init__(self, op: str, first: str, second: str, *, message: str | None = None):
        # ``message`` (from the registry) also names the distributions and says how to fix it
        super().__init__(message or f"op {op!r} is defined by two plugins: {first!r} and "
                                    f"{second!r}")
        self.op = op
        self.plugins = (first, second)


class OpgraphPluginWarning(UserWarning):
    """A plugin failed to load or delivered something unusable; the others still work."""


# --- graph files ---------------------------------------------------------------------------------


class GraphFileError(OpgraphError, ValueError):
    """A graph file or document that cannot be read, or a graph that cannot be written as one.

    The message names the problem and where it is. Attributes: ``node`` (the id of the node at
    fault, or None) and ``field`` (the field at fault, such as ``'inputs'``, or None).
    """

    def __init__(self, message: str, *, node: int | None = None, field: str | None = None):
        super().__init__(message)
        self.node = node
        self.field = field


# --- expressions ---------------------------------------------------------------------------------

LINE_BREAK = re.compile(r"\r\n|\r|\n")
"""What Python's tokenizer counts as a line break."""
_SURROGATE = re.compile("[\ud800-\udfff]")
_EXCERPT_WIDTH = 72


class ExpressionError(OpgraphError, ValueError):
    """An expression that cannot be turned into graph nodes, and where the problem is.

    Attributes (positions count characters, from 0):

    - ``reason``: what is wrong, without the position (``"no op named 'print'"``);
    - ``text``: the whole expression as given;
    - ``offset`` / ``end_offset``: the offending part is ``text[offset:end_offset]``;
    - ``lineno`` (from 1) and ``col`` (from 0): where ``offset`` falls, line by line.

    ``str(error)`` is one line: the reason and the position, with the column counted from 1 as
    editors show it. `excerpt` gives the source line with carets under the offending part.
    """

    def __init__(self, reason: str, text: str, offset: int, end_offset: int | None = None):
        Exception.__init__(self, reason, text, offset, end_offset)  # args, for pickling
        offset = max(0, min(offset, len(text)))
        end = offset if end_offset is None else max(offset, min(end_offset, len(text)))
        self.reason = reason
        self.text = text
        self.offset = offset
        self.end_offset = end
        self.lineno, self.col = _line_col(text, offset)

    def __str__(self) -> str:
        if LINE_BREAK.search(self.text):
            where = f"line {self.lineno}, column {self.col + 1}"
        else:
            where = f"column {self.col + 1}"
        return f"{self.reason} (at {where})"

    def excerpt(self) -> str:
        """The line holding the problem and a line of carets under it (long lines cut down)."""
        lines = LINE_BREAK.split(_SURROGATE.sub("\ufffd", self.text))
        line = lines[self.lineno - 1]
        start = self.col
        width = max(1, min(self.end_offset - self.offset, len(line) - start))
        left = max(0, min(start - _EXCERPT_WIDTH // 2, len(line) - _EXCERPT_WIDTH))
        right = left + _EXCERPT_WIDTH
        shown = ("..." if left else "") + line[left:right] + ("..." if right < len(line) else "")
        pad = start - left + (3 if left else 0)
        width = min(width, _EXCERPT_WIDTH - (start - left))
        return f"{shown}\n{' ' * pad}{'^' * max(1, width)}"


def _line_col(text: str, offset: int) -> tuple[int, int]:
    lineno, line_start = 1, 0
    for match in LINE_BREAK.finditer(text, 0, offset):
        lineno += 1
        line_start = match.end()
    return lineno, offset - line_start
