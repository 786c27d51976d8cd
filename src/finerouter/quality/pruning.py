"""Which models Stage 2 leaves out: those never near the best on any group of the training prompts.

In a pool of dozens of models most are far behind everywhere. Stage 2 still fits an adapter per model, and on a few
hundred noisy scores a dominated model's estimate now and then rises above the leaders' on a prompt, and it stretches
the per-prompt min-max range that the mixing normalises by. With ``QualityEstimator(prune_coverage=δ)`` the
estimator keeps, per group of training prompts (each task, and Others), the models that the paper's coverage rule
would make candidates there: models in order of their mean score on the group, added until at least ``δ`` of the
group's prompts where the choice matters (not every model tied) have their best score reached by a kept model (a tie
with the best counts), plus the best model overall. Every other scored model is *pruned*: it is left out of Stage 2's
training, and Stage 2 predicts its mean training score on every prompt, so it stays routable through the priors (the
stage-1 and global priors still rank it) but its noise no longer moves a decision.
"""

from __future__ import annotations

import warnings

import numpy as np

from finerouter.discovery.ranking import nanmean_columns

#: A score within this of a prompt's best counts as reaching it (ties in 0/1 and rounded scores).
_TIE = 1e-9


def coverage_set(scores: np.ndarray, coverage: float) -> list[int]:
    """The models of ``scores`` ``(n, m)`` (NaN = not evaluated), in order of their mean, up to the first whose
    addition makes at least ``coverage`` of the prompts have their best score reached by one of them. Only prompts
    where the choice matters count: a prompt whose scored models all tie (every model right, or every one wrong) needs
    none of them, and a prompt no model was scored on is left out. Empty when no prompt counts; models never scored
    come last and are never needed."""
    scores = np.asarray(scores, dtype=np.float64)
    scored = np.isfinite(scores).any(axis=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        spread = np.nanmax(scores, axis=1) - np.nanmin(scores, axis=1)
    deciding = scored & (np.nan_to_num(spread, nan=0.0) > _TIE)  # where every scored model ties, none is needed
    if not deciding.any():
        return []
    scores = scores[deciding]
    means = nanmean_columns(scores)
    order = np.argsort(-np.nan_to_num(means, nan=-np.inf), kind="stable")
    best = np.nanmax(scores, axis=1)
    reached = np.zeros(scores.shape[0], dtype=bool)
    kept: list[int] = []
    for j in order:
        if not np.isfinite(means[j]):
            break
        kept.append(int(j))
        reached |= np.isfinite(scores[:, j]) & (scores[:, j] >= best - _TIE)
        if reached.mean() >= coverage:
            break
    return kept


def models_to_prune(scores: np.ndarray, groups: np.ndarray, coverage: float) -> list[int]:
    """``sorted`` indices of the scored models never in any group's :func:`coverage_set` nor the best overall (a
    model never scored has no mean to stand in for it, and keeps its adapter).

    Args:
        scores: ``(n, m)`` training scores (NaN = not evaluated).
        groups: ``(n,)`` each prompt's group (its task; -1 = Others, a group like the others).
        coverage: the share of a group's prompts whose best score the kept models must reach, in ``(0, 1]``.
    """
    scores = np.asarray(scores, dtype=np.float64)
    groups = np.asarray(groups)
    kept: set[int] = set()
    for g in np.unique(groups):
        kept.update(coverage_set(scores[groups == g], coverage))
    means = nanmean_columns(scores)
    if np.isfinite(means).any():
        kept.add(int(np.nanargmax(means)))
    return [j for j in range(scores.shape[1]) if j not in kept and np.isfinite(means[j])]


__all__ = ["coverage_set", "models_to_prune"]
