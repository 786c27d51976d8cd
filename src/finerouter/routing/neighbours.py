"""A local score source: each model's mean score on a prompt's nearest training prompts, averaged with a ridge
regression of its scores on the prompt embedding.

Where data is thin (a few hundred scored prompts) or the pool is large and mostly dominated, a parametric
estimator has little to learn from, while the neighbours' observed scores are an unbiased, if noisy, local
estimate. FineRouter offers it to its cross-validated mixing as a fourth source
(:mod:`finerouter.routing.mixing`): it enters the final score only if the held-out folds say it routes better.

Two smoothers of the same training scores err differently: the neighbour mean averages a prompt's ``k`` nearest
prompts and ignores the rest, a ridge regression (:func:`fit_ridge`) draws one linear trend per model through all of
them and shrinks it toward the model's mean score as its penalty grows. Their equal average
(:func:`local_estimates`) routed judge-scored 55-model pools of 400 and 800 prompts at least as well as the
neighbour mean alone in mean over five seeds on each shared dataset, and better than the ridge alone on most
(``bench/local_source.py``; docs/models.md). Both choose their smoothing on the training prompts by leave-one-out
routing quality (:func:`choose_k`, :func:`choose_ridge`); ties take the smoother estimate.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: Query rows per block of the similarity matrix (bounds memory to ``block x n_reference`` floats).
_BLOCK_ROWS = 1024
#: The numbers of neighbours :func:`choose_k` weighs (each capped at the training prompts less one).
K_GRID = (5, 10, 20, 40, 80, 160)
#: The ridge penalties :func:`choose_ridge` weighs (on unit-norm sentence embeddings, unscaled sums of squares).
RIDGE_GRID = (1.0, 3.0, 10.0, 30.0, 100.0, 300.0, 1000.0)
#: :func:`choose_ridge` chooses on at most this many training prompts (a seeded sample beyond).
RIDGE_CHOICE_PROMPTS = 20_000


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


@dataclass(frozen=True)
class RidgeFit:
    """A ridge regression of each model's scores on the prompt embedding, with an unpenalised intercept:
    ``predict(x) = (x - mean_x) @ coef + mean_y``. ``mean_x`` ``(d,)``, ``coef`` ``(d, m)``, ``mean_y`` ``(m,)``
    (NaN for a model never observed, which then predicts NaN); ``penalty`` the L2 penalty it was fitted with."""

    mean_x: np.ndarray
    coef: np.ndarray
    mean_y: np.ndarray
    penalty: float

    def predict(self, queries: np.ndarray) -> np.ndarray:
        """``(q, m)`` the predicted scores of ``queries`` ``(q, d)``."""
        return (np.asarray(queries, dtype=np.float64) - self.mean_x) @ self.coef + self.mean_y[None, :]


def _centred(reference: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(mean_x, centred x, mean_y, centred y)``: a score not observed counts as its model's mean (no pull)."""
    x = np.asarray(reference, dtype=np.float64)
    observed, _, overall = _filled(np.asarray(scores, dtype=np.float64))
    y = np.where(observed, scores, np.nan_to_num(overall, nan=0.0)[None, :])
    mean_x = x.mean(axis=0)
    return mean_x, x - mean_x, overall, y - np.nan_to_num(overall, nan=0.0)[None, :]


def fit_ridge(reference: np.ndarray, reference_scores: np.ndarray, penalty: float) -> RidgeFit:
    """The ridge regression of ``reference_scores`` ``(n, m)`` (NaN = not evaluated) on ``reference`` ``(n, d)``
    with L2 ``penalty`` (> 0)."""
    mean_x, xc, mean_y, yc = _centred(reference, reference_scores)
    gram = xc.T @ xc
    gram[np.diag_indices_from(gram)] += float(penalty)
    coef = np.linalg.solve(gram, xc.T @ yc)
    return RidgeFit(mean_x, coef, mean_y, float(penalty))


def choose_ridge(
    reference: np.ndarray, reference_scores: np.ndarray, grid: tuple[float, ...] = RIDGE_GRID, seed: int = 0
) -> float | None:
    """The ridge penalty of ``grid`` that routes the training prompts best, each by a fit without itself.

    The leave-one-out predictions of a ridge regression with an intercept are exact in closed form (the
    residual over one minus the prompt's leverage), so every penalty costs one pass over a thin SVD of the
    centred embeddings. Each prompt is routed to the highest predicted of its observed models and scores that
    model's true score; the highest mean wins, ties the larger penalty (the smoother fit). On more than
    :data:`RIDGE_CHOICE_PROMPTS` prompts, a seeded sample of that many chooses. None when fewer than 3 prompts or
    an empty grid leave nothing to choose on.
    """
    scores = np.asarray(reference_scores, dtype=np.float64)
    n = scores.shape[0]
    grid = tuple(sorted({float(g) for g in grid if float(g) > 0}))
    if n < 3 or not grid:
        return None
    rows = np.arange(n)
    if n > RIDGE_CHOICE_PROMPTS:
        rows = np.sort(np.random.default_rng(seed).choice(n, size=RIDGE_CHOICE_PROMPTS, replace=False))
    scores = scores[rows]
    _, xc, mean_y, yc = _centred(np.asarray(reference)[rows], scores)
    mean_y = np.nan_to_num(mean_y, nan=0.0)
    u, s, _ = np.linalg.svd(xc, full_matrices=False)
    uty = u.T @ yc
    own = np.isfinite(scores)
    routable = own.any(axis=1)
    best, best_quality = grid[0], -np.inf
    for penalty in grid:
        shrink = s**2 / (s**2 + penalty)
        fitted = u @ (shrink[:, None] * uty)  # centred fit; the intercept's leverage is 1/n
        leverage = np.einsum("ij,j,ij->i", u, shrink, u) + 1.0 / rows.size
        loo = yc - (yc - fitted) / np.maximum(1.0 - leverage, 1e-9)[:, None] + mean_y[None, :]
        pick = np.argmax(np.where(own, loo, -np.inf), axis=1)
        quality = scores[np.arange(rows.size), pick][routable].mean() if routable.any() else -np.inf
        if quality >= best_quality:  # ties: the larger penalty (the grid is ascending)
            best, best_quality = penalty, quality
    return best


def local_estimates(
    queries: np.ndarray, reference: np.ndarray, reference_scores: np.ndarray, k: int | None = None,
    ridge: RidgeFit | None = None,
) -> np.ndarray:
    """``(q, m)`` the neighbour source: :func:`neighbour_means` over ``k`` neighbours, averaged half and half with
    ``ridge``'s predictions where one is given (a model the ridge cannot predict keeps its neighbour mean); the
    neighbour mean alone without it (artifacts saved before the ridge)."""
    means = neighbour_means(queries, reference, reference_scores, k)
    if ridge is None:
        return means
    predicted = ridge.predict(queries)
    return np.where(np.isfinite(predicted), 0.5 * (means + predicted), means)


__all__ = [
    "K_GRID", "RIDGE_CHOICE_PROMPTS", "RIDGE_GRID", "RidgeFit", "choose_k", "choose_ridge", "default_k", "fit_ridge",
    "local_estimates", "neighbour_means",
]  # fmt: skip
