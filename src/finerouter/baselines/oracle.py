"""The oracle: for each test prompt, a model with the best *observed* test score (a reference, not a router)."""

from __future__ import annotations

import numpy as np

from finerouter.baselines.base import Router, best_model_labels
from finerouter.data.dataset import RoutingDataset
from finerouter.errors import ParameterError


class OracleRouter(Router):
    """Upper bound: reads the test scores and picks the best model per prompt.

    Among models tied for the best score, the one with the lowest real cost on that prompt wins (when the test
    data has costs), else the one with the higher mean training score. Clearly labelled "uses test scores" in
    every report.
    """

    name = "oracle"
    kind = "reference"
    uses_test_labels = True

    def fit(self, train: RoutingDataset, embeddings: np.ndarray) -> OracleRouter:
        self._fit_common(train, embeddings)
        return self

    def _choose(self, embeddings: np.ndarray, data: RoutingDataset | None) -> np.ndarray:
        if data is None or data.n_prompts != embeddings.shape[0]:
            raise ParameterError("OracleRouter.route needs the test dataset (data=...) with one row per embedding")
        if data.models != self.models_:
            raise ParameterError(f"OracleRouter: test models {data.models} differ from training models {self.models_}")
        if data.costs is None:
            return best_model_labels(data.scores, self.prior_)
        s = np.where(np.isfinite(data.scores), data.scores, -np.inf)
        tied = (s >= s.max(axis=1, keepdims=True)) & np.isfinite(s)
        cost = np.where(np.isfinite(data.costs), data.costs, np.inf)
        key = np.where(tied, -cost + 1e-12 * self.prior_[None, :], -np.inf)
        choice = key.argmax(axis=1)
        none = ~tied.any(axis=1)
        choice[none] = int(np.argmax(self.prior_))
        return choice.astype(np.int64)
