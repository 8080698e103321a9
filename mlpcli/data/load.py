"""The entry points: `load_dataset` (a config's training and validation data, split and
statistics), `load_features` (predict), `load_labeled` (eval --data) and `prepare`. A
source is a built-in dataset or a file; `_reader` alone decides which format module reads
a file, for every caller.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from decimal import Decimal
from fractions import Fraction
from typing import Any, NamedTuple

import numpy as np

from mlpcli import memory
from mlpcli.data._common import _cast, _close, _listing, _not_regular, _row_blocks, _shape_text
from mlpcli.data.arrays import (
    _load_array_features,
    _load_array_pair,
    _load_npz,
    _load_npz_features,
)
from mlpcli.data.builtin import DATASETS, _load_builtin
from mlpcli.data.csv import _load_csv, _load_csv_features
from mlpcli.data.dataset import Dataset, _Raw, _Request
from mlpcli.data.preprocess import _fit_standardization, _standardize_inplace
from mlpcli.data.sniff import _sniff
from mlpcli.data.weights import class_weights
from mlpcli.errors import ConfigError, DataError
from mlpcli.rng import generator

TASKS = ("classification", "regression")


def _float_dtype(dtype: Any) -> np.dtype:
    """np.float32 or np.float64 from "float32" / "float64"."""
    try:
        dt = np.dtype(dtype)
    except TypeError:
        dt = None
    if dt not in (np.dtype(np.float32), np.dtype(np.float64)):
        raise DataError(f"dtype: must be float32 or float64, got {dtype!r}")
    return dt


class _Reader(NamedTuple):
    """How one file format is read; every reader takes the path, format and gzip flag first."""

    # (path, fmt, gz, cfg, req, key, default_features, mmap) -> _Raw: training, validation
    # and eval sources; `default_features`: the training CSV's columns; `mmap`: a .npy file
    # may stay on disk
    labeled: Callable[..., _Raw]
    # (path, fmt, gz, feature_names, dtype) -> (n, d) features, for predict
    features: Callable[..., np.ndarray]


_ARRAY_READER = _Reader(_load_array_pair, _load_array_features)  # labels in a second file
_READERS = {
    "csv": _Reader(_load_csv, _load_csv_features),
    "npz": _Reader(_load_npz, _load_npz_features),
    "npy": _ARRAY_READER,
    "idx": _ARRAY_READER,
}


def _reader(path: str) -> tuple[_Reader, str, bool]:
    """The reader of an existing data file, its format and whether it is gzipped."""
    fmt, gz = _sniff(path)
    return _READERS[fmt], fmt, gz


def _load_source(
    cfg: dict, req: _Request, role: int, key: str, default_features: list[str] | None = None
) -> _Raw:
    """Features and labels of a `data` (role 0), `data.val` (1) or `eval --data` (2) section."""
    config_file = req.config_file
    source = cfg.get("source")
    if not isinstance(source, str) or not source:
        raise DataError(
            f"{key}.source: must be a built-in dataset or a file path, got {source!r} "
            f"({config_file})"
        )
    if source in DATASETS:
        return _load_builtin(source, cfg, req, role, key)
    if not os.path.exists(source):
        hint = _close(source, list(DATASETS))
        if hint:
            hint = hint.replace("; did you mean", "; did you mean the built-in dataset")
        raise DataError(f"{key}.source: file not found: {source} ({config_file}){hint}")
    kind = _not_regular(source)  # a directory, a FIFO, a device: never opened
    if kind:
        raise DataError(f"{key}.source: {source} is {kind}, not a data file ({config_file})")
    if cfg.get("options"):
        raise DataError(
            f"{key}.options: only for built-in datasets ({_listing(DATASETS)}); "
            f"{source!r} is a file ({config_file})"
        )
    reader, fmt, gz = _reader(source)
    # only the training source may stay on disk: validation and eval data are loaded
    return reader.labeled(source, fmt, gz, cfg, req, key, default_features, role == 0)


def _map_labels(labels: np.ndarray, classes: np.ndarray, where: str) -> np.ndarray:
    """Indices into the training `classes` of validation labels (each must be one of them)."""
    if classes.dtype.kind == "U" and labels.dtype.kind != "U":
        labels = labels.astype(str)
    if (classes.dtype.kind == "U") != (labels.dtype.kind == "U"):
        idx = np.zeros(len(labels), dtype=np.int64)
        found = np.zeros(len(labels), dtype=bool)
    else:
        idx = np.clip(np.searchsorted(classes, labels), 0, len(classes) - 1)
        found = classes[idx] == labels
    if not found.all():
        label = labels[int(np.argmin(found))]
        label = label.item() if hasattr(label, "item") else label
        raise DataError(
            f"{where}: label {label!r} does not appear in the training data "
            f"(classes: {_listing(classes.tolist())})"
        )
    return idx.astype(np.int64)


def _n_val(n: int, val_split: float) -> int:
    """ceil(n * val_split) computed exactly on the decimal written (100 * 0.55 -> 55)."""
    return math.ceil(n * Fraction(Decimal(repr(float(val_split)))))


def _keep_rows(x: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """x[keep] built in place in x's own memory, for sorted unique `keep` (no second copy)."""
    for start, stop in _row_blocks(len(keep), x.shape[1] * x.itemsize):
        # rows read here are >= start; earlier blocks only wrote rows < start
        x[start:stop] = x[keep[start:stop]]
    return x[: len(keep)]


