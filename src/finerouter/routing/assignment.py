"""Soft task assignment for the stage-1 prior.

The paper routes a new prompt by the prior of the one task its classifier assigns it (``stage1_[task]``). At a few
thousand training prompts the partition that discovery finds is one of many nearly as good (two seeds of the same
router, or the same data with one model fewer, give tasks of quite different sizes), and a prompt near the border
of two tasks takes all of one's prior and none of the other's. ``stage1_assignment="soft"`` reads the classifier's
multi-label outputs as evidence for every task instead: the prior of a prompt is the mean of the task priors
weighted by the classifier's sigmoid probabilities (normalised to sum to 1),

    stage1(x) = sum_t p_t(x) * prior_t / sum_t p_t(x),

which is the hard prior when one task's probability dominates and a blend near borders. The task a decision
names is still the most likely one.

Which of the two routes better depends on the pool: in pools of dozens of near-identical models the soft prior
averages their task priors so far that the out-of-fold gain of routing looks like noise and the router falls back to
the best single model, while on small data of a few distinct models it gains. ``stage1_assignment="cv"`` (the
small-data default) lets the mixing cross-validation decide: it computes both priors out of fold (the same fold fits,
so the second costs one matrix product per fold), chooses the mixing weights for each, and keeps the one whose
cross-fitted routing quality is higher (:func:`choose_assignment`; ties keep the paper's hard prior). The choice is
``mixing_.assignment``. Measured in docs/models.md.
"""

from __future__ import annotations

from typing import Any

import numpy as np

ASSIGNMENTS = ("hard", "soft", "cv")


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


def assignment_of(router: Any) -> str:
    """The stage-1 assignment a fitted ``router`` routes with: the one its mixing cross-validation chose
    (``mixing_.assignment``), else the one it was fitted with (``settings_``; an artifact saved before the choice
    existed), else its parameter. ``"cv"`` without a choice (no cross-validation ran) is the paper's ``"hard"``."""
    from finerouter.routing.regime import setting

    mixing = getattr(router, "mixing_", None)
    chosen = getattr(mixing, "assignment", None)
    return chosen if chosen else unchosen(setting(router, "stage1_assignment"))


def unchosen(requested: Any) -> str:
    """The assignment a router that asks for ``requested`` routes with where no cross-validation chose: ``"soft"``
    if it asked for it, else the paper's ``"hard"`` (``"cv"`` included)."""
    return "soft" if requested == "soft" else "hard"


def uses_soft_prior(router: Any, classifier: Any) -> bool:
    """Whether fitted ``router`` reads the soft prior (:func:`assignment_of` is soft, and it has a classifier with at
    least one task)."""
    return assignment_of(router) == "soft" and classifier is not None


def effective_quality(choice: Any) -> float:
    """The out-of-fold routing quality a :class:`~finerouter.routing.mixing.MixingChoice` stands for: its
    cross-fitted selection's when it routes, the best single model's when it fell back."""
    key = "selected" if choice.method == "cv" else "best_single"
    return float(choice.oof_quality.get(key, float("-inf")))


#: The order in which tied assignments are preferred: the paper's hard prior first.
PREFERENCE = ("hard", "soft", "label")
#: Standard errors of the paired per-prompt difference by which the label prior must route the held-out folds
#: better than the best single model to overturn the task priors' fallback to it.
LABEL_MARGIN_SE = 1.0


def choose_assignment(choices: dict[str, Any]) -> str:
    """The stage-1 assignment to route with: of the task priors (``"hard"``, ``"soft"``), the one whose mixing
    choice has the higher :func:`effective_quality` (ties: the paper's hard prior); then the label prior
    (``"label"``, :mod:`finerouter.routing.label_prior`) if its quality is strictly higher, and, where the task
    priors' choice fell back to the best single model, higher by :data:`LABEL_MARGIN_SE` paired standard errors of
    the per-prompt difference (``effective_scores``; strictly higher where a choice lacks them).

    The margin guards the fallback against the winner's curse of one more candidate: where the tasks found no
    routing gain, a small out-of-fold gain of the label prior is mostly the luck of the best of several noisy
    estimates. On dev parts of the RouterBench subset (GPT-4 best everywhere) the label prior chosen on a strictly
    higher quality overturned the fallback and routed below GPT-4 on 2 of 3 seeds; a margin on every choice
    instead of only on the fallback kept the label prior on the wrong dcrouter seeds (docs/models.md)."""
    tasks = [n for n in PREFERENCE if n in choices and n != "label"]
    if not tasks:
        return "label"
    best = tasks[0]
    for name in tasks[1:]:
        if effective_quality(choices[name]) > effective_quality(choices[best]):
            best = name
    if "label" in choices and _label_wins(choices["label"], choices[best]):
        return "label"
    return best


def _label_wins(label: Any, tasks: Any) -> bool:
    gain = effective_quality(label) - effective_quality(tasks)
    if tasks.method == "cv" or gain <= 0:  # the tasks route: the better routing wins
        return gain > 0
    from finerouter.routing.mixing import _paired_standard_error

    a, b = getattr(label, "effective_scores", None), getattr(tasks, "effective_scores", None)
    if a is None or b is None or len(a) != len(b) or len(a) < 2:
        return True
    diff = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    return float(diff.mean()) > LABEL_MARGIN_SE * _paired_standard_error(diff)


__all__ = [
    "ASSIGNMENTS",
    "LABEL_MARGIN_SE",
    "PREFERENCE",
    "assignment_of",
    "choose_assignment",
    "effective_quality",
    "soft_stage1",
    "task_weights_for",
    "task_weights_from_logits",
    "unchosen",
    "uses_soft_prior",
]
