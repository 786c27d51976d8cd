"""The mixing a router routes with once a model was added (:func:`finerouter.routing.onboarding.add_model`): the
same as before, unless the new model alone is, on the evidence, better than the old routing
(:func:`mixing_after_adding`), or a router that fell back to its best single model would, with the new model, gain by
routing (:func:`resumed_mixing`). Both weigh where the router would choose the new model on its new prompts, judged
cross-fitted (:func:`cross_fitted_choices`): each prompt by the new model's columns learned from the other prompts."""

from __future__ import annotations

import copy
import dataclasses
import logging
import warnings
from typing import Any

import numpy as np

from finerouter.routing.mixing import SOURCES
from finerouter.routing.onboarding_data import MIN_PROMPTS, NewModelScores

logger = logging.getLogger(__name__)


def task_weights(router: Any) -> np.ndarray:
    """``(T+1,)`` each task's share of the router's traffic (row ``T``: Others): of its training prompts, the share
    its classifier routes to each task (``fit_summary_["task_shares"]``, recorded at fit; :func:`record_task_shares`
    for a router saved before). New prompts are given tasks by that classifier, so these are the shares that weigh
    them back to the traffic the router was fitted on. Discovery's task sizes, the fallback for a router without
    them, can be far from it (routerdc, 1,500 prompts: the classifier routes the training prompts to tasks in shares
    a total variation of 0.22 to 0.25 away from the tasks' sizes, and to Others none of the up to 8% discovery
    left there)."""
    n = router.catalog_.n_tasks + 1
    shares = (getattr(router, "fit_summary_", None) or {}).get("task_shares")
    if shares is not None and len(shares) == n and float(np.sum(shares)) > 0:
        shares = np.asarray(shares, dtype=np.float64)
        return shares / shares.sum()
    warnings.warn("this router was fitted before routers recorded their tasks' shares of the training prompts "
                  "(fit_summary_['task_shares']): new prompts are weighed by discovery's task sizes instead; "
                  "finerouter.routing.onboarding_mixing.record_task_shares(router, embeddings of its training "
                  "prompts), or `finerouter add-model --train-data TABLE`, records them", UserWarning,
                  stacklevel=2)  # fmt: skip
    catalog = router.catalog_
    sizes = np.array([t.size for t in catalog.tasks] + [catalog.others.size], dtype=np.float64)
    return sizes / sizes.sum() if sizes.sum() > 0 else np.full(n, 1.0 / n)


def record_task_shares(router: Any, embeddings: np.ndarray) -> Any:
    """Record in ``router`` (and each fit of an ensemble) the share of its training prompts, embedded as
    ``embeddings``, that its classifier routes to each task, as :meth:`FineRouter.fit` does (:func:`task_weights`):
    for a router saved before fits recorded it. Returns ``router``."""
    from finerouter.routing.ensemble import members_of
    from finerouter.routing.fitting import routed_shares
    from finerouter.routing.onboarding import assign_tasks

    emb = np.ascontiguousarray(embeddings, dtype=np.float32)
    for fit in (router, *members_of(router)):
        fit.fit_summary_ = dict(getattr(fit, "fit_summary_", None) or {})
        fit.fit_summary_["task_shares"] = routed_shares(assign_tasks(fit, emb), fit.catalog_.n_tasks)
    return router


def lead_over_best(router: Any, new: NewModelScores, tasks: np.ndarray, picked: np.ndarray | None = None
                   ) -> tuple[float, float]:  # fmt: skip
    """``(lead, standard error)``: the new model's mean score minus the router's best single model's (by global
    prior), over the training prompts' mix of tasks.

    Paired where the data carries that model's scores on at least :data:`MIN_PROMPTS` of the prompts (prompt
    difficulty cancels), else against its global prior. Each prompt is weighted by its task's share of the training
    prompts over the task's share of the new prompts, so that prompts chosen to cover the tasks (``suggest-prompts``
    over-samples small ones) estimate the lead on the traffic the router was fitted on.

    ``picked``: ``(n,)`` True where the router with the new model, still routing by its mix, would choose it
    (:func:`new_model_picks`: cross-fitted, so that the prompts it is not chosen on are not those where its own scores
    happened to be low). Routing and the new model alone then choose the same there, so those prompts count with the
    lead that leaves the two even (the router's estimated routing gain, ``mixing_.gain``): the lead is then the new
    model's over the routing it would replace on the prompts where it would not be chosen
    (:func:`mixing_after_adding`)."""
    best = int(np.nanargmax(router.global_prior_))
    diff = new.scores - new.others[:, best]
    rows = np.isfinite(diff)
    if rows.sum() < MIN_PROMPTS:
        diff, rows = new.scores - float(router.global_prior_[best]), np.ones(new.scores.size, dtype=bool)
    gain = getattr(router.mixing_, "gain", None)
    if picked is not None and gain is not None:
        diff = np.where(np.asarray(picked, dtype=bool), float(gain), diff)
    return task_weighted_mean(diff[rows], tasks[rows], router)


