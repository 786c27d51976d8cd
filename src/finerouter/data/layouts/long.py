"""The long layout: one row per (prompt, model) pair; LLMRouter's routing rows are read as this layout.

Columns: ``prompt``, ``model``, ``score`` and optional ``cost``, ``task``, ``split``, ``id``; LLMRouter's
``query``, ``model_name``, ``performance`` and ``task_name`` are accepted in their place (first present wins).
Pairs with no row are unobserved (NaN); a repeated (prompt, model) row is a duplicate.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from finerouter.data.checks import check_model_count
from finerouter.data.layouts.columns import column_numbers, column_texts, first_present, optional_labels, prompt_column
from finerouter.data.layouts.registry import Layout
from finerouter.data.table import ParsedTable
from finerouter.errors import DataError

# Long-layout column names and the peers' aliases accepted for them (first present wins).
LONG_ALIASES: dict[str, tuple[str, ...]] = {
    "prompt": ("prompt", "query"),
    "model": ("model", "model_name"),
    "score": ("score", "performance"),
    "cost": ("cost",),
    "task": ("task", "task_name"),
    "id": ("id",),
    "split": ("split",),
}


def detect_long(columns: Sequence[str]) -> bool:
    """A model column plus a score column (``model``/``score`` or ``model_name``/``performance``) mean long."""
    return bool(first_present(columns, LONG_ALIASES["model"]) and first_present(columns, LONG_ALIASES["score"]))


def parse_long(frame: Any, where: str) -> ParsedTable:
    """Parse a long table: one cell per row; DataError for a missing model/score column or a blank model name."""
    columns = list(frame.columns)
    found = {key: first_present(columns, aliases) for key, aliases in LONG_ALIASES.items()}
    prompt_col = prompt_column(frame, where, LONG_ALIASES["prompt"])
    for key in ("model", "score"):
        if found[key] is None:
            wanted = " or ".join(repr(n) for n in LONG_ALIASES[key])
            raise DataError(f"{where}: long layout needs a {wanted} column; found columns {columns[:20]}")
    model_col, score_col, cost_col = found["model"], found["score"], found["cost"]
    assert model_col is not None and score_col is not None
    prompts = column_texts(frame[prompt_col], prompt_col, where, required=True, what="prompt")
    row_models = [t.strip() for t in column_texts(frame[model_col], model_col, where, required=True, what="model name")]
    models = list(dict.fromkeys(row_models))
    check_model_count(models, where, f"long layout: distinct values of {model_col!r}")
    model_index = {model_name: j for j, model_name in enumerate(models)}
    return ParsedTable(
        where=where, layout="long", prompts=prompts, models=models,
        row=np.arange(len(prompts), dtype=np.int64),
        model=np.array([model_index[x] for x in row_models], dtype=np.int64),
        score=column_numbers(frame[score_col], score_col, where, "score"),
        cost=None if cost_col is None else column_numbers(frame[cost_col], cost_col, where, "cost"),
        score_label=[f"{score_col!r} (model {m!r})" for m in models],
        cost_label=[f"{cost_col!r} (model {m!r})" for m in models],
        tasks=optional_labels(frame, found["task"], where, "task"),
        ids=optional_labels(frame, found["id"], where, "id"),
        split=optional_labels(frame, found["split"], where, "split"),
        cell_per_row=True,
    )


LONG = Layout(
    name="long",
    detect=detect_long,
    parse=parse_long,
    expected_columns=(
        "'prompt'/'model'/'score' columns (long; LLMRouter's 'query'/'model_name'/'performance' also work)"
    ),
)

__all__ = ["LONG", "LONG_ALIASES", "detect_long", "parse_long"]
