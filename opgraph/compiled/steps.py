"""The steps a compiled graph runs: numpy calls over groups of nodes, and runs of scalar rules.

Every step reads and writes the graph's value and gradient buffers: one float64 array each, a
slot per node in topological order and then two constant slots, `ONE` (1.0) and `PAD` (-0.0,
the additive identity that keeps the sign of a zero sum), which the sums read where a term has
no second factor or a short sum is padded (their gradient slots collect what is thrown away).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from opgraph.core import is_real
from opgraph.errors import ForwardError, GradRuleError
from opgraph.opdef import OpDef

ONE_SLOTS = 2
"""Constant slots after the nodes' slots: ``ONE`` (= number of nodes) holds 1.0, ``PAD``
(= ONE + 1) holds -0.0."""


@dataclass
class OpGroup:
    """Nodes of one generation computed by one op with the same attributes. ``batched``: one
    call of the op's vector kernels; otherwise its nodes run in a `ScalarRun`."""

    op: OpDef
    attrs: dict[str, Any]
    out: np.ndarray  # positions of the nodes
    ins: list[np.ndarray]  # positions of each input slot, aligned with ``out``
    batched: bool

    @property
    def vectorised(self) -> bool:
        """Whether the op has vector kernels."""
        return self.op.vforward is not None and self.op.vgrad is not None

    @property
    def unique(self) -> list[bool]:
        """Whether each input slot's positions are free of repeats."""
        return [len(np.unique(i)) == len(i) for i in self.ins]

    def prepare(self) -> None:
        """What a batched group needs to run: which input slots repeat a position."""
        self._unique = self.unique

    def forward(self, values: np.ndarray) -> None:
        assert self.op.vforward is not None
        try:
            out = self.op.vforward(*[values[i] for i in self.ins], **self.attrs)
        except Exception as exc:
            raise kernel_failed(self.op, "vforward", exc, len(self.out)) from exc
        values[self.out] = out

    def backward(self, values: np.ndarray, grads: np.ndarray) -> None:
        g = grads[self.out]
        assert self.op.vgrad is not None
        try:
            local = self.op.vgrad(*[values[i] for i in self.ins], values[self.out],
                                  **self.attrs)
            if len(local) != len(self.ins):
                raise ValueError(f"{len(local)} partials for {len(self.ins)} inputs")
        except Exception as exc:
            raise kernel_failed(self.op, "vgrad", exc, len(self.out)) from exc
        for idx, unique, partial in zip(self.ins, self._unique, local, strict=True):
            contribution = g * partial
            if unique:
                grads[idx] += contribution
            else:
                np.add.at(grads, idx, np.broadcast_to(contribution, idx.shape))


