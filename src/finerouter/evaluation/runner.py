"""The experiment runner: repeated train/test splits by unique prompt, every router fitted on the training part
and scored on the test part, aggregated over seeds into one JSON-ready result.

Protocol, per seed ``s``:

1. split by unique prompt text, stratified by the dataset's ``task`` label
   (:func:`finerouter.data.dataset.split_indices` with ``seed=s``); test prompts with no score at all are dropped;
2. fit each router on the training part only (routers that tune hyper-parameters carve a dev part out of it);
3. route the test prompts at tolerance 0 with route-time cost estimates (:class:`finerouter.routing.costs.CostModel`
   fitted on the training part: from ``prices`` when given, else a per-model linear fit of the observed costs
   against prompt length), and score the choices against the true test scores and costs;
4. for routers that output scores, sweep ``tolerance`` over ``tolerances`` to trace a cost–quality curve.

The embeddings are computed by the caller, once per dataset (see :func:`embed_dataset`), so the runner never
embeds and adding a router does not re-embed. The per-seed records are aggregated into the result by
:mod:`finerouter.evaluation.aggregate`; :func:`clean_for_json` is re-exported from there.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from finerouter._validation import check_float, check_int
from finerouter.data.dataset import RoutingDataset, split_indices
from finerouter.errors import DataError, ParameterError
from finerouter.evaluation import metrics
from finerouter.evaluation.aggregate import (
    COST_FRACTIONS,
    aggregate_seeds,
    clean_for_json,
)

logger = logging.getLogger(__name__)

DEFAULT_TOLERANCES = tuple(float(x) for x in np.round(np.linspace(0.0, 1.0, 21), 4))
NAN_POLICY = "a chosen model without a score on the prompt counts as 0; test prompts with no score at all are dropped"

ProgressFn = Callable[[str, int, int], None]


def embed_dataset(dataset: RoutingDataset, encoder: Any = None, cache_dir: Any = None) -> tuple[np.ndarray, Any]:
    """``((n, d) float32 embeddings, encoder)`` of every prompt, through an on-disk cache when ``cache_dir`` is set.

    Args:
        encoder: None (the packaged all-MiniLM-L6-v2), a sentence-transformers model name or path, or an Encoder.
        cache_dir: embedding cache folder (:class:`finerouter.encoders.CachedEncoder`); a second run, or one with
            more routers, reads the vectors back instead of embedding again.
    """
    from finerouter.encoders import get_encoder

    enc = get_encoder(encoder, cache_dir=cache_dir)
    unique = list(dict.fromkeys(dataset.prompts))
    vectors = np.asarray(enc.encode(unique), dtype=np.float32)
    row = {p: i for i, p in enumerate(unique)}
    return vectors[[row[p] for p in dataset.prompts]], enc


def _seeds(seeds: int | Sequence[int]) -> list[int]:
    if isinstance(seeds, (int, np.integer)) and not isinstance(seeds, bool):
        n = check_int(seeds, "seeds", "run_evaluation", low=1)
        return list(range(n))
    out = [check_int(s, "seeds", "run_evaluation", low=0) for s in seeds]
    if not out or len(set(out)) != len(out):
        raise ParameterError(f"The 'seeds' parameter of run_evaluation must be distinct seeds. Got {list(seeds)!r}.")
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
            info["mixing"] = {"weights": mixing.get("weights"), "method": mixing.get("method")}
    return info


def run_evaluation(
    dataset: RoutingDataset,
    embeddings: np.ndarray,
    *,
    routers: Sequence[str] | None = None,
    seeds: int | Sequence[int] = 5,
    test_size: float = 0.2,
    train_size: int | None = None,
    prices: Any = None,
    encoder: Any = None,
    router_params: dict[str, dict[str, Any]] | None = None,
    tolerances: Sequence[float] = DEFAULT_TOLERANCES,
    reference: str = "finerouter",
    progress: ProgressFn | None = None,
) -> dict[str, Any]:
    """Evaluate ``routers`` on ``dataset`` over several random splits; return the aggregated results.

    Args:
        dataset: the routing data.
        embeddings: ``(n, d)`` prompt embeddings, row ``i`` for ``dataset.prompts[i]``.
        routers: names from :data:`finerouter.baselines.ROUTERS` (default: all of them).
        seeds: number of splits (seeds ``0..N-1``) or the seeds themselves.
        test_size: share of unique prompts held out per split, in (0, 1).
        train_size: if given, each split's training part is cut to this many prompts (a seeded random subset;
            the test part is unchanged), for learning curves.
        prices: :class:`finerouter.data.prices.Prices` (or a CSV path) for route-time cost estimates; test costs
            come from the data (a reader given prices fills them), else from these prices.
        encoder: the encoder that produced ``embeddings`` (the FineRouter variants embed task descriptions).
        router_params: ``{router name: {hyper-parameter: value}}`` overrides.
        tolerances: values swept for the cost–quality curves, in [0, 1].
        reference: the router every other one is compared with, seed by seed (skipped when not evaluated).
        progress: optional ``f(description, done, total)`` called as routers finish.

    Returns:
        A JSON-serialisable dict: ``dataset``, ``seeds``, ``models``, ``routers`` (per router: ``quality_mean``,
        ``quality_std``, ``cost_mean``, ``per_task``, ``headroom_mean``, ``routing_distribution``, ``curve``,
        ``curve_area_mean``, ``cost_fraction_at_best_single_quality``...), ``single_models``, ``comparisons``.
    """
    from finerouter.baselines import ROUTERS, make_router
    from finerouter.baselines.base import model_prior, select_models
    from finerouter.baselines.finerouter_variants import share_fits
    from finerouter.routing.costs import CostModel

    t_start = time.perf_counter()
    if not isinstance(dataset, RoutingDataset):
        raise ParameterError(f"run_evaluation expects a RoutingDataset. Got {type(dataset).__name__}.")
    emb = np.asarray(embeddings, dtype=np.float32)
    if emb.ndim != 2 or emb.shape[0] != dataset.n_prompts:
        raise DataError(f"run_evaluation: embeddings must have shape ({dataset.n_prompts}, d); got {emb.shape}")
    seed_list = _seeds(seeds)
    test_size = check_float(test_size, "test_size", "run_evaluation", low=0.0, high=1.0, closed="neither")
    tols = [check_float(t, "tolerances", "run_evaluation", low=0.0, high=1.0) for t in tolerances]
    if train_size is not None:
        train_size = check_int(train_size, "train_size", "run_evaluation", low=10)
    names = list(routers) if routers is not None else list(ROUTERS)
    unknown = [n for n in names if n not in ROUTERS]
    if unknown:
        raise ParameterError(f"Unknown router(s) {unknown}; known routers: {list(ROUTERS)}")
    if not names:
        raise ParameterError("run_evaluation: no routers to evaluate")
    names = list(dict.fromkeys(names))
    params = router_params or {}
    if isinstance(prices, str) or hasattr(prices, "__fspath__"):
        from finerouter.data.prices import Prices

        prices = Prices.read(prices)
    models = list(dataset.models)
    m = len(models)

    per_seed: dict[str, list[dict[str, Any]]] = {n: [] for n in names}
    singles: list[dict[str, Any]] = []
    seed_meta: list[dict[str, Any]] = []
    total, done = len(seed_list) * len(names), 0
    for seed in seed_list:
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
        train_emb, test_emb = emb[train_idx], emb[test_idx]
        true_costs = test.costs
        if true_costs is None and prices is not None:  # data read without prices: cost it like the reader would
            true_costs = np.asarray(prices.estimate_costs(test.prompts, models), dtype=np.float64)
        route_costs = CostModel.fit(models, train.prompts, train.costs, prices).estimate(test.prompts)
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
        singles.append(single)
        q_best = single[models[best_j]]["quality"]
        c_best = single[models[best_j]]["cost"]
        single_costs = [s["cost"] for s in single.values() if s["cost"] is not None]
        c_low = min(single_costs) if len(single_costs) == m else None
        c_high = max(single_costs) if len(single_costs) == m else None
        zero_aiq = None
        if c_low is not None:
            zero = metrics.zero_router_curve(single_costs, [s["quality"] for s in single.values()])
            zero_aiq = metrics.aiq(zero["cost"], zero["quality"], c_low, c_high)
        seed_meta.append({
            "seed": seed, "n_train": train.n_prompts, "n_test": n_test, "dropped_unscored_test_prompts": dropped,
            "best_single_model": models[best_j], "best_single_quality": q_best, "best_single_cost": c_best,
            "oracle_quality": q_oracle, "cost_low": c_low, "cost_high": c_high, "zero_router_aiq": zero_aiq,
        })
        logger.info(
            "seed %d: %d train / %d test prompts; best single %s", seed, train.n_prompts, n_test, models[best_j]
        )

        built = [make_router(n, seed=seed, encoder=encoder, prices=prices, **params.get(n, {})) for n in names]
        share_fits(built)
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
            per_seed[name].append(rec)
            done += 1
            logger.info("seed %d %-20s quality %.4f (fit %.1fs)", seed, name, quality, fit_s)
            if progress is not None:
                progress(f"seed {seed}: {name}", done, total)
        del built

    result = aggregate_seeds(dataset, names, seed_list, per_seed, singles, seed_meta, tols, reference)
    result.update({
        "test_size": test_size,
        "train_size": train_size,
        "encoder": getattr(encoder, "name", None if encoder is None else str(encoder)),
        "cost_source": dataset.meta.get("cost_source", "data" if dataset.costs is not None else None),
        "route_cost_model": "prices" if prices is not None else ("linear" if dataset.costs is not None else "none"),
        "nan_policy": NAN_POLICY,
        "tolerances": tols,
        "elapsed_seconds": round(time.perf_counter() - t_start, 2),
        "created": time.strftime("%Y-%m-%d", time.gmtime()),
    })
    return result


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
    points spread evenly along the cost axis. Reported: the true mean cost and quality of each point.
    """
    from finerouter.routing.policy import (
        choose_models_cost_aware,
        route_to_budget,
        spend_per_1k,
    )

    top = spend_per_1k(route_costs, choose_models_cost_aware(expected, route_costs, 0.0)[0])
    floor = spend_per_1k(route_costs, choose_models_cost_aware(expected, route_costs, np.inf)[0])
    out: dict[str, list[float]] = {"budget_fraction": [], "cost_weight": [], "cost": [], "quality": []}
    for frac in np.linspace(0.0, 1.0, max(int(steps), 2)):
        choice, _, lam = route_to_budget(expected, route_costs, floor + float(frac) * (top - floor))
        cost = metrics.mean_cost(true_costs, choice)
        out["budget_fraction"].append(float(frac))
        out["cost_weight"].append(float(lam))
        out["cost"].append(float("nan") if cost is None else cost)
        out["quality"].append(metrics.mean_quality(scores, choice))
    return out


__all__ = [
    "DEFAULT_TOLERANCES",
    "NAN_POLICY",
    "clean_for_json",
    "embed_dataset",
    "run_evaluation",
]
