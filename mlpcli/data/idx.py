"""IDX (MNIST) files: the magic bytes that recognise one, and reading one (gzipped or not)
into an array: big-endian values after a header of dimensions, which bounds how much is
read and inflated.
"""

from __future__ import annotations

import math
import os
import struct

import numpy as np

from mlpcli import memory
from mlpcli.data._common import _Bounded, _drain, _read_into, _reading, _shape_text, _take
from mlpcli.errors import DataError

_IDX_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def _is_idx(head: bytes) -> bool:
    """IDX magic: two zero bytes, a type code, the number of dimensions."""
    return len(head) >= 4 and head[:2] == b"\0\0" and head[2] in _IDX_TYPES and head[3] >= 1


def _read_idx(path: str, gz: bool, cast: np.dtype | None = None) -> np.ndarray:
    """The array in an IDX file, gzipped or not; `cast`: the dtype it will be copied to.

    Its dimensions say how many bytes follow: more memory than is free is refused before
    reading, and a gzipped file is never inflated much past them.
    """
    with _reading(path, gz), _Bounded(path, gz) as f:
        magic = _take(f, 4)
        if not _is_idx(magic):
            raise DataError(f"{path}: not an IDX file")
        ndim = magic[3]
        header = 4 + 4 * ndim
        dims_bytes = _take(f, 4 * ndim)
        if len(dims_bytes) < 4 * ndim:
            raise DataError(
                f"{path}: truncated IDX file: the header of {ndim} dimensions is cut off"
            )
        dims = struct.unpack(f">{ndim}I", dims_bytes)
        dt = np.dtype(_IDX_TYPES[magic[2]])
        count = math.prod(dims)
        need = count * dt.itemsize
        if not gz:  # the file's size tells a lying header before anything is allocated
            _check_size(path, dims, dt, need, os.fstat(f.file.fileno()).st_size - header)
        copy = count * cast.itemsize if cast is not None else 0
        memory.require(need + copy, f"{path}: {_shape_text(dims)} {dt.name}", DataError)
        f.promise(header + need)
        buf = np.empty(need, dtype=np.uint8)
        have = _read_into(f, buf)
        _check_size(path, dims, dt, need, have + (_drain(f) if have == need else 0))
    # bytes read into a new array: writable, native after the cast that follows
    return buf.view(dt).reshape(dims)


def _check_size(path: str, dims: tuple[int, ...], dt: np.dtype, need: int, have: int) -> None:
    """DataError unless the `have` bytes after the header are the `need` its dims say."""
    shape = "x".join(map(str, dims))
    if have < need:
        raise DataError(
            f"{path}: truncated IDX file: its header says {shape} values of {dt.name} "
            f"({need} bytes), it holds {have} bytes"
        )
    if have > need:
        raise DataError(
            f"{path}: corrupted IDX file: {have - need} bytes more than its header ({shape} "
            f"values of {dt.name}) says"
        )
