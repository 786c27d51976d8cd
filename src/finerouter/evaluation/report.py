"""``report.md`` from the runner's results, with tables in the shape of the paper's Tables 1 and 2."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from finerouter._io import atomic_write_json, atomic_write_text

#: Display names of the routers in the report (the registry names stay in results.json).
LABELS = {
    "oracle": "Oracle (uses test scores)",
    "best_single": "Best single model",
    "random": "Random",
    "knn": "kNN",
    "mlp_classifier": "MLP (classifier)",
    "mlp_regressor": "MLP regressor",
    "matrix_factorization": "Matrix factorisation (RouteLLM)",
    "routerdc": "RouterDC-style",
    "ipr": "IPR-style",
    "coarse_task": "Coarse task label (given at test)",
    "stage1_embedding": "Stage 1 only: Embedding",
    "stage1_classifier": "Stage 1 only: Fine CLS",
    "stage2_only": "Stage 2 only",
    "label_free": "FineRouter, label-free discovery (paper)",
    "refined": "FineRouter, task labels always refined",
    "finerouter": "**FineRouter**",
}
#: The routers of the ablation table (paper Table 2), in display order.
_ABLATION_ROUTERS = (
    "stage1_embedding", "coarse_task", "stage1_classifier", "stage2_only", "label_free", "refined", "finerouter",
)


def _display_name(name: str) -> str:
    return LABELS.get(name, name)


def _number(x: float | None, digits: int = 3, scale: float = 1.0) -> str:
    """``x * scale`` with ``digits`` decimals; an en dash for a missing or non-finite value."""
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "–"
    return f"{x * scale:.{digits}f}"


def _mean_std(mean: float | None, std: float | None, digits: int = 3, scale: float = 1.0) -> str:
    """``"mean ± std"`` (just the mean when the std is missing or 0)."""
    if mean is None:
        return "–"
    if std is None or std == 0:
        return _number(mean, digits, scale)
    return f"{_number(mean, digits, scale)} ± {_number(std, digits, scale)}"


def _usd(x: float | None) -> str:
    """A dollar amount: six decimals under one cent, four above."""
    if x is None or not math.isfinite(x):
        return "–"
    return f"${x:.6f}" if x < 0.01 else f"${x:.4f}"


def _p_value(x: float | None) -> str:
    """A test's p-value to three significant digits."""
    if x is None:
        return "–"
    return f"{x:.3g}"


def _table_row(cells: list[str]) -> str:
    """One Markdown table row."""
    return "| " + " | ".join(cells) + " |"


def _quality_table(results: dict[str, Any], sections: list[tuple[str, list[tuple[str, dict[str, Any]]]]]) -> list[str]:
    tasks = results["tasks"]
    head = ["", *tasks, "Ave", "Qual", "Cost / prompt", "Headroom"]
    lines = [_table_row(head), _table_row(["---"] + ["---:"] * (len(head) - 1))]
    for title, rows in sections:
        if not rows:
            continue
        lines.append(_table_row([f"*{title}*"] + [""] * (len(head) - 1)))
        for label, rec in rows:
            per_task = rec.get("per_task", {})
            cells = [label]
            for t in tasks:
                v = per_task.get(t)
                cells.append(_number(v["mean"] if isinstance(v, dict) else v, 1, 100.0))
            cells.append(_number(rec.get("per_task_macro_mean"), 1, 100.0))
            cells.append(_mean_std(rec.get("quality_mean"), rec.get("quality_std")))
            cells.append(_usd(rec.get("cost_mean")))
            cells.append(_number(rec.get("headroom_mean"), 2) if "headroom_mean" in rec else "")
            lines.append(_table_row(cells))
    return lines


