"""Empirical-Bayes shrinkage of each task's mean score per model toward the model's overall mean: the stage-1 prior
of :class:`~finerouter.routing.router.FineRouter` with ``stage1_shrinkage=True``."""

from __future__ import annotations

import numpy as np


def shrink_task_means(scores: np.ndarray, labels: np.ndarray, n_groups: int) -> np.ndarray:
    """``(n_groups + 1, m)`` each group's mean score per model, shrunk toward the model's overall mean.

    Row ``n_groups`` is the prompts with label -1 ("Others"; all prompts when there are none). Per model, a one-way
    random-effects model: a group's true mean varies around the overall mean with variance ``tau2``; its
    observed mean has sampling variance ``sigma2 / n_g``. The posterior mean
    ``mu + tau2 / (tau2 + sigma2 / n_g) * (mean_g - mu)`` moves small groups, and groups of a model whose
    means hardly vary between groups, toward ``mu``. ``tau2`` and ``sigma2`` are moment estimates (ANOVA).
    A model with no score in a group takes ``mu``; a model never scored is NaN.

    Args:
        scores: ``(n, m)`` scores, NaN = not evaluated.
        labels: ``(n,)`` group per prompt in ``[-1, n_groups)``.
    """
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels)
    others = labels < 0
    members = [labels == t for t in range(n_groups)] + [others if others.any() else np.ones_like(others)]
    observed = np.isfinite(scores)
    filled = np.where(observed, scores, 0.0)
    counts = np.stack([observed[g].sum(axis=0) for g in members]).astype(np.float64)  # (G, m)
    sums = np.stack([filled[g].sum(axis=0) for g in members])
    sq = np.stack([(filled[g] ** 2).sum(axis=0) for g in members])
    with np.errstate(invalid="ignore", divide="ignore"):
        means = sums / counts
        total = observed.sum(axis=0).astype(np.float64)
        mu = filled.sum(axis=0) / total
        # The variance estimates use the real groups: Others only when it holds prompts of its own.
        used = n_groups + 1 if others.any() else n_groups
        est, est_means, est_sq = counts[:used], means[:used], sq[:used]
        has = est > 0
        within_ss = np.sum(np.where(has, est_sq - est * np.where(has, est_means, 0.0) ** 2, 0.0), axis=0)
        within_df = np.sum(np.maximum(est - 1, 0), axis=0)
        sigma2 = np.where(within_df > 0, within_ss / np.maximum(within_df, 1), 0.0)
        k = np.sum(has, axis=0)
        between_ss = np.sum(np.where(has, est * (np.where(has, est_means, 0.0) - mu) ** 2, 0.0), axis=0)
        n_used = est.sum(axis=0)
        n0 = np.where(k > 1, (n_used - np.sum(est**2, axis=0) / np.maximum(n_used, 1)) / np.maximum(k - 1, 1), 0.0)
        tau2 = np.where(
            (k > 1) & (n0 > 0), np.maximum(0.0, (between_ss / np.maximum(k - 1, 1) - sigma2) / np.maximum(n0, 1e-12)),
            0.0,
        )
        var_mean = sigma2[None, :] / np.maximum(counts, 1.0)
        weight = np.where(tau2[None, :] + var_mean > 0, tau2[None, :] / (tau2[None, :] + var_mean), 1.0)
        shrunk = mu[None, :] + weight * (means - mu[None, :])
    shrunk = np.where(counts > 0, shrunk, mu[None, :])
    return np.where(np.isfinite(mu)[None, :], shrunk, np.nan)


def paired_shift(scores: np.ndarray, others: np.ndarray, labels: np.ndarray, n_groups: int,
                 min_prompts: int) -> np.ndarray | None:
    """``(n_groups + 1,)`` a new model's mean difference from the other models on the same prompts, per group,
    shrunk toward its overall difference (:func:`shrink_task_means`; row ``n_groups``: label -1); None when fewer
    than ``min_prompts`` prompts carry every other model's score.

    Prompt difficulty cancels in the difference, so it is far less noisy than the new model's own mean, and a choice
    of prompts that over-samples easy or hard groups does not bias it. What an added model's task and label priors
    are built from (:mod:`finerouter.routing.onboarding`, :mod:`finerouter.routing.label_prior`).

    Args:
        scores: ``(n,)`` the new model's scores; others: ``(n, m)`` the other models' on the same prompts (NaN: not
            scored); labels: ``(n,)`` each prompt's group in ``[-1, n_groups)``.
    """
    others = np.asarray(others, dtype=np.float64)
    complete = np.isfinite(others).all(axis=1) if others.size else np.zeros(len(scores), dtype=bool)
    if complete.sum() < max(min_prompts, 1):
        return None
    diff = np.asarray(scores, dtype=np.float64)[complete] - others[complete].mean(axis=1)
    return shrink_task_means(diff[:, None], np.asarray(labels)[complete], n_groups)[:, 0]


__all__ = ["paired_shift", "shrink_task_means"]
