"""The units of an evaluation: one seed's split with its reference points (:func:`prepare_seed`), and a group of
routers fitted and scored on it (:func:`evaluate_group`).

:func:`finerouter.evaluation.runner.run_evaluation` runs them one after the other in this process, or, with a
distributed engine, each (seed, group) as an engine task: a group is one router, or the FineRouter variants that
share one fit (:func:`finerouter.baselines.finerouter_variants.share_fits`), so every router is fitted exactly as
the sequential run fits it and the result table is the same (timings aside).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from finerouter.data.dataset import RoutingDataset, split_indices
from finerouter.errors import DataError
from finerouter.evaluation import metrics
from finerouter.evaluation.aggregate import COST_FRACTIONS


@dataclass
class SeedSplit:
    """One seed's train/test rows, route-time and true test costs, and the reference points of its report."""

    seed: int
    train_idx: np.ndarray
    test_idx: np.ndarray
    route_costs: np.ndarray | None
    true_costs: np.ndarray | None
    single: dict[str, dict[str, Any]]
    meta: dict[str, Any]


@dataclass
class EvaluationInputs:
    """What every group of every seed reads: the data, its ``(n, d)`` embeddings, and the run's settings.

    ``encoder``: the encoder itself, or (for engine tasks) a zero-argument function that builds it where the task
    runs."""

    dataset: RoutingDataset
    embeddings: np.ndarray
    encoder: Any
    prices: Any
    params: dict[str, dict[str, Any]]
    tolerances: list[float]


def prepare_seed(
    dataset: RoutingDataset, seed: int, test_size: float, train_size: int | None, prices: Any,
    embeddings: np.ndarray | None = None,
) -> SeedSplit:
    """Split by unique prompt with ``seed`` (cut to ``train_size``), drop unscored test prompts, and compute the
    single models' results, the oracle and the costs every router of the seed is scored with (the route-time costs
    corrected by groups of similar training prompts when the data's ``(n, d)`` ``embeddings`` are given:
    :class:`~finerouter.routing.costs.ResidualGroups`)."""
    from finerouter.baselines.base import model_prior
    from finerouter.routing.costs import CostModel, costs_to_learn

    models = list(dataset.models)
    m = len(models)
    train_idx, test_idx = split_indices(dataset.prompts, dataset.tasks, test_size, seed)
    if train_size is not None and train_size < len(train_idx):
        keep = np.random.default_rng(seed + 7).choice(len(train_idx), size=train_size, replace=False)
        train_idx = np.sort(train_idx[keep])
    scored = np.isfinite(dataset.scores[test_idx]).any(axis=1)
    dropped = int((~scored).sum())
    test_idx = test_idx[scored]
    if len(train_idx) == 0 or len(test_idx) == 0:
        raise DataError(
            f"run_evaluation: seed {seed} gives {len(train_idx)} training and {len(test_idx)} test prompts; "
            "use more data or another test_size"
        )
    train, test = dataset.subset(train_idx), dataset.subset(test_idx)
    true_costs = test.costs
    if true_costs is None and prices is not None:  # data read without prices: cost it like the reader would
        true_costs = np.asarray(prices.estimate_costs(test.prompts, models), dtype=np.float64)
    emb_train, emb_test = (None, None) if embeddings is None else (embeddings[train_idx], embeddings[test_idx])
    route_costs = CostModel.fit(models, train.prompts, costs_to_learn(train, prices), prices,
                                embeddings=emb_train).estimate(test.prompts, emb_test)
    n_test = test.n_prompts
    # reference points computed directly, so headroom is defined whichever routers run
    best_j = int(np.argmax(model_prior(train.scores)))
    q_oracle = float(np.mean(test.oracle_scores()))
    single = {}
    for j, model in enumerate(models):
        choice = np.full(n_test, j, dtype=np.int64)
        single[model] = {
            "quality": metrics.mean_quality(test.scores, choice),
            "cost": metrics.mean_cost(true_costs, choice),
            "per_task": metrics.per_task_quality(test.scores, choice, test.tasks) if test.tasks else {},
        }
    q_best = single[models[best_j]]["quality"]
    c_best = single[models[best_j]]["cost"]
    single_costs = [s["cost"] for s in single.values() if s["cost"] is not None]
    c_low = min(single_costs) if len(single_costs) == m else None
    c_high = max(single_costs) if len(single_costs) == m else None
    zero_aiq = None
    if c_low is not None:
        zero = metrics.zero_router_curve(single_costs, [s["quality"] for s in single.values()])
        zero_aiq = metrics.aiq(zero["cost"], zero["quality"], c_low, c_high)
    meta = {
        "seed": seed, "n_train": train.n_prompts, "n_test": n_test, "dropped_unscored_test_prompts": dropped,
        "best_single_model": models[best_j], "best_single_quality": q_best, "best_single_cost": c_best,
        "oracle_quality": q_oracle, "cost_low": c_low, "cost_high": c_high, "zero_router_aiq": zero_aiq,
    }
    return SeedSplit(seed, train_idx, test_idx, route_costs, true_costs, single, meta)


