"""Validation of routing data: unique column names, model count, score range and coverage, costs, ids, duplicates.

Every check raises :class:`~finerouter.errors.DataError` with a message that names the file, then the column and
row where there is one (rows count from 0, header excluded). The checks that take a
:class:`~finerouter.data.table.ParsedTable` run after the layout parser, so they serve every layout alike.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np

from finerouter.data.table import ParsedTable
from finerouter.errors import DataError

logger = logging.getLogger(__name__)

SHOWN_ROWS = 5  # how many offending rows or groups an error lists


def check_unique_columns(names: Sequence[Any], where: str) -> None:
    """DataError naming the first column name that appears twice (compared stripped; unnamed ones excepted)."""
    first: dict[str, int] = {}
    for i, raw in enumerate(names):
        name = str(raw).strip()
        if not name:
            continue  # an unnamed (index) column: pandas names each 'Unnamed: <i>'
        if name in first:
            raise DataError(
                f"{where}: column {name!r} appears more than once (columns {first[name]} and {i}, counting from "
                "0); give each column its own name"
            )
        first[name] = i


def check_model_count(models: Sequence[str], where: str, hint: str) -> None:
    """DataError unless there are at least two models; ``hint`` says where the layout looks for them."""
    if len(models) < 2:
        raise DataError(f"{where}: routing needs at least 2 models, found {len(models)} {list(models)} ({hint})")


def check_scores(table: ParsedTable, rescale: bool) -> dict[str, list[float]] | None:
    """Check every model has a score and scores lie in [0, 1]; with ``rescale``, min-max each model instead.

    With ``rescale`` the scores of each model are mapped to [0, 1] by that model's own observed min and max
    (a model with one constant score gets 0.5), in place on ``table.score``, before repeated prompts are merged.

    Returns:
        ``None`` without ``rescale``; otherwise per model the ``[min, max]`` it was rescaled from.
    """
    where, scores = table.where, table.score
    finite = np.isfinite(scores)
    observed = np.bincount(table.model[finite], minlength=len(table.models))
    if (observed == 0).any():
        j = int(np.flatnonzero(observed == 0)[0])
        raise DataError(
            f"{where}: column {table.score_label[j]}: model {table.models[j]!r} has no scores "
            "(every value is missing)"
        )
    if not rescale:
        outside = finite & ((scores < 0.0) | (scores > 1.0))
        if outside.any():
            k = int(np.flatnonzero(outside)[0])
            raise DataError(
                f"{where}: column {table.score_label[int(table.model[k])]}, row {int(table.row[k])}: "
                f"score {float(scores[k])!r} is outside [0, 1] ({int(outside.sum())} such value(s)); pass "
                "rescale=True (CLI: --rescale) to min-max rescale each model's scores to [0, 1]"
            )
        return None
    ranges: dict[str, list[float]] = {}
    rescaled = scores.copy()
    for j, model_name in enumerate(table.models):
        selected = (table.model == j) & finite
        low, high = float(scores[selected].min()), float(scores[selected].max())
        ranges[model_name] = [low, high]
        if high > low:
            rescaled[selected] = (scores[selected] - low) / (high - low)
        else:
            logger.warning("%s: model %r has one constant score %g; rescaled to 0.5", where, model_name, low)
            rescaled[selected] = 0.5
    table.score = rescaled
    logger.info("%s: rescaled every model's scores to [0, 1] by its own min and max", where)
    return ranges


def check_costs(table: ParsedTable) -> None:
    """DataError naming the first negative cost (a missing cost, NaN, is allowed)."""
    if table.cost is None:
        return
    negative = np.isfinite(table.cost) & (table.cost < 0)
    if negative.any():
        k = int(np.flatnonzero(negative)[0])
        raise DataError(
            f"{table.where}: column {table.cost_label[int(table.model[k])]}, row {int(table.row[k])}: "
            f"negative cost {float(table.cost[k])!r}"
        )


def prompt_preview(text: str, width: int = 60) -> str:
    """The prompt quoted on one line, cut to ``width`` characters, for error messages."""
    flat = " ".join(text.split())
    return repr(flat if len(flat) <= width else flat[: width - 3] + "...")


def check_ids(table: ParsedTable, group: np.ndarray) -> None:
    """Check each id names one prompt, or (``table.rename_repeated_ids``) rename the repeats.

    Args:
        table: the parsed table; with ``rename_repeated_ids`` (RouterBench's ``sample_id``) ``table.ids`` is
            edited in place, a repeat on a different prompt becoming ``<id>#2``, ``<id>#3``...
        group: ``(n_rows,)`` int index of each row's distinct prompt text.

    Raises:
        DataError: a blank id, or (without ``rename_repeated_ids``) an id already used by a row with a different prompt.
    """
    if table.ids is None:
        return
    where, column = table.where, table.id_column
    owner: dict[str, int] = {}
    first_row: dict[str, int] = {}
    renamed = 0
    for i, row_id in enumerate(table.ids):
        if not row_id.strip():
            raise DataError(
                f"{where}: column {column!r}, row {i}: missing id (fill it in, or drop the column to number rows)"
            )
        prompt_group = int(group[i])
        if row_id not in owner:
            owner[row_id], first_row[row_id] = prompt_group, i
            continue
        if owner[row_id] == prompt_group:
            continue
        if not table.rename_repeated_ids:
            raise DataError(
                f"{where}: column {column!r}, row {i}: id {row_id!r} is already used by row {first_row[row_id]} "
                "for a different prompt"
            )
        k = 2
        while f"{row_id}#{k}" in owner and owner[f"{row_id}#{k}"] != prompt_group:
            k += 1
        new_id = f"{row_id}#{k}"
        owner.setdefault(new_id, prompt_group)
        first_row.setdefault(new_id, i)
        table.ids[i] = new_id
        renamed += 1
    if renamed:
        logger.info("%s: %d repeated %r value(s) on different prompts were suffixed '#k'", where, renamed, column)


def check_no_duplicates(table: ParsedTable, group: np.ndarray, n_groups: int) -> None:
    """DataError listing the first repeated prompts (long layout: repeated (prompt, model) rows), if any.

    Args:
        table: the parsed table.
        group: ``(n_rows,)`` int index of each row's distinct prompt text, in ``[0, n_groups)``.
        n_groups: the number of distinct prompt texts.
    """
    where = table.where
    if table.cell_per_row:
        key = group[table.row] * len(table.models) + table.model
        unique_keys, first, counts = np.unique(key, return_index=True, return_counts=True)
        if (counts == 1).all():
            return
        repeated_keys = unique_keys[counts > 1][np.argsort(first[counts > 1])]
        lines = []
        for repeated in repeated_keys[:SHOWN_ROWS]:
            rows = np.flatnonzero(key == repeated).tolist()
            model_name = table.models[int(repeated % len(table.models))]
            lines.append(f"rows {rows} (model {model_name!r}, prompt {prompt_preview(table.prompts[rows[0]])})")
        raise DataError(
            f"{where}: {int((counts - 1).sum())} duplicate (prompt, model) row(s): "
            + "; ".join(lines)
            + ("; ..." if len(repeated_keys) > SHOWN_ROWS else "")
            + ". Pass duplicates='merge' to average them."
        )
    if n_groups == len(table.prompts):
        return
    counts = np.bincount(group, minlength=n_groups)
    lines = []
    for repeated_group in np.flatnonzero(counts > 1)[:SHOWN_ROWS]:
        rows = np.flatnonzero(group == repeated_group).tolist()
        lines.append(f"rows {rows} ({prompt_preview(table.prompts[rows[0]])})")
    raise DataError(
        f"{where}: {len(table.prompts) - n_groups} row(s) repeat an earlier prompt: "
        + "; ".join(lines)
        + ("; ..." if int((counts > 1).sum()) > SHOWN_ROWS else "")
        + ". Pass duplicates='merge' to average their scores."
    )


__all__ = [
    "SHOWN_ROWS",
    "check_costs",
    "check_ids",
    "check_model_count",
    "check_no_duplicates",
    "check_scores",
    "check_unique_columns",
    "prompt_preview",
]
