"""The random router: a uniformly random model per prompt (seeded)."""

from __future__ import annotations

import numpy as np

from finerouter._validation import check_int
from finerouter.baselines.base import Router
from finerouter.data.dataset import RoutingDataset


class RandomRouter(Router):
    """Pick a model uniformly at random for each prompt; the same ``seed`` gives the same picks.

    Args:
        seed: seed of the random generator (re-created at each ``route`` call, so routing is reproducible).
    """

    name = "random"
    kind = "reference"

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed

    def fit(self, train: RoutingDataset, embeddings: np.ndarray) -> RandomRouter:
        check_int(self.seed, "seed", "RandomRouter", low=0)
        self._fit_common(train, embeddings)
        return self

    def _choose(self, embeddings: np.ndarray, data: RoutingDataset | None) -> np.ndarray:
        rng = np.random.default_rng(self.seed)
        return rng.integers(0, len(self.models_), size=embeddings.shape[0]).astype(np.int64)