@dataclass
class SumGroup:
    """Sums of one generation of about the same length, as one (length, count) table of
    cells: column ``s`` holds the terms of sum ``s`` in their order of addition (padded with
    `PAD`), each cell the product of its ``a`` and ``b`` operands (``b`` is `ONE` for a term
    read as it is). Forward: two gathers, one multiply, one reduction down the columns, which
    adds row after row (so each column is added in the eager order; ``mode`` says how, see
    `sequential_mode`). Backward: the sum's gradient, broadcast down its column, times the
    other operand, added into each operand's gradient (``np.add.at``)."""

    op: OpDef  # the add op (for introspection: a sum is a chain of them)
    out: np.ndarray  # (count,) positions of the sums
    a: np.ndarray  # (length, count) positions of each cell's first operand
    b: np.ndarray | None  # (length, count) second operands' positions; None: every b is ONE
    chain: np.ndarray  # (length, count) removed add of each prefix, -1 where none
    products: np.ndarray  # (length, count) removed product of each cell, -1 where none
    batched: bool = True
    attrs: dict[str, Any] = field(default_factory=dict)

    vectorised = True

    def __post_init__(self) -> None:
        shape = self.a.shape
        # Both operand tables in one buffer, gathered by one call (and their gradient terms
        # added by one np.add.at, which is fast over 1-d arrays only: numpy 2 takes about 1 ns
        # an element there, 10x that otherwise); a numpy call costs about 1 µs of its own.
        sides = 1 if self.b is None else 2
        self._ab = (self.a if self.b is None else np.stack([self.a, self.b])).ravel()
        self._AB = np.empty((sides, *shape))
        self._G = np.empty((sides, *shape))
        self.A = self._AB[0]
        self.B = None if self.b is None else self._AB[1]
        self.P = self.A if self.b is None else np.empty(shape)
        self.total = np.empty(shape[1])
        self.mode = sequential_mode(shape)
        # one column: its running sums (a buffer: a big array allocated anew each time costs
        # as much as the sum, in page faults)
        self._running = np.empty(shape[0]) if self.mode == "accumulate" else None
        self.ins = [self.a] if self.b is None else [self.a, self.b]

    @property
    def unique(self) -> list[bool]:
        return [len(np.unique(i)) == i.size for i in self.ins]

    def forward(self, values: np.ndarray) -> None:
        np.take(values, self._ab, out=self._AB.reshape(-1), mode="clip")
        if self.B is not None:
            np.multiply(self.A, self.B, out=self.P)
        values[self.out] = self.sums()

    def sums(self) -> np.ndarray:
        """Each column of ``P`` added from the top down, one addition after the other."""
        P, total = self.P, self.total
        if self.mode == "reduce":
            np.add.reduce(P, axis=0, out=total, initial=-0.0)
        elif self.mode == "accumulate":  # one column: its running sum, the last is the total
            total[0] = np.add.accumulate(P.ravel(), out=self._running)[-1]
        else:
            total[:] = P[0]
            for row in P[1:]:
                np.add(total, row, out=total)
        return total

    def backward(self, values: np.ndarray, grads: np.ndarray) -> None:
        g = grads[self.out]
        G = self._G
        if self.B is None:
            G[0] = g
        else:
            np.multiply(self.B, g, out=G[0])
            np.multiply(self.A, g, out=G[1])
        np.add.at(grads, self._ab, G.reshape(-1))

    def fill_values(self, values: np.ndarray) -> None:
        """The removed nodes' data, as of the last forward: the running sums and products."""
        P = self.P
        running = np.cumsum(P, axis=0)  # (accumulate: one addition after the other)
        keep = self.chain >= 0
        values[self.chain[keep]] = running[keep]
        keep = self.products >= 0
        values[self.products[keep]] = P[keep]

    def fill_grads(self, grads: np.ndarray) -> None:
        """The removed nodes' gradients: each is the gradient of its sum."""
        g = np.broadcast_to(grads[self.out], self.chain.shape)
        keep = self.chain >= 0
        grads[self.chain[keep]] = g[keep]
        keep = self.products >= 0
        grads[self.products[keep]] = g[keep]


_MODES: dict[tuple[int, int], str] = {}


def sequential_mode(shape: tuple[int, int]) -> str:
    """How to add the rows of a (length, count) table one after the other, in order: one
    column is a running sum (``accumulate``, sequential by definition); more columns are one
    ``np.add.reduce`` down axis 0, which numpy does row by row, checked once per shape on a
    table where any other order gives another result (else ``rows``, a loop over the rows)."""
    count = shape[1]
    if count == 1:
        return "accumulate"
    mode = _MODES.get(shape)
    if mode is None:
        probe = np.full(shape, 2.0 ** -53)
        probe[0] = 1.0  # each tiny term vanishes added to 1, but not added to another first
        total = np.add.reduce(probe, axis=0, initial=-0.0)
        mode = _MODES[shape] = "reduce" if (total == 1.0).all() else "rows"
    return mode


# --- scalar runs ---------------------------------------------------------------------------------

OP1, OP2, OPN, SUM = 0, 1, 2, 3
"""Instruction codes: an op of one input, of two, of any number or with attributes; a sum."""


@dataclass
class ScalarRun:
    """Consecutive nodes run one by one by their scalar rules, in topological order: small
    groups, ops without vector kernels and short sums. Each instruction is ``(code, out, ins,
    op, attrs)``; a sum's ``ins`` are its (a, b) operand pairs, flattened."""

    code: list[tuple[int, int, tuple[int, ...], OpDef | None, dict[str, Any]]] = field(
        default_factory=list)
    batched = False


def kernel_value(op: OpDef, attrs: dict[str, Any], xs: list[float]) -> float:
    """What the op's kernel gives for one node (NaN for an op without kernels)."""
    if op.vforward is None or op.vgrad is None:
        return math.nan
    try:
        out = op.vforward(*[np.array([x]) for x in xs], **attrs)
        return only_value(out)
    except Exception as exc:
        raise kernel_failed(op, "vforward", exc, 1) from exc


