"""Per-prompt model rankings from quality scores, with a deterministic tie rule.

Binary scores (0/1 exact match, pass@1) tie a lot: on a prompt that four models answer correctly, the four
share the top score. The tie rule decides which of them is "rank 1" and therefore which model a prompt
"prefers", so it is fixed and documented:

1. higher score first;
2. NaN (model not evaluated on the prompt) ranks after every observed score;
3. among equal scores (and among NaNs), the model with the higher overall mean score on the training data
   comes first (``tie_break``; by default the NaN-aware column mean of ``scores``);
4. then the lower model index.

Ranks are 1-based: rank 1 is the preferred model.
"""

from __future__ import annotations

import numpy as np

from finerouter.errors import DataError


def _as_scores(scores: np.ndarray) -> np.ndarray:
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim != 2:
        raise DataError(f"scores must be a 2-D (n_prompts, n_models) array, got shape {s.shape}")
    if np.isinf(s).any():
        r, c = np.argwhere(np.isinf(s))[0]
        raise DataError(f"scores: row {r}, model column {c}: infinite score")
    return s


def nanmean_columns(v: np.ndarray) -> np.ndarray:
    """``(m,)`` mean of each column's observed (finite) values of ``v (r, m)``; NaN for a column with none (no
    warning)."""
    v = np.asarray(v, dtype=np.float64)
    observed = np.isfinite(v)
    counts = observed.sum(axis=0)
    sums = np.where(observed, v, 0.0).sum(axis=0)
    return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)


def model_priority(scores: np.ndarray, tie_break: np.ndarray | None = None) -> np.ndarray:
    """Model indices in tie-break order: higher ``tie_break`` first, then lower index.

    Args:
        scores: ``(n, m)`` quality scores (NaN = not evaluated); only used when ``tie_break`` is None.
        tie_break: optional ``(m,)`` per-model value, higher first (default: NaN-aware column means of
            ``scores``; a model with no observed score gets ``-inf``).

    Returns:
        ``(m,)`` int64 permutation of ``range(m)``.
    """
    s = _as_scores(scores)
    m = s.shape[1]
    if tie_break is None:
        tie = nanmean_columns(s)
        tie = np.where(np.isnan(tie), -np.inf, tie)
    else:
        tie = np.asarray(tie_break, dtype=np.float64)
        if tie.shape != (m,):
            raise DataError(f"tie_break must have shape ({m},), got {tie.shape}")
        tie = np.where(np.isnan(tie), -np.inf, tie)
    # lexsort: the last key is the primary key.
    return np.lexsort((np.arange(m), -tie)).astype(np.int64)


def rank_order(scores: np.ndarray, tie_break: np.ndarray | None = None) -> np.ndarray:
    """Models of each prompt from most to least preferred under the tie rule of this module.

    Args:
        scores: ``(n, m)`` quality scores, NaN = not evaluated.
        tie_break: optional ``(m,)`` per-model tie-break value (higher first); default: the column means.

    Returns:
        ``(n, m)`` int64: ``order[i, r]`` is the model at (0-based) position ``r`` for prompt ``i``.
    """
    s = _as_scores(scores)
    prio = model_priority(s, tie_break)
    # Reorder the columns by tie priority, then a *stable* sort on the score keeps that priority among ties.
    key = -s[:, prio]
    key = np.where(np.isnan(key), np.inf, key)  # NaN after every observed score
    pos = np.argsort(key, axis=1, kind="stable")
    return prio[pos]


def order_to_ranks(order: np.ndarray) -> np.ndarray:
    """Invert orders: ``(n, m)`` model-at-position -> ``(n, m)`` 1-based rank of each model."""
    order = np.asarray(order)
    if order.ndim == 1:
        order = order[None, :]
    n, m = order.shape
    ranks = np.empty((n, m), dtype=np.int64)
    np.put_along_axis(ranks, order.astype(np.int64), np.broadcast_to(np.arange(1, m + 1), (n, m)), axis=1)
    return ranks


def rank_models(scores: np.ndarray, tie_break: np.ndarray | None = None) -> np.ndarray:
    """1-based rank of every model on every prompt (1 = preferred), ties broken by the module's rule.

    Args:
        scores: ``(n, m)`` quality scores, NaN = not evaluated (ranks after every observed score).
        tie_break: optional ``(m,)`` per-model value used among equal scores, higher first; default: each
            model's NaN-aware mean score over ``scores``. Remaining ties go to the lower model index.

    Returns:
        ``(n, m)`` int64 ranks; each row is a permutation of ``1..m``.

    Example:
        >>> rank_models(np.array([[1.0, 1.0, 0.0], [0.0, np.nan, 1.0]]), tie_break=np.array([0.2, 0.9, 0.5]))
        array([[2, 1, 3],
               [2, 3, 1]])
    """
    return order_to_ranks(rank_order(scores, tie_break))


def best_models(scores: np.ndarray, tie_break: np.ndarray | None = None) -> np.ndarray:
    """``(n,)`` int64 index of each prompt's rank-1 model under the tie rule."""
    return rank_order(scores, tie_break)[:, 0].copy()
