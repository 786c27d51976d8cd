"""Adding a model to a fitted router, or retiring one, without refitting it (which prompts to score a new model on:
:mod:`finerouter.routing.suggestions`; reading its data: :mod:`finerouter.routing.onboarding_data`).

:func:`add_model` learns what the router needs to know about a new model ``X`` from ``X``'s scores on a few
prompts (typically 100 to 1,000), everything the router already learned staying frozen:

- **Stage 2**: ``X``'s model embedding, general adapter and task adapters
  (:mod:`finerouter.quality.onboarding`).
- **Stage-1 prior**: each prompt is assigned a task by the router's classifier; ``X``'s column of ``stage1_``
  is, per task, the router's mean prior plus ``X``'s difference from the other models on the same prompts (when
  the data carries their scores), or ``X``'s own mean, shrunk toward its overall value where a task saw few of its
  prompts (:func:`new_prior_column`). Its global prior is the task values weighted by the tasks' shares of the
  router's traffic (its training prompts as its classifier routes them; ``onboarding_mixing.task_weights``), so that
  prompts chosen to over-sample small tasks do not skew it.
- **Candidates**: a task with at least :data:`MIN_TASK_PROMPTS` new prompts that also carry every other model's
  score gets its candidate set recomputed by the δ-coverage rule of discovery
  (:func:`finerouter.discovery.candidates.adaptive_candidates`) on those prompts: ``X`` enters the task's fused
  ranking where its mean reciprocal rank there places it, and the set grows (``X`` wins prompts no candidate
  won) or shrinks (``X`` takes the wins of weaker candidates). Elsewhere, ``X`` joins a task's candidates when
  the task has new prompts and its stage-1 prior there beats a current candidate's; the others stay.
- **Neighbour source** (fits that route by it, where discovery found no task): ``X``'s column holds its scores on
  the training prompts among its new prompts (:func:`scores_on_training_prompts`) and, on the others, the router's
  models' mean score there plus ``X``'s overall difference from them, so ``X``'s neighbour mean weighs its own
  scores by how many of the prompt's neighbours it was scored on.
- **Costs**: a price for ``X`` (a prices table, per-prompt costs in the data, or a flat price), in its cost model.

The mixing weights and the calibration stay as they are, with two exceptions
(:mod:`finerouter.routing.onboarding_mixing`): a router whose cross-validation chose to route falls back to the best
single model, now the added one, when the added model's lead over the best fitted model, on the prompts where routing
with it would not choose it (cross-fitted), exceeds the gain routing was estimated to bring over that model by a
standard error; and a router that had fallen back routes again by its best routing mix when its estimated routing gain
plus what the added model adds to it (cross-fitted on the new prompts) is positive. The scale the weights were chosen on
stays too: once a model is added, each prompt's scores are min-max normalised over the fitted models only
(:func:`finerouter.routing.scoring.reference_models`), the added model placed on that scale, so that a model which is
never best leaves every decision as it was. The router's ``provenance_`` records, per model, ``"fitted"`` or
``{"added": n_prompts}``, and is saved in the artifact's manifest.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import os
import time
import warnings
from typing import Any

import numpy as np

from finerouter.errors import ParameterError
from finerouter.routing.ensemble import members_of, with_members
from finerouter.routing.label_prior import new_label_column
from finerouter.routing.onboarding_data import MIN_PROMPTS, NewModelScores, new_model_scores
from finerouter.routing.onboarding_mixing import (lead_over_best, mixing_after_adding, new_model_picks, resumed_mixing,
                                                 task_weights)

logger = logging.getLogger(__name__)

#: The fewest new prompts of a task, each scored by every model, for which the task's candidates are recomputed by
#: the coverage rule; with fewer, the new model's stage-1 prior decides whether it joins them.
MIN_TASK_PROMPTS = 5


def model_provenance(router: Any) -> dict[str, Any]:
    """Per model of a fitted router: ``"fitted"`` (with the router) or ``{"added": n_prompts}``."""
    saved = getattr(router, "provenance_", None) or {}
    return {m: saved.get(m, "fitted") for m in router.models_}


# ---------------------------------------------------------------------------------------------------- priors
def new_prior_column(router: Any, new: NewModelScores, tasks: np.ndarray) -> np.ndarray:
    """``(T+1,)`` the new model's stage-1 prior per task (row ``T``: Others, or all prompts when none is there).

    With the mean statistic and at least :data:`MIN_PROMPTS` new prompts that carry every other model's score, the
    prior is *paired*: per task, the router's mean prior over its models plus the new model's mean difference from
    those models on the same prompts (shrunk toward its overall difference). Prompt difficulty cancels in the
    difference, so it is far less noisy than the new model's raw mean, and a choice of prompts that over-samples
    easy or hard tasks does not bias it. Otherwise, its raw per-task mean (shrunk with ``stage1_shrinkage``) or
    median.
    """
    from finerouter.routing.mixing import shrink_task_means
    from finerouter.routing.shrinkage import paired_shift

    n_tasks = router.catalog_.n_tasks
    scores = new.scores
    complete = np.isfinite(new.others).all(axis=1)
    if router.stage1_statistic == "mean" and complete.sum() >= MIN_PROMPTS:
        if router.stage1_shrinkage:
            shift = paired_shift(scores, new.others, tasks, n_tasks, MIN_PROMPTS)
        else:
            shift = _per_task(scores[complete] - new.others[complete].mean(axis=1), tasks[complete], n_tasks, np.mean)
        return np.clip(np.nanmean(router.stage1_, axis=1) + shift, 0.0, 1.0)
    if router.stage1_statistic == "mean" and router.stage1_shrinkage:
        return shrink_task_means(scores[:, None], tasks, n_tasks)[:, 0]
    return _per_task(scores, tasks, n_tasks, np.mean if router.stage1_statistic == "mean" else np.median)


def new_columns(router: Any, new: NewModelScores, emb: np.ndarray, tasks: np.ndarray) -> tuple[Any, ...]:
    """``(prior, stage1, global prior, label prior or None)``, each with the new model's column learned from ``new``
    (prompts ``emb`` of tasks ``tasks``): what :func:`add_model`, and each trial of
    :func:`~finerouter.routing.onboarding_mixing.resumed_mixing`, builds its router from."""
    prior = new_prior_column(router, new, tasks)
    global_prior = np.r_[router.global_prior_, float(prior @ task_weights(router))]
    label = getattr(router, "label_prior_", None)  # the labels' prior gets the new model's column too
    if label is not None:
        label = label.with_column(new_label_column(label, new.scores, new.others, emb, MIN_PROMPTS, new.labels))
    return prior, np.column_stack([router.stage1_, prior]), global_prior, label


def _per_task(values: np.ndarray, tasks: np.ndarray, n_tasks: int, stat: Any) -> np.ndarray:
    """``(T+1,)`` ``stat`` of ``values`` per task (row ``T``: Others), unshrunk; a task without values: over all."""
    out = np.full(n_tasks + 1, float(stat(values)))
    for t in range(-1, n_tasks):
        if (tasks == t).any():
            out[t if t >= 0 else n_tasks] = float(stat(values[tasks == t]))
    return out


# ---------------------------------------------------------------------------------------------------- candidates
def updated_candidates(
    router: Any, new: NewModelScores, tasks: np.ndarray, prior: np.ndarray, stage1: np.ndarray
) -> tuple[list[list[str]], list[list[str]], list[float], dict[str, int]]:
    """Per task: the fused ranking and candidates with the new model (last in ``stage1``'s columns), and coverage.

    Returns ``(rankings, candidates, coverage, counts)``; ``counts`` says how many tasks used which rule.
    """
    from finerouter.discovery.candidates import adaptive_candidates
    from finerouter.discovery.ranking import rank_models

    catalog = router.catalog_
    models = list(router.models_)
    all_models = models + ["\0new"]
    full = np.column_stack([new.others, new.scores])
    complete = np.isfinite(full).all(axis=1)
    delta = float(router.discovery_.delta if router.discovery_ is not None else 0.8)
    epsilon = float(getattr(router.discovery_, "epsilon", 60))
    tie = np.r_[router.global_prior_, prior @ task_weights(router)]
    rankings, candidates, coverage = [], [], []
    counts = {"coverage_rule": 0, "prior_rule": 0, "no_prompts": 0}
    new_index = len(models)
    for task in catalog.tasks:
        t = task.id
        old_order = [models.index(c) for c in task.fused_ranking]
        old_cands = [models.index(c) for c in task.candidates]
        rows = np.flatnonzero((tasks == t) & complete)
        if rows.size >= MIN_TASK_PROMPTS:
            ranks = rank_models(full[rows], tie)  # (r, m + 1)
            mrr = np.mean(1.0 / (epsilon + ranks), axis=0)
            position = int(sum(mrr[j] >= mrr[new_index] for j in old_order))
            order = old_order[:position] + [new_index] + old_order[position:]
            best = ranks.argmin(axis=1)
            n_cand, cov = adaptive_candidates(best, np.zeros(rows.size, np.int64), np.asarray([order]), delta)
            cands, cov_t = order[: int(n_cand[0])], float(cov[0])
            counts["coverage_rule"] += 1
        else:
            value = stage1[t, new_index]
            position = next((i for i, j in enumerate(old_order) if stage1[t, j] < value), len(old_order))
            order = old_order[:position] + [new_index] + old_order[position:]
            has_prompts = bool((tasks == t).any())
            joins = has_prompts and any(stage1[t, j] < value for j in old_cands)
            cands = order[: len(old_cands) + 1] if joins and position < len(old_cands) else old_cands
            cov_t = float(task.coverage)
            counts["prior_rule" if has_prompts else "no_prompts"] += 1
        rankings.append([all_models[j] for j in order])
        candidates.append([all_models[j] for j in cands])
        coverage.append(cov_t)
    return rankings, candidates, coverage, counts


# ---------------------------------------------------------------------------------------------------- costs
def _lengths(model: Any, prompts: list[str]) -> np.ndarray:
    """``(n,)`` input lengths in the unit of the cost model's linear fit (characters, or tokens when it counts them)."""
    if hasattr(model, "_linear_lengths"):
        return np.asarray(model._linear_lengths(prompts, model._input_tokens(prompts)), dtype=np.float64)
    return np.array([len(p) for p in prompts], dtype=np.float64)


def _line_from_prices(model: Any, prices: Any, name: str) -> np.ndarray:
    """``(2,)`` the ``a + b * length`` cost line equivalent to ``name``'s row of a prices table."""
    inp, out = prices.price(name)
    per_unit = 1.0 if getattr(model, "input_unit", "characters") == "tokens" else 1.0 / prices.chars_per_token
    return np.array([prices.output_tokens * out / 1e6, inp * per_unit / 1e6])


def _check_cost(cost: Any, name: str) -> Any:
    from finerouter.data.prices import Prices

    if isinstance(cost, (str, os.PathLike)):
        cost = Prices.read(cost)
    if isinstance(cost, bool) or not (cost is None or isinstance(cost, (Prices, int, float))):
        raise ParameterError(
            "The 'cost' parameter of add_model must be None, a prices CSV path, a Prices or a USD amount per prompt. "
            f"Got {cost!r}."
        )
    if isinstance(cost, (int, float)) and not (np.isfinite(cost) and cost >= 0):
        raise ParameterError(f"The 'cost' parameter of add_model must be a USD amount >= 0. Got {cost!r}.")
    if isinstance(cost, Prices) and name not in cost:
        raise ParameterError(f"the prices table {cost.source} has no price for the new model {name!r}")
    return cost


def extended_cost_model(router: Any, name: str, new: NewModelScores, cost: Any) -> Any:
    """The router's cost model with a cost for ``name``: from ``cost`` (a prices CSV path or
    :class:`~finerouter.data.prices.Prices` pricing ``name``, or a flat USD per prompt), else from the data's
    per-prompt costs, else from the router's own prices table. ParameterError when the router estimates costs and
    none of these prices ``name``; a router without costs stays without."""
    from finerouter.data.prices import Prices

    cost = _check_cost(cost, name)
    model = copy.copy(router.cost_model_)
    model.models = list(model.models) + [name]
    if getattr(model, "output_tokens", None) is not None:
        model.output_tokens = np.r_[model.output_tokens, np.nan]  # the table's default answer length
    if router.cost_model_.kind == "none":
        if cost is not None:
            logger.warning("the router estimates no costs (none at fit time); the price given for %r is not used", name)
        return model
    line: np.ndarray | None = None  # a + b * length
    pair: tuple[float, float] | None = None  # a prices row
    if isinstance(cost, Prices):
        line, pair = _line_from_prices(model, cost, name), cost.price(name)
    elif isinstance(cost, (int, float)):
        line = np.array([float(cost), 0.0])
    elif new.costs is not None and np.isfinite(new.costs).sum() >= 2:
        ok = np.isfinite(new.costs)
        lengths = _lengths(model, [p for p, keep in zip(new.prompts, ok) if keep])
        line, *_ = np.linalg.lstsq(np.stack([np.ones(lengths.size), lengths], axis=1), new.costs[ok], rcond=None)
    elif model.prices is not None and name in model.prices:
        pair = model.prices.price(name)
    else:
        raise ParameterError(
            f"the router estimates costs ({model.kind}) but nothing prices the new model {name!r}: pass cost= (a "
            "prices table with its row, or USD per prompt; CLI: --prices or --cost), or data with its costs"
        )
    if model.linear is not None:
        row = line if line is not None else _line_from_prices(model, model.prices, name)
        model.linear = np.vstack([model.linear, row])
    if model.prices is not None and (pair is not None or model.linear is None):
        prices = model.prices
        if pair is None:  # a cost line as a prices row: intercept = the answer, slope = the input
            a, b = np.maximum(line, 0.0)
            per_unit = 1.0 if getattr(model, "input_unit", "characters") == "tokens" else prices.chars_per_token
            pair = (float(b * per_unit * 1e6), float(a * 1e6 / max(prices.output_tokens, 1)))
        table = prices.to_dict()
        table["prices"] = {**table["prices"], name: [pair[0], pair[1]]}
        model.prices = Prices.from_dict(table)
    return model


# ---------------------------------------------------------------------------------------------------- add / remove
def _check_name(router: Any, name: Any, what: str) -> str:
    router._check_fitted()
    if not isinstance(name, str) or not name.strip():
        raise ParameterError(f"The 'name' parameter of {what} must be a non-empty model name. Got {name!r}.")
    return name


def assign_tasks(router: Any, embeddings: np.ndarray) -> np.ndarray:
    """``(n,)`` the task the router's classifier gives each prompt (-1: Others), as routing does."""
    if router.classifier_ is None:
        return np.full(embeddings.shape[0], -1, dtype=np.int64)
    return router.classifier_.predict(embeddings)[0]


def _catalog_with(catalog: Any, models: list[str], rankings: list[list[str]], candidates: list[list[str]],
                  coverage: list[float], medians: np.ndarray | None) -> Any:
    """A copy of ``catalog`` over ``models``: tasks with the given rankings, candidates and coverage;
    ``medians`` ``(T+1,)`` the added model's median scores (None: a model was removed)."""
    from finerouter.discovery.catalog import OthersGroup, TaskCatalog

    def scores(old: dict[str, float], value: float | None) -> dict[str, float]:
        out = {m: old[m] for m in models if m in old}
        if value is not None:
            out[models[-1]] = float(value)
        return out

    tasks = [
        dataclasses.replace(task, fused_ranking=rankings[t], candidates=candidates[t], coverage=coverage[t],
                            median_scores=scores(task.median_scores, None if medians is None else medians[t]))
        for t, task in enumerate(catalog.tasks)
    ]  # fmt: skip
    others = OthersGroup(catalog.others.size, catalog.others.members,
                         scores(catalog.others.median_scores, None if medians is None else medians[-1]))  # fmt: skip
    return TaskCatalog(models, tasks, others, dim=catalog.dim, n_prompts=catalog.n_prompts, info=catalog.info)


#: How close (cosine) a new prompt's embedding must be to a training prompt's to be the same prompt.
SAME_PROMPT_COSINE = 1.0 - 1e-5


def scores_on_training_prompts(router: Any, emb: np.ndarray, scores: np.ndarray) -> np.ndarray | None:
    """``(n_train,)`` the new model's score on each training prompt the neighbour source keeps
    (``neighbour_embeddings_``), where one of its new prompts (``emb`` ``(n, d)``, ``scores`` ``(n,)``) is that
    prompt (the same embedding; a prompt given twice averaged), NaN elsewhere; None when the router keeps none."""
    reference = getattr(router, "neighbour_embeddings_", None)
    if reference is None:
        return None
    sums = np.zeros(reference.shape[0])
    counts = np.zeros(reference.shape[0])
    ok = np.isfinite(scores)
    values = np.where(ok, scores, 0.0)
    for start in range(0, emb.shape[0], 256):
        block = slice(start, start + 256)
        same = ((emb[block] @ reference.T) >= SAME_PROMPT_COSINE) & ok[block, None]  # (b, n_train)
        sums += values[block] @ same
        counts += same.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, sums / counts, np.nan)