def run_forward(run: ScalarRun, values: np.ndarray) -> None:
    """A scalar run's forward pass. Where a rule raises or gives what is not a real number,
    the node gets what the op's kernel gives, as in a batched group (NaN without kernels)."""
    item = values.item
    for code, out, ins, op, attrs in run.code:
        if code == SUM:
            acc = -0.0
            pairs = iter(ins)
            for a, b in zip(pairs, pairs, strict=True):
                acc += item(a) * item(b)
            values[out] = acc
            continue
        f = op.forward  # type: ignore[union-attr]
        try:
            if code == OP1:
                result = f(item(ins[0]))
            elif code == OP2:
                result = f(item(ins[0]), item(ins[1]))
            else:
                result = f(*[item(i) for i in ins], **attrs)
            if type(result) is not float and not is_real(result):
                raise TypeError("not a real number")
            values[out] = result  # (an int too big for a float raises OverflowError)
        except Exception:
            values[out] = kernel_value(op, attrs, [item(i) for i in ins])  # type: ignore


def run_backward(run: ScalarRun, values: np.ndarray, grads: np.ndarray, one: int,
                 slow_grad: Any) -> None:
    """A scalar run's backward pass, in reverse. One or two float partials (the common case)
    are added at once; anything else goes through ``slow_grad(op, attrs, out, xs, local,
    exc)``, which gives the partials or raises."""
    item, grad_of = values.item, grads.item
    for code, out, ins, op, attrs in reversed(run.code):
        g = grad_of(out)
        if code == SUM:
            pairs = iter(ins)
            for a, b in zip(pairs, pairs, strict=True):
                if b == one:
                    grads[a] += g
                else:
                    grads[a] += g * item(b)
                    grads[b] += g * item(a)
            continue
        xs = [item(i) for i in ins]
        local: Any = None
        exc: Exception | None = None
        try:
            local = op.grad(*xs, item(out), **attrs)
            if len(ins) == 1:
                (d,) = local = tuple(local)
                if type(d) is float or isinstance(d, float):  # (np.float64 is one)
                    grads[ins[0]] += g * d
                    continue
            elif len(ins) == 2:
                da, db = local = tuple(local)
                if (type(da) is float or isinstance(da, float)) and (
                        type(db) is float or isinstance(db, float)):
                    grads[ins[0]] += g * da
                    grads[ins[1]] += g * db
                    continue
        except Exception as raised:
            exc = raised
        for i, d in zip(ins, slow_grad(op, attrs, out, xs, local, exc), strict=True):
            grads[i] += g * d


def run_fill(run: ScalarRun, values: np.ndarray, grads: np.ndarray | None,
             removed: dict[int, tuple[list[int], list[int]]]) -> None:
    """The removed nodes of a run's sums: their data from ``values`` (as of the last forward),
    and their gradient (their sum's) into ``grads`` unless it is None."""
    item = values.item
    for code, out, ins, _, _ in run.code:
        if code != SUM:
            continue
        chain, products = removed[out]
        if grads is not None:
            g = grads.item(out)
            for node in chain:
                if node >= 0:
                    grads[node] = g
            for node in products:
                if node >= 0:
                    grads[node] = g
            continue
        acc = -0.0
        pairs = iter(ins)
        for k, (a, b) in enumerate(zip(pairs, pairs, strict=True)):
            term = item(a) * item(b)
            acc += term
            if products[k] >= 0:
                values[products[k]] = term
            if chain[k] >= 0:
                values[chain[k]] = acc


def only_value(result: Any) -> float:
    """The one value of a kernel's result over 1-element arrays (it may be a plain number)."""
    return float(np.broadcast_to(np.asarray(result, dtype=np.float64), (1,))[0])


def kernel_failed(op: OpDef, kernel: str, exc: Exception, count: int
                  ) -> ForwardError | GradRuleError:
    """A vector kernel that raised (or gave the wrong number of partials): a plugin's bug."""
    name = op.name
    kind = ForwardError if kernel == "vforward" else GradRuleError
    nodes = "1 node" if count == 1 else f"{count} nodes"
    return kind(f"op {name!r}: its vector kernel {kernel} raised {type(exc).__name__}: {exc} "
                f"(compiled, over {nodes})", op=name, node="", cause=exc)
