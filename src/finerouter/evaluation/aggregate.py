"""Aggregation of the experiment runner's per-seed records into one JSON-ready result.

:func:`aggregate_seeds` takes what :func:`finerouter.evaluation.runner.run_evaluation` collected on each seed
(one record per router, the single models' points and the split's reference figures) and returns means, standard
deviations, mean curves, pooled calibration, the zero router and the paired comparisons with the reference router.
Pure bookkeeping: nothing here fits, routes or draws a random number, so the same records give the same result.
:func:`clean_for_json` makes such a result strict JSON (NaN and inf become null).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from finerouter.data.dataset import RoutingDataset
from finerouter.evaluation import metrics

#: Fractions of the best single model's cost at which the quality reached is reported.
COST_FRACTIONS = (0.25, 0.5)


def _curve_mean(curves: list[dict[str, list[float]]]) -> dict[str, list[float]]:
    """The point-wise mean over seeds of tolerance curves swept at the same tolerances."""
    return {
        "tolerance": list(curves[0]["tolerance"]),
        "cost": np.mean([c["cost"] for c in curves], axis=0).tolist(),
        "quality": np.mean([c["quality"] for c in curves], axis=0).tolist(),
    }


def budget_met(lams: list[dict[str, Any]], tolerance: float = 0.05) -> dict[str, Any] | None:
    """Whether the budgets a λ-curve asked for were met on the true costs: over every seed's points with a budget
    (``spend_ratio``, realised mean cost / budget), the lowest and highest ratio, the share of points within
    ``tolerance`` of the budget and the share above it by more. None when no point has a ratio (no costs, or a
    record written before the ratio was kept)."""
    ratios = np.asarray([r for lam in lams for r in (lam.get("spend_ratio") or []) if r is not None], dtype=float)
    ratios = ratios[np.isfinite(ratios)]
    if ratios.size == 0:
        return None
    return {"points": int(ratios.size), "tolerance": float(tolerance), "min_ratio": float(ratios.min()),
            "max_ratio": float(ratios.max()),
            "within_share": float(np.mean(np.abs(ratios - 1.0) <= tolerance + 1e-12)),
            "over_share": float(np.mean(ratios > 1.0 + tolerance + 1e-12))}  # fmt: skip


def _router_summary(
    recs: list[dict[str, Any]], models: list[str], tasks: list[str], best_q: list[Any], best_c: list[Any]
) -> dict[str, Any]:
    """One router's entry of the result from its per-seed records ``recs`` (``best_q``/``best_c``: per seed, the
    best single model's quality and cost; the curves' reference point is their mean)."""
    q_mean, q_std = metrics.mean_std([r["quality"] for r in recs])
    c_mean, c_std = metrics.mean_std([r["cost"] for r in recs])
    h_mean, h_std = metrics.mean_std([r["headroom"] for r in recs])
    per_task = {}
    for t in tasks:
        mu, sd = metrics.mean_std([r["per_task"].get(t) for r in recs])
        per_task[t] = {"mean": mu, "std": sd}
    macro, _ = metrics.mean_std([v["mean"] for v in per_task.values()])
    out: dict[str, Any] = {
        "kind": recs[0]["kind"],
        "uses_test_labels": recs[0]["uses_test_labels"],
        "score_based": recs[0]["score_based"],
        "quality_mean": q_mean,
        "quality_std": q_std,
        "cost_mean": c_mean,
        "cost_std": c_std,
        "headroom_mean": h_mean,
        "headroom_std": h_std,
        "per_task": per_task,
        "per_task_macro_mean": macro,
        "routing_distribution": {
            mdl: float(np.mean([r["routing_distribution"][mdl] for r in recs])) for mdl in models
        },
        "unscored_share_mean": float(np.mean([r["unscored_share"] for r in recs])),
        "fit_seconds_mean": float(np.mean([r["fit_seconds"] for r in recs])),
        "predict_seconds_mean": float(np.mean([r["predict_seconds"] for r in recs])),
        "per_seed": {
            "quality": [r["quality"] for r in recs],
            "cost": [r["cost"] for r in recs],
            "headroom": [r["headroom"] for r in recs],
            "info": [r["info"] for r in recs],
        },
    }
    if all("curve" in r for r in recs):
        curve = _curve_mean([r["curve"] for r in recs])
        a_mean, a_std = metrics.mean_std([r["curve_area"] for r in recs])
        mean_best_q, _ = metrics.mean_std(best_q)
        mean_best_c, _ = metrics.mean_std(best_c)
        out["curve"] = curve
        out["curve_area_mean"] = a_mean
        out["curve_area_std"] = a_std
        out["cost_fraction_at_best_single_quality"] = (
            None if mean_best_q is None or mean_best_c is None
            else metrics.cost_fraction_at_quality(curve["cost"], curve["quality"], mean_best_q, mean_best_c)
        )
        out["per_seed"]["curve_area"] = [r["curve_area"] for r in recs]
        out["per_seed"]["cost_fraction_at_best_single_quality"] = [
            r["cost_fraction_at_best_single_quality"] for r in recs
        ]
    if all("lambda_curve" in r for r in recs):
        lams = [r["lambda_curve"] for r in recs]
        lam_out: dict[str, Any] = {
            "budget_fraction": list(lams[0]["budget_fraction"]),
            "cost": np.mean([c["cost"] for c in lams], axis=0).tolist(),
            "quality": np.mean([c["quality"] for c in lams], axis=0).tolist(),
        }
        lam_out["aiq_mean"], lam_out["aiq_std"] = metrics.mean_std([c["aiq"] for c in lams])
        mean_best_q, _ = metrics.mean_std(best_q)
        mean_best_c, _ = metrics.mean_std(best_c)
        lam_out["cost_fraction_at_best_single_quality"] = (
            None if mean_best_q is None or mean_best_c is None
            else metrics.cost_fraction_at_quality(lam_out["cost"], lam_out["quality"], mean_best_q, mean_best_c)
        )
        for frac in COST_FRACTIONS:
            key = f"quality_at_{round(100 * frac)}pct_best_single_cost"
            lam_out[key] = None if mean_best_c is None else metrics.quality_at_cost(
                lam_out["cost"], lam_out["quality"], frac * mean_best_c
            )
        lam_out["per_seed"] = {
            "aiq": [c["aiq"] for c in lams],
            "cost_fraction_at_best_single_quality": [c["cost_fraction_at_best_single_quality"] for c in lams],
            "cost_weight": [c["cost_weight"] for c in lams],
        }
        lam_out["budget_met"] = budget_met(lams)
        out["lambda_curve"] = lam_out
    if all("calibration" in r for r in recs):
        ece_mean, ece_std = metrics.mean_std([r["calibration"]["ece"] for r in recs])
        counts = np.sum([r["calibration"]["reliability"]["count"] for r in recs], axis=0)

        def pooled(key: str) -> list[float]:
            values = np.array([r["calibration"]["reliability"][key] for r in recs], dtype=np.float64)
            weights = np.array([r["calibration"]["reliability"]["count"] for r in recs], dtype=np.float64)
            with np.errstate(invalid="ignore", divide="ignore"):
                return (np.nansum(values * weights, axis=0) / counts).tolist()

        out["calibration"] = {
            "ece_mean": ece_mean,
            "ece_std": ece_std,
            "per_seed_ece": [r["calibration"]["ece"] for r in recs],
            "reliability": {"predicted": pooled("predicted"), "observed": pooled("observed"),
                            "count": counts.astype(int).tolist()},
        }
    if all("aiq" in r for r in recs):
        out["aiq_mean"], out["aiq_std"] = metrics.mean_std([r["aiq"] for r in recs])
        out["per_seed"]["aiq"] = [r["aiq"] for r in recs]
        mean_best_c, _ = metrics.mean_std(best_c)
        src = out.get("curve") or {"cost": [c_mean], "quality": [q_mean]}
        for frac in COST_FRACTIONS:
            key = f"quality_at_{round(100 * frac)}pct_best_single_cost"
            out[key] = None if mean_best_c is None else metrics.quality_at_cost(
                src["cost"], src["quality"], frac * mean_best_c
            )
            out["per_seed"][key] = [r[key] for r in recs]
    return out


def aggregate_seeds(
    dataset: RoutingDataset,
    names: list[str],
    seeds: list[int],
    per_seed: dict[str, list[dict[str, Any]]],
    singles: list[dict[str, Any]],
    seed_meta: list[dict[str, Any]],
    tolerances: list[float],
    reference: str,
) -> dict[str, Any]:
    """The result of :func:`finerouter.evaluation.runner.run_evaluation`, before its run settings are added.

    Args:
        dataset: the evaluated data (name, models, tasks).
        names: the evaluated routers, in report order.
        seeds: the split seeds, in run order.
        per_seed: ``{router: [record of each seed]}``, the records built by the runner.
        singles: per seed, ``{model: {"quality", "cost", "per_task"}}`` of always picking that model.
        seed_meta: per seed, the split's sizes and reference figures (best single model, oracle, cost axis).
        tolerances: the swept tolerances (kept for the caller; the curves carry their own).
        reference: the router compared with every other, seed by seed; skipped when not in ``per_seed``.
    """
    from finerouter._version import __version__

    models = list(dataset.models)
    tasks = sorted(set(dataset.tasks)) if dataset.tasks else []
    best_q = [s["best_single_quality"] for s in seed_meta]
    best_c = [s["best_single_cost"] for s in seed_meta]
    routers_out: dict[str, Any] = {}
    for name in names:
        routers_out[name] = _router_summary(per_seed[name], models, tasks, best_q, best_c)

    single_out = {}
    for mdl in models:
        q_mean, q_std = metrics.mean_std([s[mdl]["quality"] for s in singles])
        c_mean, c_std = metrics.mean_std([s[mdl]["cost"] for s in singles])
        per_task = {t: metrics.mean_std([s[mdl]["per_task"].get(t) for s in singles])[0] for t in tasks}
        macro, _ = metrics.mean_std(list(per_task.values()))
        single_out[mdl] = {
            "quality_mean": q_mean, "quality_std": q_std, "cost_mean": c_mean, "cost_std": c_std,
            "per_task": per_task, "per_task_macro_mean": macro,
        }

    comparisons: dict[str, Any] = {"reference": None, "against": {}}
    if reference in per_seed:
        comparisons["reference"] = reference
        ref_q = [r["quality"] for r in per_seed[reference]]
        for name in names:
            if name != reference:
                comparisons["against"][name] = metrics.paired_comparison(ref_q, [r["quality"] for r in per_seed[name]])

    lows = [s["cost_low"] for s in seed_meta]
    highs = [s["cost_high"] for s in seed_meta]
    zero_router = None
    if all(s.get("zero_router_aiq") is not None for s in seed_meta):
        z_mean, z_std = metrics.mean_std([s["zero_router_aiq"] for s in seed_meta])
        zero_router = {
            **metrics.zero_router_curve(
                [single_out[mdl]["cost_mean"] for mdl in models], [single_out[mdl]["quality_mean"] for mdl in models]
            ),
            "aiq_mean": z_mean,
            "aiq_std": z_std,
            "per_seed_aiq": [s["zero_router_aiq"] for s in seed_meta],
            "definition": "non-decreasing convex hull of the single models' (cost, quality) points (RouterBench)",
        }
    return {
        "dataset": dataset.name,
        "source": dataset.source,
        "library_version": __version__,
        "n_prompts": dataset.n_prompts,
        "models": models,
        "tasks": tasks,
        "seeds": seeds,
        "splits": seed_meta,
        "best_single": {
            "quality_mean": metrics.mean_std(best_q)[0],
            "cost_mean": metrics.mean_std(best_c)[0],
            "models": [s["best_single_model"] for s in seed_meta],
        },
        "oracle_quality_mean": metrics.mean_std([s["oracle_quality"] for s in seed_meta])[0],
        "cost_axis": {
            "low_mean": metrics.mean_std(lows)[0] if all(v is not None for v in lows) else None,
            "high_mean": metrics.mean_std(highs)[0] if all(v is not None for v in highs) else None,
            "definition": "x = (cost - cost of the cheapest single model) / (cost of the priciest - cheapest), "
            "mean cost per prompt on each seed's test prompts",
        },
        "routers": routers_out,
        "zero_router": zero_router,
        "single_models": single_out,
        "comparisons": comparisons,
    }


def clean_for_json(obj: Any) -> Any:
    """``obj`` with NaN/inf floats replaced by None and numpy scalars/arrays made plain (for strict JSON)."""
    if isinstance(obj, dict):
        return {str(k): clean_for_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [clean_for_json(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return clean_for_json(obj.tolist())
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        x = float(obj)
        return x if math.isfinite(x) else None
    if isinstance(obj, np.bool_):
        return bool(obj)
    return obj
