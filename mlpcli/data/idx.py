"""IDX (MNIST) files: the magic bytes that recognise one, and reading one (gzipped or not)
into an array: big-endian values after a header of dimensions.
"""

from __future__ import annotations

import math
import struct

import numpy as np

from mlpcli.data._common import _gunzip, _read_bytes
from mlpcli.errors import DataError

_IDX_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def _is_idx(head: bytes) -> bool:
    """IDX magic: two zero bytes, a type code, the number of dimensions."""
    return len(head) >= 4 and head[:2] == b"\0\0" and head[2] in _IDX_TYPES and head[3] >= 1


def _parse_idx(buf: bytes, path: str) -> np.ndarray:
    """The array of an IDX file's bytes (big-endian values after a header of dimensions)."""
    ndim = buf[3]
    header = 4 + 4 * ndim
    if len(buf) < header:
        raise DataError(f"{path}: truncated IDX file: the header of {ndim} dimensions is cut off")
    dims = struct.unpack(f">{ndim}I", buf[4:header])
    dt = np.dtype(_IDX_TYPES[buf[2]])
    count = math.prod(dims)
    need, have = count * dt.itemsize, len(buf) - header
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
    return np.frombuffer(buf, dtype=dt, count=count, offset=header).reshape(dims)


def _read_idx(path: str, gz: bool) -> np.ndarray:
    """The array in an IDX file, gzipped or not."""
    return _parse_idx(_gunzip(path) if gz else _read_bytes(path), path)
