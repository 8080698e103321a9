"""NumPy files: .npy arrays (a read-only memory map when one can stay on disk), .npz
archives and their keys, IDX arrays through idx.py, and turning arrays into (n, d) features
and labels. Holds the readers load.py dispatches to for .npz, .npy and IDX files; the bytes
of .npy data and .npz members are read by npy.py, which trusts no header.
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np

from mlpcli import memory
from mlpcli.data._common import (
    _Bounded,
    _cast,
    _close,
    _generated_names,
    _listing,
    _not_regular,
    _open_file,
    _read_all,
    _reading,
    _row_blocks,
    _whole_to_int,
)
from mlpcli.data.dataset import _Raw, _Request
from mlpcli.data.idx import _read_idx
from mlpcli.data.npy import _can_map, _check_holds, _header, _read_data
from mlpcli.data.sniff import _sniff
from mlpcli.errors import DataError


def _unreadable(path: str, what: str, e: Exception) -> DataError:
    """The error for an array numpy could not load; pickled (object) arrays say so."""
    if isinstance(e, ValueError) and "allow_pickle" in str(e):
        return DataError(
            f"{path}: {what} holds Python objects (pickled); mlpcli never unpickles data "
            "files: save numeric arrays"
        )
    return DataError(f"{path}: {what} cannot be read ({type(e).__name__}: {e})")


def _mappable(path: str, dtype: np.dtype) -> bool:
    """Whether a .npy file holds a non-empty C-order array of `dtype`, per its header."""
    try:
        with _open_file(path) as f:
            return _can_map(_header(f), dtype)
    except (DataError, ValueError):  # a damaged header: reading the file names the fault
        return False


def _read_array_file(
    path: str, fmt: str, gz: bool, cast: np.dtype | None = None, mmap: bool = False
) -> np.ndarray:
    """The array in a .npy or IDX file (gzipped or not); never unpickles. `cast`: the
    dtype features will be copied to (None for labels), counted in the memory needed.

    With `mmap`, a plain .npy file holding `cast` in C order comes back as a read-only
    np.memmap: it is read from disk as its rows are used, never whole, so its size is not
    weighed against memory.
    """
    if fmt == "idx":
        return _read_idx(path, gz, cast)
    what = "the .npy array"
    with _reading(path, gz), _Bounded(path, gz) as f:
        try:
            h = _header(f)
            if gz:
                return _read_data(f, h, path, what, path, cast, "it inflates to")
            _check_holds(
                h, os.fstat(f.file.fileno()).st_size - h.offset, path, what, "the file holds"
            )
            if mmap and _can_map(h, cast):
                return np.memmap(f.file, dtype=h.dtype, mode="r", offset=h.offset, shape=h.shape)
            return _read_data(f, h, path, what, path, cast, "the file holds")
        except ValueError as e:
            raise _unreadable(path, what, e) from None


def _check_finite(x: np.ndarray, where: str) -> None:
    """DataError naming the first NaN or inf in the (n, d) array `x`."""
    for start, stop in _row_blocks(len(x), x.shape[1] * x.itemsize):
        bad = ~np.isfinite(x[start:stop])
        if bad.any():
            i, j = np.argwhere(bad)[0]
            value = x[start + i, j]
            raise DataError(
                f"{where}: sample {start + i}, feature {j} is {value} "
                "(features must be finite numbers; indices count from 0)"
            )


def _features_from_array(arr: np.ndarray, dtype: np.dtype, where: str) -> np.ndarray:
    """(n, d) features of `dtype` from an array of samples; images are flattened."""
    if arr.dtype.kind not in "biuf":
        raise DataError(f"{where}: features must be numbers, got an array of dtype {arr.dtype}")
    if arr.ndim == 0:
        raise DataError(f"{where}: a single value, not an array of samples")
    n = arr.shape[0]
    if n == 0:
        raise DataError(f"{where}: no samples (0 rows)")
    x = arr.reshape(n, -1)  # (n,) -> (n, 1); (n, 28, 28) -> (n, 784); a view of a memmap
    if x.shape[1] == 0:
        raise DataError(f"{where}: no features (shape {arr.shape})")
    if not (isinstance(x, np.memmap) and x.dtype == dtype and x.flags.c_contiguous):
        x = _cast(x, dtype)
    if arr.dtype.kind == "f":  # integers are always finite
        _check_finite(x, where)
    return x


def _class_labels(arr: np.ndarray, where: str) -> np.ndarray:
    """Class labels (n,) as int64, float64 or str from an array of labels."""
    if arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.ndim != 1:
        raise DataError(
            f"{where}: classification takes one label per sample, got labels of shape "
            f"{arr.shape} (one-hot labels: store their argmax)"
        )
    kind = arr.dtype.kind
    if kind in "US":
        return arr.astype(str)
    if kind in "biu":
        return arr.astype(np.int64)
    if kind == "f":
        bad = ~np.isfinite(arr)
        if bad.any():
            i = int(np.argmax(bad))
            raise DataError(f"{where}: label {i} (counting from 0) is {arr[i]}, not a class")
        return _whole_to_int(arr.astype(np.float64))
    raise DataError(f"{where}: labels of dtype {arr.dtype} are not supported")


def _regression_targets(arr: np.ndarray, where: str) -> np.ndarray:
    """Regression targets (n, k) float64 from an array."""
    if arr.dtype.kind not in "biuf":
        raise DataError(f"{where}: regression targets must be numbers, got dtype {arr.dtype}")
    if arr.ndim == 0 or arr.ndim > 2:
        raise DataError(f"{where}: regression targets must be (n,) or (n, k), got {arr.shape}")
    y = arr.astype(np.float64).reshape(len(arr), -1)
    if y.size:
        _check_finite(y, where)
    return y


def _labels_from_array(arr: np.ndarray, task: str, where: str) -> np.ndarray:
    # labels become int64 / float64, then sorted into classes: about three 8-byte copies
    memory.require(arr.size * 8 * 3, f"{where}: {arr.size:,} labels", DataError)
    if task == "classification":
        return _class_labels(arr, where)
    return _regression_targets(arr, where)


def _check_count(n_labels: int, n_samples: int, where: str) -> None:
    if n_labels != n_samples:
        raise DataError(f"{where}: {n_labels} labels for {n_samples} samples")


# NPZ ---------------------------------------------------------------------------------------

_FEATURE_KEYS = ("x", "features")  # an .npz file's feature array when the config names none


def _npz_array(z: Any, key: str, path: str, size: int, cast: np.dtype | None = None):
    """Array `key` of an open archive of `size` bytes, its header checked against the member
    and memory before it is read; `cast` as for `_read_array_file`."""
    what = f"array {key!r}"
    try:
        names = z.zip.namelist()
        info = z.zip.getinfo(key if key in names else f"{key}.npy")  # as NpzFile finds it
        with z.zip.open(info) as member:
            h = _header(member)
            stored = info.compress_type == zipfile.ZIP_STORED  # bytes in the archive as they are
            have = (min(info.file_size, size) if stored else info.file_size) - h.offset
            _check_holds(h, have, path, what, "the archive holds")
            return _read_data(member, h, path, what, f"{path} ({what})", cast, "the archive holds")
    except DataError:
        raise
    except Exception as e:  # numpy and zipfile raise many kinds of errors on damaged files
        raise _unreadable(path, what, e) from None


def _npz_key(keys, given, defaults: tuple[str, ...], what: str, path: str, cfg_key: str | None):
    """The key holding `what`: the one named in the config, else the first default present."""
    if given is not None:
        if not isinstance(given, str):
            raise DataError(f"{cfg_key}: for an .npz file, name one array key, got {given!r}")
        if given not in keys:
            raise DataError(
                f"{path}: no array {given!r} ({cfg_key}); keys are: {_listing(keys)}"
                f"{_close(given, keys)}"
            )
        return given
    for k in defaults:
        if k in keys:
            return k
    names = " or ".join(repr(k) for k in defaults)
    hint = f" (set {cfg_key})" if cfg_key else ""
    raise DataError(f"{path}: no {what} array {names}{hint}; keys are: {_listing(keys) or 'none'}")


@contextmanager
def _open_npz(path: str, gz: bool) -> Iterator[tuple[Any, int]]:
    """The open archive (np.lib.npyio.NpzFile) of an .npz file, gzipped or not (inflated
    only as far as memory allows), and its size in bytes."""
    # inflated, the archive takes memory once and the arrays read from it once more
    with _reading(path, gz), _Bounded(path, gz, cost=2) as f:
        source = _read_all(f) if gz else f.file
        size = f.count if gz else os.fstat(f.file.fileno()).st_size
        try:
            z = np.load(source, allow_pickle=False)
        except Exception as e:  # numpy and zipfile raise many kinds of errors on damaged files
            raise _unreadable(path, "the .npz archive", e) from None
        if not hasattr(z, "files"):
            raise DataError(f"{path}: not an .npz archive")
        with z:
            yield z, size


def _npz_features(z: Any, key: str, path: str, size: int, dtype: np.dtype) -> np.ndarray:
    arr = _npz_array(z, key, path, size, dtype)
    return _features_from_array(arr, dtype, f"{path} (array {key!r})")


def _load_npz(path, fmt, gz, cfg, req: _Request, key: str, default_features, mmap) -> _Raw:
    """Features and labels of an .npz file: the arrays the config names, else the defaults."""
    with _open_npz(path, gz) as (z, size):
        keys = list(z.files)
        fkey = _npz_key(
            keys, cfg.get("features"), _FEATURE_KEYS, "feature", path, f"{key}.features"
        )
        tkey = _npz_key(keys, cfg.get("target"), ("y", "target"), "label", path, f"{key}.target")
        x = _npz_features(z, fkey, path, size, req.dtype)
        labels = _npz_array(z, tkey, path, size)
        y = _labels_from_array(labels, req.task, f"{path} (array {tkey!r})")
    _check_count(len(y), len(x), f"{path} (array {tkey!r})")
    return _Raw(x, y, _generated_names(x.shape[1]), path)


def _load_npz_features(path, fmt, gz, feature_names, dtype: np.dtype) -> np.ndarray:
    """(n, d) features of an .npz file: its array 'x' or 'features'."""
    with _open_npz(path, gz) as (z, size):
        key = _npz_key(list(z.files), None, _FEATURE_KEYS, "feature", path, None)
        return _npz_features(z, key, path, size, dtype)


# NPY / IDX pairs ---------------------------------------------------------------------------


def _load_array_pair(
    path, fmt, gz, cfg, req: _Request, key: str, default_features, mmap: bool
) -> _Raw:
    """Features from a .npy or IDX file, labels from the file named by `target`.

    With `mmap`, a .npy file of the requested dtype in C order stays on disk (np.memmap).
    """
    config_file = req.config_file
    if cfg.get("features") is not None:
        raise DataError(
            f"{key}.features: not used with a .npy or IDX file, which holds only features "
            f"({config_file})"
        )
    target = cfg.get("target")
    if target is None:
        raise DataError(
            f"{key}.target: must name the label file (.npy or IDX) for the features in "
            f"{path} ({config_file})"
        )
    if not isinstance(target, str):
        raise DataError(f"{key}.target: must be the path of a label file, got {target!r}")
    arr = _read_array_file(path, fmt, gz, req.dtype, mmap)
    x = _features_from_array(arr, req.dtype, path)
    if not os.path.exists(target):
        raise DataError(f"{key}.target: file not found: {target} ({config_file})")
    kind = _not_regular(target)
    if kind:
        raise DataError(f"{key}.target: {target} is {kind}, not a data file ({config_file})")
    label_fmt, label_gz = _sniff(target)
    if label_fmt not in ("npy", "idx"):
        raise DataError(f"{key}.target: {target}: expected a .npy or IDX label file")
    y = _labels_from_array(_read_array_file(target, label_fmt, label_gz), req.task, target)
    _check_count(len(y), len(x), f"{target} (labels of {path})")
    return _Raw(x, y, _generated_names(x.shape[1]), path)


def _load_array_features(path, fmt, gz, feature_names, dtype: np.dtype) -> np.ndarray:
    """(n, d) features of a .npy or IDX file."""
    return _features_from_array(_read_array_file(path, fmt, gz, dtype), dtype, path)
