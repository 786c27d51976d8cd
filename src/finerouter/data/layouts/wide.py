"""The wide layout (FineRouter's own): one row per prompt, one ``score::<model>`` column per model.

Columns: ``prompt``, ``score::<model>`` for each model, optional ``cost::<model>`` (USD per call), ``task``,
``split`` and ``id`` (see ``../shared/data/README.md``). Other columns are ignored. A missing score or cost is an
unobserved pair (NaN).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from finerouter.data.checks import check_model_count
from finerouter.data.layouts.columns import cells_from_model_columns, column_texts, optional_labels, prompt_column
from finerouter.data.layouts.registry import Layout
from finerouter.data.table import ParsedTable
from finerouter.errors import DataError

logger = logging.getLogger(__name__)

SCORE_PREFIX = "score::"
COST_PREFIX = "cost::"


def detect_wide(columns: Sequence[str]) -> bool:
    """Any ``score::<model>`` column means the wide layout."""
    return any(c.startswith(SCORE_PREFIX) for c in columns)


def parse_wide(frame: Any, where: str) -> ParsedTable:
    """Parse a wide table; DataError for an empty or repeated model name, or a cost column with no score column."""
    columns = list(frame.columns)
    prompt_col = prompt_column(frame, where)
    prompts = column_texts(frame[prompt_col], prompt_col, where, required=True, what="prompt")
    score_columns = [c for c in columns if c.startswith(SCORE_PREFIX)]
    models = [c[len(SCORE_PREFIX):].strip() for c in score_columns]
    for column, model_name in zip(score_columns, models, strict=True):
        if not model_name:
            raise DataError(f"{where}: column {column!r}: empty model name after 'score::'")
    if len(set(models)) != len(models):
        repeated = sorted({x for x in models if models.count(x) > 1})
        raise DataError(f"{where}: duplicate score columns for model(s) {repeated}")
    check_model_count(models, where, "one 'score::<model>' column per model")
    cost_column_of = {c[len(COST_PREFIX):].strip(): c for c in columns if c.startswith(COST_PREFIX)}
    unknown = [c for model_name, c in cost_column_of.items() if model_name not in models]
    if unknown:
        raise DataError(f"{where}: cost column(s) {unknown} have no matching 'score::<model>' column")
    cost_columns = [cost_column_of.get(model_name) for model_name in models]
    row, model, score, cost = cells_from_model_columns(frame, where, len(prompts), score_columns, cost_columns)
    known = {prompt_col, "task", "id", "split", *score_columns, *cost_column_of.values()}
    ignored = [c for c in columns if c not in known]
    if ignored:
        logger.debug("%s: ignoring column(s) %s", where, ignored)
    return ParsedTable(
        where=where, layout="wide", prompts=prompts, models=models, row=row, model=model, score=score, cost=cost,
        score_label=[repr(c) for c in score_columns],
        cost_label=[repr(c or f"cost::{m}") for c, m in zip(cost_columns, models, strict=True)],
        tasks=optional_labels(frame, "task", where, "task"),
        ids=optional_labels(frame, "id", where, "id"),
        split=optional_labels(frame, "split", where, "split"),
    )


WIDE = Layout(
    name="wide",
    detect=detect_wide,
    parse=parse_wide,
    expected_columns="'prompt' plus 'score::<model>' columns (wide)",
)

__all__ = ["COST_PREFIX", "SCORE_PREFIX", "WIDE", "detect_wide", "parse_wide"]
