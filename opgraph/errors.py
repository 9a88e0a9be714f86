"""The exceptions opgraph raises.

Every error derives from :class:`OpgraphError`, and where a built-in exception means the same
thing (a wrong type, a missing key) it derives from that too, so ``except TypeError`` keeps
working. Each message names what went wrong and where: the op, the node (label or id) and the
cause.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class OpgraphError(Exception):
    """Base class of every error opgraph raises on purpose."""


# --- ops and the engine --------------------------------------------------------------------------


class UnknownOpError(OpgraphError, KeyError):
    """An op name that no installed plugin provides."""

    def __init__(self, name: str, known: Iterable[str] = (), *, reason: str | None = None):
        self.name = name
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


# --- graphs --------------------------------------------------------------------------------------


class GraphError(OpgraphError):
    """A misuse of an explicit :class:`~opgraph.graph.Graph`."""


class GraphMismatchError(GraphError, ValueError):
    """An op over values that belong to different graphs."""


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
