"""Load a data file (Parquet, CSV, JSONL, JSON or, on request, a pickle) into a pandas DataFrame.

The reader is chosen from the file name. Errors about the file itself (missing, a folder, unknown type, not
readable, empty, invalid JSON, a column named twice) are :class:`~finerouter.errors.DataError` naming the file
and, where there is one, the line or row. Every column must have one name: a repeated header (CSV: pandas would
silently rename the second ``score::X`` to a model ``X.1``; Parquet can store repeats too), two names equal once
stripped of spaces, or a key repeated within one JSON row object (``json`` keeps the last silently) is rejected.
What the columns mean is left to the layout parsers (:mod:`finerouter.data.layouts`).
"""

from __future__ import annotations

import csv
import gzip
import json
import os
from pathlib import Path
from typing import Any

from finerouter.data.checks import check_unique_columns
from finerouter.errors import DataError

PICKLE_SUFFIXES = (".pkl", ".pickle", ".pkl.gz", ".pickle.gz")
FILE_SUFFIXES = (
    ".parquet", ".pq", ".csv", ".csv.gz", ".jsonl", ".jsonl.gz", ".ndjson", ".json", *PICKLE_SUFFIXES,
)


def file_suffix(path: str) -> str:
    """The lower-cased suffix that picks the reader: the longest known one (``.csv.gz``), else the last one."""
    low = path.lower()
    for suffix in sorted(FILE_SUFFIXES, key=len, reverse=True):
        if low.endswith(suffix):
            return suffix
    return Path(low).suffix


def file_stem(path: str) -> str:
    """The file name without the suffix :func:`file_suffix` finds (``data.csv.gz`` -> ``data``)."""
    name = Path(path).name
    suffix = file_suffix(path)
    return name[: -len(suffix)] if suffix and name.lower().endswith(suffix) else Path(path).stem


class _KeyTrackingObject(dict):
    """A parsed JSON object that remembers the first key it held twice (plain ``json`` keeps the last silently)."""

    duplicate: str | None = None


def _json_object(pairs: list[tuple[str, Any]]) -> _KeyTrackingObject:
    obj = _KeyTrackingObject()
    for key, value in pairs:
        if key in obj and obj.duplicate is None:
            obj.duplicate = key
        obj[key] = value
    return obj


def _reject_duplicate_key(path: str, where: str, obj: Any) -> None:
    """DataError when the parsed JSON object ``obj`` held a key twice; ``where`` prefixes the line/row."""
    if isinstance(obj, _KeyTrackingObject) and obj.duplicate is not None:
        raise DataError(f"{path}: {where}duplicate key {obj.duplicate!r}: a row names each column once")


def read_jsonl_records(path: str) -> list[dict[str, Any]]:
    """One dict per non-blank line of a JSON-lines file (gzip when the name ends in ``.gz``).

    Raises:
        DataError: a line is not valid JSON, not an object, or names a key twice (the message gives the line
            and the row, rows counting non-blank lines from 0).
    """
    opener = gzip.open if path.lower().endswith(".gz") else open
    records: list[dict[str, Any]] = []
    with opener(path, "rt", encoding="utf-8") as fh:
        for line_no, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line, object_pairs_hook=_json_object)
            except json.JSONDecodeError as exc:
                raise DataError(f"{path}: line {line_no}: invalid JSON ({exc.msg})") from None
            if not isinstance(record, dict):
                raise DataError(f"{path}: line {line_no}: expected a JSON object, got {type(record).__name__}")
            _reject_duplicate_key(path, f"line {line_no} (row {len(records)}): ", record)
            records.append(record)
    return records


