"""Discovery's kNN search in database shards: each shard's own faiss index searched by every row, the
per-shard top lists merged.

Contract: with exact search (``method="exact"``, faiss ``IndexFlatIP``), the merged neighbours of every row
are those of :func:`finerouter.discovery.graph.knn_search` on the whole matrix, whatever the number of shards:
each shard returns its ``k + 1`` best rows for every query (the query itself may be one), so the global
``k + 1`` best are among the candidates; the merge orders candidates by similarity, then by row index (a
fixed tie rule, as a flat index keeps the earlier row among equal similarities), and then drops the query
itself exactly as the unsharded search does. With ``method="hnsw"`` each shard is an approximate index of its
own rows (seeded), so the neighbours are as approximate as one index's, but not the same ones.

A shard's search needs the whole query matrix and its own rows; on a cluster the matrix is sent once and
shared by the tasks (:meth:`finerouter.engines.base.Engine.run_tasks`), and the driver holds only the
``(n, k + 1)`` candidates of each shard while it merges.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from finerouter.errors import ParameterError


def n_shards(n: int, shard_rows: int | None) -> int:
    """How many database shards of at most ``shard_rows`` rows cover ``n`` rows (1 when ``shard_rows`` is None)."""
    if shard_rows is None or n <= shard_rows:
        return 1
    return math.ceil(n / shard_rows)


def shard_bounds(n: int, shards: int) -> list[tuple[int, int]]:
    """``shards`` contiguous ``(lo, hi)`` row ranges covering ``range(n)``, sizes differing by at most one."""
    if shards < 1:
        raise ParameterError(f"The number of kNN shards must be at least 1. Got {shards}.")
    edges = np.linspace(0, n, shards + 1).round().astype(np.int64)
    return [(int(lo), int(hi)) for lo, hi in zip(edges[:-1], edges[1:]) if hi > lo]


def search_shard(x: np.ndarray, bounds: tuple[int, int], k: int, method: str, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Every row of ``x: (n, d)`` searched in the shard ``x[lo:hi]``: ``(indices (n, k'), similarities (n, k'))``
    with global row indices, best first, ``k' = min(k, hi - lo)``; the query itself is not excluded.

    ``method``: ``"exact"`` (faiss IndexFlatIP) or ``"hnsw"`` (faiss IndexHNSWFlat seeded with ``seed``, with
    the settings of :mod:`finerouter.discovery.graph`).
    """
    from finerouter.discovery import graph

    faiss = graph._import_faiss()
    lo, hi = bounds
    rows = np.ascontiguousarray(x[lo:hi], dtype=np.float32)
    d = rows.shape[1]
    take = min(k, hi - lo)
    if method == "exact":
        index = faiss.IndexFlatIP(d)
    elif method == "hnsw":
        index = faiss.IndexHNSWFlat(d, graph.HNSW_M, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.rng = faiss.RandomGenerator(int(seed))
        index.hnsw.efConstruction = graph.HNSW_EF_CONSTRUCTION
        index.hnsw.efSearch = max(graph.HNSW_EF_SEARCH, 2 * take)
    else:
        raise ParameterError(f"The kNN method of a shard must be 'exact' or 'hnsw'. Got {method!r}.")
    index.add(rows)
    sim, idx = index.search(np.ascontiguousarray(x, dtype=np.float32), take)
    missing = idx < 0
    idx = np.where(missing, -1, idx.astype(np.int64) + lo)
    return idx, np.where(missing, -np.inf, sim).astype(np.float32)


def merge_shards(parts: Sequence[tuple[np.ndarray, np.ndarray]], k: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` best candidates of each row over the shards' ``(indices, similarities)``: ``(n, k)`` each,
    ordered by similarity (highest first), then by row index; missing candidates (-1) last."""
    idx = np.concatenate([p[0] for p in parts], axis=1)
    sim = np.concatenate([p[1] for p in parts], axis=1)
    n, c = idx.shape
    # one lexsort over all rows: by row, then similarity descending, then index (missing -1 rows: -inf, last)
    tie_idx = np.where(idx < 0, np.iinfo(np.int64).max, idx)
    order = np.lexsort((tie_idx.ravel(), -sim.ravel().astype(np.float64), np.repeat(np.arange(n), c)))
    order = order.reshape(n, c)[:, :k] - (np.arange(n) * c)[:, None]
    return np.take_along_axis(idx, order, axis=1), np.take_along_axis(sim, order, axis=1)


def sharded_knn_search(
    x: np.ndarray,
    k: int,
    *,
    method: str,
    seed: int,
    n_shards: int,
    run: Callable[[Callable[[Any, Any], Any], Sequence[Any]], list[Any]] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`finerouter.discovery.graph.knn_search` of ``x: (n, d)`` in ``n_shards`` database shards (see the
    module docstring): ``(indices (n, k'), similarities (n, k'))``, self excluded, ``k' = min(k, n - 1)``.

    Args:
        method: ``"auto"``, ``"exact"`` or ``"hnsw"``; ``"auto"`` is resolved on the whole matrix's size, as the
            unsharded search does.
        run: how the shard searches run, ``run(fn, items, shared=x)`` as
            :meth:`finerouter.engines.base.Engine.run_tasks` (default: one after the other here).
    """
    from finerouter.discovery.graph import (
        _check_embeddings,
        _drop_self,
        resolve_knn_method,
    )

    x = _check_embeddings(x)
    n = x.shape[0]
    k = min(int(k), n - 1)
    if k < 1:
        return np.zeros((n, 0), dtype=np.int64), np.zeros((n, 0), dtype=np.float32)
    how = resolve_knn_method(n, method)
    bounds = [(b, k + 1, how, seed) for b in shard_bounds(n, n_shards)]
    if run is None:
        parts = [_search_task(x, item) for item in bounds]
    else:
        parts = run(_search_task, bounds, shared=x)
    idx, sim = merge_shards(parts, k + 1)
    return _drop_self(idx, sim, k)


def _search_task(x: np.ndarray, item: tuple[tuple[int, int], int, str, int]) -> tuple[np.ndarray, np.ndarray]:
    """One shard's search as an engine task: ``item`` = ``(bounds, k, method, seed)``."""
    bounds, k, method, seed = item
    return search_shard(x, bounds, k, method, seed)


__all__ = ["merge_shards", "n_shards", "search_shard", "shard_bounds", "sharded_knn_search"]
