"""A non-parametric score source: each model's mean score on a prompt's nearest training prompts.

Where data is thin (a few hundred scored prompts) or the pool is large and mostly dominated, a parametric
estimator has little to learn from, while the neighbours' observed scores are an unbiased, if noisy, local
estimate. FineRouter offers it to its cross-validated mixing as a fourth source
(:mod:`finerouter.routing.mixing`): it enters the final score only if the held-out folds say it routes better.
"""

from __future__ import annotations

import numpy as np

#: Query rows per block of the similarity matrix (bounds memory to ``block x n_reference`` floats).
_BLOCK_ROWS = 1024
#: The numbers of neighbours :func:`choose_k` weighs (each capped at the training prompts less one).
K_GRID = (5, 10, 20, 40, 80, 160)


def _filled(scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(observed, scores with 0 for NaN, each model's overall mean (NaN if never observed))``."""
    observed = np.isfinite(scores)
    filled = np.where(observed, scores, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return observed, filled, filled.sum(axis=0) / observed.sum(axis=0)


def _means(sums: np.ndarray, counts: np.ndarray, overall: np.ndarray) -> np.ndarray:
    """Each model's mean over the neighbours that observed it; its overall mean where none did."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, sums / np.maximum(counts, 1), overall[None, :])


def default_k(n_reference: int) -> int:
    """The number of neighbours for ``n_reference`` training prompts: about half the square root, in [5, 40]
    (more neighbours average away more noise; too many blur the prompt's own kind)."""
    return int(np.clip(round(np.sqrt(max(n_reference, 1)) / 2.0), 5, 40))


def neighbour_means(
    queries: np.ndarray, reference: np.ndarray, reference_scores: np.ndarray, k: int | None = None
) -> np.ndarray:
    """``(q, m)`` each model's mean observed score over the ``k`` training prompts nearest each query.

    Args:
        queries: ``(q, d)`` L2-normalised prompt embeddings.
        reference: ``(n, d)`` L2-normalised embeddings of the training prompts.
        reference_scores: ``(n, m)`` their scores (NaN = not evaluated).
        k: neighbours per query (None: :func:`default_k`; capped at ``n``).

    A model with no observed score among a query's neighbours takes its mean over all reference prompts (NaN if it
    has none at all). Nearest = highest cosine.
    """
    queries = np.asarray(queries, dtype=np.float32)
    reference = np.asarray(reference, dtype=np.float32)
    scores = np.asarray(reference_scores, dtype=np.float64)
    n = reference.shape[0]
    k = min(default_k(n) if k is None else int(k), n)
    observed, filled, overall = _filled(scores)
    out = np.empty((queries.shape[0], scores.shape[1]), dtype=np.float64)
    for start in range(0, queries.shape[0], _BLOCK_ROWS):
        sims = queries[start : start + _BLOCK_ROWS] @ reference.T  # (b, n)
        if k < n:
            top = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        else:
            top = np.broadcast_to(np.arange(n), (sims.shape[0], n))
        out[start : start + sims.shape[0]] = _means(filled[top].sum(axis=1), observed[top].sum(axis=1), overall)
    return out


def choose_k(reference: np.ndarray, reference_scores: np.ndarray, grid: tuple[int, ...] = K_GRID) -> int:
    """The number of neighbours that routes the training prompts best, each by its neighbours but itself.

    Leave-one-out: for every training prompt, each model's mean observed score over its ``k`` nearest *other*
    training prompts (the overall mean where none observed the model); the prompt is routed to the highest of its
    observed models and scores that model's true score. The ``k`` of ``grid`` (capped at ``n - 1``) with the
    highest mean is returned (ties: the smallest). How many neighbours a prompt needs depends on the data, not on
    its size alone: judge scores with per-answer noise and dozens of models need many more to average the noise
    away than 0/1 scores of a few models (:func:`default_k` is the fallback for fewer than 3 prompts).
    """
    reference = np.asarray(reference, dtype=np.float32)
    scores = np.asarray(reference_scores, dtype=np.float64)
    n = reference.shape[0]
    ks = sorted({min(int(k), n - 1) for k in grid if int(k) >= 1})
    if n < 3 or not ks:
        return default_k(n)
    k_max = ks[-1]
    observed, filled, overall = _filled(scores)
    totals = np.zeros(len(ks))
    for start in range(0, n, _BLOCK_ROWS):
        rows = np.arange(start, min(start + _BLOCK_ROWS, n))
        sims = reference[rows] @ reference.T
        sims[np.arange(rows.size), rows] = -np.inf  # never one's own neighbour
        top = np.argpartition(-sims, k_max - 1, axis=1)[:, :k_max]
        top = np.take_along_axis(top, np.argsort(-np.take_along_axis(sims, top, axis=1), axis=1), axis=1)
        sums = np.cumsum(filled[top], axis=1)  # (b, k_max, m): sums over the first k neighbours
        counts = np.cumsum(observed[top], axis=1)
        own = observed[rows]
        routable = own.any(axis=1)
        for j, k in enumerate(ks):
            means = _means(sums[:, k - 1], counts[:, k - 1], overall)
            pick = np.argmax(np.where(own, np.nan_to_num(means, nan=-np.inf), -np.inf), axis=1)
            totals[j] += scores[rows, pick][routable].sum()
    return int(ks[int(np.argmax(totals))])


__all__ = ["K_GRID", "choose_k", "default_k", "neighbour_means"]
