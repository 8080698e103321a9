"""CSV files: reading one (gzipped or not) into a table of text cells with their line
numbers, numeric and class columns, the choice of feature columns by name, and the two
readers load.py dispatches to: labeled samples (`_load_csv`) and features only.
"""

from __future__ import annotations

import csv
import io
import zlib
from dataclasses import dataclass
from typing import Any

import numpy as np

from mlpcli.data._common import _Bounded, _close, _generated_names, _listing, _whole_to_int
from mlpcli.data.dataset import _Raw, _Request
from mlpcli.errors import DataError

# Memory a CSV file takes as a table of Python strings, about (CPython 3.11, measured on
# numbers, zeros, wide and one-column files): per byte of text and per row (its list, its
# line number). Reading stops before the estimate passes what memory allows.
_TEXT_COST = 10
_ROW_COST = 220
_CHECK_ROWS = 1 << 14  # rows between checks of the estimate


@dataclass
class _Table:
    """A CSV file read as text: header, rows and their 1-based line numbers."""

    path: str
    header: list[str]
    header_line: int
    columns: list[tuple[str, ...]]  # one tuple of cells per column
    lines: list[int]  # line of each row (rows can span lines inside quotes)

    def column(self, name: str) -> tuple[str, ...]:
        return self.columns[self.header.index(name)]

    def cell_error(self, row: int, name: str, problem: str) -> DataError:
        return DataError(f"{self.path} line {self.lines[row]}, column {name!r}: {problem}")

    def missing(self, name: str, why: str) -> DataError:
        """No column `name`; `why` follows the name (" (data.target)")."""
        return DataError(
            f"{self.path} line {self.header_line}: has no column {name!r}{why}; "
            f"columns are: {_listing(self.header, 50)}{_close(name, self.header)}"
        )


def _read_csv(path: str, gz: bool) -> _Table:
    """Header and rows of a CSV file (gzipped when its magic bytes say so)."""
    rows: list[list[str]] = []
    lines: list[int] = []
    header: list[str] | None = None
    header_line = 1
    reader = None
    try:
        # bytes (inflated when gzipped) come in chunks, never more than memory allows
        with (
            _Bounded(path, gz, _TEXT_COST) as raw,
            io.TextIOWrapper(io.BufferedReader(raw), encoding="utf-8-sig", newline="") as f,
        ):
            reader = csv.reader(f, skipinitialspace=True)
            for row in reader:
                if not row or (len(row) == 1 and not row[0].strip()):
                    continue  # blank line
                if header is None:
                    header, header_line = row, reader.line_num
                    continue
                rows.append(row)
                lines.append(reader.line_num)
                n = len(rows)
                if n % _CHECK_ROWS == 0 and n * _ROW_COST + raw.count * _TEXT_COST > raw.budget:
                    raise raw.over(f"{path} line {reader.line_num}: {n} rows so far")
    except UnicodeDecodeError:
        raise DataError(f"{path}: not UTF-8 text") from None
    except csv.Error as e:
        line = reader.line_num if reader is not None else 1
        raise DataError(f"{path} line {line}: {e}") from None
    except (OSError, EOFError, zlib.error) as e:
        raise DataError(f"{path}: cannot read: {getattr(e, 'strerror', None) or e}") from None
    if header is None:
        raise DataError(f"{path}: empty file (a CSV file needs a header row)")
    header = [name.strip() for name in header]
    for j, name in enumerate(header):
        if not name:
            raise DataError(f"{path} line {header_line}: column {j + 1} has no name")
        if name in header[:j]:
            raise DataError(f"{path} line {header_line}: column {name!r} appears twice")
    if not rows:
        raise DataError(f"{path}: no data rows after the header (line {header_line})")
    width = len(header)
    for row, line in zip(rows, lines, strict=True):
        if len(row) != width:
            raise DataError(
                f"{path} line {line}: {len(row)} fields, the header (line {header_line}) "
                f"has {width}"
            )
    return _Table(path, header, header_line, list(zip(*rows, strict=True)), lines)


