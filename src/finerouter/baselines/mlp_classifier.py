"""The paper's "MLP" baseline: classify each prompt's embedding into its best model."""

from __future__ import annotations

from typing import Any

import numpy as np

from finerouter.baselines._torch import MLPRouter
from finerouter.baselines.base import best_model_labels
from finerouter.data.dataset import RoutingDataset


class MLPClassifierRouter(MLPRouter):
    """A one-hidden-layer MLP trained with cross-entropy to predict the best model of each training prompt.

    The label of a prompt is its best-scoring model; ties (common with 0/1 scores, e.g. when several models
    answer correctly) go to the model with the higher mean training score, and a prompt where every model
    scored the same gets that overall best model — the bias towards one model the paper notes for
    classification routers. ``predict_scores`` returns the class probabilities.

    Args: see :class:`finerouter.baselines._torch.MLPRouter`.
    """

    name = "mlp_classifier"

    def _prepare(self, train: RoutingDataset, emb: np.ndarray, fit_idx: np.ndarray) -> None:
        import torch

        self._y = torch.from_numpy(best_model_labels(train.scores[fit_idx], self.prior_))

    def _batch_loss(self, module: Any, idx: Any) -> Any:
        from torch.nn import functional as F

        return F.cross_entropy(module(self._x[idx]), self._y[idx])

    def _scores(self, module: Any, x: Any) -> Any:
        return module(x).softmax(dim=-1)
