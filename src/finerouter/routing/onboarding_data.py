"""What :func:`finerouter.routing.onboarding.add_model` reads from its ``data``: the new model's scores (and the
router's other models' scores on the same prompts, where present) from a RoutingDataset or a routing table in any
registered layout, where a table of the new model alone is enough."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np

from finerouter.errors import DataError, ParameterError

#: The fewest prompts with a score of the new model that :func:`add_model` accepts.
MIN_PROMPTS = 10
_PLACEHOLDER = "\0finerouter-placeholder"


@dataclass
class NewModelScores:
    """What :func:`add_model` reads from its ``data``: the prompts the new model was scored on.

    Attributes:
        prompts: ``(n,)`` prompt texts; scores: ``(n,)`` the new model's scores in [0, 1].
        costs: ``(n,)`` its per-prompt USD costs (NaN where unknown), or None.
        others: ``(n, m)`` the router's models' scores on the same prompts (NaN where absent), in its model order.
        source: where the data came from, for messages.
        labels: ``(n,)`` each prompt's coarse task label where the data has them (a label prior reads them), or None.
    """

    prompts: list[str]
    scores: np.ndarray
    costs: np.ndarray | None
    others: np.ndarray
    source: str
    labels: list[str] | None = None

    def subset(self, rows: np.ndarray) -> NewModelScores:
        """The same data restricted to the prompts ``rows`` (integer indices), in that order."""
        rows = np.asarray(rows, dtype=np.int64)
        return NewModelScores(
            [self.prompts[i] for i in rows], self.scores[rows], None if self.costs is None else self.costs[rows],
            self.others[rows], self.source, None if self.labels is None else [self.labels[i] for i in rows],
        )  # fmt: skip


def _read_table(
    path: str | os.PathLike[str], name: str
) -> tuple[list[str], list[str], np.ndarray, np.ndarray | None, list[str] | None]:
    """``(prompts, models, scores (n, m), costs (n, m) or None, labels (n,) or None)`` of a routing table in any
    registered layout, repeated prompts averaged (a prompt's first row gives its label); unlike
    :func:`~finerouter.data.readers.read_routing_data`, one model is enough."""
    import pandas as pd

    from finerouter.data.checks import check_costs, check_scores
    from finerouter.data.files import load_frame
    from finerouter.data.layouts import detect_layout, get_layout
    from finerouter.data.layouts.long import LONG_ALIASES
    from finerouter.data.readers import first_rows, mean_per_key
    from finerouter.data.table import check_table_shape

    where = os.fspath(path)
    frame = load_frame(where)
    layout = detect_layout(list(frame.columns), where)
    # The layouts require two models; a table of the new model alone gets a placeholder model, dropped below.
    if layout == "wide" and sum(str(c).startswith("score::") for c in frame.columns) == 1:
        frame = frame.assign(**{f"score::{_PLACEHOLDER}": 0.0})
    elif layout == "long":
        model_col = next(c for c in LONG_ALIASES["model"] if c in frame.columns)
        if frame[model_col].nunique() == 1 and len(frame):
            extra = frame.iloc[:1].copy()
            extra[model_col] = _PLACEHOLDER
            frame = pd.concat([frame, extra], ignore_index=True)
    table = get_layout(layout).parse(frame, where)
    check_table_shape(table, layout)
    check_scores(table, False)
    check_costs(table)
    group, uniques = pd.factorize(pd.Series(table.prompts, dtype=object))
    group = np.asarray(group, dtype=np.int64)
    m, n = len(table.models), len(uniques)
    key = group[table.row] * m + table.model

    def mean(values: np.ndarray) -> np.ndarray:
        return mean_per_key(key, np.asarray(values, dtype=np.float64), n * m).reshape(n, m)

    costs = None if table.cost is None else mean(table.cost)
    scores, models = mean(table.score), list(table.models)
    if _PLACEHOLDER in models:
        j = models.index(_PLACEHOLDER)
        models, scores = models[:j] + models[j + 1 :], np.delete(scores, j, axis=1)
        costs = None if costs is None else np.delete(costs, j, axis=1)
    labels = None if table.tasks is None else [str(table.tasks[i]) for i in first_rows(group, n)]
    return [str(p) for p in uniques], models, scores, costs, labels


def new_model_scores(data: Any, name: str, models: list[str]) -> NewModelScores:
    """The new model ``name``'s scores from ``data`` (a RoutingDataset or a table path), with the router's
    ``models``' scores on the same prompts where present; DataError when ``data`` has no usable column ``name``."""
    from finerouter.data.dataset import RoutingDataset

    if isinstance(data, RoutingDataset):
        prompts, cols, scores, costs, source = data.prompts, data.models, data.scores, data.costs, data.source
        labels = data.tasks
    elif isinstance(data, (str, os.PathLike)):
        source = os.fspath(data)
        prompts, cols, scores, costs, labels = _read_table(data, name)
    else:
        raise ParameterError(
            f"The 'data' parameter of add_model must be a RoutingDataset or a table path. Got {type(data).__name__}."
        )
    if name not in cols:
        raise DataError(f"{source}: no scores for the new model {name!r} (its models are {list(cols)})")
    j = cols.index(name)
    keep = np.flatnonzero(np.isfinite(scores[:, j]))
    if keep.size < MIN_PROMPTS:
        raise DataError(
            f"{source}: model {name!r} has a score on {keep.size} prompts; adding a model needs at least {MIN_PROMPTS}"
        )
    others = np.full((keep.size, len(models)), np.nan)
    for k, model in enumerate(models):
        if model in cols:
            others[:, k] = scores[keep, cols.index(model)]
    return NewModelScores(
        prompts=[prompts[i] for i in keep], scores=np.asarray(scores[keep, j], dtype=np.float64),
        costs=None if costs is None else np.asarray(costs[keep, j], dtype=np.float64), others=others, source=source,
        labels=None if labels is None else [str(labels[i]) for i in keep],
    )  # fmt: skip


__all__ = ["MIN_PROMPTS", "NewModelScores", "new_model_scores"]
