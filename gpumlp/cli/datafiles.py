"""Data files for the ``gpumlp`` command, read into a :class:`Table`.

A .csv (header optional, sniffed from its first rows; ``--target`` names the label column by
header name or number, default the last), an .npz (arrays ``X`` and ``y``), an .npy (one 2-D
array, target in ``--target`` or the last column) or a built-in dataset name. Every problem
with the file is a :class:`~gpumlp.cli.errors.CLIError` that names the file, the line and the
column.
"""

from __future__ import annotations

import csv
import itertools
import os
import re
import warnings
from typing import Any

import numpy as np

from ..data import DATASETS, load_dataset
from .errors import CLIError

HEADER_SAMPLE_ROWS = 1000  # rows of a CSV read to decide whether its first row is a header

NAMES_SHOWN = 10  # column names listed in a message before "... and N more"
# Target cells that mean "no value" in spreadsheets, R and pandas exports: a missing label, not a class.
MISSING_MARKERS = frozenset({"na", "n/a", "#n/a", "nan", "-nan", "null", "none", "missing", "?"})


class Table:
    """Features X (float64), target y (or None), and the names read from the source.

    Attributes
    ----------
    X : numpy.ndarray
        The feature columns, shape (samples, features), float64.
    y : numpy.ndarray or None
        The target column: floats when every value is a number, else strings; None when the
        source has no target.
    features : list of str or None
        The feature column names from a CSV header; None without one.
    target : str or None
        The target column's name (a CSV header name, ``"y"`` for an .npz, ``"target"`` for a
        built-in dataset); None when unnamed.
    target_written : {"text", "integers", "decimals"} or None
        How a CSV writes the target's values (``54.0`` is decimals); None: judge by the array's dtype.
    """

    def __init__(self, X: np.ndarray, y: np.ndarray | None, features: list[str] | None, target: str | None) -> None:
        self.X, self.y, self.features, self.target = X, y, features, target
        self.target_written: str | None = None


def _written(values: np.ndarray) -> str:
    """How CSV cells are written: "text" unless all are numbers; "decimals" when one has a point or exponent."""
    if not all(_is_number(v) for v in values):
        return "text"
    if any(("." in v or "e" in v.lower() or "n" in v.lower()) for v in values):
        return "decimals"
    return "integers"


def sniff_delimiter(path: str, delimiter: str | None) -> str:
    """The CSV field delimiter: ``delimiter`` if given, else sniffed from the file's start (default ",").

    Parameters
    ----------
    path : str
        The CSV file.
    delimiter : str, optional
        ``--delimiter``: one character, or "tab".

    Returns
    -------
    str
        One character; csv.Sniffer chooses among ``,``, ``;``, tab and ``|``.

    Raises
    ------
    CLIError
        For a delimiter that is not one character.
    """
    if delimiter is not None:
        delimiter = "\t" if delimiter.lower() in ("tab", "\\t") else delimiter
        if len(delimiter) != 1 or delimiter in '"\r\n':
            raise CLIError(f"--delimiter must be one character (or 'tab'); got {delimiter!r}")
        return delimiter
    with open(path, newline="", encoding="utf-8-sig") as f:
        sample = f.read(65536)
    lines = sample.splitlines()
    sample = "\n".join(lines[:-1] if len(lines) > 1 and not sample.endswith(("\n", "\r")) else lines)
    try:
        return csv.Sniffer().sniff(sample, delimiters=",;\t|").delimiter
    except csv.Error:
        return ","


def _drop_columns(drop: list[str], header: list[str] | None, n_cols: int, path: str) -> set[int]:
    """The column indices ``--drop`` names (header names or numbers)."""
    return {_column_index(spec, header, n_cols, path, flag="--drop") for spec in drop}


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _name_list(names: list[str]) -> str:
    """``names`` joined by commas, at most NAMES_SHOWN of them, then "... and N more"."""
    more = f" ... and {len(names) - NAMES_SHOWN} more" if len(names) > NAMES_SHOWN else ""
    return ", ".join(names[:NAMES_SHOWN]) + more


