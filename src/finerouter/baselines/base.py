"""The one small interface every router in the evaluation harness implements, and its shared helpers.

A router is fitted on a training :class:`~finerouter.data.dataset.RoutingDataset` plus the prompt embeddings of
its rows, then scores or routes new prompts from their embeddings alone. Two reference routers (the oracle and
the coarse-taxonomy router) also read the *test* dataset at prediction time; they say so with
``uses_test_labels = True`` and the reports label them.

Routing rule (the same for every router, so cost–quality curves are comparable): each prompt's predicted scores
are min–max normalised across models (:func:`finerouter.routing.policy.minmax_rows`); among models within
``tolerance`` of the best normalised score, the cheapest is chosen
(:func:`finerouter.routing.policy.choose_models`). Without costs, exact ties go to the model with the higher
mean training score.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from typing import Any

import numpy as np

from finerouter._validation import check_float, check_is_fitted
from finerouter.data.dataset import RoutingDataset, split_indices
from finerouter.errors import DataError, ParameterError

logger = logging.getLogger(__name__)


class Router(ABC):
    """A router compared in the evaluation harness.

    Attributes:
        name: short name used in reports (set by each subclass).
        kind: ``"reference"`` (oracle, best single, random), ``"baseline"``, ``"ablation"`` or ``"finerouter"``.
        uses_test_labels: True when prediction reads the test dataset (oracle, coarse taxonomy).
    """

    name: str = "router"
    kind: str = "baseline"
    uses_test_labels: bool = False

    @abstractmethod
    def fit(self, train: RoutingDataset, embeddings: np.ndarray) -> Router:
        """Learn from ``train`` and its ``(n, d)`` prompt embeddings; return self."""

    def predict_scores(self, embeddings: np.ndarray, data: RoutingDataset | None = None) -> np.ndarray | None:
        """``(n, m)`` estimated quality per model (higher is better), or None for routers that only pick.

        Args:
            embeddings: ``(n, d)`` prompt embeddings.
            data: the dataset the rows come from; read only by routers with ``uses_test_labels``.
        """
        return None

    def predict_expected(self, embeddings: np.ndarray, data: RoutingDataset | None = None) -> np.ndarray | None:
        """``(n, m)`` expected true score per model *on the score scale*, for cost-aware routing
        (``argmax expected - lambda * cost``), or None when the router's scores are not on that scale (ranks,
        probabilities, normalised mixes). The harness traces a lambda-curve only for routers that give one.
        """
        return None

    def _choose(self, embeddings: np.ndarray, data: RoutingDataset | None) -> np.ndarray:
        """``(n,)`` model index for routers that do not score (override when ``predict_scores`` is None)."""
        raise NotImplementedError(f"{type(self).__name__} must implement predict_scores or _choose")

    def route(
        self,
        embeddings: np.ndarray,
        tolerance: float = 0.0,
        costs: np.ndarray | None = None,
        data: RoutingDataset | None = None,
    ) -> np.ndarray:
        """``(n,)`` index of the chosen model per prompt.

        Args:
            embeddings: ``(n, d)`` prompt embeddings.
            tolerance: in [0, 1]; among models within ``tolerance`` of the best normalised score, the cheapest.
                Routers without scores ignore it.
            costs: ``(n, m)`` route-time cost estimates, or None.
            data: the dataset the rows come from (see :meth:`predict_scores`).
        """
        tolerance = check_float(tolerance, "tolerance", f"{type(self).__name__}.route", low=0.0, high=1.0)
        emb = self._check_input(embeddings)
        scores = self.predict_scores(emb, data)
        if scores is None:
            return np.asarray(self._choose(emb, data), dtype=np.int64)
        return select_models(scores, costs, tolerance, self.prior_)

    @property
    def is_score_based(self) -> bool:
        """Whether :meth:`predict_scores` gives scores (then a cost–quality curve can be swept)."""
        return type(self).predict_scores is not Router.predict_scores

    def _fit_common(self, train: RoutingDataset, embeddings: np.ndarray) -> np.ndarray:
        """Validate the inputs of ``fit`` and set ``models_`` and ``prior_``; return the embeddings as float32."""
        if not isinstance(train, RoutingDataset):
            raise ParameterError(f"{type(self).__name__}.fit expects a RoutingDataset. Got {type(train).__name__}.")
        emb = check_embeddings(embeddings, f"{type(self).__name__}.fit")
        if emb.shape[0] != train.n_prompts:
            raise DataError(
                f"{type(self).__name__}.fit: embeddings have {emb.shape[0]} rows for {train.n_prompts} prompts"
            )
        if train.n_prompts == 0:
            raise DataError(f"{train.source}: {type(self).__name__} cannot be fitted on an empty dataset")
        self.models_ = list(train.models)
        self.prior_ = model_prior(train.scores)
        self.n_features_ = int(emb.shape[1])
        return emb

    def _check_input(self, embeddings: np.ndarray) -> np.ndarray:
        """Check the router is fitted and ``embeddings`` match its width; return them as float32."""
        check_is_fitted(self, ["models_"])
        where = f"{type(self).__name__}.predict"
        emb = check_embeddings(embeddings, where)
        if emb.shape[1] != self.n_features_:
            raise DataError(
                f"{where}: embeddings have {emb.shape[1]} features, the router was fitted on {self.n_features_}"
            )
        return emb


def check_embeddings(embeddings: Any, where: str) -> np.ndarray:
    """Return ``embeddings`` as a finite float32 ``(n, d)`` array, or raise ParameterError naming ``where``."""
    emb = np.asarray(embeddings, dtype=np.float32)
    if emb.ndim != 2:
        raise ParameterError(f"{where}: embeddings must be a 2-D array (n, d); got shape {emb.shape}")
    if not np.isfinite(emb).all():
        row = int(np.argwhere(~np.isfinite(emb))[0, 0])
        raise ParameterError(f"{where}: embeddings row {row} has a NaN or infinite value")
    return emb


def model_prior(scores: np.ndarray) -> np.ndarray:
    """``(m,)`` mean observed training score per model (0 where a model was never scored): the tie rule."""
    with np.errstate(invalid="ignore"):
        means = np.nanmean(np.where(np.isfinite(scores), scores, np.nan), axis=0)
    return np.nan_to_num(means, nan=0.0)


def select_models(
    scores: np.ndarray, costs: np.ndarray | None, tolerance: float, prior: np.ndarray
) -> np.ndarray:
    """``(n,)`` chosen model per prompt from ``(n, m)`` scores under the harness's routing rule.

    Scores are min–max normalised per prompt; among models within ``tolerance`` of the best, the cheapest wins
    (ties in cost: the higher score). Without costs, the best score wins and exact ties go to the model with the
    higher ``prior`` (mean training score). NaN scores are never preferred.
    """
    from finerouter.routing.policy import choose_models, minmax_rows

    scores = np.asarray(scores, dtype=np.float64)
    norm = minmax_rows(scores)
    norm = np.where(np.isfinite(scores), norm, np.nan)  # a model without a score is never eligible
    if costs is None:
        order = np.argsort(np.argsort(prior, kind="stable"), kind="stable")  # 0 = lowest prior
        norm = norm + 1e-9 * (order[None, :] + 1) / (len(prior) + 1)
    choice, _ = choose_models(norm, costs, tolerance)
    return choice


def best_model_labels(scores: np.ndarray, prior: np.ndarray) -> np.ndarray:
    """``(n,)`` index of each prompt's best-scoring model under the discovery tie rule
    (:func:`finerouter.discovery.ranking.rank_order`): ties, frequent with 0/1 scores, go to the model with the
    higher ``prior`` (mean training score), then the lower index; NaN ranks last, so a prompt with no observed
    score gets the model with the highest prior.
    """
    from finerouter.discovery.ranking import rank_order

    return rank_order(scores, tie_break=prior)[:, 0].astype(np.int64)


def dev_split(train: RoutingDataset, dev_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Row indices ``(fit, dev)`` of ``train``, split by unique prompt and stratified by task.

    Hyper-parameters and early stopping use only this dev part, never the test split.
    """
    return split_indices(train.prompts, train.tasks, dev_fraction, seed)


def fill_missing(scores: np.ndarray, prior: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(targets, mask)``: ``(n, m)`` scores with NaN replaced by the model's prior, and the observed mask."""
    mask = np.isfinite(scores)
    return np.where(mask, scores, prior[None, :]), mask