def fit_groups(names: Sequence[str], seed: int, inputs: EvaluationInputs) -> list[list[str]]:
    """``names`` cut into groups that can be evaluated apart: the FineRouter variants sharing one fit together,
    every other router alone (in the order of ``names``)."""
    from finerouter.baselines import make_router
    from finerouter.baselines.finerouter_variants import share_fits

    built = [make_router(n, seed=seed, encoder=None, prices=inputs.prices, **inputs.params.get(n, {}))
             for n in names]
    share_fits(built)
    groups: dict[int, list[str]] = {}
    for name, router in zip(names, built):
        holder = getattr(router, "shared", None)
        groups.setdefault(id(holder) if holder is not None else id(router), []).append(name)
    return list(groups.values())


def evaluate_group(
    inputs: EvaluationInputs,
    item: tuple[SeedSplit, Sequence[str]],
    progress: Callable[[str, dict[str, Any]], None] | None = None,
) -> list[tuple[str, dict[str, Any]]]:
    """Fit the routers ``names`` of ``item = (split, names)`` on the split's training rows and score them on its
    test rows: ``[(name, per-seed record)]`` in the order of ``names``; ``progress(name, record)`` after each."""
    from finerouter.baselines import make_router
    from finerouter.baselines.base import select_models
    from finerouter.baselines.finerouter_variants import share_fits

    split, names = item
    dataset, emb, prices, tols = inputs.dataset, inputs.embeddings, inputs.prices, inputs.tolerances
    encoder = inputs.encoder() if callable(inputs.encoder) and not hasattr(inputs.encoder, "encode") else inputs.encoder
    models = list(dataset.models)
    train, test = dataset.subset(split.train_idx), dataset.subset(split.test_idx)
    train_emb, test_emb = emb[split.train_idx], emb[split.test_idx]
    true_costs, route_costs, meta = split.true_costs, split.route_costs, split.meta
    q_best, q_oracle, c_best = meta["best_single_quality"], meta["oracle_quality"], meta["best_single_cost"]
    c_low, c_high = meta["cost_low"], meta["cost_high"]
    built = [make_router(n, seed=split.seed, encoder=encoder, prices=prices, **inputs.params.get(n, {}))
             for n in names]
    share_fits(built)
    out: list[tuple[str, dict[str, Any]]] = []
    for name, router in zip(names, built):
        t0 = time.perf_counter()
        router.fit(train, train_emb)
        fit_s = time.perf_counter() - t0
        shared = getattr(router, "shared", None)  # FineRouter variants: the time of their one shared fit
        if getattr(shared, "fit_seconds_", None) is not None:
            fit_s = float(shared.fit_seconds_)
        t0 = time.perf_counter()
        scores = router.predict_scores(test_emb, test) if router.is_score_based else None
        if scores is not None:
            pred = np.asarray(scores, dtype=np.float64)
            router_prior = router.prior_

            def choose(
                tol: float, pred: np.ndarray = pred, prior: np.ndarray = router_prior, costs: Any = route_costs
            ) -> np.ndarray:
                return select_models(pred, costs, tol, prior)

            choice = choose(0.0)
        else:
            choice = router.route(test_emb, 0.0, route_costs, data=test)
        predict_s = time.perf_counter() - t0
        quality = metrics.mean_quality(test.scores, choice)
        rec: dict[str, Any] = {
            "quality": quality,
            "cost": metrics.mean_cost(true_costs, choice),
            "per_task": metrics.per_task_quality(test.scores, choice, test.tasks) if test.tasks else {},
            "headroom": metrics.headroom_captured(quality, q_best, q_oracle),
            "routing_distribution": metrics.routing_distribution(choice, models),
            "unscored_share": metrics.unscored_share(test.scores, choice),
            "fit_seconds": fit_s,
            "predict_seconds": predict_s,
            "info": _router_info(router),
            "kind": router.kind,
            "uses_test_labels": bool(router.uses_test_labels),
            "score_based": scores is not None,
        }
        if scores is not None and true_costs is not None and route_costs is not None:
            curve = metrics.cost_quality_curve(choose, test.scores, true_costs, tols)
            rec["curve"] = curve
            rec["curve_area"] = (
                None
                if c_low is None
                else metrics.normalised_curve_area(curve["cost"], curve["quality"], c_low, c_high)
            )
            rec["cost_fraction_at_best_single_quality"] = (
                None
                if c_best is None
                else metrics.cost_fraction_at_quality(curve["cost"], curve["quality"], q_best, c_best)
            )
        if c_low is not None and rec["cost"] is not None:
            rec.update(_cost_metrics(rec, c_low, c_high, c_best))
        expected = router.predict_expected(test_emb, test)
        if expected is not None:  # how well the router's expected scores match the test scores
            rec["calibration"] = {
                "ece": metrics.expected_calibration_error(expected, test.scores),
                "reliability": metrics.reliability_bins(expected, test.scores),
            }
        if expected is not None and true_costs is not None and route_costs is not None and c_low is not None:
            lam = _lambda_curve(expected, route_costs, test.scores, true_costs, len(tols))
            lam.update(_cost_metrics({"curve": lam}, c_low, c_high, c_best))
            lam["cost_fraction_at_best_single_quality"] = (
                None
                if c_best is None
                else metrics.cost_fraction_at_quality(lam["cost"], lam["quality"], q_best, c_best)
            )
            rec["lambda_curve"] = lam
        out.append((name, rec))
        if progress is not None:
            progress(name, rec)
    return out


