"""Losses: the mean over the batch of a per-sample loss, and its gradient.

`LOSSES[name](xp, z, a, y, grad)` returns the loss (a 0-d device array: no host sync) and
writes into `grad` the gradient with respect to the output layer's *pre-activation* z
when the output activation is the loss's `FUSED` partner (softmax for cross-entropy,
sigmoid for binary cross-entropy, linear for mse), else with respect to its output a.
Fusing keeps the math stable: the softmax + cross-entropy delta is just (p - onehot) / n.

The classification losses take `weight`, per-class weights (C,) (for binary cross-entropy
(2,): class 0, class 1), as torch's `weight=`: with wᵢ = weight[yᵢ] the loss is
Σ wᵢ lᵢ / Σ wᵢ and the delta row i is scaled by wᵢ / Σ w instead of 1 / n. `total` replaces
Σ w as the normalizer (data parallelism: the weight of the whole batch, not of one shard).
Without `weight` nothing else is computed: the unweighted loss keeps its bits.
"""

from __future__ import annotations

FUSED = {"cross_entropy": "softmax", "binary_cross_entropy": "sigmoid", "mse": "linear"}


def _log_sum_exp(xp, z):
    m = z.max(axis=1, keepdims=True)
    return (m + xp.log(xp.exp(z - m).sum(axis=1, keepdims=True)))[:, 0]


def cross_entropy(xp, z, a, y, grad, weight=None, total=None):
    """-mean log softmax(z)[y], from logits so that z = +-1e4 stays finite; y: (n,) ints."""
    n = z.shape[0]
    rows = xp.arange(n)
    per_sample = _log_sum_exp(xp, z) - z[rows, y]  # (n,)
    grad[...] = a  # softmax probabilities, computed by the forward pass
    grad[rows, y] -= 1.0
    if weight is None:
        grad /= n
        return per_sample.mean()
    w = weight[y]  # (n,)
    return _weighted(xp, per_sample, w, grad, w.sum() if total is None else total)


def binary_cross_entropy(xp, z, a, y, grad, weight=None, total=None):
    """mean of max(z, 0) - z y + log(1 + e^-|z|): BCE on logits, finite for any z; y: (n, 1)."""
    n = z.shape[0]
    per_sample = xp.maximum(z, 0) - z * y + xp.log1p(xp.exp(-xp.abs(z)))  # (n, 1)
    xp.subtract(a, y, out=grad)  # sigmoid(z) - y
    if weight is None:
        grad /= n
        return per_sample.mean()
    w = sample_weights(xp, "binary_cross_entropy", y, weight)  # (n,)
    return _weighted(xp, per_sample[:, 0], w, grad, w.sum() if total is None else total)


def _weighted(xp, per_sample, w, grad, total):
    """Σ wᵢ lᵢ / total, with the delta's rows (the unscaled p - y) scaled by wᵢ / total."""
    scale = w / total  # (n,)
    grad *= scale[:, None]
    return (per_sample * w).sum() / total


def sample_weights(xp, loss: str, y, weight):
    """Per-sample weights (n,) from per-class `weight` and a loss's targets (see as_targets)."""
    if loss == "binary_cross_entropy":  # y: (n, 1) of 0.0 / 1.0
        return xp.where(y[:, 0] > 0.5, weight[1], weight[0])
    return weight[y]


def mse(xp, z, a, y, grad):
    """mean over batch x outputs of (a - y)^2, without a 1/2 (as torch.nn.MSELoss)."""
    xp.subtract(a, y, out=grad)
    loss = (grad * grad).mean()
    grad *= 2.0 / grad.size
    return loss


LOSSES = {
    "cross_entropy": cross_entropy,
    "binary_cross_entropy": binary_cross_entropy,
    "mse": mse,
}


def as_targets(loss: str, y, dtype: str):
    """Host labels as a loss wants them: class indices, or a (n, 1) 0/1 column for BCE."""
    if loss == "binary_cross_entropy":
        return y.astype(dtype).reshape(-1, 1)
    return y


def correct(xp, a, y, loss: str):
    """Number of correct predictions in a batch (a 0-d device array)."""
    if loss == "binary_cross_entropy":
        return ((a[:, 0] > 0.5) == (y[:, 0] > 0.5)).sum()
    return (a.argmax(axis=1) == y).sum()