def _with_parts(router: Any, models: list[str], catalog: Any, quality: Any, stage1: np.ndarray,
                global_prior: np.ndarray, cost_model: Any, provenance: dict[str, Any], event: dict[str, Any],
                observed: np.ndarray | None = None) -> Any:
    """A shallow copy of ``router`` with new per-model parts (the original is left as it was). ``observed``: the
    added model's scores on the neighbour source's training prompts (:func:`scores_on_training_prompts`)."""
    out = copy.copy(router)
    for cache in ("_stage1_norm", "_global_norm"):
        out.__dict__.pop(cache, None)
    if router.discovery_ is not None:
        out.discovery_ = copy.copy(router.discovery_)
        out.discovery_.catalog_ = catalog
    out.models_, out.catalog_, out.quality_ = list(models), catalog, quality
    out.stage1_, out.global_prior_, out.cost_model_ = stage1, global_prior, cost_model
    if getattr(router, "neighbour_scores_", None) is not None:  # the neighbour source: a column per model
        old = {m: j for j, m in enumerate(router.models_)}
        known = np.full(router.neighbour_scores_.shape[0], np.nan) if observed is None else observed
        with warnings.catch_warnings():  # a training prompt none of the router's models was scored on: NaN
            warnings.simplefilter("ignore", RuntimeWarning)
            row_mean = np.nanmean(router.neighbour_scores_.astype(np.float64), axis=1)
        out.neighbour_scores_ = np.column_stack([
            router.neighbour_scores_[:, old[m]] if m in old
            else np.where(np.isfinite(known), known, np.clip(
                row_mean + global_prior[k] - np.nanmean(router.global_prior_), 0.0, 1.0)).astype(np.float32)
            for k, m in enumerate(models)
        ])  # an added model: its scores on the training prompts it was scored on; on the others the router's models'
        # mean there plus its overall difference from them (paired, as its priors: the prompt's difficulty stays)
    out.provenance_ = provenance
    out.out_of_fold_ = None  # the fit's out-of-fold scores cover the old pool only
    out.fit_summary_ = copy.deepcopy(getattr(router, "fit_summary_", {}))
    out.fit_summary_["n_models"] = len(models)
    out.fit_summary_.setdefault("model_changes", []).append(event)
    return out


