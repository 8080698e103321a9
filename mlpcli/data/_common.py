"""Helpers every part of the data package shares: messages that list or suggest names, the
row blocks that keep temporaries small, casts and generated feature names, and reading a
file: only a regular one, its bytes (gunzipped or not) in chunks and never past what its
header promises or memory allows, with the DataError its faults deserve.
"""

from __future__ import annotations

import gzip
import io
import os
import stat
import zlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, BinaryIO

import numpy as np

from mlpcli import memory
from mlpcli.errors import DataError, closest

_CHUNK_BYTES = 1 << 24  # row blocks of ~16 MB keep temporaries small on large arrays
_READ_BYTES = 1 << 20  # bytes read (or inflated) at a time into a preallocated array
_MARGIN = 8  # a read bounded by memory leaves 1/8 of what is free to the rest of the program
_SLACK = 1 << 20  # inflated past a header's promise to tell trailing bytes from a bomb


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


def _shape_text(shape: Sequence[int]) -> str:
    """'60000 x 784' for a shape."""
    return " x ".join(map(str, shape)) if len(shape) else "1"


# Reading files -----------------------------------------------------------------------------

_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a named pipe (FIFO)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def _kind(mode: int) -> str:
    """'' for a regular file, else what it is ('a directory', 'a socket', ...)."""
    if stat.S_ISREG(mode):
        return ""
    return next((name for test, name in _KINDS if test(mode)), "something other than a file")


def _not_regular(path: str) -> str:
    """What `path` is when it exists and is not a regular file (through symlinks), else ''."""
    try:
        return _kind(os.stat(path).st_mode)
    except OSError:
        return ""  # missing or unreadable: opening it names the fault


def _nonblocking(path: str, flags: int) -> int:
    return os.open(path, flags | os.O_NONBLOCK)  # a FIFO swapped in can never block


def _open_file(path: str) -> BinaryIO:
    """A data file opened for reading: a regular file, else a DataError (never a hang)."""
    kind = _not_regular(path)
    if not kind:
        try:
            f = open(path, "rb", opener=_nonblocking)  # noqa: SIM115 (the caller closes it)
        except OSError as e:
            raise DataError(f"{path}: cannot read: {e.strerror or e}") from None
        kind = _kind(os.fstat(f.fileno()).st_mode)  # what was opened, not what was stat-ed
        if not kind:
            return f
        f.close()
    raise DataError(f"{path} is {kind}, not a data file")


class _Bounded(io.RawIOBase):
    """A data file's bytes (inflated when `gz`), read in chunks: a DataError as soon as more
    come out than memory allows (`cost` bytes of memory per byte read) or, once `promise`
    is called, than a header promises. The one way data files are read whole.
    """

    def __init__(self, path: str, gz: bool, cost: int = 1):
        self.path, self.gz, self.count = path, gz, 0
        self.file = _open_file(path)
        self._src = gzip.GzipFile(fileobj=self.file) if gz else self.file
        self.free = memory.available_bytes()
        self.budget = self.free - self.free // _MARGIN  # bytes of memory this read may take
        self.limit, self._promised = self.budget // cost, None

    def promise(self, nbytes: int) -> None:
        """The data's size per its header: a few more bytes (_SLACK) at most are read."""
        self.limit, self._promised = nbytes + _SLACK, nbytes

    def over(self, what: str) -> DataError:
        return DataError(f"{what}, more than memory allows ({memory.size_text(self.free)} free)")

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        n = self._src.readinto(b)
        self.count += n
        if self.count > self.limit:
            verb = "inflates past" if self.gz else "is larger than"
            if self._promised is not None:
                raise DataError(
                    f"{self.path}: {verb} {self._promised} bytes, more than its header promises"
                )
            raise self.over(f"{self.path}: {verb} {memory.size_text(self.limit)}")
        return n

    def close(self) -> None:
        if not self.closed:
            if self.gz:
                self._src.close()
            self.file.close()
        super().close()


@contextmanager
def _reading(path: str, gz: bool) -> Iterator[None]:
    """Faults met reading a data file as DataErrors: a damaged gzip stream, an OS error."""
    try:
        yield
    except (OSError, EOFError, zlib.error) as e:
        if gz:
            raise DataError(f"{path}: corrupted gzip data ({e})") from None
        raise DataError(f"{path}: cannot read: {getattr(e, 'strerror', None) or e}") from None


def _read_into(f: Any, out: np.ndarray) -> int:
    """Fill the uint8 array `out` from stream `f` chunk by chunk: the bytes read (fewer at
    the end of the data)."""
    view, done = memoryview(out), 0
    while done < len(out):
        n = f.readinto(view[done : done + _READ_BYTES])
        if not n:
            break
        done += n
    return done


def _take(f: Any, size: int) -> bytes:
    """Up to `size` bytes of stream `f` (fewer only at its end)."""
    out = np.empty(size, dtype=np.uint8)
    return out[: _read_into(f, out)].tobytes()


def _drain(f: _Bounded) -> int:
    """The bytes left in a stream after what its header promised (a few at most)."""
    scratch, extra = bytearray(1 << 16), 0
    while n := f.readinto(scratch):
        extra += n
    return extra


def _read_all(f: _Bounded) -> io.BytesIO:
    """All of a stream (bounded by what memory allows), as an in-memory file."""
    out, chunk = io.BytesIO(), bytearray(_READ_BYTES)
    view = memoryview(chunk)
    while n := f.readinto(chunk):
        out.write(view[:n])
    out.seek(0)
    return out


def _read_bytes(path: str, size: int) -> bytes:
    """The first `size` bytes of a file."""
    with _reading(path, False), _open_file(path) as f:
        return f.read(size)


def _gunzip(path: str, size: int) -> bytes:
    """The first `size` decompressed bytes of a gzip file."""
    with _reading(path, True), _Bounded(path, True) as f:
        return _take(f, size)
