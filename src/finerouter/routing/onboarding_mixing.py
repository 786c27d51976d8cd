"""The mixing a router routes with once a model was added (:func:`finerouter.routing.onboarding.add_model`): the
same as before, unless the new model alone is, on the evidence, better than the old routing."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from finerouter.routing.mixing import SOURCES
from finerouter.routing.onboarding_data import MIN_PROMPTS, NewModelScores


def task_weights(catalog: Any) -> np.ndarray:
    """``(T+1,)`` each task's share of the training prompts (row ``T``: Others)."""
    sizes = np.array([t.size for t in catalog.tasks] + [catalog.others.size], dtype=np.float64)
    return sizes / sizes.sum() if sizes.sum() > 0 else np.full(sizes.size, 1.0 / sizes.size)


def lead_over_best(router: Any, new: NewModelScores, tasks: np.ndarray, picked: np.ndarray | None = None
                   ) -> tuple[float, float]:  # fmt: skip
    """``(lead, standard error)``: the new model's mean score minus the router's best single model's (by global
    prior), over the training prompts' mix of tasks.

    Paired where the data carries that model's scores on at least :data:`MIN_PROMPTS` of the prompts (prompt
    difficulty cancels), else against its global prior. Each prompt is weighted by its task's share of the training
    prompts over the task's share of the new prompts, so that prompts chosen to cover the tasks (``suggest-prompts``
    over-samples small ones) estimate the lead on the traffic the router was fitted on.

    ``picked``: ``(n,)`` True where the router with the new model, still routing by its mix, would choose it. Routing
    and the new model alone then choose the same there, so those prompts count with the lead that leaves the two
    even (the router's estimated routing gain, ``mixing_.gain``): the lead is then the new model's over the routing
    it would replace on the prompts where it would not be chosen (:func:`mixing_after_adding`)."""
    best = int(np.nanargmax(router.global_prior_))
    diff = new.scores - new.others[:, best]
    rows = np.isfinite(diff)
    if rows.sum() < MIN_PROMPTS:
        diff, rows = new.scores - float(router.global_prior_[best]), np.ones(new.scores.size, dtype=bool)
    gain = getattr(router.mixing_, "gain", None)
    if picked is not None and gain is not None:
        diff = np.where(np.asarray(picked, dtype=bool), float(gain), diff)
    diff = diff[rows]
    n_tasks = router.catalog_.n_tasks
    group = np.where(tasks[rows] >= 0, tasks[rows], n_tasks)
    sample_share = np.bincount(group, minlength=n_tasks + 1) / group.size
    weight = task_weights(router.catalog_)[group] / sample_share[group]
    weight = weight / weight.sum()
    lead = float(weight @ diff)
    return lead, float(np.sqrt(np.sum(weight**2 * (diff - lead) ** 2)))


#: How many standard errors (of the lead and the routing gain together) the new model's lead over the best fitted
#: model must exceed the gain routing was estimated to bring before the router falls back to it alone.
FALLBACK_SE = 1.0


def mixing_after_adding(router: Any, name: str, global_prior: np.ndarray, lead: tuple[float, float]
                        ) -> tuple[Any, dict[str, float] | None]:  # fmt: skip
    """The mixing a router routes with once a model was added (the last entry of ``global_prior``; ``lead``:
    :func:`lead_over_best`), and why it changed (None: unchanged).

    A router whose cross-validation chose to route (``mixing_.method == "cv"``) did so because routing among its
    models was estimated to gain ``mixing_.gain`` over their best single model. A new model that leads that model by
    more, by :data:`FALLBACK_SE` standard errors of the difference, is on that evidence better alone than the old
    routing: the router then falls back to the best single model, now the new one, as a refit would (adding GPT-4
    back to a RouterBench-subset router fitted without it: every refit falls back to GPT-4, while the old mix chose
    it on 40% to 100% of test prompts). The lead counts only where routing with the new model would not choose it
    (``lead_over_best``'s ``picked``; elsewhere the two choose alike): a new model ahead on some tasks and behind the
    old routing on the rest is better routed than alone (dcrouter: nemotron-51b added back from 300 random prompts led
    the best fitted model by 0.10 ± 0.03 over every prompt, more than routing's 0.065; the router fell back and routed
    0.6175 against the refit's 0.6417). The margin guards against a lead estimated from a few dozen prompts (on
    routerdc, point estimates of 0.04 for a true lead of 0.01 made routers that gain 0.03 fall back and lose it).
    Its expected scores (the calibrated raw mix) stay as they were, and the choice it replaced is kept
    (``replaced``): :func:`remove_model` restores it when ``name`` is retired. A router that already falls back
    routes by the global prior, where the new model wins when it leads; fixed weights (``mixing="paper"``) are the
    user's and stay."""
    mixing = router.mixing_
    if mixing is None or mixing.method != "cv" or mixing.gain is None:
        return mixing, None
    value, se = lead
    margin = FALLBACK_SE * float(np.hypot(se, mixing.gain_se or 0.0))
    # routing by the global prior must then pick the new model
    if not (value - mixing.gain > margin and global_prior[-1] > np.nanmax(router.global_prior_)):
        return mixing, None
    choice = dataclasses.replace(
        mixing, weights={s: float(s == "global") for s in SOURCES}, method="fallback", scale="normalised",
        estimate_weights=mixing.estimate_weights or dict(mixing.weights),
        replaced={"model": name, "mixing": mixing.to_dict()},
    )  # fmt: skip
    return choice, {"lead": round(value, 4), "lead_se": round(se, 4), "routing_gain": round(float(mixing.gain), 4),
                    "routing_gain_se": round(float(mixing.gain_se or 0.0), 4)}  # fmt: skip


__all__ = ["FALLBACK_SE", "lead_over_best", "mixing_after_adding", "task_weights"]
