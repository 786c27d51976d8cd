"""Rank-biased overlap (Webber, Moffat & Zobel 2010), vectorised over many pairs of full rankings.

For two rankings ``S`` and ``T`` of the same ``m`` items (conjoint, full depth), let ``X_d`` be the size of
the overlap of their top-``d`` prefixes. The extrapolated RBO at depth ``k = m`` (Webber et al., eq. 32) is

    RBO_ext = (X_k / k) * p**k  +  ((1 - p) / p) * sum_{d=1..k} (X_d / d) * p**d

With full rankings ``X_m = m``, so identical rankings score exactly 1 and the score is top-weighted by ``p``.
Note its floor: for full rankings every pair scores at least ``p**m`` plus the overlap the deep prefixes
cannot avoid (:func:`rbo_floor` gives the score of two reversed rankings, :func:`expected_rbo` that of two
random ones: for 9 models at ``p = 0.9`` about 0.55 and 0.68). :func:`chance_corrected_rbo` maps the chance
level to 0 and identity to 1; the task-discovery graph uses it by default.

``X_d`` for every pair and depth comes from the ranks directly: a model is in both top-``d`` prefixes iff
``max(rank_S, rank_T) <= d``, so ``X`` is the cumulative histogram of the element-wise maximum of the two
rank rows -- ``O(e * m)`` numpy work, no Python loop over pairs.
"""

from __future__ import annotations

import numpy as np

from finerouter._validation import check_float
from finerouter.errors import DataError


def _as_rank_matrix(x: np.ndarray, name: str) -> np.ndarray:
    a = np.asarray(x)
    if a.ndim == 1:
        a = a[None, :]
    if a.ndim != 2:
        raise DataError(f"{name} must be (n_pairs, n_models) ranks, got shape {a.shape}")
    if a.size and not np.issubdtype(a.dtype, np.integer) and not np.all(np.equal(np.mod(a, 1), 0)):
        raise DataError(f"{name} must hold integer ranks 1..m")
    return a.astype(np.int64, copy=False)


def _check_permutations(a: np.ndarray, name: str) -> None:
    m = a.shape[1]
    if a.size == 0:
        return
    expected = np.arange(1, m + 1)
    bad = np.where(~(np.sort(a, axis=1) == expected).all(axis=1))[0]
    if bad.size:
        raise DataError(
            f"{name}, row {int(bad[0])}: not a full ranking (each row must be a permutation of 1..{m}); "
            f"got {a[bad[0]].tolist()}"
        )


def overlap_at_depth(ranks_a: np.ndarray, ranks_b: np.ndarray) -> np.ndarray:
    """``(e, m)`` int64: ``X[:, d-1]`` = size of the overlap of the two top-``d`` prefixes, ``d = 1..m``."""
    e, m = ranks_a.shape
    deepest = np.maximum(ranks_a, ranks_b)  # (e, m), values in 1..m
    flat = (np.arange(e, dtype=np.int64)[:, None] * m + (deepest - 1)).ravel()
    hist = np.bincount(flat, minlength=e * m).reshape(e, m)
    return np.cumsum(hist, axis=1)


def extrapolated_rbo(ranks_a: np.ndarray, ranks_b: np.ndarray, p: float) -> np.ndarray:
    """``(e,)`` RBO_ext of row pairs of two ``(e, m)`` int64 full rank matrices, unchecked (see
    :func:`rank_biased_overlap` for the checked, public form); for callers that built the ranks themselves."""
    e, m = ranks_a.shape
    if e == 0:
        return np.zeros(0, dtype=np.float64)
    x = overlap_at_depth(ranks_a, ranks_b).astype(np.float64)
    d = np.arange(1, m + 1, dtype=np.float64)
    pw = p**d
    agreement = x / d  # A_d
    out = agreement[:, -1] * pw[-1] + ((1.0 - p) / p) * (agreement @ pw)
    return np.clip(out, 0.0, 1.0)


def rank_biased_overlap(a: np.ndarray, b: np.ndarray, p: float = 0.9) -> np.ndarray:
    """Extrapolated rank-biased overlap of many pairs of full rankings.

    Args:
        a: ``(e, m)`` 1-based ranks (``a[i, j]`` = rank of model ``j`` in the first ranking of pair ``i``), as
            returned by :func:`finerouter.discovery.rank_models`; a 1-D ``(m,)`` row is one pair.
        b: ``(e, m)`` the second ranking of each pair, same layout.
        p: persistence in ``(0, 1)``; smaller is more top-weighted (0.9 puts ~86% of the weight on the
            first 10 positions of an infinite list).

    Returns:
        ``(e,)`` float64 in ``[0, 1]``; 1.0 for identical rankings.
    """
    p = check_float(p, "p", "rank_biased_overlap", low=0.0, high=1.0, closed="neither")
    ra = _as_rank_matrix(a, "a")
    rb = _as_rank_matrix(b, "b")
    if ra.shape != rb.shape:
        raise DataError(f"rank_biased_overlap: a has shape {ra.shape} but b has shape {rb.shape}")
    _check_permutations(ra, "a")
    _check_permutations(rb, "b")
    return extrapolated_rbo(ra, rb, p)


def rbo_floor(m: int, p: float = 0.9) -> float:
    """The smallest RBO any two full rankings of ``m`` items can have (that of two reversed rankings)."""
    fwd = np.arange(1, m + 1)[None, :]
    return float(extrapolated_rbo(fwd, fwd[:, ::-1].copy(), p)[0])


def expected_rbo(m: int, p: float = 0.9) -> float:
    """Expected RBO of two independent, uniformly random full rankings of ``m`` items.

    Two random top-``d`` prefixes share ``d * d / m`` items on average (hypergeometric mean), so
    ``E[X_d / d] = d / m`` and, RBO being linear in the ``X_d``, ``E[RBO] = p**m + ((1-p)/p) sum_d (d/m) p**d``.
    """
    d = np.arange(1, m + 1, dtype=np.float64)
    return float(p**m + ((1.0 - p) / p) * np.sum((d / m) * p**d))


def chance_corrected_rbo(values: np.ndarray, m: int, p: float = 0.9) -> np.ndarray:
    """RBO corrected for chance, like a kappa: ``max(0, (rbo - E) / (1 - E))`` with ``E`` = :func:`expected_rbo`.

    Identical rankings stay at 1; two rankings that agree no more than random ones score 0. Raw RBO of full
    rankings of few items is never small -- its floor (:func:`rbo_floor`) for 9 models at ``p = 0.9`` is about
    0.55 and two random rankings score about 0.68 on average -- so a threshold of 0.4 on the raw value could
    never drop an edge; after the correction it means "clearly more agreement than chance" for any pool size.
    """
    values = np.asarray(values, dtype=np.float64)
    if m < 2:  # one item: every ranking is identical
        return np.ones_like(values)
    e = expected_rbo(m, p)
    return np.clip((values - e) / (1.0 - e), 0.0, 1.0)
