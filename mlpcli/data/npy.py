"""The .npy format, trusting nothing a file says: its header read within bounds, the size it
claims checked against the bytes there are and the memory free before anything is
allocated, and its data read in chunks into a new array (a gzipped file is never inflated
much past the size its header gives). Used for .npy files and for the members of .npz ones.
"""

from __future__ import annotations

import io
import math
from typing import Any, NamedTuple

import numpy as np

from mlpcli import memory
from mlpcli.data._common import _Bounded, _drain, _read_into, _shape_text, _take
from mlpcli.errors import DataError

_MAX_HEADER = 1 << 16  # bytes; numpy itself refuses headers of over 10 000 characters


class _Header(NamedTuple):
    """What a .npy header says."""

    shape: tuple[int, ...]
    fortran: bool
    dtype: np.dtype
    offset: int  # bytes before the data

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * self.dtype.itemsize

    def text(self) -> str:
        return f"{_shape_text(self.shape)} {self.dtype.name}"


def _header(f: Any) -> _Header:
    """The header at the start of stream `f`, its length field checked before it is read.

    ValueError when it is damaged; pickled (object) arrays say "allow_pickle" as numpy does.
    """
    magic = _take(f, 8)
    major, _ = np.lib.format.read_magic(io.BytesIO(magic))  # 1, 2 or 3, else ValueError
    width = 2 if major == 1 else 4
    field = _take(f, width)
    length = int.from_bytes(field, "little")
    if len(field) < width or length > _MAX_HEADER:
        raise ValueError(f"the array header's length field is damaged ({field.hex()})")
    text = _take(f, length)
    if len(text) < length:
        raise ValueError(f"EOF: reading array header, expected {length} bytes got {len(text)}")
    read = (
        np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
    )
    shape, fortran, dtype = read(io.BytesIO(field + text))
    if any(n < 0 for n in shape):
        raise ValueError(f"negative dimensions in shape {shape}")
    if dtype.hasobject:
        raise ValueError("Object arrays cannot be loaded when allow_pickle=False")
    return _Header(tuple(shape), fortran, dtype, 8 + width + length)


def _can_map(h: _Header, dtype: np.dtype | None) -> bool:
    """Whether the data is a non-empty C-order array of `dtype`, which a memory map can serve."""
    return h.dtype == dtype and not h.fortran and len(h.shape) >= 1 and math.prod(h.shape) > 0


def _check_holds(h: _Header, have: int, path: str, what: str, holds: str) -> None:
    """DataError when the `have` bytes after the header are fewer than it claims."""
    if h.nbytes > have:
        raise DataError(
            f"{path}: {what} cannot be read (truncated: its header says {h.text()}, "
            f"{h.nbytes} bytes; {holds} {have})"
        )


def _read_data(
    f: Any, h: _Header, path: str, what: str, where: str, cast: np.dtype | None, holds: str
) -> np.ndarray:
    """The data after header `h` in stream `f`, as a new array.

    `what` names it in messages ("the .npy array", "array 'x'"), `where` is the file (and
    key) it came from, `holds` says where the bytes ran out ("the file holds"); `cast`: the
    dtype of the copy that will follow, if any, counted in the memory it needs.
    """
    copy = 0
    if cast is not None and (cast != h.dtype or h.fortran):
        copy = math.prod(h.shape) * cast.itemsize
    memory.require(h.nbytes + copy, f"{where}: {h.text()}", DataError)
    if isinstance(f, _Bounded):
        f.promise(h.offset + h.nbytes)
    arr = np.empty(h.shape, dtype=h.dtype, order="F" if h.fortran else "C")
    have = _read_into(f, arr.reshape(-1, order="A").view(np.uint8))  # a view in memory order
    _check_holds(h, have, path, what, holds)
    if isinstance(f, _Bounded) and f.gz:
        _drain(f)  # to the end of the stream, checking it; trailing bytes are ignored as numpy does
    return arr