def _column_index(spec: str, header: list[str] | None, n_cols: int, path: str, flag: str = "--target") -> int:
    """Column ``spec`` (a header name or an integer index, negative from the end) as an index."""
    if header is not None and spec in header:
        return header.index(spec)
    try:
        index = int(spec)
    except ValueError:
        names = (
            f"; columns are {_name_list(header)}" if header else " (the file has no header row; use a column number)"
        )
        raise CLIError(f"{path}: {flag}: no column named {spec!r}{names}") from None
    if not -n_cols <= index < n_cols:
        raise CLIError(f"{path}: column {index} is out of range; the file has {n_cols} columns")
    return index % n_cols


def _loadtxt(
    path: str, skip: int, cols: list[int], header: list[str] | None, dtype: Any, delimiter: str = ","
) -> np.ndarray:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "input contained no data": the caller says so
            return np.loadtxt(
                path,
                delimiter=delimiter,
                skiprows=skip,
                usecols=cols,
                dtype=dtype,
                quotechar='"',
                ndmin=2,
                encoding="utf-8-sig",
            )
    except ValueError as exc:
        m = re.search(r"could not convert string '(.*)' to \w+ at row (\d+), column (\d+)", str(exc))
        if m is None:
            raise CLIError(f"{path}: {exc}") from None
        col = int(m.group(3)) - 1  # NumPy counts the file's columns from 1, whatever usecols is
        name = f"{header[col]!r} (column {col})" if header else f"column {col}"
        if not m.group(1):
            raise CLIError(
                f"{path}: line {int(m.group(2)) + 1 + skip}: {name} is empty (a missing value); "
                "fill it in or drop the row"
            ) from None
        raise CLIError(
            f"{path}: line {int(m.group(2)) + 1 + skip}: {name} has the non-numeric value {m.group(1)!r}; "
            f"feature columns must be numbers (if it is the target, pass --target {header[col] if header else col})"
        ) from None


def _check_header(path: str, header: list[str]) -> None:
    """Column names must be unique: a duplicate would make picking columns by name ambiguous."""
    seen: dict[str, int] = {}
    for i, name in enumerate(header):
        if name in seen:
            raise CLIError(
                f"{path}: the header names column {name!r} twice (columns {seen[name]} and {i}); "
                "column names must be unique: rename one"
            )
        seen[name] = i


def _check_row_lengths(path: str, n_cols: int, header: bool, sep: str = ",") -> None:
    """Every non-blank row has ``n_cols`` cells; else a CLIError naming the first bad line.

    Without quotes in the file, cells are counted by delimiters per line (fast); with quotes, by the
    csv module (a quoted cell may hold commas and line breaks)."""
    with open(path, "rb") as f:
        data = f.read()
    if b'"' not in data:
        delim = sep.encode()
        for number, line in enumerate(data.split(b"\n"), start=1):
            if line.count(delim) != n_cols - 1 and line.strip():  # blank lines are skipped, as np.loadtxt does
                _ragged(path, number, line.count(delim) + 1, n_cols, header)
        return
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f, delimiter=sep)
        for row in reader:
            if row and len(row) != n_cols:
                _ragged(path, reader.line_num, len(row), n_cols, header)


def _ragged(path: str, line: int, cells: int, n_cols: int, header: bool) -> None:
    kind = "an extra cell" if cells > n_cols else "a missing cell"
    raise CLIError(
        f"{path}: line {line} has {cells} cells, but the {'header' if header else 'first row'} has {n_cols} "
        f"({kind}: a stray comma or a cut row?)"
    )


