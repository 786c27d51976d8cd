"""MLP regressor: predict every model's quality score from the prompt embedding (one output per model)."""

from __future__ import annotations

from typing import Any

import numpy as np

from finerouter.baselines._torch import MLPRouter, masked_mse
from finerouter.baselines.base import fill_missing
from finerouter.data.dataset import RoutingDataset


class MLPRegressorRouter(MLPRouter):
    """A one-hidden-layer MLP with a sigmoid output per model, trained with MSE on the observed scores.

    Args: see :class:`finerouter.baselines._torch.MLPRouter`.
    """

    name = "mlp_regressor"

    def _prepare(self, train: RoutingDataset, emb: np.ndarray, fit_idx: np.ndarray) -> None:
        import torch

        target, mask = fill_missing(train.scores[fit_idx], self.prior_)
        self._y = torch.from_numpy(target.astype(np.float32))
        self._mask = torch.from_numpy(mask.astype(np.float32))

    def _batch_loss(self, module: Any, idx: Any) -> Any:
        return masked_mse(module(self._x[idx]).sigmoid(), self._y[idx], self._mask[idx])

    def _scores(self, module: Any, x: Any) -> Any:
        return module(x).sigmoid()