def _numbers(table: _Table, name: str) -> np.ndarray:
    """A column as finite float64 numbers; the faulty cell is searched only on failure."""
    cells = table.column(name)
    try:
        a = np.array(cells, dtype=np.float64)
    except ValueError as e:
        for i, cell in enumerate(cells):
            if not cell.strip():
                raise table.cell_error(i, name, "empty cell") from None
            try:
                float(cell)
            except ValueError:
                raise table.cell_error(i, name, f"not a number: {cell!r}") from None
        raise DataError(f"{table.path}, column {name!r}: {e}") from None
    bad = ~np.isfinite(a)
    if bad.any():
        i = int(np.argmax(bad))
        raise table.cell_error(i, name, f"not a finite number: {cells[i].strip()!r}")
    return a


def _class_cells(table: _Table, name: str) -> np.ndarray:
    """A label column: numbers (int64 when whole) if every cell is one, else strings."""
    cells = table.column(name)
    try:
        a = np.array(cells, dtype=np.float64)
    except ValueError:
        labels = [cell.strip() for cell in cells]
        if "" in labels:
            raise table.cell_error(labels.index(""), name, "empty cell") from None
        return np.array(labels, dtype=str)
    bad = ~np.isfinite(a)
    if bad.any():
        i = int(np.argmax(bad))
        raise table.cell_error(i, name, f"label {cells[i].strip()!r} is not a class")
    return _whole_to_int(a)


def _select_features(table: _Table, wanted: list[str] | None, exclude: list[str], key: str):
    """Feature column names: `wanted` (each must exist), or all columns not in `exclude`."""
    if wanted is None:
        names = [h for h in table.header if h not in exclude]
        if not names:
            raise DataError(
                f"{table.path} line {table.header_line}: no feature columns besides "
                f"the target ({_listing(exclude)})"
            )
        return names
    for name in wanted:
        if name not in table.header:
            raise table.missing(name, f" ({key})")
        if name in exclude:
            raise DataError(f"{key}: column {name!r} of {table.path} is also the target")
    return wanted


def _csv_features(table: _Table, names: list[str], dtype: np.dtype) -> np.ndarray:
    x = np.empty((len(table.lines), len(names)), dtype=dtype)
    for j, name in enumerate(names):
        x[:, j] = _numbers(table, name)
    return x


def _names(value: Any, key: str, config_file: str) -> list[str] | None:
    """A column list from a config value: None, a name, or a list of names."""
    if value is None:
        return None
    if isinstance(value, str):
        return [value]
    if isinstance(value, (list, tuple)) and value and all(isinstance(v, str) for v in value):
        return list(value)
    raise DataError(
        f"{key}: must be a column name or a list of names, got {value!r} ({config_file})"
    )


def _load_csv(path, fmt, gz, cfg, req: _Request, key: str, default_features, mmap) -> _Raw:
    """Features and labels of a CSV file; `default_features`: the training columns, if any."""
    table = _read_csv(path, gz)
    config_file = req.config_file
    targets = _names(cfg.get("target"), f"{key}.target", config_file) or ["target"]
    for name in targets:
        if name not in table.header:
            raise table.missing(name, f" ({key}.target)")
    features = _names(cfg.get("features"), f"{key}.features", config_file)
    if features is None and default_features is not None:
        features = [n for n in default_features if n not in targets]  # the training columns
    names = _select_features(table, features, targets, f"{key}.features")
    x = _csv_features(table, names, req.dtype)
    if req.task == "classification":
        if len(targets) != 1:
            raise DataError(
                f"{key}.target: classification takes one target column, got "
                f"{_listing(targets)} ({config_file})"
            )
        y = _class_cells(table, targets[0])
    else:
        y = np.stack([_numbers(table, name) for name in targets], axis=1)  # (n, k)
    return _Raw(x, y, names, path, has_names=True)


def _load_csv_features(path, fmt, gz, feature_names: list[str] | None, dtype) -> np.ndarray:
    """(n, d) features of a CSV file, its columns chosen as `load_features` says."""
    table = _read_csv(path, gz)
    names = feature_names
    if names is not None and not all(n in table.header for n in names):
        generated = list(names) == _generated_names(len(names))
        if generated and len(table.header) == len(names):
            names = None
        else:
            missing = next(n for n in names if n not in table.header)
            raise table.missing(missing, ", a feature of the model")
    return _csv_features(table, list(names) if names is not None else table.header, dtype)
