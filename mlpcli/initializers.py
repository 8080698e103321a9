"""Weight initializers: a registry of names, and the draw of a layer's initial weights.

Weights are drawn on the host in float64 from (seed, layer) alone, so a CPU and a GPU run
of the same config start from the same weights.
"""

from __future__ import annotations

import math

import numpy as np

from mlpcli.rng import generator

INITS = {
    # name: (distribution, variance numerator, uses fan_out): Var(W) = k / fan
    "he_normal": ("normal", 2.0, False),
    "he_uniform": ("uniform", 2.0, False),
    "glorot_normal": ("normal", 2.0, True),
    "glorot_uniform": ("uniform", 2.0, True),
}


def init_layer(
    init: str, fan_in: int, fan_out: int, seed: int, layer: int
) -> tuple[np.ndarray, np.ndarray]:
    """Initial W (fan_in, fan_out) and b (zeros) in float64 on the host: the same on every
    device, drawn from (seed, layer) alone."""
    dist, k, glorot = INITS[init]
    fan = (fan_in + fan_out) / 2.0 if glorot else fan_in
    std = math.sqrt(k / fan)  # He: sqrt(2 / fan_in); Glorot: sqrt(2 / (fan_in + fan_out))
    rng = generator(seed, "init", layer)
    if dist == "normal":
        W = rng.normal(0.0, std, size=(fan_in, fan_out))
    else:
        limit = math.sqrt(3.0) * std  # U(-l, l) has variance l^2 / 3
        W = rng.uniform(-limit, limit, size=(fan_in, fan_out))
    return W, np.zeros(fan_out)
