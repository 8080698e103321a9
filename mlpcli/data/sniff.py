"""Recognising a data file's format: CSV by its name (.csv, .csv.gz); gzip, .npy, .npz and
IDX by their magic bytes. A file that is none of them gets a DataError listing `FORMATS`.
"""

from __future__ import annotations

import os

from mlpcli.data._common import _gunzip, _read_bytes
from mlpcli.data.idx import _is_idx
from mlpcli.errors import DataError

FORMATS = ".csv, .csv.gz, .npz, .npy, or an IDX (MNIST) file; .npz, .npy and IDX may be gzipped"


def _sniff(path: str) -> tuple[str, bool]:
    """(format, gzipped) of a file: "csv" by name; gzip, npy, npz and IDX by magic bytes."""
    head = _read_bytes(path, 8)
    gz = head[:2] == b"\x1f\x8b"
    name = os.path.basename(path).lower()
    if name.endswith((".csv", ".csv.gz")):
        return "csv", gz
    if gz:
        head = _gunzip(path, 8)
    if head.startswith(b"\x93NUMPY"):
        return "npy", gz
    if head.startswith(b"PK"):
        return "npz", gz
    if _is_idx(head):
        return "idx", gz
    if not head:
        raise DataError(f"{path}: empty file")
    stem = name[:-3] if name.endswith(".gz") else name
    if stem.endswith(".npy"):
        raise DataError(f"{path}: not a .npy file (no NumPy header)")
    if stem.endswith(".npz"):
        raise DataError(f"{path}: not an .npz file (not a zip archive)")
    raise DataError(f"{path}: unknown file format; expected {FORMATS}")
