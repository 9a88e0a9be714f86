"""Small synthetic data sets, made without scikit-learn."""

from __future__ import annotations

import math
import random


def make_moons(
    n_samples: int = 100, noise: float = 0.1, seed: int | None = 0
) -> tuple[list[tuple[float, float]], list[int]]:
    """Two interleaving half circles, as scikit-learn's ``make_moons``, labels in {-1, 1}.

    Returns ``(points, labels)``: the first half of the points on the upper moon (label -1),
    the rest on the lower one (label 1), each point moved by Gaussian noise of std ``noise``.
    """
    if n_samples < 2:
        raise ValueError(f"make_moons needs at least 2 samples, got {n_samples}")
    rng = random.Random(seed)
    n_out = n_samples // 2
    n_in = n_samples - n_out
    points: list[tuple[float, float]] = []
    for i in range(n_out):
        t = math.pi * i / (n_out - 1) if n_out > 1 else 0.0
        points.append((math.cos(t), math.sin(t)))
    for i in range(n_in):
        t = math.pi * i / (n_in - 1) if n_in > 1 else 0.0
        points.append((1 - math.cos(t), 1 - math.sin(t) - 0.5))
    noisy = [(x + rng.gauss(0, noise), y + rng.gauss(0, noise)) for x, y in points]
    labels = [-1] * n_out + [1] * n_in
    return noisy, labels
