"""The entry points: `load_dataset` (a config's training and validation data, split, then
the encoding of CSV columns and the statistics fitted on the training rows), `read_inputs` /
`load_features` (predict), `load_labeled` (eval --data) and `prepare`. A source is a
built-in dataset or a file; `_reader` alone decides which format module reads a file, for
every caller.
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
from mlpcli.data.dataset import Dataset, _Columns, _Raw, _Request, _Tabular
from mlpcli.data.preprocess import (
    Encoding,
    _fit_standardization,
    _standardize_inplace,
    fit_encoding,
    reading,
)
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
    # (path, fmt, gz, feature_names, dtype) -> (n, d) features, for predict; the CSV reader
    # takes how to read its columns too (a _Tabular) and may return them for an encoding
    features: Callable[..., np.ndarray | _Columns]


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


def split_rows(n: int, val_split: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(validation rows, training rows) of `n` samples, each sorted: ceil(n * val_split)
    rows drawn for validation by a shuffle seeded from `seed`."""
    n_val = min(_n_val(n, val_split), n)
    perm = generator(seed, "split").permutation(n)
    # each split keeps the samples' original order; which ones go where is random
    return np.sort(perm[:n_val]), np.sort(perm[n_val:])


def _keep_rows(x: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """x[keep] built in place in x's own memory, for sorted unique `keep` (no second copy)."""
    for start, stop in _row_blocks(len(keep), x.shape[1] * x.itemsize):
        # rows read here are >= start; earlier blocks only wrote rows < start
        x[start:stop] = x[keep[start:stop]]
    return x[: len(keep)]


def _tabular(data: dict, config_file: str) -> _Tabular:
    """How the config's `data.categorical` and `data.missing` read a CSV's feature columns."""
    categorical = data.get("categorical", "auto")
    missing = data.get("missing", "error")
    if categorical != "auto" and (
        not isinstance(categorical, list) or not all(isinstance(c, str) for c in categorical)
    ):
        raise DataError(
            f"data.categorical: must be auto or a list of column names, got {categorical!r} "
            f"({config_file})"
        )
    if missing not in ("error", "mean", "median", "zero"):
        raise DataError(
            f"data.missing: must be error, mean, median or zero, got {missing!r} ({config_file})"
        )
    return _Tabular(categorical if categorical == "auto" else tuple(categorical), missing)


def _encode(raw: _Raw, encoding: Encoding | None, dtype: np.dtype) -> tuple[np.ndarray, dict]:
    """A source's features as numbers: CSV columns through `encoding`, arrays as they are."""
    if not isinstance(raw.x, _Columns):
        return raw.x, {}
    assert encoding is not None, "columns are read only for an encoding"
    return encoding.transform(raw.x, dtype)


def load_dataset(
    data: dict,
    *,
    task: str,
    seed: int,
    dtype: str,
    config_file: str = "config",
    fitted: Encoding | None = None,
):
    """The Dataset described by a validated `data` config section, for `task`; `fitted`:
    the encoding of CSV columns a checkpoint holds, applied instead of fitting one."""
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

    tabular = _tabular(data, config_file) if fitted is None else fitted.tabular
    req = _Request(task, seed, dt, config_file, tabular)
    train = _load_source(data, req, 0, "data")
    if not train.has_names and fitted is None:
        for key, used in (
            ("categorical", tabular.categorical not in ("auto", ())),
            ("missing", tabular.missing != "error"),
        ):
            if used:
                raise DataError(
                    f"data.{key}: is for the columns of a CSV file; {train.source} is not "
                    f"one ({config_file})"
                )
    y = train.y
    n = train.x.n if isinstance(train.x, _Columns) else len(train.x)
    # the split is drawn before anything is fitted: statistics come from training rows only
    split = None
    if val_cfg is None and val_split > 0:
        split = split_rows(n, val_split, seed)
        if len(split[1]) == 0:
            raise DataError(
                f"data.val_split: {val_split} of {n} samples leaves no training sample "
                f"({config_file})"
            )
    encoding = fitted
    if encoding is None and isinstance(train.x, _Columns):
        encoding = fit_encoding(train.x, None if split is None else split[1], tabular.missing)
    # every training row's category is in the vocabularies: what is unseen is validation's
    x, unseen = _encode(train, encoding, dt)
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
        val_req = _Request(task, seed, dt, config_file, reading(encoding))
        val = _load_source(val_cfg, val_req, 1, "data.val", names)
        x_val, unseen_val = _encode(val, encoding, dt)
        for name, count in unseen_val.items():
            unseen[name] = unseen.get(name, 0) + count
        if x_val.shape[1] != x.shape[1]:
            raise DataError(
                f"data.val: {val.source} has {x_val.shape[1]} features per sample, the "
                f"training data has {x.shape[1]}"
            )
        if task == "classification":
            y_val = _map_labels(val.y, classes, f"data.val: {val.source}")
        else:
            y_val = _cast(val.y, dt)
            if y_val.shape[1] != y.shape[1]:
                raise DataError(
                    f"data.val: {val.source} has {y_val.shape[1]} target columns, the "
                    f"training data has {y.shape[1]}"
                )
    elif split is not None:
        val_idx, train_idx = split
        n_val = len(val_idx)
        shape = (n_val, x.shape[1])  # copied, from a memory map too
        copy = f"a validation copy of {_shape_text(shape)} {x.dtype.name}"
        what = f"data.val_split: {train.source}: {copy}"
        memory.require(n_val * x.shape[1] * x.itemsize, what, DataError)
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
        if encoding is not None:  # 0/1 category indicators stay as they are
            one_hot = encoding.one_hot()
            x_mean[one_hot], x_std[one_hot] = 0.0, 1.0
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
        encoding=encoding,
        unseen=unseen,
    )