def add_model(router: Any, name: str, data: Any, cost: Any = None, *, seed: int | None = None) -> Any:
    """A new router: ``router`` with model ``name`` added from its scores in ``data`` (see the module docstring).

    Args:
        router: a fitted :class:`~finerouter.routing.router.FineRouter`; it is not modified.
        name: the new model; must not be one of the router's models.
        data: a :class:`~finerouter.RoutingDataset` or a routing table path (any layout
            :func:`~finerouter.data.readers.read_routing_data` reads; one model column is enough) with a score of
            ``name`` on at least :data:`MIN_PROMPTS` prompts. The router's other models' scores on the same prompts,
            where present, let the candidate sets be recomputed by the coverage rule.
        cost: the new model's price when the router estimates costs: a prices CSV path or
            :class:`~finerouter.data.prices.Prices` with its row, or USD per prompt; None: the data's
            ``cost::<name>`` column, else the router's own prices table.
        seed: seeds the new model's training (default: the router's seed).

    Raises:
        ParameterError: ``name`` is already a model of the router, or nothing prices it where costs are needed.
        DataError: ``data`` has no (or too few) scores of ``name``.
    """
    name = _check_name(router, name, "add_model")
    if name in router.models_:
        raise ParameterError(
            f"model {name!r} is already one of the router's models {router.models_}; remove it first "
            "(remove_model) to add it again from new data"
        )
    from finerouter.quality.onboarding import (paired_targets, rebuild_estimator, train_new_model,
                                               train_new_task_adapters)

    t0 = time.perf_counter()
    seed = router.seed if seed is None else seed
    models = list(router.models_)
    new = new_model_scores(data, name, models)
    cost_model = extended_cost_model(router, name, new, cost)  # before any training: a refusal costs nothing
    emb = np.ascontiguousarray(router.encoder_.encode(new.prompts), dtype=np.float32)
    tasks = assign_tasks(router, emb)
    catalog = router.catalog_
    prior, stage1, global_prior, label_prior = new_columns(router, new, emb, tasks)
    rankings, candidates, coverage, rules = updated_candidates(router, new, tasks, prior, stage1)
    all_models = models + [name]
    rankings = [[name if m == "\0new" else m for m in row] for row in rankings]
    candidates = [[name if m == "\0new" else m for m in row] for row in candidates]
    cand_idx = [[all_models.index(c) for c in row] for row in candidates]
    target = paired_targets(router.quality_, emb, new.scores, new.others)  # stage 2 learns from these
    fit = train_new_model(router.quality_, emb, target, tasks, seed)
    new_tasks = [t for t, row in enumerate(cand_idx) if len(models) in row]
    train_new_task_adapters(router.quality_, fit, emb, target, tasks, new_tasks, seed)
    quality = rebuild_estimator(router.quality_, list(range(len(models))), cand_idx, fit)
    overall = float(np.median(new.scores))
    medians = np.array([float(np.median(new.scores[tasks == t])) if (tasks == t).any() else overall
                        for t in range(catalog.n_tasks)] + [overall])  # fmt: skip
    new_catalog = _catalog_with(catalog, all_models, rankings, candidates, coverage, medians)
    provenance = {**model_provenance(router), name: {"added": len(new.prompts)}}
    event = {"added": name, "n_prompts": len(new.prompts), "candidate_of_tasks": len(new_tasks),
             "candidate_rules": rules, "warm_start": models[fit.warm_start],
             "seconds": round(time.perf_counter() - t0, 3)}  # fmt: skip
    logger.info("added model %r from %d prompts: candidate in %d of %d tasks (%.1fs)", name, len(new.prompts),
                len(new_tasks), catalog.n_tasks, event["seconds"])  # fmt: skip
    observed = scores_on_training_prompts(router, emb, new.scores)
    out = _with_parts(router, all_models, new_catalog, quality, stage1, global_prior, cost_model, provenance, event,
                      observed)
    if label_prior is not None:
        out.label_prior_ = label_prior
    routes = router.mixing_ is not None and router.mixing_.method == "cv"  # else no fallback to weigh
    picked = new_model_picks(router, out, new, emb, tasks, seed) if routes else None  # where this fit would choose it
    lead = None if picked is None else lead_over_best(router, new, tasks, picked)  # None: no fallback to weigh
    mixing, why = (router.mixing_, None) if lead is None else mixing_after_adding(router, name, global_prior, lead)
    if not routes:  # a fit that fell back: would routing, with the new model, now gain?
        mixing, evidence = resumed_mixing(router, out, name, new, emb, tasks, seed)
        if evidence is not None:
            event["fallback_reweighed"] = evidence
            logger.info("a fit that fell back, with %r added: %s", name, evidence)
    if why is not None:
        event["fell_back_to_new_model"] = why
        logger.info("the router falls back to %r alone: where routing would not choose it, it leads the best fitted "
                    "model by %.4f ± %.4f (task-weighted, over every new prompt), more than the %.4f ± %.4f routing "
                    "was estimated to gain", name, why["lead"], why["lead_se"], why["routing_gain"],
                    why["routing_gain_se"])  # fmt: skip
    out.mixing_ = mixing
    members = [add_model(member, name, data, cost, seed=None if seed is None else seed + i)
               for i, member in enumerate(members_of(router), start=1)]  # fmt: skip
    return with_members(out, members)