def load_dataset(data: dict, *, task: str, seed: int, dtype: str, config_file: str = "config"):
    """The Dataset described by a validated `data` config section, for `task`."""
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")
    dt = _float_dtype(dtype)
    val_cfg = data.get("val")
    val_split = data.get("val_split") or 0
    if val_cfg is not None and val_split != 0:
        raise DataError(
            f"data.val_split: must be 0 when data.val is given, got {val_split} ({config_file})"
        )
    if isinstance(val_split, bool) or not isinstance(val_split, (int, float)):
        raise DataError(f"data.val_split: must be a number in [0, 1), got {val_split!r}")
    if not 0 <= val_split < 1:
        raise DataError(f"data.val_split: must be in [0, 1), got {val_split} ({config_file})")
    if task == "classification" and data.get("standardize_target"):
        raise DataError(
            "data.standardize_target: only for regression (loss: mse); classification "
            f"targets are classes ({config_file})"
        )

    req = _Request(task, seed, dt, config_file)
    train = _load_source(data, req, 0, "data")
    x, y = train.x, train.y
    classes = train.classes
    if task == "classification":
        if classes is None:
            classes, y = np.unique(y, return_inverse=True)
            y = y.reshape(-1).astype(np.int64)
        if len(classes) < 2:
            raise DataError(
                f"data.target: {train.source} has one class only ({classes[0].item()!r}); "
                "classification needs at least 2"
            )
    else:
        y = _cast(y, dt)  # (n, k)

    x_val = y_val = train_rows = None
    if val_cfg is not None:
        if not isinstance(val_cfg, dict):
            raise DataError(f"data.val: must be a mapping with a source, got {val_cfg!r}")
        names = train.feature_names if train.has_names else None  # match CSV columns by name
        val = _load_source(val_cfg, req, 1, "data.val", names)
        if val.x.shape[1] != x.shape[1]:
            raise DataError(
                f"data.val: {val.source} has {val.x.shape[1]} features per sample, the "
                f"training data has {x.shape[1]}"
            )
        x_val = val.x
        if task == "classification":
            y_val = _map_labels(val.y, classes, f"data.val: {val.source}")
        else:
            y_val = _cast(val.y, dt)
            if y_val.shape[1] != y.shape[1]:
                raise DataError(
                    f"data.val: {val.source} has {y_val.shape[1]} target columns, the "
                    f"training data has {y.shape[1]}"
                )
    elif val_split > 0:
        n = len(x)
        n_val = _n_val(n, val_split)
        if n_val >= n:
            raise DataError(
                f"data.val_split: {val_split} of {n} samples leaves no training sample "
                f"({config_file})"
            )
        shape = (n_val, x.shape[1])  # copied, from a memory map too
        copy = f"a validation copy of {_shape_text(shape)} {x.dtype.name}"
        what = f"data.val_split: {train.source}: {copy}"
        memory.require(n_val * x.shape[1] * x.itemsize, what, DataError)
        perm = generator(seed, "split").permutation(n)
        # each split keeps the samples' original order; which ones go where is random
        val_idx, train_idx = np.sort(perm[:n_val]), np.sort(perm[n_val:])
        x_val, y_val = x[val_idx], y[val_idx]  # fancy indexing copies, a memmap's rows too
        y = y[train_idx]
        if isinstance(x, np.memmap):
            # read-only and maybe larger than memory: left on disk, its rows named
            train_rows = train_idx.astype(np.int64, copy=False)
        else:
            x = _keep_rows(x, train_idx)

    # features stay raw: the trainer standardizes each batch with these statistics
    x_mean = x_std = y_mean = y_std = None
    if data.get("standardize"):
        x_mean, x_std = _fit_standardization(x, train_rows)
    if data.get("standardize_target"):
        y_mean, y_std = _fit_standardization(y)
        _standardize_inplace(y, y_mean, y_std)
        if y_val is not None:
            _standardize_inplace(y_val, y_mean, y_std)

    return Dataset(
        x_train=x,
        y_train=y,
        train_rows=train_rows,
        x_val=x_val,
        y_val=y_val,
        task=task,
        classes=classes,
        feature_names=train.feature_names,
        x_mean=x_mean,
        x_std=x_std,
        y_mean=y_mean,
        y_std=y_std,
        source=train.source,
    )


