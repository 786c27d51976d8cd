"""RouterBench's wide table: one row per prompt, one score column named after each model.

Columns: ``prompt``, ``eval_name`` (the task), ``sample_id`` (the id; RouterBench reuses it across prompts, so a
repeat on a different prompt is renamed ``<id>#2``...), one score column named after each model and a
``<model>|total_cost`` column with its USD cost. ``<model>|model_response``, ``oracle_model_to_route_to`` and
unnamed index columns are ignored. A prompt stored as a stringified list of parts (``"['part 1', 'part 2']"``)
or as a list is joined with blank lines.
"""

from __future__ import annotations

import ast
from collections.abc import Sequence
from typing import Any

from finerouter.data.checks import check_model_count
from finerouter.data.layouts.columns import (
    cells_from_model_columns,
    column_texts,
    first_present,
    optional_labels,
    prompt_column,
)
from finerouter.data.layouts.registry import Layout
from finerouter.data.table import ParsedTable
from finerouter.errors import DataError

ROUTERBENCH_COST_SUFFIX = "|total_cost"
# RouterBench columns that are not a model's score.
ROUTERBENCH_META = ("sample_id", "prompt", "eval_name", "oracle_model_to_route_to", "split", "id", "task")


def detect_routerbench(columns: Sequence[str]) -> bool:
    """An ``eval_name`` column or a ``<model>|total_cost`` column means RouterBench."""
    return "eval_name" in columns or any(c.endswith(ROUTERBENCH_COST_SUFFIX) for c in columns)


def join_prompt_parts(text: str) -> str:
    """RouterBench stores a prompt as ``str(list_of_parts)``; join the parts with blank lines (else unchanged)."""
    stripped = text.strip()
    if not (stripped.startswith("[") and stripped.endswith("]")):
        return text
    try:
        parts = ast.literal_eval(stripped)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return text
    if isinstance(parts, (list, tuple)) and parts and all(isinstance(p, str) for p in parts):
        return "\n\n".join(parts)
    return text


def _is_model_column(column: str) -> bool:
    return bool(column) and column not in ROUTERBENCH_META and "|" not in column and not column.startswith("Unnamed:")


def parse_routerbench(frame: Any, where: str) -> ParsedTable:
    """Parse a RouterBench table; DataError for an empty prompt or a cost column with no score column."""
    import pandas as pd

    columns = list(frame.columns)
    prompt_col = prompt_column(frame, where)
    raw = frame[prompt_col].astype(object).tolist()
    joined = ["\n\n".join(str(p) for p in v) if isinstance(v, (list, tuple)) else v for v in raw]
    prompts = column_texts(pd.Series(joined, dtype=object), prompt_col, where, required=True, what="prompt")
    prompts = [join_prompt_parts(p) for p in prompts]
    for i, prompt in enumerate(prompts):
        if not prompt.strip():
            raise DataError(f"{where}: column {prompt_col!r}, row {i}: empty prompt")
    models = [c for c in columns if _is_model_column(c)]
    check_model_count(models, where, "RouterBench layout: one score column named after each model")
    cost_column_of = {
        c[: -len(ROUTERBENCH_COST_SUFFIX)]: c for c in columns if c.endswith(ROUTERBENCH_COST_SUFFIX)
    }
    unknown = [c for model_name, c in cost_column_of.items() if model_name not in models]
    if unknown:
        raise DataError(f"{where}: cost column(s) {unknown} have no matching model score column")
    cost_columns = [cost_column_of.get(model_name) for model_name in models]
    row, model, score, cost = cells_from_model_columns(frame, where, len(prompts), models, cost_columns)
    task_col = first_present(columns, ("eval_name", "task"))
    id_col = first_present(columns, ("sample_id", "id"))
    return ParsedTable(
        where=where, layout="routerbench", prompts=prompts, models=models, row=row, model=model, score=score,
        cost=cost, score_label=[repr(c) for c in models],
        cost_label=[repr(c or f"{m}{ROUTERBENCH_COST_SUFFIX}") for c, m in zip(cost_columns, models, strict=True)],
        tasks=optional_labels(frame, task_col, where, "task"),
        ids=optional_labels(frame, id_col, where, "id"),
        id_column=id_col or "sample_id",
        split=optional_labels(frame, "split", where, "split"),
        rename_repeated_ids=True,
    )


ROUTERBENCH = Layout(
    name="routerbench",
    detect=detect_routerbench,
    parse=parse_routerbench,
    expected_columns="RouterBench's 'prompt'/'eval_name'/'<model>'/'<model>|total_cost' columns",
)

__all__ = [
    "ROUTERBENCH",
    "ROUTERBENCH_COST_SUFFIX",
    "ROUTERBENCH_META",
    "detect_routerbench",
    "join_prompt_parts",
    "parse_routerbench",
]
