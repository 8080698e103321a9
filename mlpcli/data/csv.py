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

from mlpcli import memory
from mlpcli.data._common import _Bounded, _close, _generated_names, _listing, _whole_to_int
from mlpcli.data.dataset import NUMERIC, _Columns, _Raw, _Request, _Tabular
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


# Cells that stand for a missing value in a numeric column (compared case-insensitively).
# In a categorical column only an empty cell is missing: "NA" may be a name (Namibia).
MISSING_MARKERS = frozenset({"", "na", "n/a", "nan", "null"})


def _numbers(
    table: _Table,
    name: str,
    missing: bool = False,
    parsed: np.ndarray | None = None,
    hints: tuple[str, str] = ("", ""),
) -> np.ndarray:
    """A column as float64 numbers, NaN where a cell is missing when `missing` allows it
    (else that cell is an error); `parsed`: the column already parsed, when it could be.
    The faulty cells are searched only on failure; `hints` follow the message of a missing
    and of a text cell."""
    cells = table.column(name)
    a = parsed
    if a is None:
        try:
            a = np.array(cells, dtype=np.float64)
        except ValueError:
            a = None
    if a is not None and np.isfinite(a).all():
        return a
    out = np.empty(len(cells))
    for i, cell in enumerate(cells):
        text = cell.strip()
        if text.lower() in MISSING_MARKERS:
            if missing:
                out[i] = np.nan
                continue
            problem = "empty cell" if not text else f"not a finite number: {text!r}"
            raise table.cell_error(i, name, problem + hints[0])
        try:
            out[i] = float(text)
        except ValueError:
            raise table.cell_error(i, name, f"not a number: {text!r}{hints[1]}") from None
        if not np.isfinite(out[i]):
            raise table.cell_error(i, name, f"not a finite number: {text!r}")
    return out


def _holds_no_number(table: _Table, name: str) -> bool:
    """Whether no cell of a column that did not parse as numbers is a number (so it is
    categorical); a column mixing numbers and text is an error naming its first text cell."""
    cells = table.column(name)
    number = text = None
    for i, cell in enumerate(cells):
        value = cell.strip()
        if value.lower() in MISSING_MARKERS:
            continue
        try:
            float(value)
        except ValueError:
            text = i if text is None else text
        else:
            number = i if number is None else number
        if number is not None and text is not None:
            raise table.cell_error(
                text,
                name,
                f"not a number: {cells[text].strip()!r}, in a column of numbers (line "
                f"{table.lines[number]}: {cells[number].strip()!r}); list {name!r} under "
                "data.categorical to read every cell of it as a category",
            )
    return number is None


def _categories(table: _Table, name: str) -> np.ndarray:
    """A categorical column: its stripped cells as a str array, "" where a cell is empty."""
    cells = [cell.strip() for cell in table.column(name)]
    width = max(map(len, cells))
    memory.require(
        len(cells) * max(width, 1) * 4,
        f"{table.path}, column {name!r}: {len(cells)} categories of up to {width} characters",
        DataError,
    )
    return np.array(cells, dtype=f"<U{max(width, 1)}")


def _feature_column(table: _Table, name: str, tab: _Tabular) -> np.ndarray:
    """One feature column as `tab` reads it: float64 numbers (NaN where missing) or, for a
    categorical column, str cells."""
    auto = tab.categorical == "auto"
    if not auto and name in tab.categorical:
        return _categories(table, name)
    try:
        parsed = np.array(table.column(name), dtype=np.float64)
    except ValueError:
        parsed = None
        if auto and _holds_no_number(table, name):
            return _categories(table, name)
    hints = ("", "")
    if not tab.fitted:  # reading training data: the config can change how
        hints = (
            " (data.missing: mean, median or zero fills such cells)",
            f" (list {name!r} under data.categorical if it holds categories)",
        )
    return _numbers(table, name, tab.missing != "error", parsed, hints)


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


def _csv_features(
    table: _Table, names: list[str], dtype: np.dtype, tab: _Tabular = NUMERIC
) -> np.ndarray | _Columns:
    """The feature columns `names`: an (n, d) array when every one is numeric and complete,
    else the columns for an encoding to turn into numbers."""
    if tab.missing == "error":  # numbers straight into x, until a column is categorical
        x = np.empty((len(table.lines), len(names)), dtype=dtype)
        for j, name in enumerate(names):
            column = _feature_column(table, name, tab)
            if column.dtype.kind != "f":
                break
            x[:, j] = column
        else:
            return x
        del x
    return _Columns(list(names), [_feature_column(table, name, tab) for name in names])


def _check_categorical(table: _Table, names: list[str], targets: list[str], tab: _Tabular):
    """Each column `data.categorical` lists is a feature column of the table."""
    if tab.categorical == "auto":
        return
    for name in tab.categorical:
        if name in names:
            continue
        if name in targets:
            why = "is the target"
        elif name in table.header:
            why = "is not among data.features"
        else:
            why = f"is not a column{_close(name, table.header)}"
        raise DataError(f"data.categorical: {name!r} of {table.path} {why}")


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
    _check_categorical(table, names, targets, req.tabular)
    x = _csv_features(table, names, req.dtype, req.tabular)
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


def _load_csv_features(
    path, fmt, gz, feature_names: list[str] | None, dtype, tab: _Tabular = NUMERIC
) -> np.ndarray | _Columns:
    """Features of a CSV file, its columns chosen as `load_features` says: (n, d) numbers, or
    the columns for the model's encoding."""
    table = _read_csv(path, gz)
    names = feature_names
    if names is not None and not all(n in table.header for n in names):
        generated = list(names) == _generated_names(len(names))
        if generated and len(table.header) == len(names):
            names = None
        else:
            missing = next(n for n in names if n not in table.header)
            raise table.missing(missing, ", a feature of the model")
    return _csv_features(table, list(names) if names is not None else table.header, dtype, tab)
