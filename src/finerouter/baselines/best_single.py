"""The best single model: the model with the highest mean training score, for every prompt."""

from __future__ import annotations

import numpy as np

from finerouter.baselines.base import Router
from finerouter.data.dataset import RoutingDataset


class BestSingleRouter(Router):
    """Send every prompt to the model with the best mean score on the training data (chosen on training only)."""

    name = "best_single"
    kind = "reference"

    def fit(self, train: RoutingDataset, embeddings: np.ndarray) -> BestSingleRouter:
        self._fit_common(train, embeddings)
        self.model_index_ = int(np.argmax(self.prior_))
        return self

    def _choose(self, embeddings: np.ndarray, data: RoutingDataset | None) -> np.ndarray:
        return np.full(embeddings.shape[0], self.model_index_, dtype=np.int64)
