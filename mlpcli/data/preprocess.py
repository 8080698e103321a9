"""Preprocessing of features and targets, every statistic fitted on the training split only:
the encoding of CSV columns (`Encoding`: one-hot vocabularies of categorical columns, fill
values of missing numeric cells), then standardization (block by block, so a memory map
larger than memory works), applied in place or on a copy; the statistics a checkpoint keeps,
and their device form. On the device, each batch is scaled by `model.standardize`, the first
operation of the forward pass.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from mlpcli import memory
from mlpcli.data._common import _listing, _row_blocks, _shape_text
from mlpcli.data.dataset import NUMERIC, _Columns, _Tabular
from mlpcli.errors import DataError

# ----------------------------------------------------------------------------- encoding


@dataclass
class Encoding:
    """CSV feature columns to model inputs, as fitted on the training split.

    Input columns keep their order; a numeric column becomes one input (its missing cells
    filled), a categorical column one 0/1 input per category of its vocabulary. A category
    the vocabulary lacks becomes all zeros.
    """

    names: list[str]  # the input columns, in order
    # column index -> its vocabulary: the training split's categories, sorted, as a str array;
    # "" (first when present) is the "missing" category of empty cells
    categories: dict[int, np.ndarray]
    # (len(names),) float64: what a missing numeric cell becomes (0 for categorical columns);
    # None: a missing cell is an error
    fill: np.ndarray | None

    @property
    def width(self) -> int:
        """Number of model inputs."""
        return len(self.names) + sum(len(v) - 1 for v in self.categories.values())

    @property
    def tabular(self) -> _Tabular:
        """How to read a CSV for this encoding: its categorical columns, missing cells."""
        listed = tuple(self.names[j] for j in sorted(self.categories))
        return _Tabular(listed, "error" if self.fill is None else "fill", fitted=True)

    def one_hot(self) -> np.ndarray:
        """(width,) bool: which inputs are 0/1 indicators of a category."""
        mask = np.zeros(self.width, dtype=bool)
        for start, stop in self._spans().values():
            mask[start:stop] = True
        return mask

    def _spans(self) -> dict[int, tuple[int, int]]:
        """categorical column index -> (first, last + 1) of its inputs."""
        spans, at = {}, 0
        for j in range(len(self.names)):
            k = len(self.categories[j]) if j in self.categories else 1
            if j in self.categories:
                spans[j] = (at, at + k)
            at += k
        return spans

    def transform(self, columns: _Columns, dtype: Any) -> tuple[np.ndarray, dict[str, int]]:
        """(n, width) inputs of `dtype` for `columns` (read with `self.tabular`), and the count
        of cells per column whose category the vocabulary lacks (encoded as all zeros)."""
        n = columns.n
        shape = (n, self.width)
        dtype = np.dtype(dtype)
        memory.require(
            n * self.width * dtype.itemsize,
            f"the encoded features, {_shape_text(shape)} {dtype.name} (data.categorical)",
            DataError,
        )
        x = np.zeros(shape, dtype=dtype)
        spans, unseen, at = self._spans(), {}, 0
        for j, cells in enumerate(columns.cells):
            if j in spans:
                start, stop = spans[j]
                vocab = self.categories[j]
                idx = np.minimum(np.searchsorted(vocab, cells), len(vocab) - 1)
                found = vocab[idx] == cells
                rows = np.flatnonzero(found)
                x[rows, start + idx[rows]] = 1
                if not found.all():
                    unseen[self.names[j]] = int(len(found) - len(rows))
                at = stop
                continue
            if self.fill is not None:
                cells = np.where(np.isnan(cells), self.fill[j], cells)
            x[:, at] = cells
            at += 1
        return x, unseen


def fit_encoding(columns: _Columns, rows: np.ndarray | None, missing: str) -> Encoding:
    """The encoding of `columns` fitted on `rows` (all when None): each categorical column's
    sorted categories, and with `missing` mean / median / zero each numeric column's fill."""
    categories: dict[int, np.ndarray] = {}
    fill = None if missing == "error" else np.zeros(len(columns.names))
    for j, cells in enumerate(columns.cells):
        train = cells if rows is None else cells[rows]
        if cells.dtype.kind == "U":
            categories[j] = np.unique(train)
            continue
        if fill is None or missing == "zero":
            continue
        present = train[~np.isnan(train)]
        if len(present) == 0:
            raise DataError(
                f"data.missing: column {columns.names[j]!r} has no number in the training "
                f"split to take the {missing} of"
            )
        fill[j] = present.mean() if missing == "mean" else np.median(present)
    return Encoding(list(columns.names), categories, fill)


def stored_encoding(state: Any) -> Encoding | None:
    """The encoding a checkpoint (`checkpoint.Checkpoint`) holds; None when its inputs are
    plain numbers."""
    fill = state.stats.get("fill")
    if not state.categories and fill is None:
        return None
    return Encoding(list(state.feature_names), dict(state.categories), fill)


def reading(encoding: Encoding | None) -> _Tabular:
    """How to read CSV columns for a model with `encoding` (None: numbers only)."""
    return NUMERIC if encoding is None else encoding.tabular


def unseen_warning(unseen: dict[str, int], where: str) -> str | None:
    """The one warning line about categories the training split lacked, or None."""
    if not unseen:
        return None
    total = sum(unseen.values())
    per_column = _listing([f"{name}: {count}" for name, count in unseen.items()])
    cells = "cell holds a category" if total == 1 else "cells hold categories"
    return (
        f"{where}: {total} {cells} not seen in the training split ({per_column}); "
        "encoded as all zeros"
    )


# ----------------------------------------------------------------------------- standardization


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
    """A dataset's fitted statistics by name (None where not fitted): standardization and
    `fill`, the encoding's values for missing numeric cells."""
    stats = {name: getattr(data, name) for name in STATISTICS}
    stats["fill"] = data.encoding.fill if data.encoding is not None else None
    return stats


def categories(data: Any) -> dict[int, np.ndarray]:
    """A dataset's vocabularies: input column index -> sorted categories (str array)."""
    return dict(data.encoding.categories) if data.encoding is not None else {}


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
