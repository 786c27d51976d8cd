"""Read routing data from a file in our layout or a peer's into a validated, de-duplicated RoutingDataset.

:func:`read_routing_data` is the public entry point; it runs, in order:

1. :func:`~finerouter.data.files.load_frame` (:mod:`finerouter.data.files`): the file (Parquet, CSV, JSONL,
   JSON) into a DataFrame, rejecting unreadable files and repeated column names;
2. the layout parser (:mod:`finerouter.data.layouts`): ``layout="auto"`` detects it from the column names
   among the registered layouts (built in: ``"wide"``, ours; ``"long"``, also LLMRouter's rows;
   ``"routerbench"``) and turns the frame into a :class:`~finerouter.data.table.ParsedTable`;
3. the checks (:mod:`finerouter.data.checks`): scores in [0, 1] (or rescaled), costs not negative, ids naming
   one prompt, and, with ``duplicates="error"``, no repeated prompt;
4. the merge of rows with the same prompt text (here), and optional cost estimates from a prices table.

Rows are numbered from 0 in error messages, the header excluded (row 0 is the first data row).
"""

from __future__ import annotations

import logging
import os
from typing import Any

import numpy as np

from finerouter._validation import check_choice
from finerouter.data.checks import check_costs, check_ids, check_no_duplicates, check_scores
from finerouter.data.dataset import RoutingDataset
from finerouter.data.files import file_stem, load_frame
from finerouter.data.layouts import AUTO, detect_layout, get_layout, layout_names
from finerouter.data.table import check_table_shape
from finerouter.errors import ParameterError

logger = logging.getLogger(__name__)

# The layout choices built in; a layout registered later (finerouter.data.layouts.register_layout) is accepted too.
LAYOUTS = (AUTO, *layout_names())
DUPLICATE_POLICIES = ("merge", "error")


def first_rows(group: np.ndarray, n_groups: int) -> np.ndarray:
    """``(n_groups,)`` the index of each group's first row, for ``(rows,)`` group ids in ``[0, n_groups)``."""
    first = np.full(n_groups, len(group), dtype=np.int64)
    np.minimum.at(first, group, np.arange(len(group), dtype=np.int64))
    return first


def mean_per_key(key: np.ndarray, values: np.ndarray, size: int) -> np.ndarray:
    """``(size,)`` mean of the finite ``values`` sharing each ``key`` in ``[0, size)``; NaN where none is finite."""
    finite = np.isfinite(values)
    sums = np.bincount(key[finite], weights=values[finite], minlength=size)
    counts = np.bincount(key[finite], minlength=size)
    out = np.full(size, np.nan)
    np.divide(sums, counts, out=out, where=counts > 0)
    return out


