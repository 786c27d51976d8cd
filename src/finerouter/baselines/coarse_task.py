"""The coarse-taxonomy router: route by the dataset's own task label (the source benchmark).

Each task's per-model mean training score ranks the models; a test prompt uses *its given task label*. That
label is the benchmark the prompt came from — information a deployed router does not have — so this router is an
oracle-ish upper bound for a perfect coarse classifier (the paper's "Coarse CLS" uses a predicted label).
"""

from __future__ import annotations

import numpy as np

from finerouter._validation import check_is_fitted
from finerouter.baselines.base import Router, model_prior
from finerouter.data.dataset import RoutingDataset
from finerouter.errors import DataError, ParameterError


class CoarseTaskRouter(Router):
    """Per coarse task, the models' mean training scores; at test, the row of the prompt's given task.

    A test task unseen in training falls back to the overall mean scores.
    """

    name = "coarse_task"
    kind = "ablation"
    uses_test_labels = True

    def fit(self, train: RoutingDataset, embeddings: np.ndarray) -> CoarseTaskRouter:
        self._fit_common(train, embeddings)
        if train.tasks is None:
            raise DataError(f"{train.source}: CoarseTaskRouter needs task labels (a 'task' column)")
        tasks = np.asarray(train.tasks)
        self.task_scores_ = {}
        for t in sorted(set(train.tasks)):
            self.task_scores_[t] = model_prior(train.scores[tasks == t])
        return self

    def predict_scores(self, embeddings: np.ndarray, data: RoutingDataset | None = None) -> np.ndarray:
        check_is_fitted(self, ["task_scores_"])
        if data is None or data.tasks is None or data.n_prompts != len(embeddings):
            raise ParameterError(
                "CoarseTaskRouter.predict_scores needs the dataset (data=...) with task labels, one row per embedding"
            )
        rows = [self.task_scores_.get(t, self.prior_) for t in data.tasks]
        return np.asarray(rows, dtype=np.float64).reshape(len(rows), len(self.models_))
