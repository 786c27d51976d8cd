"""The parsed table: what every layout parser hands to the checks and the merge in ``read_routing_data``.

A layout parser turns a loaded frame into a :class:`ParsedTable`: one entry per source row for the row-level
labels (prompt, task, id, split) and one *cell* per observed (row, model) score. Keeping the cells flat lets one
set of checks and one merge serve every layout, whether the source stores a model per column (wide, RouterBench)
or a model per row (long).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from finerouter.errors import DataError


@dataclass
class ParsedTable:
    """A table read by a layout parser, before validation and merging of repeated prompts.

    ``prompts``/``tasks``/``ids``/``split`` hold one entry per source row (row ``i`` is the ``i``-th data row of
    the file, header excluded). Each score is a cell ``(row[k], model[k], score[k], cost[k])``: wide tables have
    ``n_rows * n_models`` cells, long ones one cell per row. A missing score or cost is NaN.

    Attributes:
        where: the file (or other source label) named first in every error message.
        layout: the name of the layout that produced the table.
        prompts: ``(n_rows,)`` prompt texts, none blank.
        models: ``(n_models,)`` distinct model names, in the order the source lists them.
        row: ``(n_cells,)`` int64 source row of each cell, in ``[0, n_rows)``.
        model: ``(n_cells,)`` int64 index into ``models`` of each cell.
        score: ``(n_cells,)`` float64 score of each cell.
        cost: ``(n_cells,)`` float64 cost of each cell, or ``None`` when the source has no costs.
        score_label: per model, the quoted column an error about that model's scores names.
        cost_label: per model, the quoted column an error about that model's costs names.
        tasks: per row task label, or ``None`` when the source has none.
        ids: per row id, or ``None`` when the source has none (rows are then numbered).
        id_column: the column ``ids`` came from, named in errors about ids.
        split: per row split label from the source, or ``None``.
        cell_per_row: ``True`` when each source row holds one (prompt, model) cell (long layout), so a
            duplicate is a repeated (prompt, model) row rather than a repeated prompt.
        rename_repeated_ids: ``True`` when an id repeated on a different prompt is renamed ``<id>#2``... rather
            than rejected (RouterBench reuses ``sample_id`` across prompts).
    """

    where: str
    layout: str
    prompts: list[str]
    models: list[str]
    row: np.ndarray
    model: np.ndarray
    score: np.ndarray
    cost: np.ndarray | None
    score_label: list[str]
    cost_label: list[str]
    tasks: list[str] | None = None
    ids: list[str] | None = None
    id_column: str = "id"
    split: list[str] | None = None
    cell_per_row: bool = False
    rename_repeated_ids: bool = False


def check_table_shape(table: ParsedTable, layout_name: str) -> None:
    """Raise DataError when ``table``, returned by the parser of layout ``layout_name``, breaks the shape contract.

    The built-in layouts always satisfy it; the check exists so that a registered layout whose parser builds an
    inconsistent table fails with a message naming the layout, instead of an index error deep in the merge.
    """
    n_rows, n_models = len(table.prompts), len(table.models)
    problem = None
    n_cells = len(table.row)
    if len(table.model) != n_cells or len(table.score) != n_cells:
        problem = f"row, model and score have different lengths ({n_cells}, {len(table.model)}, {len(table.score)})"
    elif table.cost is not None and len(table.cost) != n_cells:
        problem = f"cost has {len(table.cost)} cells, score has {n_cells}"
    elif len(table.score_label) != n_models or len(table.cost_label) != n_models:
        problem = f"score_label and cost_label must hold one entry per model ({n_models})"
    elif n_cells and (table.row.min() < 0 or table.row.max() >= n_rows):
        problem = f"a cell's row is outside [0, {n_rows})"
    elif n_cells and (table.model.min() < 0 or table.model.max() >= n_models):
        problem = f"a cell's model index is outside [0, {n_models})"
    else:
        for label, values in (("tasks", table.tasks), ("ids", table.ids), ("split", table.split)):
            if values is not None and len(values) != n_rows:
                problem = f"{label} has {len(values)} entries for {n_rows} rows"
                break
    if problem is not None:
        raise DataError(f"{table.where}: layout {layout_name!r} produced an inconsistent table: {problem}")


__all__ = ["ParsedTable", "check_table_shape"]