def remove_model(router: Any, name: str) -> Any:
    """A new router: ``router`` without model ``name`` (priors, candidates, adapters, costs), never routed to again.

    A task whose only candidate was ``name`` takes the next model of its fused ranking (with its general adapter
    as task adapter). Where adding ``name`` made the router fall back to it
    (:func:`~finerouter.routing.onboarding_mixing.mixing_after_adding`), the mixing it replaced is restored.
    ``router`` is not modified. ParameterError for a model the router does not know, or when fewer than 2 models
    would remain.
    """
    from finerouter.quality.onboarding import rebuild_estimator

    name = _check_name(router, name, "remove_model")
    models = list(router.models_)
    if name not in models:
        raise ParameterError(f"unknown model {name!r}: the router's models are {models}")
    if len(models) <= 2:
        raise ParameterError(f"cannot remove {name!r}: a router needs at least 2 models, it has {models}")
    j = models.index(name)
    keep = [k for k in range(len(models)) if k != j]
    kept = [models[k] for k in keep]
    rankings = [[m for m in task.fused_ranking if m != name] for task in router.catalog_.tasks]
    candidates = [[m for m in task.candidates if m != name] or rankings[t][:1]
                  for t, task in enumerate(router.catalog_.tasks)]  # fmt: skip
    coverage = [task.coverage for task in router.catalog_.tasks]
    catalog = _catalog_with(router.catalog_, kept, rankings, candidates, coverage, None)
    quality = rebuild_estimator(router.quality_, keep, [[kept.index(c) for c in row] for row in candidates])
    cost_model = copy.copy(router.cost_model_)
    cost_model.models = kept
    for attr in ("linear", "output_tokens"):
        if getattr(cost_model, attr, None) is not None:
            setattr(cost_model, attr, np.delete(getattr(cost_model, attr), j, axis=0))
    provenance = {m: p for m, p in model_provenance(router).items() if m != name}
    event: dict[str, Any] = {"removed": name}
    mixing = router.mixing_
    replaced = getattr(mixing, "replaced", None)
    if replaced is not None and replaced.get("model") == name:  # adding it made the router fall back to it
        from finerouter.routing.mixing import MixingChoice

        mixing = MixingChoice.from_dict(replaced["mixing"])
        event["restored_mixing"] = mixing.method
    out = _with_parts(router, kept, catalog, quality, np.delete(router.stage1_, j, axis=1),
                      np.delete(router.global_prior_, j), cost_model, provenance, event)  # fmt: skip
    out.mixing_ = mixing
    if getattr(router, "label_prior_", None) is not None:
        out.label_prior_ = router.label_prior_.without(j)
    return with_members(out, [remove_model(member, name) for member in members_of(router)])


__all__ = [
    "MIN_PROMPTS", "MIN_TASK_PROMPTS", "NewModelScores", "add_model", "assign_tasks", "extended_cost_model",
    "model_provenance", "new_model_scores", "remove_model", "task_weights",
]  # fmt: skip
