"""The records of the data package: `Dataset`, the host arrays the trainer receives, and
`data_digest`, its checksum for exact resume; `_Request`, what every reader is asked for,
`_Tabular`, how CSV feature columns are read, `_Columns`, CSV columns awaiting their fitted
encoding, and `_Raw`, one source as a reader returns it, before split and scaling.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class Dataset:
    """Raw training (and validation) arrays on the host, with the statistics to scale them."""

    # (N, d) raw features, the requested float dtype, C-contiguous; a read-only np.memmap
    # when a .npy file could be mapped, else in memory and holding only the training rows
    x_train: np.ndarray
    # one per training row, in train_rows order: classification int64 (n,) class indices;
    # regression (n, k) floats (standardized with y_mean, y_std when those are set)
    y_train: np.ndarray
    # sorted int64 (n,) indices of the training rows in x_train when it could not be packed
    # (a memory map split by val_split); None: every row of x_train is a training row
    train_rows: np.ndarray | None = None
    x_val: np.ndarray | None = None  # (n_val, d) raw features, in memory
    y_val: np.ndarray | None = None
    task: str = "classification"
    classes: np.ndarray | None = None  # original labels, sorted unique (classification only)
    feature_names: list[str] = field(default_factory=list)
    x_mean: np.ndarray | None = None  # (d,) float64, fitted on the training split only
    x_std: np.ndarray | None = None
    y_mean: np.ndarray | None = None  # (k,) float64, regression with standardize_target
    y_std: np.ndarray | None = None
    # (C,) float64 loss weight per class (train.class_weight, resolved by `prepare`), or None
    class_weight: np.ndarray | None = None
    source: str = ""
    # the fitted CSV encoding (preprocess.Encoding: vocabularies, fill values), or None when
    # the features are numbers as read; feature_names are then its input columns
    encoding: Any = None
    # validation cells (column -> count) holding a category the training split lacks
    unseen: dict[str, int] = field(default_factory=dict)

    @property
    def n_train(self) -> int:
        """Number of training samples n."""
        return len(self.train_rows) if self.train_rows is not None else len(self.x_train)

    @property
    def n_features(self) -> int:
        """Number of input features d."""
        return int(self.x_train.shape[1])

    @property
    def n_outputs(self) -> int:
        """Number of classes (classification) or of target columns (regression)."""
        if self.task == "classification":
            return len(self.classes) if self.classes is not None else 0
        return int(self.y_train.shape[1])


def data_digest(data: Dataset) -> str:
    """A checksum of the training arrays: resuming on other data would not be exact."""
    crc = 0
    for a in (data.x_train, data.y_train, data.x_val, data.y_val):
        if a is not None:
            crc = zlib.crc32(np.ascontiguousarray(a).view(np.uint8).reshape(-1), crc)
    return f"crc32:{crc:08x}"


@dataclass(frozen=True)
class _Tabular:
    """How a CSV's feature columns are read: which are categorical ("auto": those holding no
    number; else the names listed), and whether a numeric cell may be missing (NaN)."""

    categorical: str | tuple[str, ...] = ()
    missing: str = "error"  # error | mean | median | zero (any but error: the cell is NaN)
    fitted: bool = False  # read for an encoding already fitted (validation, eval, predict)


NUMERIC = _Tabular()  # numbers only, no missing cells: the reading before categorical data


@dataclass(frozen=True)
class _Request:
    """What every loader needs besides its own config section."""

    task: str
    seed: int
    dtype: np.dtype
    config_file: str
    tabular: _Tabular = NUMERIC


@dataclass
class _Columns:
    """A CSV's feature columns as read, before a fitted encoding turns them into numbers."""

    names: list[str]
    # per column: float64 (n,) with NaN where a cell is missing, or for a categorical column
    # its stripped cells as a str array (n,), "" where empty
    cells: list[np.ndarray]

    @property
    def n(self) -> int:
        return len(self.cells[0])


@dataclass
class _Raw:
    """One loaded source before split and scaling."""

    # (n, d), requested dtype, C-contiguous; owned and writable, or a read-only np.memmap;
    # or CSV columns still to be encoded (categorical columns, missing cells)
    x: np.ndarray | _Columns
    y: np.ndarray | None  # class labels (n,) int64/float64/str, or regression floats (n, k)
    feature_names: list[str]
    source: str
    has_names: bool = False  # feature names come from a CSV header
    classes: np.ndarray | None = None  # built-ins: arange(C)