def _router_info(router: Any) -> dict[str, Any]:
    """Tuned or learned settings worth reporting (e.g. kNN's ``k_``)."""
    info: dict[str, Any] = {}
    for attr in ("k_", "model_index_"):
        if hasattr(router, attr):
            info[attr.rstrip("_")] = int(getattr(router, attr))
    hist = getattr(router, "history_", None)
    if isinstance(hist, dict):
        info["best_epoch"] = hist.get("best_epoch")
    fr = getattr(router, "router_", None)
    summary = getattr(fr, "fit_summary_", None)
    if isinstance(summary, dict):
        info["n_tasks"] = summary.get("n_tasks")
        info["share_in_tasks"] = summary.get("share_in_tasks")
        info["mean_candidates"] = summary.get("mean_candidates")
        mixing = summary.get("mixing")
        if isinstance(mixing, dict):
            info["mixing"] = {"weights": mixing.get("weights"), "method": mixing.get("method"),
                              "assignment": mixing.get("assignment")}
        fits = (summary.get("ensemble") or {}).get("mixing")
        if isinstance(fits, list):  # each fit's mixing method and stage-1 assignment (the router's own first)
            info["fits"] = [{"method": f.get("method"), "assignment": f.get("assignment")} for f in fits]
    return info


def _cost_metrics(rec: dict[str, Any], c_low: float, c_high: float, c_best: float | None) -> dict[str, Any]:
    """AIQ and the quality at 25% / 50% of the best single model's cost, for one router on one seed.

    On the router's curve when it has one, else on its one operating point (routers that only pick).
    """
    curve = rec.get("curve") or {"cost": [rec["cost"]], "quality": [rec["quality"]]}
    out: dict[str, Any] = {"aiq": metrics.aiq(curve["cost"], curve["quality"], c_low, c_high)}
    for frac in COST_FRACTIONS:
        out[f"quality_at_{round(100 * frac)}pct_best_single_cost"] = (
            None if c_best is None else metrics.quality_at_cost(curve["cost"], curve["quality"], frac * c_best)
        )
    return out


def _lambda_curve(
    expected: np.ndarray, route_costs: np.ndarray, scores: np.ndarray, true_costs: np.ndarray, steps: int
) -> dict[str, list[float]]:
    """The cost-aware curve: ``argmax expected - lambda * route-time cost``, one point per budget.

    Budgets (USD per 1,000 prompts, on the route-time estimates) are spaced evenly from the always-cheapest
    spend (lambda = inf) to the best-expected spend (lambda = 0), ``steps`` of them; each is routed with
    :func:`finerouter.routing.policy.route_to_budget` (lambda solved, the critical breakpoint filled), so the
    points spread evenly along the cost axis. Reported: the true mean cost and quality of each point, and the
    budget it was asked for (``budget``: USD per prompt, the budget per 1,000 over 1,000) with the realised spend
    over it (``spend_ratio``: the true mean cost / ``budget``; None where the budget is 0), which says whether a
    budget asked for is met on costs the router only estimated.
    """
    from finerouter.routing.policy import (
        choose_models_cost_aware,
        route_to_budget,
        spend_per_1k,
    )

    top = spend_per_1k(route_costs, choose_models_cost_aware(expected, route_costs, 0.0)[0])
    floor = spend_per_1k(route_costs, choose_models_cost_aware(expected, route_costs, np.inf)[0])
    out: dict[str, list[Any]] = {"budget_fraction": [], "cost_weight": [], "cost": [], "quality": [], "budget": [],
                                 "spend_ratio": []}  # fmt: skip
    for frac in np.linspace(0.0, 1.0, max(int(steps), 2)):
        budget_per_1k = floor + float(frac) * (top - floor)
        choice, _, lam = route_to_budget(expected, route_costs, budget_per_1k)
        cost = metrics.mean_cost(true_costs, choice)
        out["budget_fraction"].append(float(frac))
        out["cost_weight"].append(float(lam))
        out["cost"].append(float("nan") if cost is None else cost)
        out["quality"].append(metrics.mean_quality(scores, choice))
        out["budget"].append(budget_per_1k / 1000.0)
        out["spend_ratio"].append(None if cost is None or budget_per_1k <= 0 else cost / (budget_per_1k / 1000.0))
    return out


__all__ = ["EvaluationInputs", "SeedSplit", "evaluate_group", "fit_groups", "prepare_seed"]