def read_routing_data(
    path: str | os.PathLike[str],
    *,
    layout: str = "auto",
    prices: Any = None,
    rescale: bool = False,
    allow_pickle: bool = False,
    duplicates: str = "merge",
    name: str | None = None,
) -> RoutingDataset:
    """Read routing data (Parquet, CSV, CSV.GZ or JSONL) into a validated :class:`RoutingDataset`.

    Args:
        path: the data file.
        layout: ``"auto"`` (detect from the columns), ``"wide"``, ``"long"``, ``"routerbench"`` or the name of
            a layout added with :func:`finerouter.data.layouts.register_layout`.
        prices: a prices CSV path or :class:`finerouter.data.prices.Prices`; fills the cost of every
            (prompt, model) pair the data has no cost for (see :meth:`Prices.estimate_costs`).
        rescale: min-max rescale each model's scores to [0, 1] by that model's own min and max (a model with a
            single constant score gets 0.5); without it a score outside [0, 1] is an error.
        allow_pickle: allow reading ``.pkl`` files (RouterBench's); unpickling runs code from the file.
        duplicates: rows with the same prompt text (long layout: the same prompt and model) are averaged
            per model, ignoring NaN, with costs averaged too and the first task/id/split kept (``"merge"``),
            or rejected (``"error"``). The number of merged rows is ``meta["merged_duplicates"]``.
        name: dataset name (default: the file name without its extension).

    Returns:
        The dataset; ``meta`` holds ``layout``, ``rows_read``, ``merged_duplicates``, ``split`` (the source's own
        split per prompt, when present; never use it for routing), ``cost_source`` (``"data"``, ``"prices"``,
        ``"data+prices"`` or ``None``) and ``rescaled`` (per model ``[min, max]``, when ``rescale=True``).

    Raises:
        DataError: the file cannot be read, or its content is invalid; the message names the file and, where
            there is one, the column and row (rows count from 0, header excluded).
    """
    owner = "read_routing_data"
    check_choice(layout, "layout", owner, (AUTO, *layout_names()))
    check_choice(duplicates, "duplicates", owner, DUPLICATE_POLICIES)
    for pname, value in (("rescale", rescale), ("allow_pickle", allow_pickle)):
        if not isinstance(value, (bool, np.bool_)):
            raise ParameterError(f"The {pname!r} parameter of {owner} must be a bool. Got {value!r}.")
    where = os.fspath(path)
    frame = load_frame(where, allow_pickle=allow_pickle)
    chosen = detect_layout(list(frame.columns), where) if layout == AUTO else layout
    table = get_layout(chosen).parse(frame, where)
    check_table_shape(table, chosen)
    rows_read = len(table.prompts)

    ranges = check_scores(table, bool(rescale))
    check_costs(table)

    import pandas as pd

    group, uniques = pd.factorize(pd.Series(table.prompts, dtype=object))
    group = np.asarray(group, dtype=np.int64)
    n_groups = len(uniques)
    check_ids(table, group)
    if duplicates == "error":
        check_no_duplicates(table, group, n_groups)

    n_models = len(table.models)
    key = group[table.row] * n_models + table.model
    size = n_groups * n_models
    scores = mean_per_key(key, table.score, size).reshape(n_groups, n_models)
    costs = None if table.cost is None else mean_per_key(key, table.cost, size).reshape(n_groups, n_models)
    if table.cell_per_row:
        merged = len(table.row) - len(np.unique(key))
    else:
        merged = rows_read - n_groups
    first = first_rows(group, n_groups)

    def firsts(values: list[str] | None) -> list[str] | None:
        return None if values is None else [values[i] for i in first]

    if merged:
        what = "(prompt, model) rows" if table.cell_per_row else "rows with a repeated prompt"
        logger.info("%s: merged %d %s (scores and costs averaged per model)", where, merged, what)
        if table.tasks is not None and not table.cell_per_row:
            first_task = [table.tasks[i] for i in first]
            clash = sum(1 for i, g in enumerate(group) if table.tasks[i] != first_task[g])
            if clash:
                logger.info("%s: %d merged row(s) had another task label; the first row's label is kept", where, clash)

    meta: dict[str, Any] = {"layout": chosen, "rows_read": rows_read, "merged_duplicates": int(merged)}
    split = firsts(table.split)
    if split is not None:
        meta["split"] = split
    if ranges is not None:
        meta["rescaled"] = ranges
    meta["cost_source"] = None if costs is None else "data"

    prompts = [str(p) for p in uniques]
    if prices is not None:
        costs = _apply_prices(prices, prompts, table.models, costs, where, meta)

    return RoutingDataset(
        prompts=prompts,
        models=list(table.models),
        scores=scores,
        costs=costs,
        tasks=firsts(table.tasks),
        ids=firsts(table.ids),
        name=name if name is not None else file_stem(where),
        source=where,
        meta=meta,
    )


def _apply_prices(
    prices: Any, prompts: list[str], models: list[str], costs: np.ndarray | None, where: str, meta: dict[str, Any]
) -> np.ndarray | None:
    from finerouter.data.prices import Prices

    if isinstance(prices, (str, os.PathLike)):
        prices = Prices.read(prices)
    if not isinstance(prices, Prices):
        raise ParameterError(
            f"The 'prices' parameter of read_routing_data must be a path or a Prices. Got {type(prices).__name__}."
        )
    unpriced = prices.missing(models)
    if len(unpriced) == len(models):
        logger.warning("%s: none of the models has a price in %s; costs unchanged", where, prices.source)
        return costs
    if unpriced:
        logger.warning("%s: no price for model(s) %s in %s; their cost stays unknown", where, unpriced, prices.source)
    estimate = prices.estimate_costs(prompts, models)
    if costs is None:
        meta["cost_source"] = "prices"
        return estimate
    fill = ~np.isfinite(costs) & np.isfinite(estimate)
    if fill.any():
        costs = costs.copy()
        costs[fill] = estimate[fill]
        meta["cost_source"] = "data+prices"
        logger.info("%s: %d missing cost(s) estimated from %s", where, int(fill.sum()), prices.source)
    return costs


__all__ = [
    "DUPLICATE_POLICIES", "LAYOUTS", "detect_layout", "first_rows", "load_frame", "mean_per_key", "read_routing_data",
]
