"""The paper's "MLP" baseline: classify each prompt's embedding into its best model."""

from __future__ import annotations

from typing import Any

import numpy as np

from finerouter.baselines._torch import TorchRouter
from finerouter.baselines.base import best_model_labels
from finerouter.data.dataset import RoutingDataset


class MLPClassifierRouter(TorchRouter):
    """A one-hidden-layer MLP trained with cross-entropy to predict the best model of each training prompt.

    The label of a prompt is its best-scoring model; ties (common with 0/1 scores, e.g. when several models
    answer correctly) go to the model with the higher mean training score, and a prompt where every model
    scored the same gets that overall best model — the bias towards one model the paper notes for
    classification routers. ``predict_scores`` returns the class probabilities.

    Args: see :class:`finerouter.baselines._torch.TorchRouter`; ``dropout`` in [0, 1).
    """

    name = "mlp_classifier"

    def __init__(self, hidden: int = 256, dropout: float = 0.1, epochs: int = 40, lr: float = 1e-3,
                 batch_size: int = 128, weight_decay: float = 1e-4, patience: int = 5, dev_fraction: float = 0.1,
                 seed: int = 0) -> None:
        super().__init__(hidden, epochs, lr, batch_size, weight_decay, patience, dev_fraction, seed)
        self.dropout = dropout

    def _prepare(self, train: RoutingDataset, emb: np.ndarray, fit_idx: np.ndarray) -> None:
        import torch

        self._y = torch.from_numpy(best_model_labels(train.scores[fit_idx], self.prior_))

    def _build(self, d: int, m: int) -> Any:
        from torch import nn

        return nn.Sequential(nn.Linear(d, self.hidden), nn.ReLU(), nn.Dropout(self.dropout), nn.Linear(self.hidden, m))

    def _batch_loss(self, module: Any, idx: Any) -> Any:
        from torch.nn import functional as F

        return F.cross_entropy(module(self._x[idx]), self._y[idx])

    def _scores(self, module: Any, x: Any) -> Any:
        return module(x).softmax(dim=-1)
