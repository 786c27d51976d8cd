"""MLP regressor: predict every model's quality score from the prompt embedding (one output per model)."""

from __future__ import annotations

from typing import Any

import numpy as np

from finerouter.baselines._torch import TorchRouter, masked_mse
from finerouter.baselines.base import fill_missing
from finerouter.data.dataset import RoutingDataset


class MLPRegressorRouter(TorchRouter):
    """A one-hidden-layer MLP with a sigmoid output per model, trained with MSE on the observed scores.

    Args: see :class:`finerouter.baselines._torch.TorchRouter`; ``dropout`` in [0, 1).
    """

    name = "mlp_regressor"

    def __init__(self, hidden: int = 256, dropout: float = 0.1, epochs: int = 40, lr: float = 1e-3,
                 batch_size: int = 128, weight_decay: float = 1e-4, patience: int = 5, dev_fraction: float = 0.1,
                 seed: int = 0) -> None:
        super().__init__(hidden, epochs, lr, batch_size, weight_decay, patience, dev_fraction, seed)
        self.dropout = dropout

    def _prepare(self, train: RoutingDataset, emb: np.ndarray, fit_idx: np.ndarray) -> None:
        import torch

        target, mask = fill_missing(train.scores[fit_idx], self.prior_)
        self._y = torch.from_numpy(target.astype(np.float32))
        self._mask = torch.from_numpy(mask.astype(np.float32))

    def _build(self, d: int, m: int) -> Any:
        from torch import nn

        return nn.Sequential(nn.Linear(d, self.hidden), nn.ReLU(), nn.Dropout(self.dropout), nn.Linear(self.hidden, m))

    def _batch_loss(self, module: Any, idx: Any) -> Any:
        return masked_mse(module(self._x[idx]).sigmoid(), self._y[idx], self._mask[idx])

    def _scores(self, module: Any, x: Any) -> Any:
        return module(x).sigmoid()