def leads(router: Any, global_prior: np.ndarray) -> bool:
    """Whether the added model (the last entry of ``global_prior``) leads ``router``'s best model by global prior: the
    one case the router can fall back to it (:func:`mixing_after_adding`) and a fallback needs no re-weighing
    (:func:`resumed_mixing`: it routes to the new model then)."""
    return bool(global_prior[-1] > np.nanmax(router.global_prior_))


def task_weighted_mean(values: np.ndarray, tasks: np.ndarray, router: Any) -> tuple[float, float]:
    """``(mean, standard error)`` of per-prompt ``values`` over prompts of ``tasks`` (-1: Others), each weighted by
    its task's share of ``router``'s traffic (:func:`task_weights`) over the task's share of these prompts: the mean
    on the traffic the router was fitted on, whatever mix of tasks the prompts were chosen from."""
    n_tasks = router.catalog_.n_tasks
    group = np.where(tasks >= 0, tasks, n_tasks)
    sample_share = np.bincount(group, minlength=n_tasks + 1) / group.size
    weight = task_weights(router)[group] / sample_share[group]
    # prompts only of tasks the classifier routed no training prompt to: nothing to weigh them back to, alike
    weight = weight / weight.sum() if weight.sum() > 0 else np.full(values.size, 1.0 / values.size)
    mean = float(weight @ values)
    return mean, float(np.sqrt(np.sum(weight**2 * (values - mean) ** 2)))


#: How many standard errors (of the lead and the routing gain together) the new model's lead over the best fitted
#: model must exceed the gain routing was estimated to bring before the router falls back to it alone.
FALLBACK_SE = 1.0


def lead_beyond_gain(lead: tuple[float, float], mixing: Any) -> tuple[float, float]:
    """``(lead − gain, margin)``: how far the new model's lead over the best fitted model (``lead``: value and standard
    error, :func:`lead_over_best`) exceeds the gain routing by ``mixing`` was estimated to bring, and the margin it must
    exceed for the router to fall back to it (:data:`FALLBACK_SE` standard errors of the two together)."""
    value, se = lead
    return value - float(mixing.gain), FALLBACK_SE * float(np.hypot(se, mixing.gain_se or 0.0))


def mixing_after_adding(router: Any, name: str, global_prior: np.ndarray, lead: tuple[float, float]
                        ) -> tuple[Any, dict[str, float] | None]:  # fmt: skip
    """The mixing a router routes with once a model was added (the last entry of ``global_prior``; ``lead``:
    :func:`lead_over_best`), and why it changed (None: unchanged).

    A router whose cross-validation chose to route (``mixing_.method == "cv"``) did so because routing among its models
    was estimated to gain ``mixing_.gain`` over their best single model. A new model that leads that model by more, by
    :data:`FALLBACK_SE` standard errors of the difference, is on that evidence better alone than the old routing: the
    router then falls back to the best single model, now the new one, as a refit would (adding GPT-4 back to a
    RouterBench-subset router fitted without it: every refit falls back to GPT-4, while the old mix chose it on 40% to
    100% of test prompts). The lead counts only where routing with the new model would not choose it
    (``lead_over_best``'s ``picked``, judged cross-fitted; elsewhere the two choose alike): a new model ahead on some
    tasks and behind the old routing on the rest is better routed than alone (dcrouter: nemotron-51b added back from 300
    random prompts led the best fitted model by 0.10 ± 0.03 over every prompt, more than routing's 0.065; the router
    fell back and routed 0.6175 against the refit's 0.6417). The margin guards against a lead estimated from a few dozen
    prompts (on routerdc, point estimates of 0.04 for a true lead of 0.01 made routers that gain 0.03 fall back and lose
    it). Its expected scores (the calibrated raw mix) stay as they were, and the choice it replaced is kept
    (``replaced``): :func:`remove_model` restores it when ``name`` is retired. A router that already falls back routes
    by the global prior, where the new model wins when it leads; fixed weights (``mixing="paper"``) are the user's and
    stay."""
    mixing = router.mixing_
    if mixing is None or mixing.method != "cv" or mixing.gain is None:
        return mixing, None
    beyond, margin = lead_beyond_gain(lead, mixing)
    # routing by the global prior must then pick the new model
    if not (beyond > margin and leads(router, global_prior)):
        return mixing, None
    choice = dataclasses.replace(
        mixing, weights={s: float(s == "global") for s in SOURCES}, method="fallback", scale="normalised",
        estimate_weights=mixing.estimate_weights or dict(mixing.weights),
        replaced={"model": name, "mixing": mixing.to_dict()},
    )  # fmt: skip
    return choice, {"lead": round(lead[0], 4), "lead_se": round(lead[1], 4),
                    "routing_gain": round(float(mixing.gain), 4),
                    "routing_gain_se": round(float(mixing.gain_se or 0.0), 4)}  # fmt: skip


