"""Seed ensembles: a router that is fitted several times with different seeds and routes by the mean of the fits'
scores.

Task discovery (Leiden on a sparse graph), the task classifier, the stage-2 adapters and the cross-validation's
folds all start from random seeds, and at a few thousand prompts two fits that differ only in the seed route
differently: on routerdc with 1,500 training prompts, five seeds of the same router routed one test split at
0.501-0.511, and the mixing the cross-validation chose differed between them. Each fit's stage-1 prior is a step
function over its own partition of the prompt space and its mix one noisy choice; the mean over several fits is a
smoother, less variable estimate (bagging without resampling). Where one fit falls back to the best single model
and another routes, the mean routes only where the routing fits agree strongly: a graded fallback.

``FineRouter(ensemble_size=k)`` fits, after the router itself (seed ``seed``), ``k - 1`` *members*: complete
routers fitted on the same rows and embeddings with seeds ``seed + 1 ... seed + k - 1`` (each with its own
discovery, classifier, quality estimator, priors, cross-validated mixing and calibration; the description step
is not repeated: members reuse the router's description embeddings). A member shares the router's encoder, models,
global prior and cost model. The ensemble's scores (:func:`finerouter.routing.scoring.score`) are the means of
every fit's routing scores (each normalised per prompt as its own mix defines), calibrated expected scores and
stage-1/stage-2 estimates; the task a decision names is the router's own. Fitting costs k times one fit.
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


def fit_members(router: Any, dataset: Any, embeddings: np.ndarray, desc_emb: np.ndarray) -> list[Any]:
    """The ``ensemble_size - 1`` members of a router that has just fitted itself (``encoder_`` and
    ``cost_model_`` are set), each a complete fit on the same rows with its own seed."""
    from finerouter.routing.regime import setting

    members = []
    for i in range(1, int(setting(router, "ensemble_size"))):
        t = time.perf_counter()
        params = {**router.get_params(deep=False), **router.settings_, "seed": member_seed(router, i),
                  "ensemble_size": 1, "encoder": router.encoder_, "describer": None}  # fmt: skip
        member = type(router)(**params).fit(dataset, embeddings, desc_emb)
        share_with_member(member, router)
        members.append(member)
        logger.info("ensemble member %d/%d (seed %d): %d tasks, mixing %s (%.1fs)", i + 1, len(members) + 1,
                    member.seed, member.catalog_.n_tasks, member.mixing_.method, time.perf_counter() - t)  # fmt: skip
    return members


def share_with_member(member: Any, router: Any) -> None:
    """Set on ``member`` what it shares with ``router``: encoder, models, global prior, cost model."""
    member.encoder_, member.models_ = router.encoder_, list(router.models_)
    member.global_prior_ = router.global_prior_
    member.cost_model_, member.n_features_ = router.cost_model_, router.n_features_
    member.out_of_fold_ = None
    member.provenance_ = getattr(router, "provenance_", {})
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
    with warnings.catch_warnings():  # NaN: never observed in one fit's task, so that fit says nothing there
        warnings.simplefilter("ignore", RuntimeWarning)
        out.stage1 = np.nanmean([s.stage1 for s in every], axis=0)
    out.stage2 = np.mean([s.stage2 for s in every], axis=0)
    out.final = np.mean([s.final for s in every], axis=0)
    if own.expected is not None:
        out.expected = np.mean([s.expected for s in every], axis=0)
    return out


def with_members(out: Any, members: list[Any]) -> Any:
    """``out`` (a new router from :func:`~finerouter.routing.onboarding.add_model` or ``remove_model``) with
    ``members`` (the members changed likewise), each sharing ``out``'s models, global prior and costs."""
    for member in members:
        share_with_member(member, out)
    out.members_ = members
    return out


def summary(router: Any) -> dict[str, Any]:
    """``fit_summary_["ensemble"]``: the size, each fit's seed, number of tasks and mixing (method, weights and
    stage-1 assignment)."""
    every = [router, *members_of(router)]
    return {"size": len(every), "seeds": [int(r.seed) for r in every],
            "n_tasks": [int(r.catalog_.n_tasks) for r in every],
            "mixing": [{"method": r.mixing_.method, "weights": dict(r.mixing_.weights),
                        "assignment": r.mixing_.assignment} for r in every]}  # fmt: skip


__all__ = ["average_scores", "fit_members", "member_seed", "members_of", "share_with_member", "summary",
           "with_members"]  # fmt: skip