def load_features(path: str, *, feature_names: list[str] | None, dtype: str) -> np.ndarray:
    """(n, d) features of a CSV, .npy, .npz or IDX file, for a model of plain numeric
    inputs (`read_inputs` says how columns are chosen)."""
    return read_inputs(path, feature_names=feature_names, encoding=None, dtype=dtype)[0]


def read_inputs(
    path: str, *, feature_names: list[str] | None, encoding: Encoding | None, dtype: str
) -> tuple[np.ndarray, dict[str, int]]:
    """A model's (n, d) inputs from a CSV, .npy, .npz or IDX file, for `predict`, and the
    count of cells per column whose category the model's vocabulary lacks.

    A CSV's columns are taken by name when `feature_names` are all in its header, in any
    order (other columns, such as the target, are ignored), and go through the model's
    `encoding` when it has one; when the model's names were generated (x0, x1, ... for arrays
    and built-ins) and the header has that many columns, by position; with `feature_names`
    None, all columns.
    """
    dt = _float_dtype(dtype)
    if not os.path.exists(path):
        raise DataError(f"file not found: {path}")
    kind = _not_regular(path)  # a directory, a FIFO, a device: never opened
    if kind:
        raise DataError(f"{path} is {kind}, not a data file")
    reader, fmt, gz = _reader(path)
    if encoding is not None and fmt != "csv":
        raise DataError(
            f"{path}: the model takes the columns of a CSV file by name "
            f"({_listing(encoding.names)}); give it a CSV file"
        )
    if fmt == "csv":
        x = reader.features(path, fmt, gz, feature_names, dt, reading(encoding))
    else:
        x = reader.features(path, fmt, gz, feature_names, dt)
    x, unseen = encoding.transform(x, dt) if isinstance(x, _Columns) else (x, {})
    width = encoding.width if encoding is not None else len(feature_names or ())
    if feature_names is not None and x.shape[1] != width:
        raise DataError(f"{path}: {x.shape[1]} features per sample, the model expects {width}")
    return x, unseen


def load_labeled(
    data: dict,
    *,
    task: str,
    seed: int,
    dtype: str,
    classes: np.ndarray | None,
    feature_names: list[str],
    where: str = "--data",
    encoding: Encoding | None = None,
) -> tuple[np.ndarray, np.ndarray, dict[str, int]]:
    """Raw (unscaled) features and labels of another source, for `eval --data`, and the
    count of cells per column whose category the model's `encoding` lacks.

    `data` is like a config's `data.val` section (source, target, features, options).
    Classification labels are mapped to the model's `classes`; regression targets are
    (n, k) floats in their original units.
    """
    req = _Request(task, seed, _float_dtype(dtype), where, reading(encoding))
    names = feature_names if not data.get("features") else None
    raw = _load_source(data, req, 2, where, names)
    x, unseen = _encode(raw, encoding, req.dtype)
    width = encoding.width if encoding is not None else len(feature_names)
    if x.shape[1] != width:
        raise DataError(
            f"{where}: {raw.source} has {x.shape[1]} features per sample, the model expects {width}"
        )
    if raw.y is None:
        raise DataError(f"{where}: {raw.source} has no labels to evaluate against")
    if task == "classification":
        return x, _map_labels(raw.y, classes, f"{where}: {raw.source}"), unseen
    return x, _cast(raw.y, x.dtype), unseen


def prepare(config: Any, where: str, encoding: Encoding | None = None) -> Dataset:
    """Load the data of a resolved config (`config.Config`) and check it fits the model;
    `encoding`: a checkpoint's, applied to CSV columns instead of fitting one."""
    data = load_dataset(
        config.data.model_dump(mode="json"),
        task=config.task,
        seed=config.seed,
        dtype=config.dtype,
        config_file=where,
        fitted=encoding,
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
