"""Neural nets on `Value`, with micrograd's semantics: `Neuron`, `Layer`, `MLP`, losses, SGD.

Weights start uniform in [-1, 1] and biases at 0; hidden layers use ReLU and the last layer is
linear; a layer of one neuron returns a single value. A neuron computes ``b + w0*x0 + w1*x1 +
...`` in that order, exactly as micrograd's ``sum(..., self.b)`` does, so the same weights give
the same numbers to the last bit.

Names. Everything these classes create is labelled by its place in the model, as the attribute
path to it reads, indices from 0 (micrograd's MLP holds ``layers``, a layer ``neurons``, a
neuron ``w`` and ``b``):

- parameters: ``layer0.neuron3.w1`` is ``model.layers[0].neurons[3].w[1]``;
  ``layer2.neuron0.b`` is ``model.layers[2].neurons[0].b``;
- per call, two nodes of each neuron: ``layer0.neuron3.sum`` (``b + sum(w_i * x_i)``) and, for a
  ReLU neuron, ``layer0.neuron3.act`` (the ReLU of it: the neuron's output); a linear neuron's
  output is its ``sum``;
- the losses: ``svm_loss.hinge`` (each ``relu(1 - y * score)``) and ``svm_loss.mean``;
  ``mse_loss.sq`` and ``mse_loss.mean``; ``l2.square`` and ``l2.total``.

A `Neuron` or `Layer` made on its own drops the prefix (``w1``, ``neuron3.b``); ``name=`` puts
one in front of everything (``MLP(2, [16, 1], name="critic")`` gives ``critic.layer0...``). The
dots make model parts: `opgraph.aggregate` summarises ``layer0`` and ``layer0.neuron3``, and
counts the unlabelled nodes inside a neuron's call (its products and partial sums) in the part
of the node they feed. Only those two nodes per neuron call are labelled: measured on the
moons step's forward pass (64,000 nodes), these labels cost under 3%, and labelling every
product and partial sum as well cost 5 to 8%, for names the summaries give anyway.
"""

from __future__ import annotations

import operator
import random
from collections.abc import Iterable, Sequence

from opgraph.core import Value


def _rng(seed: int | random.Random | None) -> random.Random | None:
    if seed is None or isinstance(seed, random.Random):
        return seed
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an int, a random.Random or None, got "
                        f"{type(seed).__name__} {seed!r}")
    return random.Random(seed)


def _size(value: object, what: str) -> int:
    """``value`` as an int if it is a positive integer, else a TypeError/ValueError naming
    ``what``."""
    try:
        if isinstance(value, bool):
            raise TypeError
        size = operator.index(value)  # type: ignore[arg-type]
    except TypeError:
        raise TypeError(f"{what} must be a positive int, got {type(value).__name__} "
                        f"{value!r}") from None
    if size < 1:
        raise ValueError(f"{what} must be a positive int, got {size}")
    return size


class Module:
    """Something with parameters."""

    def parameters(self) -> list[Value]:
        """Every trainable `Value`."""
        return []

    def zero_grad(self) -> None:
        """Set every parameter's ``grad`` to 0."""
        for p in self.parameters():
            p.grad = 0.0


def _name(prefix: str, name: str) -> str:
    """``prefix.name``, or ``name`` alone when there is no prefix."""
    if not isinstance(prefix, str):
        raise TypeError(f"name must be a string, got {type(prefix).__name__} {prefix!r}")
    return f"{prefix}.{name}" if prefix else name


class Neuron(Module):
    """``relu(b + sum(w_i * x_i))``, or without the ReLU when ``nonlin`` is False.

    ``name`` prefixes the labels of its parameters (``w0``, ..., ``b``) and of the two nodes
    each call makes (``sum``, and ``act`` when it has a ReLU); see the module's docstring.
    """

    def __init__(self, nin: int, nonlin: bool = True,
                 seed: int | random.Random | None = None, *, name: str = "") -> None:
        nin = _size(nin, "Neuron: the number of inputs")
        rng = _rng(seed)
        uniform = rng.uniform if rng is not None else random.uniform
        self.w = [Value(uniform(-1, 1), _name(name, f"w{i}")) for i in range(nin)]
        self.b = Value(0.0, _name(name, "b"))
        self.nonlin = nonlin
        self.name = name
        self._sum_label = _name(name, "sum")
        self._act_label = _name(name, "act")

    def __call__(self, x: Sequence[Value | float]) -> Value:
        if len(x) != len(self.w):
            raise ValueError(f"{self!r} takes {len(self.w)} inputs, got {len(x)}")
        act = self.b
        for wi, xi in zip(self.w, x, strict=True):
            act = act + wi * xi
        act.label = self._sum_label
        if not self.nonlin:
            return act
        out = act.relu()
        out.label = self._act_label
        return out

    def parameters(self) -> list[Value]:
        """The weights, then the bias."""
        return [*self.w, self.b]

    def __repr__(self) -> str:
        return f"{'ReLU' if self.nonlin else 'Linear'}Neuron({len(self.w)})"