def render_report(results: dict[str, Any]) -> str:
    """The Markdown report for ``results`` (as returned by :func:`finerouter.evaluation.runner.run_evaluation`)."""
    routers = results["routers"]
    seeds = results["seeds"]
    splits = results.get("splits", [])
    n_test = [s["n_test"] for s in splits]
    lines = [f"# Routing evaluation: {results['dataset']}", ""]
    lines.append(
        f"{results['n_prompts']} prompts, {len(results['models'])} models, {len(results['tasks'])} tasks. "
        f"{len(seeds)} random splits (seeds {', '.join(str(s) for s in seeds)}), test size {results.get('test_size')} "
        f"by unique prompt, stratified by task ({min(n_test) if n_test else 0}–{max(n_test) if n_test else 0} test "
        f"prompts per split). Encoder: `{results.get('encoder')}`."
    )
    lines.append("")
    lines.append(
        f"Quality is the mean true score of the chosen model; {results.get('nan_policy', '')}. Numbers are means "
        "over seeds (± sample std). Per-task columns and *Ave* (their macro mean) are ×100; *Qual* is the mean "
        "over all test prompts. *Headroom* = (q − q_best single) / (q_oracle − q_best single). "
        f"Costs in the data: {results.get('cost_source') or 'none'}; route-time cost estimates: "
        f"{results.get('route_cost_model')}. Routers pick at tolerance 0 (the best predicted model; the cheapest "
        "among exact ties)."
    )
    lines.append("")
    best = results.get("best_single", {})
    lines.append(
        f"Best single model (chosen on training data): {', '.join(sorted(set(best.get('models', []))))} — quality "
        f"{_number(best.get('quality_mean'))}, cost {_usd(best.get('cost_mean'))} per prompt; oracle quality "
        f"{_number(results.get('oracle_quality_mean'))}."
    )
    lines.append("")

    # ---- Table 1
    lines += ["## Table 1: candidate models and routers", ""]
    singles = [(f"{m}", rec) for m, rec in results["single_models"].items()]
    baseline_rows = [(_display_name(n), rec) for n, rec in routers.items() if rec["kind"] == "baseline"]
    if "finerouter" in routers:
        baseline_rows.append((_display_name("finerouter"), routers["finerouter"]))
    ref_rows = [(_display_name(n), rec) for n, rec in routers.items() if rec["kind"] == "reference"]
    sections = [("Candidate models", singles), ("Routers", baseline_rows), ("Reference points", ref_rows)]
    lines += _quality_table(results, sections)
    lines.append("")

    # ---- Table 2
    abl = [(_display_name(n), routers[n]) for n in _ABLATION_ROUTERS if n in routers]
    if abl:
        lines += ["## Table 2: ablations", ""]
        lines.append(
            "*Coarse task label* routes by the dataset's own benchmark label, given at test time: an upper bound for "
            "a perfect coarse-taxonomy classifier (the paper's Coarse CLS predicts it)."
        )
        lines.append("")
        lines += _quality_table(results, [("Ablations", abl)])
        lines.append("")

    # ---- cost-quality
    curved = [(n, rec) for n, rec in routers.items() if "curve" in rec]
    lines += ["## Cost–quality trade-off", ""]
    if curved:
        axis = results.get("cost_axis", {})
        lines.append(
            "Tolerance swept 0 → 1: among models within the tolerance of the best per-prompt min–max normalised "
            "score, the cheapest. *Area*: area under the quality curve over the normalised cost axis "
            f"x = (cost − {_usd(axis.get('low_mean'))}) / ({_usd(axis.get('high_mean'))} − "
            f"{_usd(axis.get('low_mean'))}) (cheapest → priciest single model), running-max envelope, 0 left of the "
            "router's cheapest point. *AIQ* (RouterBench, arXiv 2403.12031): the same area under the router's "
            "non-decreasing convex hull (operating points mixed at random); routers without a curve are scored on "
            "their one point. *Cost at best-single quality*: the cheapest swept point reaching the best "
            "single model's quality, as a fraction of that model's cost; *Q @ 25% / 50% cost*: the best quality "
            "among swept points costing at most a quarter / half of it (both on the seed-averaged curve)."
        )
        lines.append("")
        zero = results.get("zero_router")
        if zero and zero.get("aiq_mean") is not None:
            lines.append(
                f"Zero router (the convex hull of the single models, no prompt read): AIQ "
                f"{_mean_std(zero['aiq_mean'], zero.get('aiq_std'))}."
            )
            lines.append("")
        lines.append(_table_row(["Router", "AIQ", "Area", "Cost at best-single quality", "Q @ 25% cost", "Q @ 50% cost",
                           "Quality (tol. 0)", "Cost (tol. 0)", "Cheapest point"]))
        lines.append(_table_row(["---"] + ["---:"] * 8))
        for n, rec in curved:
            frac = rec.get("cost_fraction_at_best_single_quality")
            curve = rec["curve"]
            i_min = min(range(len(curve["cost"])), key=lambda i: curve["cost"][i])
            lines.append(_table_row([
                _display_name(n), _mean_std(rec.get("aiq_mean"), rec.get("aiq_std")),
                _mean_std(rec.get("curve_area_mean"), rec.get("curve_area_std")),
                "never" if frac is None else f"{frac:.0%}",
                _number(rec.get("quality_at_25pct_best_single_cost")),
                _number(rec.get("quality_at_50pct_best_single_cost")),
                _number(rec["quality_mean"]), _usd(rec["cost_mean"]),
                f"{_number(curve['quality'][i_min])} at {_usd(curve['cost'][i_min])}",
            ]))
        for n, rec in routers.items():
            for key, what in (("lambda_curve", "λ-curve"),):
                sub = rec.get(key)
                if sub:
                    frac = sub.get("cost_fraction_at_best_single_quality")
                    lines.append(_table_row([
                        f"{_display_name(n)}, {what}", _mean_std(sub.get("aiq_mean"), sub.get("aiq_std")), "–",
                        "never" if frac is None else f"{frac:.0%}",
                        _number(sub.get("quality_at_25pct_best_single_cost")),
                        _number(sub.get("quality_at_50pct_best_single_cost")), "–", "–", "–",
                    ]))
        met = [(n, rec["lambda_curve"]["budget_met"]) for n, rec in routers.items()
               if (rec.get("lambda_curve") or {}).get("budget_met")]  # fmt: skip
        if met:
            lines.append("")
            lines.append("Budgets met (λ-curves: the realised spend on the test prompts' true costs over the budget "
                         "asked for, every seed's budgets): " + "; ".join(
                f"{_display_name(n)} {b['min_ratio']:.3f}–{b['max_ratio']:.3f}, {b['within_share']:.0%} of "
                f"{b['points']} within ±{b['tolerance']:.0%}, {b['over_share']:.0%} above" for n, b in met) + ".")
        points = [(n, rec) for n, rec in routers.items() if "curve" not in rec and rec.get("aiq_mean") is not None]
        if points:
            lines.append("")
            lines.append("Routers without a curve, AIQ on their one point: " + ", ".join(
                f"{_display_name(n)} {_number(rec['aiq_mean'])}" for n, rec in points) + ".")
    else:
        lines.append("No costs known for this dataset: no cost–quality curves (see `cost_quality.png` for quality).")
    lines.append("")

    # ---- calibration of expected scores
    calibrated = [(n, rec["calibration"]) for n, rec in routers.items() if rec.get("calibration")]
    if calibrated:
        lines += ["## Calibration of expected scores (test prompts × models)", ""]
        lines.append(
            "Routers that give an expected true score per model (what the cost-aware λ rule trades against cost). "
            "ECE: over ten equal-width bins of the prediction, the count-weighted mean of |mean prediction − mean "
            "true score|; the reliability diagram is `reliability.png`."
        )
        lines.append("")
        lines.append(_table_row(["Router", "ECE (mean ± std over seeds)", "Mean prediction / mean truth per bin"]))
        lines.append(_table_row(["---", "---:", "---"]))
        for n, cal in calibrated:
            rel = cal["reliability"]
            cells = ", ".join(
                f"{p:.2f}/{o:.2f}" for p, o, c in zip(rel["predicted"], rel["observed"], rel["count"]) if c
            )
            lines.append(_table_row([_display_name(n), _mean_std(cal.get("ece_mean"), cal.get("ece_std")), cells]))
        lines.append("")

    # ---- paired comparison
    comp = results.get("comparisons", {})
    if comp.get("reference"):
        ref = comp["reference"]
        lines += [f"## Paired comparison: {_display_name(ref)} minus each router, per seed", ""]
        lines.append(
            _table_row(["Router", "Mean diff", "Std", "Wins / losses / ties", "Paired t-test p", "Sign test p"])
        )
        lines.append(_table_row(["---", "---:", "---:", "---:", "---:", "---:"]))
        for n, c in comp["against"].items():
            lines.append(_table_row([
                _display_name(n), _number(c["diff_mean"], 4), _number(c["diff_std"], 4),
                f"{c['wins']} / {c['losses']} / {c['ties']}",
                _p_value(c["ttest_p"]), _p_value(c["sign_test_p"]),
            ]))
        lines.append("")

    # ---- routing distribution
    lines += ["## Routing distribution (% of test prompts, mean over seeds)", ""]
    models = results["models"]
    lines.append(_table_row(["Router", *models]))
    lines.append(_table_row(["---"] + ["---:"] * len(models)))
    for n, rec in routers.items():
        dist = rec["routing_distribution"]
        lines.append(_table_row([_display_name(n)] + [f"{100 * dist.get(m, 0.0):.1f}" for m in models]))
    lines.append("")

    # ---- settings & timing
    lines += ["## Fitted settings and time", ""]
    lines.append(_table_row(["Router", "Fit s (mean)", "Predict s (mean)", "Unscored choices", "Per-seed settings"]))
    lines.append(_table_row(["---", "---:", "---:", "---:", "---"]))
    for n, rec in routers.items():
        infos = rec["per_seed"].get("info", [])
        shown = "; ".join(", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in i.items())
                          for i in infos if i)
        lines.append(_table_row([
            _display_name(n), f"{rec['fit_seconds_mean']:.2f}", f"{rec['predict_seconds_mean']:.3f}",
            f"{100 * rec.get('unscored_share_mean', 0.0):.2f}%", shown or "–",
        ]))
    lines.append("")
    lines.append(f"Generated by finerouter {results.get('library_version')} in {results.get('elapsed_seconds')} s.")
    lines.append("")
    return "\n".join(lines)


def write_outputs(results: dict[str, Any], out_dir: str | Path) -> dict[str, Path]:
    """Write ``results.json``, ``report.md``, ``cost_quality.png``, ``routing_distribution.png`` and, when a router
    gives expected scores, ``reliability.png`` to ``out_dir``.

    Every file is written atomically. Returns ``{kind: path}``.
    """
    from finerouter.evaluation.plots import plot_cost_quality, plot_reliability, plot_routing_distribution
    from finerouter.evaluation.runner import clean_for_json

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    clean = clean_for_json(results)
    paths = {
        "results": out / "results.json",
        "report": out / "report.md",
        "cost_quality": out / "cost_quality.png",
        "routing_distribution": out / "routing_distribution.png",
    }
    atomic_write_json(paths["results"], clean)
    atomic_write_text(paths["report"], render_report(clean))
    plot_cost_quality(clean, paths["cost_quality"])
    plot_routing_distribution(clean, paths["routing_distribution"])
    if any(rec.get("calibration") for rec in clean["routers"].values()):
        paths["reliability"] = out / "reliability.png"
        plot_reliability(clean, paths["reliability"])
    return paths