def read_json_records(path: str) -> list[dict[str, Any]]:
    """Rows of a ``.json`` file: an array of row objects, an object of equal-length column arrays, or JSON lines.

    Raises:
        DataError: any other JSON value, columns of different lengths, a row that is not an object, or a key
            named twice.
    """
    with open(path, encoding="utf-8") as fh:
        text = fh.read()
    try:
        data = json.loads(text, object_pairs_hook=_json_object)
    except json.JSONDecodeError:
        return read_jsonl_records(path)  # a .json file holding JSON lines
    if isinstance(data, dict):  # {"column": [values...]}
        _reject_duplicate_key(path, "", data)
        if all(isinstance(v, list) for v in data.values()):
            lengths = {len(v) for v in data.values()}
            if len(lengths) > 1:
                raise DataError(f"{path}: the JSON columns have different lengths {sorted(lengths)}")
            keys = list(data)
            return [dict(zip(keys, values, strict=True)) for values in zip(*data.values(), strict=True)]
        raise DataError(f"{path}: expected a JSON array of objects (one per row) or JSON lines")
    if not isinstance(data, list):
        raise DataError(f"{path}: expected a JSON array of objects (one per row), got {type(data).__name__}")
    for i, record in enumerate(data):
        if not isinstance(record, dict):
            raise DataError(f"{path}: row {i}: expected a JSON object, got {type(record).__name__}")
        _reject_duplicate_key(path, f"row {i}: ", record)
    return data


def csv_header(path: str) -> list[str]:
    """The raw header row of a CSV file, as written (pandas would rename repeated names)."""
    opener = gzip.open if path.lower().endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8-sig", newline="") as fh:
        return next(csv.reader(fh), [])


def load_frame(path: str | os.PathLike[str], *, allow_pickle: bool = False) -> Any:
    """Load a table as a pandas DataFrame, choosing the reader from the file name.

    ``.parquet``/``.pq``, ``.csv``/``.csv.gz`` (every cell read as text, then converted column by column so a
    bad value can be named), ``.jsonl``/``.jsonl.gz``/``.ndjson``, ``.json`` (an array of row objects) and,
    only with ``allow_pickle=True``, ``.pkl``/``.pickle`` (RouterBench ships one).

    Returns:
        A frame with a fresh ``0..n-1`` index, column names stripped of surrounding spaces, and at least one row.

    Raises:
        DataError: the file is missing, a folder, of an unknown type, a pickle without ``allow_pickle``,
            unreadable, empty, or names a column twice.
    """
    import pandas as pd

    where = os.fspath(path)
    suffix = file_suffix(where)
    if suffix in PICKLE_SUFFIXES and not allow_pickle:
        raise DataError(
            f"{where}: refusing to read a pickle file: unpickling runs arbitrary code stored in the file. "
            "If you trust its origin, pass allow_pickle=True, or convert it once to "
            "Parquet/CSV/JSONL."
        )
    if not os.path.exists(where):
        raise DataError(f"{where}: file not found")
    if os.path.isdir(where):
        raise DataError(f"{where}: is a folder; give the data file itself")
    try:
        if suffix in (".parquet", ".pq"):
            import pyarrow.parquet as pq

            check_unique_columns(pq.read_schema(where).names, where)
            frame = pd.read_parquet(where)
        elif suffix in (".csv", ".csv.gz"):
            check_unique_columns(csv_header(where), where)
            frame = pd.read_csv(where, dtype=str, keep_default_na=False, compression="infer", encoding="utf-8")
        elif suffix in (".jsonl", ".jsonl.gz", ".ndjson"):
            frame = pd.DataFrame.from_records(read_jsonl_records(where))
        elif suffix == ".json":
            frame = pd.DataFrame.from_records(read_json_records(where))
        elif suffix in PICKLE_SUFFIXES:
            frame = pd.read_pickle(where)
            if not isinstance(frame, pd.DataFrame):
                raise DataError(f"{where}: the pickle holds a {type(frame).__name__}, not a DataFrame")
        else:
            raise DataError(
                f"{where}: unknown file type {suffix or '(none)'!r}; use .parquet, .csv, .csv.gz, .jsonl or .json"
            )
    except DataError:
        raise
    except pd.errors.EmptyDataError:
        raise DataError(f"{where}: the file is empty") from None
    except (OSError, ValueError, UnicodeDecodeError, csv.Error, pd.errors.ParserError, ImportError) as exc:
        raise DataError(f"{where}: cannot read the file ({type(exc).__name__}: {exc})") from exc
    frame = frame.reset_index(drop=True)
    check_unique_columns(list(frame.columns), where)
    frame.columns = [str(c).strip() for c in frame.columns]
    if len(frame) == 0:
        raise DataError(f"{where}: the file has no data rows")
    return frame


__all__ = [
    "FILE_SUFFIXES",
    "PICKLE_SUFFIXES",
    "csv_header",
    "file_stem",
    "file_suffix",
    "load_frame",
    "read_json_records",
    "read_jsonl_records",
]
