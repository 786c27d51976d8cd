"""Figures for the evaluation report, drawn with matplotlib's Agg canvas (no pyplot, no global backend change).

* ``cost_quality.png`` — like the paper's Fig. 2b: each score-based router's cost–quality curve (tolerance swept
  0 → 1), the cost-aware λ-curves (dashed; FineRouter's and kNN's), the zero router (dotted: the single models'
  convex hull), routers that only pick as triangles, candidate models as circles. Without costs: a quality bar
  chart.
* ``routing_distribution.png`` — like Fig. 2a, for every router: the share of test prompts sent to each model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from finerouter._io import atomic_write_bytes


def _figure(width: float, height: float) -> tuple[Any, Any]:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=120)
    FigureCanvasAgg(fig)
    return fig, fig.add_subplot(1, 1, 1)


def _write_png(fig: Any, path: str | Path) -> None:
    import io

    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png")
    atomic_write_bytes(path, buf.getvalue())


def _display_name(name: str) -> str:
    from finerouter.evaluation.report import LABELS

    return LABELS.get(name, name).replace("**", "")


def plot_cost_quality(results: dict[str, Any], path: str | Path) -> None:
    """Draw the cost–quality figure of ``results`` to ``path`` (PNG)."""
    routers = results["routers"]
    singles = results["single_models"]
    has_cost = any(rec.get("cost_mean") is not None for rec in singles.values())
    if not has_cost:
        _plot_quality_bars(results, path)
        return
    import matplotlib

    fig, ax = _figure(11.0, 5.5)
    palette = matplotlib.colormaps["tab20"].colors
    colors = iter(palette[0::2] + palette[1::2])  # the 10 strong colours first
    costs: list[float] = []
    for name, rec in routers.items():
        color = next(colors, None)
        curve = rec.get("curve")
        if curve:
            pts = sorted((c, q) for c, q in zip(curve["cost"], curve["quality"]) if c is not None and q is not None)
            if pts:
                xs, ys = zip(*pts)
                costs += list(xs)
                width = 2.4 if name == "finerouter" else 1.2
                ax.plot(xs, ys, "-", marker=".", lw=width, color=color, label=_display_name(name))
        elif rec.get("cost_mean") is not None and rec.get("quality_mean") is not None:
            costs.append(rec["cost_mean"])
            ax.scatter([rec["cost_mean"]], [rec["quality_mean"]], marker="^", s=70, color=color, zorder=3,
                       label=_display_name(name))
    lam_styles = {"finerouter": ("tab:red", 2.4), "knn": ("tab:blue", 1.6)}
    for name, rec in routers.items():  # cost-aware lambda-curves (FineRouter's, kNN's), dashed
        lam = rec.get("lambda_curve")
        if not lam:
            continue
        pts = sorted((c, q) for c, q in zip(lam["cost"], lam["quality"]) if c is not None and q is not None)
        if pts:
            xs, ys = zip(*pts)
            costs += list(xs)
            color, width = lam_styles.get(name, ("tab:grey", 1.2))
            ax.plot(xs, ys, "--", marker="x", ms=3, lw=width, color=color, label=f"{_display_name(name)}, λ-curve")
    zero = results.get("zero_router")
    if zero and zero.get("cost"):
        ax.plot(zero["cost"], zero["quality"], ":", lw=1.4, color="black", label="zero router (single-model hull)")
    for model, rec in singles.items():
        if rec.get("cost_mean") is None or rec.get("quality_mean") is None:
            continue
        costs.append(rec["cost_mean"])
        ax.scatter([rec["cost_mean"]], [rec["quality_mean"]], marker="o", s=36, facecolors="none",
                   edgecolors="black", zorder=3)
        ax.annotate(model, (rec["cost_mean"], rec["quality_mean"]), fontsize=6, xytext=(3, 3),
                    textcoords="offset points")
    best = results.get("best_single", {})
    if best.get("quality_mean") is not None:
        ax.axhline(best["quality_mean"], ls="--", lw=0.8, color="grey", label="best single model quality")
    positive = [c for c in costs if c and c > 0]
    if positive and max(positive) / min(positive) > 20:
        ax.set_xscale("log")
    ax.set_xlabel("mean cost per prompt (USD)")
    ax.set_ylabel("mean quality")
    ax.set_title(f"{results['dataset']}: cost vs quality (circles: single models)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # outside: never hides a point
    _write_png(fig, path)


def _plot_quality_bars(results: dict[str, Any], path: str | Path) -> None:
    items = [
        (_display_name(n), rec["quality_mean"], rec.get("quality_std") or 0.0) for n, rec in results["routers"].items()
    ]
    items += [(m, rec["quality_mean"], rec.get("quality_std") or 0.0) for m, rec in results["single_models"].items()]
    items = [it for it in items if it[1] is not None]
    fig, ax = _figure(8.5, max(3.0, 0.3 * len(items) + 1.2))
    labels = [it[0] for it in items]
    ax.barh(range(len(items)), [it[1] for it in items], xerr=[it[2] for it in items], color="tab:blue", alpha=0.8)
    ax.set_yticks(range(len(items)), labels, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("mean quality")
    ax.set_title(f"{results['dataset']}: no cost information — quality only")
    ax.grid(axis="x", alpha=0.3)
    _write_png(fig, path)


def plot_routing_distribution(results: dict[str, Any], path: str | Path) -> None:
    """Draw, per router, the stacked share of test prompts routed to each model, to ``path`` (PNG)."""
    import numpy as np

    models = results["models"]
    names = list(results["routers"])
    shares = np.array([[results["routers"][n]["routing_distribution"].get(m, 0.0) for m in models] for n in names])
    fig, ax = _figure(9.0, max(3.0, 0.35 * len(names) + 1.8))
    import matplotlib

    cmap = matplotlib.colormaps["tab20"]
    left = np.zeros(len(names))
    for j, model in enumerate(models):
        ax.barh(range(len(names)), shares[:, j], left=left, color=cmap(j % 20), label=model)
        left += shares[:, j]
    ax.set_yticks(range(len(names)), [_display_name(n) for n in names], fontsize=7)
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel("share of test prompts")
    ax.set_title(f"{results['dataset']}: routing distribution")
    ax.legend(fontsize=6, ncol=min(4, len(models)), loc="upper center", bbox_to_anchor=(0.5, -0.15))
    _write_png(fig, path)


def plot_reliability(results: dict[str, Any], path: str | Path) -> None:
    """Draw the reliability diagram (mean true score against mean expected score per bin) of every router with
    calibrated expected scores, to ``path`` (PNG)."""
    import math

    fig, ax = _figure(5.5, 5.0)
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", label="perfectly calibrated")
    for name, rec in results["routers"].items():
        cal = rec.get("calibration")
        if not cal:
            continue
        rel = cal["reliability"]
        pts = [(p, o) for p, o, c in zip(rel["predicted"], rel["observed"], rel["count"])
               if c and p is not None and o is not None and not (math.isnan(p) or math.isnan(o))]
        if pts:
            ece = cal.get("ece_mean")
            label = name if ece is None else f"{name} (ECE {ece:.3f})"
            ax.plot([p for p, _ in pts], [o for _, o in pts], marker="o", label=label)
    ax.set_xlabel("mean expected score (bin)")
    ax.set_ylabel("mean true score")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_title(f"{results['dataset']}: calibration of expected scores")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    _write_png(fig, path)
