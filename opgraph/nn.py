"""Neural nets on `Value`, with micrograd's semantics: `Neuron`, `Layer`, `MLP`, losses, SGD.

Weights start uniform in [-1, 1] and biases at 0; hidden layers use ReLU and the last layer is
linear; a layer of one neuron returns a single value. A neuron computes ``b + w0*x0 + w1*x1 +
...`` in that order, exactly as micrograd's ``sum(..., self.b)`` does, so the same weights give
the same numbers to the last bit.
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


class Neuron(Module):
    """``relu(b + sum(w_i * x_i))``, or without the ReLU when ``nonlin`` is False."""

    def __init__(self, nin: int, nonlin: bool = True,
                 seed: int | random.Random | None = None) -> None:
        nin = _size(nin, "Neuron: the number of inputs")
        rng = _rng(seed)
        uniform = rng.uniform if rng is not None else random.uniform
        self.w = [Value(uniform(-1, 1)) for _ in range(nin)]
        self.b = Value(0.0)
        self.nonlin = nonlin

    def __call__(self, x: Sequence[Value | float]) -> Value:
        if len(x) != len(self.w):
            raise ValueError(f"{self!r} takes {len(self.w)} inputs, got {len(x)}")
        act = self.b
        for wi, xi in zip(self.w, x, strict=True):
            act = act + wi * xi
        return act.relu() if self.nonlin else act

    def parameters(self) -> list[Value]:
        """The weights, then the bias."""
        return [*self.w, self.b]

    def __repr__(self) -> str:
        return f"{'ReLU' if self.nonlin else 'Linear'}Neuron({len(self.w)})"


class Layer(Module):
    """``nout`` neurons over the same inputs."""

    def __init__(self, nin: int, nout: int, nonlin: bool = True,
                 seed: int | random.Random | None = None) -> None:
        nin = _size(nin, "Layer: the number of inputs")
        nout = _size(nout, "Layer: the number of neurons")
        rng = _rng(seed)
        self.neurons = [Neuron(nin, nonlin, rng) for _ in range(nout)]

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
    it they come from the ``random`` module, as in micrograd.
    """

    def __init__(self, nin: int, nouts: Sequence[int],
                 seed: int | random.Random | None = None) -> None:
        if isinstance(nouts, str) or not isinstance(nouts, Sequence):
            raise TypeError(f"MLP: nouts must be a list of layer sizes, got "
                            f"{type(nouts).__name__} {nouts!r}")
        if not nouts:
            raise ValueError("MLP: nouts must name at least one layer, got []")
        sizes = [_size(nin, "MLP: the number of inputs"),
                 *(_size(n, f"MLP: the size of layer {i}") for i, n in enumerate(nouts))]
        rng = _rng(seed)
        self.layers = [Layer(sizes[i], sizes[i + 1], nonlin=i != len(nouts) - 1, seed=rng)
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


def svm_loss(scores: Sequence[Value], labels: Sequence[float]) -> Value:
    """Mean max-margin loss ``mean(relu(1 - y * score))`` for labels in {-1, 1}."""
    if len(scores) != len(labels) or not scores:
        raise ValueError(f"svm_loss needs as many labels as scores, got {len(scores)} scores "
                         f"and {len(labels)} labels")
    losses = [(1 + -yi * si).relu() for yi, si in zip(labels, scores, strict=True)]
    return _total(losses) * (1.0 / len(losses))  # type: ignore[return-value]


def mse_loss(predictions: Sequence[Value], targets: Sequence[float]) -> Value:
    """Mean squared error."""
    if len(predictions) != len(targets) or not predictions:
        raise ValueError(f"mse_loss needs as many targets as predictions, got "
                         f"{len(predictions)} and {len(targets)}")
    return _total((p - t) ** 2 for p, t in zip(predictions, targets, strict=True)) * (
        1.0 / len(predictions))  # type: ignore[return-value]


def l2(parameters: Iterable[Value], alpha: float) -> Value:
    """``alpha * sum(p * p)``: weight decay, as micrograd's demo adds it."""
    return alpha * _total(p * p for p in parameters)  # type: ignore[return-value]


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