def load_features(path: str, *, feature_names: list[str] | None, dtype: str) -> np.ndarray:
    """(n, d) features of a CSV, .npy, .npz or IDX file, for `predict` and `eval`.

    A CSV's columns are taken by name when `feature_names` are all in its header (other
    columns, such as the target, are ignored); when the model's names were generated
    (x0, x1, ... for arrays and built-ins) and the header has that many columns, by
    position; with `feature_names` None, all columns.
    """
    dt = _float_dtype(dtype)
    if not os.path.exists(path):
        raise DataError(f"file not found: {path}")
    kind = _not_regular(path)  # a directory, a FIFO, a device: never opened
    if kind:
        raise DataError(f"{path} is {kind}, not a data file")
    reader, fmt, gz = _reader(path)
    x = reader.features(path, fmt, gz, feature_names, dt)
    if feature_names is not None and x.shape[1] != len(feature_names):
        raise DataError(
            f"{path}: {x.shape[1]} features per sample, the model expects {len(feature_names)}"
        )
    return x


def load_labeled(
    data: dict,
    *,
    task: str,
    seed: int,
    dtype: str,
    classes: np.ndarray | None,
    feature_names: list[str],
    where: str = "--data",
) -> tuple[np.ndarray, np.ndarray]:
    """Raw (unscaled) features and labels of another source, for `eval --data`.

    `data` is like a config's `data.val` section (source, target, features, options).
    Classification labels are mapped to the model's `classes`; regression targets are
    (n, k) floats in their original units.
    """
    req = _Request(task, seed, _float_dtype(dtype), where)
    names = feature_names if not data.get("features") else None
    raw = _load_source(data, req, 2, where, names)
    if raw.x.shape[1] != len(feature_names):
        raise DataError(
            f"{where}: {raw.source} has {raw.x.shape[1]} features per sample, the model "
            f"expects {len(feature_names)}"
        )
    if raw.y is None:
        raise DataError(f"{where}: {raw.source} has no labels to evaluate against")
    if task == "classification":
        return raw.x, _map_labels(raw.y, classes, f"{where}: {raw.source}")
    return raw.x, _cast(raw.y, raw.x.dtype)


def prepare(config: Any, where: str) -> Dataset:
    """Load the data of a resolved config (`config.Config`) and check it fits the model."""
    data = load_dataset(
        config.data.model_dump(mode="json"),
        task=config.task,
        seed=config.seed,
        dtype=config.dtype,
        config_file=where,
    )
    last = len(config.model.layers) - 1
    units = config.model.layers[last].units
    key = f"{where}: model.layers.{last}.units"
    if config.loss == "cross_entropy" and units != len(data.classes):
        raise ConfigError(
            f"{key}: {units} output units, but the data has {len(data.classes)} "
            f"classes ({_labels(data.classes)})"
        )
    if config.loss == "binary_cross_entropy" and len(data.classes) > 2:
        raise ConfigError(
            f"{where}: loss: binary_cross_entropy needs 2 classes, the data has "
            f"{len(data.classes)} ({_labels(data.classes)}); use cross_entropy"
        )
    if config.task == "regression" and units != data.y_train.shape[1]:
        raise ConfigError(
            f"{key}: {units} output units, but the data has "
            f"{data.y_train.shape[1]} target column(s)"
        )
    if config.task == "classification":
        data.class_weight = class_weights(
            config.train.class_weight, data.classes, data.y_train, where
        )
    return data


def _labels(classes: np.ndarray) -> str:
    shown = ", ".join(map(str, classes[:5]))
    return shown + (", ..." if len(classes) > 5 else "")