class Layer(Module):
    """``nout`` neurons over the same inputs; neuron ``j`` is named ``neuron{j}`` (after
    ``name.`` when ``name`` is given)."""

    def __init__(self, nin: int, nout: int, nonlin: bool = True,
                 seed: int | random.Random | None = None, *, name: str = "") -> None:
        nin = _size(nin, "Layer: the number of inputs")
        nout = _size(nout, "Layer: the number of neurons")
        rng = _rng(seed)
        self.name = name
        self.neurons = [Neuron(nin, nonlin, rng, name=_name(name, f"neuron{j}"))
                        for j in range(nout)]

    def __call__(self, x: Sequence[Value | float]) -> Value | list[Value]:
        out = [n(x) for n in self.neurons]
        return out[0] if len(out) == 1 else out

    def parameters(self) -> list[Value]:
        """Every neuron's parameters, in order."""
        return [p for n in self.neurons for p in n.parameters()]

    def __repr__(self) -> str:
        return f"Layer of [{', '.join(str(n) for n in self.neurons)}]"


class MLP(Module):
    """A multi-layer perceptron: ReLU hidden layers, a linear output layer.

    ``seed`` makes the initial weights reproducible (an int or a ``random.Random``); without
    it they come from the ``random`` module, as in micrograd. Layer ``i`` is named ``layer{i}``
    (after ``name.`` when ``name`` is given).
    """

    def __init__(self, nin: int, nouts: Sequence[int],
                 seed: int | random.Random | None = None, *, name: str = "") -> None:
        if isinstance(nouts, str) or not isinstance(nouts, Sequence):
            raise TypeError(f"MLP: nouts must be a list of layer sizes, got "
                            f"{type(nouts).__name__} {nouts!r}")
        if not nouts:
            raise ValueError("MLP: nouts must name at least one layer, got []")
        sizes = [_size(nin, "MLP: the number of inputs"),
                 *(_size(n, f"MLP: the size of layer {i}") for i, n in enumerate(nouts))]
        rng = _rng(seed)
        self.name = name
        self.layers = [Layer(sizes[i], sizes[i + 1], nonlin=i != len(nouts) - 1, seed=rng,
                             name=_name(name, f"layer{i}"))
                       for i in range(len(nouts))]

    def __call__(self, x: Sequence[Value | float]) -> Value | list[Value]:
        for layer in self.layers:
            x = layer(x)  # type: ignore[assignment]
        return x  # type: ignore[return-value]

    def parameters(self) -> list[Value]:
        """Every layer's parameters, in order."""
        return [p for layer in self.layers for p in layer.parameters()]

    def __repr__(self) -> str:
        return f"MLP of [{', '.join(str(layer) for layer in self.layers)}]"


def _total(values: Iterable[Value | float]) -> Value | float:
    total: Value | float = 0
    for v in values:
        total = total + v
    return total


def _labelled(value: Value, label: str) -> Value:
    if isinstance(value, Value):  # (l2 of no parameters is the number 0)
        value.label = label
    return value


def svm_loss(scores: Sequence[Value], labels: Sequence[float]) -> Value:
    """Mean max-margin loss ``mean(relu(1 - y * score))`` for labels in {-1, 1}; the terms are
    labelled ``svm_loss.hinge``, the result ``svm_loss.mean``."""
    if len(scores) != len(labels) or not scores:
        raise ValueError(f"svm_loss needs as many labels as scores, got {len(scores)} scores "
                         f"and {len(labels)} labels")
    losses = [_labelled((1 + -yi * si).relu(), "svm_loss.hinge")
              for yi, si in zip(labels, scores, strict=True)]
    return _labelled(_total(losses) * (1.0 / len(losses)),  # type: ignore[arg-type]
                     "svm_loss.mean")


def mse_loss(predictions: Sequence[Value], targets: Sequence[float]) -> Value:
    """Mean squared error; the squares are labelled ``mse_loss.sq``, the result
    ``mse_loss.mean``."""
    if len(predictions) != len(targets) or not predictions:
        raise ValueError(f"mse_loss needs as many targets as predictions, got "
                         f"{len(predictions)} and {len(targets)}")
    total = _total(_labelled((p - t) ** 2, "mse_loss.sq")
                   for p, t in zip(predictions, targets, strict=True))
    return _labelled(total * (1.0 / len(predictions)), "mse_loss.mean")  # type: ignore[arg-type]


def l2(parameters: Iterable[Value], alpha: float) -> Value:
    """``alpha * sum(p * p)``: weight decay, as micrograd's demo adds it; the squares are
    labelled ``l2.square``, the result ``l2.total``."""
    total = _total(_labelled(p * p, "l2.square") for p in parameters)
    return _labelled(alpha * total, "l2.total")  # type: ignore[arg-type]


class SGD:
    """Plain stochastic gradient descent: ``p.data -= lr * p.grad``."""

    def __init__(self, parameters: Iterable[Value], lr: float = 0.01) -> None:
        self.parameters = list(parameters)
        self.lr = lr

    def step(self, lr: float | None = None) -> None:
        """One update, with ``lr`` if given (a schedule), else the optimiser's own."""
        rate = self.lr if lr is None else lr
        for p in self.parameters:
            p.data -= rate * p.grad

    def zero_grad(self) -> None:
        """Set every parameter's ``grad`` to 0."""
        for p in self.parameters:
            p.grad = 0.0
