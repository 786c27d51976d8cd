"""Cluster summaries: median-pooled centres and rank fusion by mean reciprocal rank (paper eq. 4).

For a cluster ``C`` and model ``M``:  ``MRR_C(M) = 1/|C| * sum_{p in C} 1 / (rank_p(M) + epsilon)``,
with 1-based ranks and ``epsilon = 60`` by default (it damps the difference between rank 1 and rank 2).
The fused ranking orders models by decreasing MRR; ties (rare: a cluster whose prompts all rank two models
symmetrically) fall back to the same rule as per-prompt ranks (higher overall mean score, then lower index).
"""

from __future__ import annotations

import numpy as np

from finerouter.discovery.ranking import order_to_ranks, rank_order
from finerouter.encoders.base import l2_normalise


def group_index(labels: np.ndarray, n_groups: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Rows sorted by group and the start offset of each group.

    Args:
        labels: ``(n,)`` int group of each row, ``0..G-1``.
        n_groups: ``G`` (default ``labels.max() + 1``).

    Returns:
        ``(order (n,), starts (G+1,))``: rows of group ``g`` are ``order[starts[g]:starts[g+1]]``.
    """
    labels = np.asarray(labels, dtype=np.int64)
    g = int(labels.max()) + 1 if n_groups is None else int(n_groups)
    order = np.argsort(labels, kind="stable")
    counts = np.bincount(labels, minlength=g)
    starts = np.zeros(g + 1, dtype=np.int64)
    np.cumsum(counts, out=starts[1:])
    return order, starts


def group_mrr(ranks: np.ndarray, labels: np.ndarray, n_groups: int, epsilon: float = 60.0) -> np.ndarray:
    """``(G, m)`` mean reciprocal rank of every model in every group (eq. 4).

    Args:
        ranks: ``(n, m)`` 1-based per-prompt ranks.
        labels: ``(n,)`` group of each prompt, ``0..G-1`` (every group non-empty).
        n_groups: ``G``.
        epsilon: the constant added to each rank.
    """
    recip = 1.0 / (np.asarray(ranks, dtype=np.float64) + float(epsilon))
    labels = np.asarray(labels, dtype=np.int64)
    sums = np.zeros((n_groups, recip.shape[1]), dtype=np.float64)
    _add_group_sums(sums, labels, recip)
    counts = np.bincount(labels, minlength=n_groups).astype(np.float64)
    return sums / np.maximum(counts, 1.0)[:, None]


def _add_group_sums(out: np.ndarray, labels: np.ndarray, values: np.ndarray) -> None:
    """Add to ``out (G, m)`` the sum of the rows of ``values (n, m)`` in each group (``labels (n,)``)."""
    order, starts = group_index(labels, out.shape[0])
    nonempty = starts[1:] > starts[:-1]
    sums = np.add.reduceat(values[order], starts[:-1][nonempty], axis=0)
    out[nonempty] += sums


def fused_ranks(mrr: np.ndarray, tie_break: np.ndarray) -> np.ndarray:
    """``(G, m)`` 1-based fused ranks from ``(G, m)`` MRR scores (higher first), ties by ``tie_break``."""
    return order_to_ranks(rank_order(mrr, tie_break))


def fused_order(mrr: np.ndarray, tie_break: np.ndarray) -> np.ndarray:
    """``(G, m)`` model indices of each group, best fused first."""
    return rank_order(mrr, tie_break)


def group_median_centres(embeddings: np.ndarray, labels: np.ndarray, n_groups: int) -> np.ndarray:
    """``(G, d)`` float32 median-pooled, re-L2-normalised embedding of every group.

    The median is taken per dimension over the group's rows; singletons are copied (no median needed), and
    the remaining groups loop in Python -- a loop over groups, never over rows.
    """
    x = np.asarray(embeddings, dtype=np.float32)
    labels = np.asarray(labels, dtype=np.int64)
    order, starts = group_index(labels, n_groups)
    sizes = np.diff(starts)
    out = np.zeros((n_groups, x.shape[1]), dtype=np.float32)
    single = np.where(sizes == 1)[0]
    out[single] = x[order[starts[single]]]
    for g in np.where(sizes > 1)[0]:
        rows = order[starts[g] : starts[g + 1]]
        out[g] = np.median(x[rows], axis=0)
    return l2_normalise(out)


def group_nanmedian(values: np.ndarray, labels: np.ndarray, n_groups: int) -> np.ndarray:
    """``(G, m)`` NaN-aware median of ``values (n, m)`` per group (NaN where a group has no observation)."""
    v = np.asarray(values, dtype=np.float64)
    order, starts = group_index(np.asarray(labels, dtype=np.int64), n_groups)
    out = np.full((n_groups, v.shape[1]), np.nan)
    for g in range(n_groups):
        rows = order[starts[g] : starts[g + 1]]
        if rows.size:
            out[g] = nanmedian_columns(v[rows])
    return out


def nanmedian_columns(v: np.ndarray) -> np.ndarray:
    """``(m,)`` median of each column of ``v (r, m)`` ignoring NaN; NaN for an all-NaN column (no warning)."""
    v = np.asarray(v, dtype=np.float64)
    out = np.full(v.shape[1], np.nan)
    has = np.isfinite(v).any(axis=0)
    if has.any():
        out[has] = np.nanmedian(v[:, has], axis=0)
    return out
