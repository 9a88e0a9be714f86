"""Publishing a local graph: whole the first time, then only its values while its structure
stays the same (a training step's graph, rebuilt every step).

`Publisher` remembers, for each graph name a client published, the structure token the server
answered and the structure it stands for (`opgraph.core.structure_key`). When the next graph
has the same structure, its data and gradients go as two arrays of little-endian doubles
(``graph.publish_values``): 16 bytes a node, nothing rebuilt on the server. Otherwise, or when
the server no longer holds what the token stands for (``content_modified``: the graph was
replaced, grew, or the server restarted), the graph goes whole (``graph.publish``).
"""

from __future__ import annotations

from dataclasses import dataclass
from operator import attrgetter
from typing import Any

from opgraph_client.errors import ServerError

_DATA = attrgetter("data")
_GRAD = attrgetter("grad")


@dataclass
class Snapshot:
    """A local graph read for publishing: its structure key (`opgraph.core.structure_order`;
    None for a `Graph`) and its values in the order the server numbers the nodes, as
    little-endian doubles (None when a value is not a float, such as a gradient that is a
    node: then only the whole document can carry it)."""

    key: tuple[Any, ...] | None
    data: bytes | None
    grad: bytes | None

    @classmethod
    def of(cls, root: Any) -> Snapshot:
        """Read the graph under ``root`` (a `Value`; a `Graph` is always sent whole)."""
        import numpy as np

        from opgraph import core, gc_paused

        if not isinstance(root, core.Value):
            return cls(None, None, None)
        # The graph was just built: the cyclic collector, woken by the lists made here, would
        # scan all of it (and find nothing to free).
        with gc_paused():
            order, key = core.structure_order(root)
            try:
                data = np.fromiter(map(_DATA, order), "<f8", len(order))
                grad = np.fromiter(map(_GRAD, order), "<f8", len(order))
            except TypeError:  # (a gradient that is a node)
                return cls(key, None, None)
        return cls(key, data.tobytes(), grad.tobytes())


@dataclass
class _Published:
    token: str
    key: tuple[Any, ...]


class Publisher:
    """What a client last published under each graph name (see the module's docstring)."""

    _open = 0  # publishers not closed, in this process
    _remembered = False  # what `remember_walks` was before the first of them

    def __init__(self) -> None:
        self._last: dict[str, _Published] = {}
        self._closed = False
        from opgraph import core

        # While a client publishes, each backward pass keeps its walk for the next publish of
        # its root (`opgraph.core.remember_walks`): the structure check walks nothing again.
        if Publisher._open == 0:
            Publisher._remembered = core.remember_walks(True)
        Publisher._open += 1

    def close(self) -> None:
        """Forget what was published; the last publisher closed puts `remember_walks` back."""
        if self._closed:
            return
        self._closed = True
        self._last.clear()
        Publisher._open -= 1
        if Publisher._open == 0:
            from opgraph import core

            core.remember_walks(Publisher._remembered)

    def forget(self, name: str | None = None) -> None:
        """Publish graph ``name`` (every graph, for None) whole next time."""
        if name is None:
            self._last.clear()
        else:
            self._last.pop(name, None)

    def values_request(self, name: str, snapshot: Snapshot) -> tuple[Any, ...] | None:
        """The arguments of ``graph.publish_values`` for ``snapshot``, when the server holds
        its structure as this client last published it; else None (publish it whole)."""
        last = self._last.get(name)
        if last is None or snapshot.data is None or snapshot.key != last.key:
            return None
        return (name, last.token, snapshot.data, snapshot.grad)

    def published(self, name: str, snapshot: Snapshot, result: Any) -> None:
        """Note the answer of a whole ``graph.publish`` of ``snapshot``."""
        token = result.get("structure") if isinstance(result, dict) else None
        if isinstance(token, str) and snapshot.key is not None:
            self._last[name] = _Published(token, snapshot.key)
        else:  # (a server from before graph.publish_values)
            self._last.pop(name, None)

    def stale(self, name: str, error: ServerError) -> bool:
        """Whether ``error``, the answer to ``graph.publish_values``, means: publish whole."""
        if error.name in ("content_modified", "method_not_found", "unknown_graph"):
            self._last.pop(name, None)
            return True
        return False