def _check_target_values(path: str, y: np.ndarray, name: str, skip: int) -> np.ndarray:
    """Training targets: no empty cell or missing-value marker ("NA", "NaN", "null", ...), finite numbers."""
    missing = np.flatnonzero(np.isin(np.char.lower(y), ["", *MISSING_MARKERS]))
    if missing.size:
        value = f"the missing-value marker {str(y[missing[0]])!r}" if y[missing[0]] else "empty (a missing value)"
        raise CLIError(
            f"{path}: line {missing[0] + 1 + skip}: the target {name} is {value}; fill it in or drop the row "
            f"({missing.size} such row{'s' if missing.size > 1 else ''})"
        )
    if not all(_is_number(v) for v in y[: min(len(y), 1000)]):
        return y
    try:
        values = y.astype(np.float64)
    except ValueError:
        return y  # text labels after numeric-looking ones: classes
    bad = np.flatnonzero(~np.isfinite(values))
    if bad.size:
        line = bad[0] + 1 + skip
        raise CLIError(f"{path}: line {line}: the target {name} is {str(y[bad[0]])!r}; expected a finite number")
    return values


def _read_csv(
    path: str,
    target: str | None,
    want_target: bool,
    known_target: str | None,
    drop: list[str] | None = None,
    delimiter: str | None = None,
) -> Table:
    sep = sniff_delimiter(path, delimiter)
    with open(path, newline="", encoding="utf-8-sig") as f:  # -sig: drop the BOM spreadsheets write
        rows = [[c.strip() for c in row] for row in itertools.islice(csv.reader(f, delimiter=sep), HEADER_SAMPLE_ROWS)]
    if not rows or not rows[0]:
        raise CLIError(f"{path}: the file is empty")
    first = rows[0]
    # The first row is a header when a text cell in it is not among its column's values below; a
    # text label that recurs ("setosa" in a headerless file) is data.
    below = [{row[i] for row in rows[1:] if i < len(row)} for i in range(len(first))]
    header = first if any(c and not _is_number(c) and c not in below[i] for i, c in enumerate(first)) else None
    n_cols = len(first)
    if header is not None:
        _check_header(path, header)
    _check_row_lengths(path, n_cols, header is not None, sep)
    t = None
    if target is not None:
        t = _column_index(target, header, n_cols, path)
    elif header and known_target in header:
        t = header.index(known_target)
    elif want_target:
        t = n_cols - 1
    dropped = _drop_columns(drop or [], header, n_cols, path)
    if t is not None and t in dropped:
        raise CLIError(f"{path}: --drop names the target column {header[t] if header else t!r}")
    feature_cols = [i for i in range(n_cols) if i != t and i not in dropped]
    if not feature_cols:
        raise CLIError(f"{path}: no feature columns left besides the target column")
    skip = 1 if header else 0
    X = _loadtxt(path, skip, feature_cols, header, np.float64, sep)
    if X.shape[0] == 0:
        raise CLIError(f"{path}: no data rows")
    y = None
    if t is not None:
        y = _loadtxt(path, skip, [t], header, str, sep)[:, 0]
        y = np.char.strip(y)
        written = _written(y)
        if want_target:  # predict drops the column whatever it holds
            y = _check_target_values(path, y, f"{header[t]!r} (column {t})" if header else f"column {t}", skip)
        elif written != "text":
            y = y.astype(np.float64)
    features = [header[i] for i in feature_cols] if header else None
    table = Table(X, y, features, header[t] if header and t is not None else None)
    table.target_written = None if t is None else written
    return table


def _read_npz(path: str, want_target: bool) -> Table:
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except (OSError, ValueError) as exc:
        raise CLIError(f"{path}: not a readable .npz file ({exc})") from None
    keys = {k.lower(): k for k in arrays}
    if "x" not in keys:
        if len(arrays) == 1 and not want_target:
            return Table(np.asarray(next(iter(arrays.values())), dtype=np.float64), None, None, None)
        raise CLIError(f"{path}: expected arrays named 'X' and 'y'; the file holds {sorted(arrays)}")
    y = arrays[keys["y"]] if "y" in keys else None
    if want_target and y is None:
        raise CLIError(f"{path}: no target array 'y' (the file holds {sorted(arrays)})")
    return Table(np.asarray(arrays[keys["x"]], dtype=np.float64), y, None, "y" if y is not None else None)


