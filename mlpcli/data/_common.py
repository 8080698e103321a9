"""Helpers every part of the data package shares: messages that list or suggest names, the
row blocks that keep temporaries small, casts and generated feature names, and reading a
file's bytes (gunzipped or not) with the DataError its faults deserve.
"""

from __future__ import annotations

import gzip
import zlib
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from mlpcli.errors import DataError, closest

_CHUNK_BYTES = 1 << 24  # row blocks of ~16 MB keep temporaries small on large arrays


def _close(name: str, choices: Sequence[str]) -> str:
    """'; did you mean 'x'?' when a choice is close to `name`, else ''."""
    match = closest(name, choices)
    return f"; did you mean {match!r}?" if match else ""


def _listing(items: Sequence[Any], limit: int = 20) -> str:
    """'a, b, c' (shortened to `limit` items)."""
    items = [str(i) for i in items]
    if len(items) > limit:
        return ", ".join(items[:limit]) + f", ... ({len(items)} in all)"
    return ", ".join(items)


def _cast(a: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """`a` as a C-contiguous, writable array of `dtype` (overflow to inf is caught later)."""
    with np.errstate(over="ignore", invalid="ignore"):
        out = np.ascontiguousarray(a, dtype=dtype)
    if not out.flags.writeable:
        out = out.copy()
    return out


def _row_blocks(n_rows: int, row_bytes: int) -> Iterator[tuple[int, int]]:
    """(start, stop) row ranges of about _CHUNK_BYTES each."""
    step = max(1, _CHUNK_BYTES // max(1, row_bytes))
    for start in range(0, n_rows, step):
        yield start, min(n_rows, start + step)


def _whole_to_int(a: np.ndarray) -> np.ndarray:
    """Float labels that are all whole numbers as int64, others unchanged."""
    if a.size and np.all(a == np.floor(a)) and np.abs(a).max() < 2.0**53:
        return a.astype(np.int64)
    return a


def _generated_names(d: int) -> list[str]:
    return [f"x{i}" for i in range(d)]


def _read_bytes(path: str, size: int = -1) -> bytes:
    """The first `size` bytes of a file (all of them with -1)."""
    try:
        with open(path, "rb") as f:
            return f.read(size)
    except OSError as e:
        raise DataError(f"{path}: cannot read: {e.strerror or e}") from None


def _gunzip(path: str, size: int = -1) -> bytes:
    """The first `size` decompressed bytes of a gzip file (all of them with -1)."""
    try:
        with gzip.open(path, "rb") as f:
            return f.read(size)
    except (OSError, EOFError, zlib.error) as e:
        raise DataError(f"{path}: corrupted gzip data ({e})") from None
