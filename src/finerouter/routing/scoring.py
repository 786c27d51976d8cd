"""A fitted router's scores for a batch of prompt embeddings: the task, the stage-1 prior, the stage-2 estimate,
the mixed routing score and the calibrated expected score per model."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from finerouter.routing.assignment import soft_stage1, uses_soft_prior
from finerouter.routing.ensemble import average_scores, members_of
from finerouter.routing.mixing import raw_mix, routing_mix
from finerouter.routing.neighbours import neighbour_means
from finerouter.routing.policy import clip_to_reference, minmax_rows


@dataclass
class RouterScores:
    """Every score the router computes for a batch of prompts.

    Attributes:
        stage1: ``(n, m)`` the assigned task's mean (or median) score per model (raw; NaN where never observed).
        stage2: ``(n, m)`` the quality estimator's predictions.
        final: ``(n, m)`` the routing score: the normalised sources mixed (:func:`finerouter.routing.mixing.mix`).
        expected: ``(n, m)`` calibrated expected true score per model, on the score scale (the raw mix of the
            sources, with the best routing mix's weights even when routing fell back to the best single model,
            mapped through the isotonic calibration fitted on out-of-fold data; uncalibrated with
            ``mixing="paper"``). What cost-aware rules trade against cost.
        task: ``(n,)`` assigned task id, -1 for "Others".
        confidence: ``(n,)`` classifier probability of the best task.
    """

    stage1: np.ndarray
    stage2: np.ndarray
    final: np.ndarray
    task: np.ndarray
    confidence: np.ndarray
    expected: np.ndarray | None = None


def reference_models(router: Any) -> np.ndarray | None:
    """The columns each prompt's scores are min-max normalised over (:func:`minmax_rows`'s ``reference``): None
    (every model) for a router as fitted; once models were added (``provenance_``), the fitted models still there,
    so that an added model is placed on the scale the mixing weights were chosen on and never rescales the others
    (adding a model that is never chosen leaves every decision as it was). None when fewer than 2 fitted remain.
    On that scale an added model's stage-2 estimates (adapters trained on a few hundred prompts) are clipped to the
    fitted models' range, while its priors (stage 1, global) and neighbour means are not: its priors are paired
    estimates, its mean difference from the fitted models on the same prompts, shrunk by the task's evidence, so one
    better than every fitted model (a new frontier model) ranks above them there instead of tying the best and
    losing the tie to a cheaper model; its neighbour means are over its own scores on the prompt's nearest training
    prompts, where it was not scored the other models' mean there plus its overall difference from them
    (:func:`finerouter.routing.onboarding.add_model`)."""
    provenance = getattr(router, "provenance_", None) or {}
    fitted = [j for j, m in enumerate(router.models_) if provenance.get(m, "fitted") == "fitted"]
    return None if len(fitted) == len(router.models_) or len(fitted) < 2 else np.asarray(fitted, dtype=np.int64)


def added_trust(router: Any) -> dict[int, float]:
    """Per added model's column, how far its stage-2 estimate is trusted against its stage-1 prior: its new prompts
    over the prompts the router was fitted on (at most 1; ``fit_summary_["n_prompts"]``), empty for a router as
    fitted. An added model's adapters are learned, everything else frozen, from those few prompts (a few hundred
    against the fitted models' thousands); left at the fitted models' stage-2 weight they held the added model's
    routing score down (it was chosen less often where truly best than by a refit), so its estimate is shrunk toward
    its paired prior by its share of the data (:func:`_score_one`; measured in docs/onboarding.md)."""
    provenance = getattr(router, "provenance_", None) or {}
    n_fit = (getattr(router, "fit_summary_", None) or {}).get("n_prompts")
    out = {}
    for j, m in enumerate(router.models_):
        added = provenance.get(m)
        if isinstance(added, dict) and added.get("added") and n_fit:
            out[j] = min(1.0, float(added["added"]) / float(n_fit))
    return out


def _towards_prior(s2: np.ndarray, stage1: np.ndarray, trust: dict[int, float]) -> np.ndarray:
    """``s2`` with each added model's column shrunk toward ``stage1``'s by :func:`added_trust`."""
    if not trust:
        return s2
    s2 = s2.copy()
    for j, lam in trust.items():
        s2[:, j] = lam * s2[:, j] + (1.0 - lam) * stage1[:, j]
    return s2


def stage1_normalised(router: Any) -> np.ndarray:
    """``minmax_rows(stage1_)``, cached: normalising a task's row once equals normalising it per prompt."""
    cached = getattr(router, "_stage1_norm", None)
    if cached is None or cached[0] is not router.stage1_:
        cached = (router.stage1_, minmax_rows(router.stage1_, reference_models(router)))
        router._stage1_norm = cached
    return cached[1]


