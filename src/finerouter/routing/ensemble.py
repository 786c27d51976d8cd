"""Seed ensembles: a router that fits its two stages several times and routes by the mean of their scores.

Task discovery (Leiden on a sparse graph), the task classifier and the stage-2 adapters all start from random
seeds, and at a few thousand prompts two fits that differ only in the seed route differently: on routerdc with
1,500 training prompts, five seeds of the same router routed a test split at 0.501-0.511. Each fit's stage-1 prior
is a step function over its own partition of the prompt space; the mean over several partitions is a smoother, less
variable estimate of how each model does near the prompt (bagging without resampling).

``FineRouter(ensemble_size=k)`` fits, after the router itself (seed ``seed``, with its cross-validated mixing and
calibration), ``k - 1`` *members*: discovery, classifier, quality estimator and priors refitted on all the training
data with seeds ``seed + 1 ... seed + k - 1``. A member shares the router's encoder, models, mixing weights,
calibration and cost model, so it is a complete router of its own; the ensemble's scores
(:func:`finerouter.routing.scoring.score`) are the means of every fit's routing scores (each normalised per prompt
as the mix defines), expected scores and stage-1/stage-2 estimates. The task a decision names is the router's own.
The mixing weights are chosen by the cross-validation of the first fit alone (the members are not cross-validated:
each would cost ``cv_folds`` more fits), which is conservative: averaging only removes variance. A router that fell
back to the best single model stays there (every member has the same global prior).
"""

from __future__ import annotations

import copy
import logging
import time
import warnings
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)


def member_seed(router: Any, index: int) -> int:
    """The seed of member ``index`` (1-based: the router itself is member 0)."""
    return int(router.seed) + int(index)


def fit_members(
    router: Any, encoder: Any, embeddings: np.ndarray, desc_emb: np.ndarray, dataset: Any, descriptions: list[str],
    groups: list[str] | None,
) -> list[Any]:
    """The ``ensemble_size - 1`` members of a router that has just fitted its own parts (``router.mixing_``,
    ``calibration_``, ``cost_model_`` are set), each fitted on the same rows with its own seed."""
    from finerouter.routing import fitting

    members = []
    for i in range(1, int(router.ensemble_size)):
        t = time.perf_counter()
        member = type(router)(**{**router.get_params(deep=False), "seed": member_seed(router, i), "ensemble_size": 1})
        parts = fitting.fit_parts(member, encoder, embeddings, desc_emb, dataset.scores, dataset.models,
                                  dataset.prompts, descriptions, groups)  # fmt: skip
        _attach(member, router, parts.discovery, parts.classifier, parts.quality, parts.stage1)
        members.append(member)
        logger.info("ensemble member %d/%d (seed %d): %d tasks (%.1fs)", i + 1, router.ensemble_size, member.seed,
                    parts.discovery.catalog_.n_tasks, time.perf_counter() - t)  # fmt: skip
    return members


def _attach(member: Any, router: Any, discovery: Any, classifier: Any, quality: Any, stage1: np.ndarray) -> None:
    """Give ``member`` its own fitted parts and everything else from ``router``."""
    member.discovery_, member.catalog_, member.classifier_ = discovery, discovery.catalog_, classifier
    member.discovery_labels_ = discovery.labels_
    member.quality_, member.stage1_ = quality, stage1
    share_with_member(member, router)


def share_with_member(member: Any, router: Any) -> None:
    """Set on ``member`` the attributes it shares with ``router``: encoder, models, priors' global part, mixing,
    calibration, neighbour source, cost model."""
    member.encoder_, member.models_ = router.encoder_, list(router.models_)
    member.global_prior_ = router.global_prior_
    member.mixing_, member.calibration_ = router.mixing_, router.calibration_
    member.neighbour_embeddings_ = getattr(router, "neighbour_embeddings_", None)
    member.neighbour_scores_ = getattr(router, "neighbour_scores_", None)
    member.cost_model_, member.n_features_ = router.cost_model_, router.n_features_
    member.out_of_fold_ = None
    member.provenance_ = getattr(router, "provenance_", {})
    member.fit_summary_ = {"member_of_ensemble": True, "seed": member.seed, "n_tasks": member.catalog_.n_tasks}
    member.members_ = []
    for cache in ("_stage1_norm", "_global_norm"):
        member.__dict__.pop(cache, None)


def members_of(router: Any) -> list[Any]:
    """The router's extra members (empty for a single fit or an artifact saved before ensembles)."""
    return list(getattr(router, "members_", None) or [])


def average_scores(own: Any, others: list[Any]) -> Any:
    """The ensemble's :class:`~finerouter.routing.scoring.RouterScores`: the mean of ``own``'s and ``others``'
    stage-1, stage-2, routing and expected scores; task and confidence are ``own``'s."""
    if not others:
        return own
    every = [own, *others]
    out = copy.copy(own)
    for name in ("stage1", "stage2", "final"):
        stack = np.stack([getattr(s, name) for s in every])
        if name == "stage1":  # never observed in one fit's task: that fit says nothing there
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                out.stage1 = np.nanmean(stack, axis=0)
        else:
            setattr(out, name, stack.mean(axis=0))
    if own.expected is not None:
        out.expected = np.mean([s.expected for s in every], axis=0)
    return out


def with_members(out: Any, members: list[Any]) -> Any:
    """``out`` (a new router from :func:`~finerouter.routing.onboarding.add_model` or ``remove_model``) with
    ``members`` (the members changed likewise), each sharing ``out``'s models, priors' global part and costs."""
    for member in members:
        member.models_, member.global_prior_, member.cost_model_ = list(out.models_), out.global_prior_, out.cost_model_
        member.neighbour_scores_ = getattr(out, "neighbour_scores_", None)
        member.provenance_ = getattr(out, "provenance_", {})
    out.members_ = members
    return out


def summary(router: Any) -> dict[str, Any]:
    """``fit_summary_["ensemble"]``: the size, each fit's seed and number of tasks."""
    every = [router, *members_of(router)]
    return {"size": len(every), "seeds": [int(r.seed) for r in every],
            "n_tasks": [int(r.catalog_.n_tasks) for r in every]}  # fmt: skip


__all__ = ["average_scores", "fit_members", "member_seed", "members_of", "share_with_member", "summary",
           "with_members"]  # fmt: skip