#: The folds of the new prompts over which the new model's columns are cross-fitted (:func:`cross_fitted_choices`).
RESUME_FOLDS = 3


def cross_fit_folds(n: int, seed: int | None) -> np.ndarray:
    """``(n,)`` the fold in ``[0, RESUME_FOLDS)`` of each of ``n`` new prompts: a seeded permutation, balanced."""
    return np.random.default_rng(seed).permutation(n) % RESUME_FOLDS

def cross_fitted_choices(router: Any, added: Any, new: NewModelScores, emb: np.ndarray, tasks: np.ndarray,
                         seed: int | None, mixing: Any, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """``(chosen, without)`` over the new prompts ``rows``: True where ``added`` (``router`` with the new model
    added, the last of its models), routing by ``mixing`` alone (no members), would choose the new model, and the
    fitted model it would choose without it.

    Cross-fitted: in each of :data:`RESUME_FOLDS` folds of ``rows``, the new model's priors, label prior, neighbour
    scores and, when ``mixing`` weighs Stage 2, its general adapter are learned from the other new prompts only, so
    that no prompt is judged by a column learned from its own score. Judged in-sample instead, the new model is
    chosen where its own scores happened to be high, and the prompts where it is not chosen are those where they
    happened to be low: what it would gain there is underestimated."""
    from finerouter.quality.onboarding import rebuild_estimator, train_new_model
    from finerouter.routing.onboarding import _with_parts, new_columns, scores_on_training_prompts
    from finerouter.routing.scoring import score

    m = len(router.models_)
    fold = cross_fit_folds(rows.size, router.seed if seed is None else seed)
    chosen, without = np.zeros(rows.size, dtype=bool), np.zeros(rows.size, dtype=np.int64)
    cand = [[added.models_.index(c) for c in t.candidates] for t in added.catalog_.tasks]
    for f in range(RESUME_FOLDS):
        held = rows[fold == f]
        rest = np.setdiff1d(np.arange(new.scores.size), held)
        part, e_part = new.subset(rest), emb[rest]
        _, stage1, global_prior, label_prior = new_columns(router, part, e_part, tasks[rest])
        quality = added.quality_
        if mixing.weights.get("stage2", 0.0) > 0:
            fit = train_new_model(router.quality_, e_part, part.scores, tasks[rest], seed)
            quality = rebuild_estimator(router.quality_, list(range(m)), cand, fit)
        trial = _with_parts(router, added.models_, added.catalog_, quality, stage1, global_prior, added.cost_model_,
                            {}, {}, scores_on_training_prompts(router, e_part, part.scores))  # fmt: skip
        if label_prior is not None:
            trial.label_prior_ = label_prior
        trial.mixing_, trial.members_ = mixing, []
        final = score(trial, emb[held]).final
        chosen[fold == f] = np.argmax(final, axis=1) == m
        without[fold == f] = np.argmax(final[:, :m], axis=1)
    return chosen, without


def in_sample_picks(router: Any, added: Any, mixing: Any, emb: np.ndarray) -> np.ndarray:
    """``(n,)`` True where ``added`` (``router`` with the new model), routing by ``mixing`` alone (no members), would
    choose the new model on prompts ``emb``, its columns as learned from every new prompt."""
    from finerouter.routing.scoring import score

    trial = copy.copy(added)
    trial.mixing_, trial.members_ = mixing, []
    return np.argmax(score(trial, emb).final, axis=1) == len(router.models_)


def new_model_picks(router: Any, added: Any, new: NewModelScores, emb: np.ndarray, tasks: np.ndarray,
                    seed: int | None) -> np.ndarray | None:  # fmt: skip
    """``(n,)`` True where ``added`` (``router`` with the new model), routing by ``router``'s own mixing, would choose
    the new model on each new prompt: what :func:`lead_over_best` counts as ``picked``. Cross-fitted
    (:func:`cross_fitted_choices`) given at least ``RESUME_FOLDS * MIN_PROMPTS`` scored prompts, else in-sample.
    None where the new model's global prior does not lead the router's best model's: the router cannot fall back to
    it then (:func:`mixing_after_adding`), so nothing needs judging."""
    if not leads(router, added.global_prior_):
        return None
    rows = np.flatnonzero(np.isfinite(new.scores))
    if rows.size >= RESUME_FOLDS * MIN_PROMPTS:
        picked = np.zeros(new.scores.size, dtype=bool)
        picked[rows] = cross_fitted_choices(router, added, new, emb, tasks, seed, router.mixing_, rows)[0]
        return picked
    return in_sample_picks(router, added, router.mixing_, emb)

def resumed_mixing(router: Any, added: Any, name: str, new: NewModelScores, emb: np.ndarray, tasks: np.ndarray,
                   seed: int | None) -> tuple[Any, dict[str, Any] | None]:  # fmt: skip
    """The mixing of ``added`` (``router`` with model ``name`` added) when ``router`` fell back to its best single
    model, and the evidence it was re-weighed on (None: not re-weighed, the fallback kept; else the routing gain, the
    added gain with its standard error, on how many of how many new prompts the mix would pick the new model, and
    ``routes_again``).

    A fit falls back when its cross-validation estimated that routing among its models gains nothing over their best
    single model (``mixing_.gain`` ≤ 0). A new model can change that: ahead of that model on some tasks and behind it
    on others, it is worth routing to, and a refit with it would route (routerdc: zephyr added to fits that had
    fallen back was picked on 0% of the test prompts, the refit's fits all routed and picked it on 68%). The gain
    routing would have with the new model is the old routing's cross-validated gain plus what the new model adds:
    on each new prompt where the best routing mix (``estimate_weights``) would choose it, its score minus the score
    of the model the mix would choose without it (0 elsewhere), task-weighted as :func:`lead_over_best` weighs. That
    difference is cross-fitted: in each of :data:`RESUME_FOLDS` folds of the new prompts, the new model's priors,
    label prior, neighbour scores and, when the mix weighs Stage 2, its general adapter are learned from the other
    folds only, so a prompt never picks the new model from its own score. Where the sum is positive (the fit's own
    rule for routing at all), ``added`` routes by the best routing mix; the fallback it replaced is kept
    (``replaced``) and restored when the model is retired. Unchanged where the router did not fall back, where the
    new model leads the old best model (the fallback routes to it then), where the best routing mix is the best
    single model or on the score scale, and with fewer than ``RESUME_FOLDS * MIN_PROMPTS`` new prompts that carry
    every other model's score (the difference needs them)."""
    mixing = router.mixing_
    mix = getattr(mixing, "estimate_weights", None) or {}
    if (mixing is None or mixing.method != "fallback" or mixing.gain is None or mixing.scale != "normalised"
            or mix.get("global", 0.0) >= 1.0 or leads(router, added.global_prior_)):
        return mixing, None
    rows = np.flatnonzero(np.isfinite(new.scores) & np.isfinite(new.others).all(axis=1))
    if rows.size < RESUME_FOLDS * MIN_PROMPTS:
        return mixing, None
    routing = dataclasses.replace(mixing, weights={s: float(mix.get(s, 0.0)) for s in SOURCES}, method="cv",
                                  replaced=None)  # fmt: skip
    chosen, without = cross_fitted_choices(router, added, new, emb, tasks, seed, routing, rows)
    diff = np.where(chosen, new.scores[rows] - new.others[rows, without], 0.0)
    added_gain, added_se = task_weighted_mean(diff, tasks[rows], router)
    value = float(mixing.gain) + added_gain
    evidence = {"routing_gain": round(float(mixing.gain), 4), "routing_gain_se": round(float(mixing.gain_se or 0.0), 4),
                "added_gain": round(added_gain, 4), "added_gain_se": round(added_se, 4),
                "picked_prompts": int(chosen.sum()), "new_prompts": int(rows.size),
                "routes_again": bool(value > 0)}  # fmt: skip
    if not value > 0:
        return mixing, evidence
    return dataclasses.replace(routing, replaced={"model": name, "mixing": mixing.to_dict()}), evidence


__all__ = [
    "FALLBACK_SE", "RESUME_FOLDS", "cross_fit_folds", "cross_fitted_choices", "in_sample_picks", "lead_beyond_gain",
    "lead_over_best", "leads", "mixing_after_adding", "new_model_picks", "record_task_shares", "resumed_mixing",
    "task_weighted_mean", "task_weights",
]  # fmt: skip
