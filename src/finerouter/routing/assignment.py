"""Soft task assignment for the stage-1 prior.

The paper routes a new prompt by the prior of the one task its classifier assigns it (``stage1_[task]``). At a few
thousand training prompts the partition that discovery finds is one of many nearly as good (two seeds of the same
router, or the same data with one model fewer, give tasks of quite different sizes), and a prompt near the border
of two tasks takes all of one's prior and none of the other's. ``stage1_assignment="soft"`` reads the classifier's
multi-label outputs as evidence for every task instead: the prior of a prompt is the mean of the task priors
weighted by the classifier's sigmoid probabilities (normalised to sum to 1),

    stage1(x) = sum_t p_t(x) * prior_t / sum_t p_t(x),

which is the hard prior when one task's probability dominates and a blend near borders. The task a decision
names is still the most likely one. Measured in docs/models.md.
"""

from __future__ import annotations

from typing import Any

import numpy as np

ASSIGNMENTS = ("hard", "soft")


def task_weights_for(classifier: Any, emb: np.ndarray) -> np.ndarray:
    """``(n, T)`` the classifier's task probabilities for checked embeddings, normalised per row (uniform where
    every probability underflows to 0)."""
    return task_weights_from_logits(classifier._raw_scores(emb))


def task_weights_from_logits(logits: np.ndarray) -> np.ndarray:
    """:func:`task_weights_for` from the classifier's raw scores (``_raw_scores``) already computed."""
    logits = np.asarray(logits).astype(np.float64)
    p = 1.0 / (1.0 + np.exp(-logits))
    total = p.sum(axis=1, keepdims=True)
    uniform = np.full_like(p, 1.0 / max(p.shape[1], 1))
    return np.where(total > 0, p / np.where(total > 0, total, 1.0), uniform)


def soft_stage1(classifier: Any, emb: np.ndarray, stage1: np.ndarray, global_prior: np.ndarray,
                logits: np.ndarray | None = None) -> np.ndarray:
    """``(n, m)`` the soft stage-1 prior of checked embeddings ``emb``: task priors (rows ``0..T-1`` of the
    router's ``stage1`` matrix; a model never observed in a task takes its ``global_prior``) weighted by
    :func:`task_weights_for` (from ``logits``, the classifier's raw scores of ``emb``, when the caller has them)."""
    n_tasks = stage1.shape[0] - 1
    priors = np.asarray(stage1[:n_tasks], dtype=np.float64)
    priors = np.where(np.isfinite(priors), priors, np.asarray(global_prior, dtype=np.float64)[None, :])
    weights = task_weights_for(classifier, emb) if logits is None else task_weights_from_logits(logits)
    return weights @ priors


def uses_soft_prior(router: Any, classifier: Any) -> bool:
    """Whether ``router`` reads the soft prior (it asks for it, and has a classifier with at least one task)."""
    from finerouter.routing.regime import setting

    return setting(router, "stage1_assignment") == "soft" and classifier is not None


__all__ = ["ASSIGNMENTS", "soft_stage1", "task_weights_for", "task_weights_from_logits", "uses_soft_prior"]
