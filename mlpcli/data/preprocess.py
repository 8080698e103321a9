"""Preprocessing of features and targets: standardization, fitted on the training split
only (block by block, so a memory map larger than memory works) and applied in place or on
a copy; the statistics a checkpoint keeps, and their device form. The home of further
feature transforms (imputation, one-hot encoding). On the device, each batch is scaled by
`model.standardize`, the first operation of the forward pass.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from mlpcli.data._common import _row_blocks


def _fit_standardization(
    x: np.ndarray, rows: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Per-column mean and std of x, or of x[rows] (float64, two passes, block by block).

    A std of 0 becomes 1. Only one block of rows is in memory at a time, so `x` may be a
    memory map larger than memory.
    """
    n = len(x) if rows is None else len(rows)

    def blocks() -> Iterator[np.ndarray]:
        for start, stop in _row_blocks(n, x.shape[1] * 8):
            yield x[start:stop] if rows is None else x[rows[start:stop]]  # (rows, d)

    total = np.zeros(x.shape[1])
    for block in blocks():
        total += block.sum(axis=0, dtype=np.float64)
    mean = total / n
    squares = np.zeros(x.shape[1])
    for block in blocks():
        dev = block - mean  # (rows, d) float64
        squares += np.square(dev, out=dev).sum(axis=0)
    std = np.sqrt(squares / n)
    # a constant column leaves only rounding error, relative to its mean
    constant = std <= 8 * np.finfo(np.float64).eps * np.abs(mean)
    std[constant | (std == 0)] = 1.0
    return mean, std


def _standardize_inplace(x: np.ndarray, mean: np.ndarray, std: np.ndarray) -> None:
    """x = (x - mean) / std in place, in x's dtype (no temporary array)."""
    x -= mean.astype(x.dtype)
    x /= std.astype(x.dtype)


def apply_standardization(x: np.ndarray, mean: np.ndarray | None, std: np.ndarray | None):
    """(x - mean) / std as a new array of x's float dtype; x itself when mean is None."""
    if mean is None or std is None:
        return x
    dtype = x.dtype if x.dtype.kind == "f" else np.dtype(np.float64)
    out = np.array(x, dtype=dtype, order="C", copy=True)  # (n, d)
    _standardize_inplace(out, np.asarray(mean, dtype=np.float64), np.asarray(std, np.float64))
    return out


# The statistics a run keeps in its checkpoint and applies again in eval and predict.
STATISTICS = ("x_mean", "x_std", "y_mean", "y_std")


def statistics(data: Any) -> dict[str, np.ndarray | None]:
    """A dataset's fitted statistics by name (None where not fitted)."""
    return {name: getattr(data, name) for name in STATISTICS}


def device_scale(backend: Any, mean: Any, std: Any, dtype: str) -> tuple | None:
    """(mean, 1 / std) as device arrays of `dtype`, the form `model.standardize` takes for
    standardizing each batch on the device; None without statistics."""
    if mean is None:
        return None
    return backend.asarray(mean, dtype=dtype), backend.asarray(1.0 / std, dtype=dtype)


def scale_targets(y: np.ndarray, mean: Any, std: Any, inverse: bool = False) -> np.ndarray:
    """Regression targets to the model's standardized scale, or (inverse) back to their
    original units; unchanged without statistics."""
    if mean is None:
        return y
    return y * std + mean if inverse else (y - mean) / std
