"""kNN router: each model's mean score among the training prompts nearest to the query (cosine similarity)."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np

from finerouter._validation import check_float, check_int, check_is_fitted
from finerouter.baselines.base import Router, dev_split, select_models
from finerouter.data.dataset import RoutingDataset
from finerouter.errors import ParameterError

logger = logging.getLogger(__name__)

DEFAULT_K_GRID = (5, 10, 20, 40, 80)


def nearest_neighbours(queries: np.ndarray, base: np.ndarray, k: int, chunk: int = 2048) -> np.ndarray:
    """``(n_queries, k)`` indices into ``base`` of each query's ``k`` most similar rows, most similar first.

    Both arrays hold L2-normalised rows, so the inner product is the cosine similarity. Computed in chunks of
    ``chunk`` queries to bound memory.
    """
    k = min(k, base.shape[0])
    out = np.empty((queries.shape[0], k), dtype=np.int64)
    for start in range(0, queries.shape[0], chunk):
        sim = queries[start : start + chunk] @ base.T
        if k < base.shape[0]:
            part = np.argpartition(-sim, k - 1, axis=1)[:, :k]
        else:
            part = np.broadcast_to(np.arange(base.shape[0]), sim.shape).copy()
        order = np.argsort(-np.take_along_axis(sim, part, axis=1), axis=1, kind="stable")
        out[start : start + chunk] = np.take_along_axis(part, order, axis=1)
    return out


def neighbour_means(neighbours: np.ndarray, scores: np.ndarray, prior: np.ndarray) -> np.ndarray:
    """``(n, m)`` mean observed score of each model over each row's neighbours (``prior`` where none observed)."""
    s = scores[neighbours]  # (n, k, m)
    observed = np.isfinite(s)
    total = np.where(observed, s, 0.0).sum(axis=1)
    count = observed.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        means = total / count
    return np.where(count > 0, means, prior[None, :])


class KNNRouter(Router):
    """Predict each model's quality as its mean score over the ``k`` nearest training prompts.

    Args:
        k: number of neighbours, or ``"auto"`` to pick it from ``k_grid`` by routing quality on dev parts
            carved from the training data (by unique prompt, stratified by task).
        k_grid: candidate values of ``k`` for ``"auto"``.
        dev_fraction: share of training prompts held out per dev split.
        n_repeats: dev splits averaged (seeds ``seed``, ``seed + 1``...): one 10% dev part is too noisy to
            choose ``k`` reliably (docs/evaluation.md).
        seed: seed of the first dev split.

    Attributes:
        k_: the number of neighbours used; ``dev_quality_``: ``{k: mean dev quality}`` when tuned.
    """

    name = "knn"

    def __init__(
        self,
        k: int | str = "auto",
        k_grid: Sequence[int] = DEFAULT_K_GRID,
        dev_fraction: float = 0.1,
        n_repeats: int = 5,
        seed: int = 0,
    ) -> None:
        self.k = k
        self.k_grid = k_grid
        self.dev_fraction = dev_fraction
        self.n_repeats = n_repeats
        self.seed = seed

    def fit(self, train: RoutingDataset, embeddings: np.ndarray) -> KNNRouter:
        owner = "KNNRouter"
        if self.k != "auto":
            check_int(self.k, "k", owner, low=1)
        grid = [check_int(v, "k_grid", owner, low=1) for v in self.k_grid]
        if not grid:
            raise ParameterError("The 'k_grid' parameter of KNNRouter must name at least one k. Got [].")
        check_float(self.dev_fraction, "dev_fraction", owner, low=0.0, high=1.0, closed="neither")
        check_int(self.n_repeats, "n_repeats", owner, low=1)
        check_int(self.seed, "seed", owner, low=0)
        emb = self._fit_common(train, embeddings)
        self.dev_quality_: dict[int, float] | None = None
        if self.k == "auto":
            runs = []
            for r in range(self.n_repeats):
                fit_idx, dev_idx = dev_split(train, self.dev_fraction, self.seed + r)
                if len(dev_idx) and len(fit_idx):
                    runs.append(self._dev_quality(emb, train.scores, fit_idx, dev_idx, grid))
            if runs:
                self.dev_quality_ = {k: float(np.mean([q[k] for q in runs])) for k in runs[0]}
                q = self.dev_quality_
                self.k_ = max(q, key=lambda k: (q[k], -k))
            else:
                self.k_ = min(grid)
        else:
            self.k_ = int(self.k)
        self.embeddings_ = emb
        self.scores_ = train.scores.copy()
        logger.debug("KNNRouter: k=%d (dev quality %s)", self.k_, self.dev_quality_)
        return self

    @staticmethod
    def _dev_quality(
        emb: np.ndarray, scores: np.ndarray, fit_idx: np.ndarray, dev_idx: np.ndarray, grid: list[int]
    ) -> dict[int, float]:
        """``{k: routing quality on dev_idx}`` of kNN over fit_idx, for each k in ``grid``."""
        from finerouter.baselines.base import model_prior

        prior = model_prior(scores[fit_idx])
        nbrs = nearest_neighbours(emb[dev_idx], emb[fit_idx], max(grid))
        dev_scores = np.nan_to_num(scores[dev_idx], nan=0.0)
        quality: dict[int, float] = {}
        for k in sorted(set(grid)):
            pred = neighbour_means(nbrs[:, :k], scores[fit_idx], prior)
            choice = select_models(pred, None, 0.0, prior)
            quality[k] = float(dev_scores[np.arange(len(dev_idx)), choice].mean())
        return quality

    def predict_scores(self, embeddings: np.ndarray, data: RoutingDataset | None = None) -> np.ndarray:
        check_is_fitted(self, ["embeddings_"])
        emb = self._check_input(embeddings)
        nbrs = nearest_neighbours(emb, self.embeddings_, self.k_)
        return neighbour_means(nbrs, self.scores_, self.prior_)

    def predict_expected(self, embeddings: np.ndarray, data: RoutingDataset | None = None) -> np.ndarray:
        """The raw neighbour means: each model's mean observed score over the ``k`` nearest training prompts is
        an estimate of its expected score (the cost-aware kNN baseline routes on it)."""
        return self.predict_scores(embeddings, data)