def _read_npy(path: str, target: str | None, want_target: bool) -> Table:
    try:
        data = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise CLIError(f"{path}: not a readable .npy file ({exc})") from None
    if data.ndim != 2:
        raise CLIError(f"{path}: expected a 2-D array (samples x columns); got shape {data.shape}")
    t = None
    if target is not None:
        t = _column_index(target, None, data.shape[1], path)
    elif want_target:
        t = data.shape[1] - 1
    cols = [i for i in range(data.shape[1]) if i != t]
    if not cols:
        raise CLIError(f"{path}: no feature columns left besides the target column")
    return Table(np.asarray(data[:, cols], dtype=np.float64), None if t is None else data[:, t], None, None)


def read_data(
    source: str,
    target: str | None = None,
    want_target: bool = True,
    known_target: str | None = None,
    drop: list[str] | None = None,
    delimiter: str | None = None,
) -> Table:
    """Load ``source`` (.csv / .npz / .npy path or a built-in dataset name) as a :class:`Table`.

    The target is column ``target`` if given, else a CSV column named ``known_target`` (the
    training target) if there is one, else the last column when ``want_target``.

    Parameters
    ----------
    source : str
        A .csv, .npz or .npy file, or the name of a built-in dataset (:data:`gpumlp.data.DATASETS`).
    target : str, optional
        The target column: a CSV header name or a column number (negative counts from the end).
    want_target : bool
        True when the command needs targets (train, evaluate): without ``target`` the last column
        is taken, and a missing target value is an error. False for predict, which only drops the
        target column when one is named or found.
    known_target : str, optional
        The training target's name, stored in the model: a CSV column of that name is the target.
    drop : list of str, optional
        ``--drop``: CSV columns (names or numbers) to leave out, such as ID columns.
    delimiter : str, optional
        ``--delimiter``: the CSV field separator; default: sniffed (``,``, ``;``, tab or ``|``).

    Returns
    -------
    Table
        Finite float64 features with at least one row, and as many targets as rows (or none).

    Raises
    ------
    CLIError
        For a missing or unreadable file, an unsupported file type, an unknown or out-of-range
        column, a non-numeric, missing or non-finite feature value, or a missing target value.
    """
    if not os.path.exists(source):
        if source in DATASETS:
            X, y = load_dataset(source)
            return Table(np.asarray(X, dtype=np.float64), y, None, "target")
        raise CLIError(f"no such file: {source!r} (nor a built-in dataset: {', '.join(DATASETS)})")
    if os.path.isdir(source):
        raise CLIError(f"{source!r} is a directory, not a data file")
    ext = os.path.splitext(source)[1].lower()
    if ext != ".csv" and (drop or delimiter is not None):
        raise CLIError(f"{source!r}: --drop and --delimiter apply to .csv files")
    if ext == ".csv":
        try:
            table = _read_csv(source, target, want_target, known_target, drop, delimiter)
        except UnicodeDecodeError as exc:
            raise CLIError(f"{source}: not UTF-8 text ({exc}); save the CSV as UTF-8") from None
    elif ext == ".npz":
        table = _read_npz(source, want_target)
    elif ext == ".npy":
        table = _read_npy(source, target, want_target)
    else:
        raise CLIError(f"{source!r}: unsupported data file type {ext or '(none)'!r}; use .csv, .npz or .npy")
    if table.X.ndim != 2 or table.X.shape[0] == 0:
        raise CLIError(f"{source}: expected a non-empty 2-D feature array; got shape {table.X.shape}")
    if not np.isfinite(table.X).all():
        raise CLIError(f"{source}: the features contain missing, NaN or infinite values")
    if table.y is not None and len(table.y) != table.X.shape[0]:
        raise CLIError(f"{source}: {table.X.shape[0]} feature rows but {len(table.y)} targets")
    return table
