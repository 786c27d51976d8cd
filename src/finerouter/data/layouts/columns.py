"""Column helpers shared by the layout parsers: find a column, read it as numbers or texts, naming bad cells.

Every converter raises :class:`~finerouter.errors.DataError` naming the file, the column and the row (rows count
from 0, header excluded) of the first bad cell, so each layout parser gets precise errors for free.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np

from finerouter.errors import DataError

logger = logging.getLogger(__name__)

# Cell texts read as a missing value (compared stripped and lower-cased).
MISSING_TOKENS = ("", "nan", "na", "n/a", "null", "none")
SHOWN_CELLS = 5  # how many bad cells an error lists


def first_present(columns: Sequence[str], names: Sequence[str]) -> str | None:
    """The first of ``names`` that is one of ``columns``, or ``None``."""
    for name in names:
        if name in columns:
            return name
    return None


def missing_mask(series: Any) -> np.ndarray:
    """``(n,)`` bool: the cell is null or its text is one of :data:`MISSING_TOKENS`."""
    text = series.astype(object).where(series.notna(), "").astype(str).str.strip().str.lower()
    return (series.isna() | text.isin(MISSING_TOKENS)).to_numpy(dtype=bool)


def column_numbers(series: Any, column: str, where: str, what: str = "value") -> np.ndarray:
    """``(n,)`` float64 from a column; missing cells become NaN, anything else non-numeric is a DataError.

    ``what`` names the kind of value in the message (``"score"``, ``"cost"``). Infinite values are rejected.
    """
    import pandas as pd

    if pd.api.types.is_bool_dtype(series.dtype):
        return series.astype(np.float64).to_numpy()
    if pd.api.types.is_numeric_dtype(series.dtype):
        values = series.to_numpy(dtype=np.float64, na_value=np.nan)
    else:
        missing = missing_mask(series)
        coerced = pd.to_numeric(series.astype(object).where(~missing, None), errors="coerce")
        values = coerced.to_numpy(dtype=np.float64, na_value=np.nan)
        bad = np.isnan(values) & ~missing
        if bad.any():
            rows = np.flatnonzero(bad)
            shown = ", ".join(f"row {r}: {series.iloc[r]!r}" for r in rows[:SHOWN_CELLS])
            raise DataError(
                f"{where}: column {column!r}: {len(rows)} {what}(s) are not numbers ({shown}"
                f"{', ...' if len(rows) > SHOWN_CELLS else ''})"
            )
    infinite = np.isinf(values)
    if infinite.any():
        r = int(np.flatnonzero(infinite)[0])
        raise DataError(f"{where}: column {column!r}, row {r}: {what} {float(values[r])!r} is not a finite number")
    return values


def column_texts(series: Any, column: str, where: str, *, required: bool, what: str) -> list[str]:
    """Strings from a column; missing or blank cells raise when ``required`` (else become ``""``)."""
    values = series.astype(object).tolist()
    texts: list[str] = []
    for i, value in enumerate(values):
        missing = value is None or (isinstance(value, float) and np.isnan(value))
        text = "" if missing else str(value)
        if required and not text.strip():
            raise DataError(f"{where}: column {column!r}, row {i}: {'missing' if missing else 'empty'} {what}")
        texts.append(text)
    return texts


def optional_labels(frame: Any, column: str | None, where: str, what: str) -> list[str] | None:
    """Per-row labels from ``column`` when the frame has it, else ``None``; blank task labels become 'unknown'."""
    if column is None or column not in frame.columns:
        return None
    labels = column_texts(frame[column], column, where, required=False, what=what)
    blank = sum(1 for label in labels if not label.strip())
    if blank and what == "task":
        logger.info("%s: %d row(s) have no %r label; they are labelled 'unknown'", where, blank, column)
        labels = [label if label.strip() else "unknown" for label in labels]
    return labels


def prompt_column(frame: Any, where: str, names: Sequence[str] = ("prompt",)) -> str:
    """The first of ``names`` the frame has; DataError listing the columns when it has none."""
    column = first_present(list(frame.columns), names)
    if column is None:
        wanted = " or ".join(repr(n) for n in names)
        raise DataError(f"{where}: no prompt column: expected {wanted}; found columns {list(frame.columns)[:20]}")
    return column


def cells_from_model_columns(
    frame: Any, where: str, n_rows: int, score_columns: list[str], cost_columns: list[str | None],
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
    """The flat cells of a table with one score column (and optionally one cost column) per model.

    Args:
        frame: the loaded table.
        where: the file, for error messages.
        n_rows: the number of rows.
        score_columns: ``(n_models,)`` the score column of each model.
        cost_columns: ``(n_models,)`` the cost column of each model, ``None`` where a model has none (its costs
            are NaN); costs are ``None`` overall when no model has one.

    Returns:
        ``(row, model, score, cost)``, each ``(n_rows * n_models,)``, row-major (all models of row 0 first).
    """
    n_models = len(score_columns)
    score = np.column_stack([column_numbers(frame[c], c, where, "score") for c in score_columns])
    cost = None
    if any(c is not None for c in cost_columns):
        cost = np.column_stack(
            [
                column_numbers(frame[c], c, where, "cost") if c is not None else np.full(n_rows, np.nan)
                for c in cost_columns
            ]
        )
    row = np.repeat(np.arange(n_rows, dtype=np.int64), n_models)
    model = np.tile(np.arange(n_models, dtype=np.int64), n_rows)
    return row, model, score.reshape(-1), None if cost is None else cost.reshape(-1)


__all__ = [
    "MISSING_TOKENS",
    "cells_from_model_columns",
    "column_numbers",
    "column_texts",
    "first_present",
    "missing_mask",
    "optional_labels",
    "prompt_column",
]
