"""Activations and their derivatives, as registries of plain functions.

`forward(xp, z, out)` writes a = f(z) into `out`, which may be `z` itself (the same array
object: CuPy copies an input that is merely another view of `out`'s memory), except for
the activations in NEEDS_Z, whose z is kept. `backward(xp, z, a, dy, tmp)` turns
dy = dL/da into dL/dz in place, using `tmp` (an array shaped like dy) as scratch so that a
training step allocates no activation-sized array. Most derivatives are computed from the
output a, as in scikit-learn; only gelu needs z, which it then uses as a second scratch
(z is kept for the derivative alone: it is dead once the derivative has run).
"""

from __future__ import annotations

import math

LEAKY_SLOPE = 0.01  # torch.nn.LeakyReLU's default
_GELU_C = math.sqrt(2.0 / math.pi)


def _linear(xp, z, out):
    if out is not z:
        out[...] = z


def _relu(xp, z, out):
    xp.maximum(z, 0, out=out)


def _leaky_relu(xp, z, out):
    xp.maximum(z, LEAKY_SLOPE * z, out=out)  # max(z, 0.01 z) is z for z > 0, 0.01 z below


def _sigmoid(xp, z, out):
    # 1 / (1 + e^-z) written through tanh: no overflow for any z (e.g. -1e4)
    xp.multiply(z, 0.5, out=out)
    xp.tanh(out, out=out)
    out += 1.0
    out *= 0.5


def _tanh(xp, z, out):
    xp.tanh(z, out=out)


def _gelu(xp, z, out):
    # tanh approximation (torch's approximate="tanh"): 0.5 z (1 + tanh(c (z + 0.044715 z^3))),
    # built up in `out` (never z: gelu keeps z for its derivative), so nothing is allocated
    xp.multiply(z, z, out=out)
    out *= 0.044715
    out += 1.0
    out *= z  # z + 0.044715 z^3
    out *= _GELU_C
    xp.tanh(out, out=out)
    out += 1.0
    out *= z
    out *= 0.5


def _softmax(xp, z, out):
    # subtracting the row max keeps exp() finite: softmax(z) = softmax(z - max z)
    xp.subtract(z, z.max(axis=1, keepdims=True), out=out)
    xp.exp(out, out=out)
    out /= out.sum(axis=1, keepdims=True)


def _d_linear(xp, z, a, dy, tmp):
    pass


def _d_relu(xp, z, a, dy, tmp):
    xp.greater(a, 0, out=tmp)  # 1.0 where the unit was active
    dy *= tmp


def _d_leaky_relu(xp, z, a, dy, tmp):
    xp.greater(a, 0, out=tmp)
    tmp *= 1.0 - LEAKY_SLOPE  # 1 where active, LEAKY_SLOPE elsewhere
    tmp += LEAKY_SLOPE
    dy *= tmp


def _d_sigmoid(xp, z, a, dy, tmp):
    xp.subtract(1.0, a, out=tmp)  # sigma' = sigma (1 - sigma)
    tmp *= a
    dy *= tmp


def _d_tanh(xp, z, a, dy, tmp):
    xp.multiply(a, a, out=tmp)  # tanh' = 1 - tanh^2
    xp.subtract(1.0, tmp, out=tmp)
    dy *= tmp


def _d_gelu(xp, z, a, dy, tmp):
    # with t = tanh(c (z + 0.044715 z^3)) and a = 0.5 z (1 + t):
    # d/dz 0.5 z (1 + t) = 0.5 (1 + t) + 0.5 z (1 - t^2) c (1 + 3 * 0.044715 z^2)
    #                    = 0.5 (1 + t) + (1 - t) a v,   v = c (1 + 3 * 0.044715 z^2)
    # built up in tmp and in z itself (kept only for this derivative), allocating nothing
    xp.multiply(z, z, out=tmp)
    tmp *= 0.044715
    tmp += 1.0
    tmp *= z
    tmp *= _GELU_C
    xp.tanh(tmp, out=tmp)  # t
    xp.multiply(z, z, out=z)
    z *= 3 * 0.044715
    z += 1.0
    z *= _GELU_C
    z *= a  # a v
    xp.subtract(1.0, tmp, out=tmp)  # 1 - t
    z *= tmp  # (1 - t) a v
    tmp *= -0.5
    tmp += 1.0  # 0.5 (1 + t)
    tmp += z
    dy *= tmp


def _d_softmax(xp, z, a, dy, tmp):
    # Jacobian-vector product: dz_i = a_i (dy_i - sum_j dy_j a_j)
    xp.multiply(dy, a, out=tmp)
    dy -= tmp.sum(axis=1, keepdims=True)
    dy *= a


ACTIVATIONS = {
    "linear": _linear,
    "relu": _relu,
    "leaky_relu": _leaky_relu,
    "sigmoid": _sigmoid,
    "tanh": _tanh,
    "gelu": _gelu,
    "softmax": _softmax,
}

DERIVATIVES = {
    "linear": _d_linear,
    "relu": _d_relu,
    "leaky_relu": _d_leaky_relu,
    "sigmoid": _d_sigmoid,
    "tanh": _d_tanh,
    "gelu": _d_gelu,
    "softmax": _d_softmax,
}

NEEDS_Z = {"gelu"}  # derivatives that cannot be computed from the output alone
