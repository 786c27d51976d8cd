"""Validation parts carved from the harness's training splits, shared by the bench scripts that compare
configurations (the test part is never read)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass
class ValidationParts:
    """One seed's fit and validation parts, with the routing-quality measure on the validation prompts."""

    fit: Any
    val: Any
    e_fit: np.ndarray
    e_val: np.ndarray
    overall: np.ndarray  # (m,) each model's mean score on the fit part

    def quality(self, scores: np.ndarray) -> float:
        """Mean true score of each prompt's highest-scored model (a missing score counts 0); exact ties go to the
        better model overall, as in the harness."""
        truth = np.nan_to_num(self.val.scores, nan=0.0)
        pick = np.argmax(scores + 1e-9 * self.overall, axis=1)
        return float(truth[np.arange(len(scores)), pick].mean())

    def best_single(self) -> float:
        return float(np.nan_to_num(self.val.scores, nan=0.0)[:, int(np.argmax(self.overall))].mean())


def validation_parts(data: Any, emb: np.ndarray, seed: int) -> ValidationParts:
    """The harness's 80/20 split by unique prompt (stratified by task) for ``seed``; its training part split again
    80/20 (seed + 100) into fit and validation parts."""
    from finerouter.data.dataset import split_indices

    tr, _ = split_indices(data.prompts, data.tasks, 0.2, seed)
    train, e_train = data.subset(tr), emb[tr]
    fit_i, val_i = split_indices(train.prompts, train.tasks, 0.2, 100 + seed)
    fit = train.subset(fit_i)
    return ValidationParts(fit, train.subset(val_i), e_train[fit_i], e_train[val_i], np.nanmean(fit.scores, axis=0))