def global_normalised(router: Any) -> np.ndarray:
    """``(m,)`` ``minmax_rows`` of the global prior (cached)."""
    cached = getattr(router, "_global_norm", None)
    if cached is None or cached[0] is not router.global_prior_:
        cached = (router.global_prior_,
                  minmax_rows(router.global_prior_.reshape(1, -1), reference_models(router))[0])
        router._global_norm = cached
    return cached[1]


def score(router: Any, emb: np.ndarray) -> RouterScores:
    """Every score of a fitted router for ``emb``: checked ``(n, d)`` float32 embeddings. The hot path of
    routing: the components are called past their own input checks. A seed ensemble
    (:mod:`finerouter.routing.ensemble`) averages its fits' scores."""
    trust = added_trust(router)  # the router's: its members share its models and training data
    return average_scores(_score_one(router, emb, trust), [_score_one(m, emb, trust) for m in members_of(router)])


def _score_one(router: Any, emb: np.ndarray, trust: dict[int, float] | None = None) -> RouterScores:
    """One fit's scores; ``trust``: :func:`added_trust` of the router it belongs to (None: its own)."""
    trust = added_trust(router) if trust is None else trust
    n = emb.shape[0]
    logits = None
    if router.classifier_ is not None:
        logits = router.classifier_._raw_scores(emb)  # once: the task and, with soft priors, the task weights
        task, confidence = router.classifier_._assign(logits)
    else:
        task = np.full(n, -1, dtype=np.int64)
        confidence = np.zeros(n, dtype=np.float32)
    stage2 = router.quality_._predict(emb, task).astype(np.float64)
    rows = np.where(task >= 0, task, router.catalog_.n_tasks)
    label_prior = getattr(router, "label_prior_", None)  # the data's labels as the prior (label_prior.py)
    if label_prior is not None:
        stage1 = label_prior.prior(emb)
    elif uses_soft_prior(router, router.classifier_):
        stage1 = soft_stage1(router.classifier_, emb, router.stage1_, router.global_prior_, logits)
    else:
        stage1 = None
    per_prompt = stage1 is not None  # else each task's row, normalised once (stage1_normalised)
    stage1 = router.stage1_[rows] if stage1 is None else stage1
    weights = router.mixing_.vector()
    neighbours = None
    if getattr(router, "neighbour_embeddings_", None) is not None:
        neighbours = neighbour_means(emb, router.neighbour_embeddings_, router.neighbour_scores_,
                                     router.mixing_.neighbour_k)
    estimate_weights = router.mixing_.estimate_vector()
    ref = reference_models(router)
    # added models: their stage-2 estimates clipped to the fitted models' range; their priors and neighbour means
    # not (reference_models)
    s2 = clip_to_reference(stage2, ref)
    s2_raw = _towards_prior(s2, stage1, trust)  # added models' estimates shrunk toward their priors (added_trust)
    raw = raw_mix(estimate_weights, s2_raw, stage1, router.global_prior_, neighbours)
    if router.mixing_.scale == "raw":
        # a stack routes by the raw mix the expected scores calibrate (the same weights): computed once
        same = np.array_equal(weights, estimate_weights)
        final = minmax_rows(raw, ref) if same else routing_mix(
            weights, "raw", s2_raw, stage1, router.global_prior_, neighbours, ref)
    else:
        w2, w1, wg, wn = weights
        n1 = minmax_rows(stage1, ref) if per_prompt else stage1_normalised(router)[rows]
        final = w2 * _towards_prior(minmax_rows(s2, ref), n1, trust) + w1 * n1
        if wg:
            final += wg * global_normalised(router)
        if wn:
            final += wn * minmax_rows(neighbours, ref)
    expected = router.calibration_(raw)
    return RouterScores(stage1, stage2, final, task, confidence.astype(np.float64), expected)


__all__ = ["RouterScores", "added_trust", "global_normalised", "reference_models", "score", "stage1_normalised"]
