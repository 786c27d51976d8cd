"""Evaluation metrics for routers: quality, cost, headroom, routing distribution, cost–quality curves.

Conventions (used everywhere in the harness and documented in ``docs/evaluation.md``):

* **Unscored choices count as 0.** When a router picks a model whose score on the prompt is NaN (not
  evaluated), that prompt scores 0 — no credit for an unverified answer — so a router can never gain by
  choosing unevaluated models, and every router is averaged over the same prompts. Test prompts with no score
  at all are dropped before evaluation.
* **Costs** are the test data's per-prompt costs (real ones, or estimated from prices); NaN costs are ignored
  in the mean.
* **Normalised cost axis**: ``x = (c - c_low) / (c_high - c_low)`` where ``c_low``/``c_high`` are the mean
  per-prompt costs of the cheapest and the most expensive single model on the same test prompts.
* **Errors**: arrays that do not fit together (shapes, lengths, model indices) raise
  :class:`~finerouter.errors.DataError`.
* **AIQ** (RouterBench, Hu et al. 2024, arXiv 2403.12031, Sec. 3): the area under a router's *non-decreasing
  convex hull* in the cost–quality plane over that normalised axis (:func:`aiq`); the **zero router** is the
  hull of the single models' own points (:func:`zero_router_curve`), what mixing single models at random
  achieves without looking at the prompt.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from finerouter.errors import DataError


def _check_choice(scores: np.ndarray, choice: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    scores = np.asarray(scores, dtype=np.float64)
    choice = np.asarray(choice)
    if scores.ndim != 2:
        raise DataError(f"scores must be a 2-D array (n, m); got shape {scores.shape}")
    if choice.shape != (scores.shape[0],):
        raise DataError(f"choice must have shape ({scores.shape[0]},); got {choice.shape}")
    valid = np.issubdtype(choice.dtype, np.integer) and choice.min() >= 0 and choice.max() < scores.shape[1]
    if choice.size and not valid:
        raise DataError(f"choice must hold model indices in [0, {scores.shape[1] - 1}]")
    return scores, choice.astype(np.int64)


def chosen_scores(scores: np.ndarray, choice: np.ndarray) -> np.ndarray:
    """``(n,)`` score of the chosen model per prompt, NaN (unscored) counted as 0.

    Args:
        scores: ``(n, m)`` true quality, NaN = not evaluated.
        choice: ``(n,)`` chosen model index per prompt.
    """
    scores, choice = _check_choice(scores, choice)
    picked = scores[np.arange(len(choice)), choice]
    return np.nan_to_num(picked, nan=0.0)


def mean_quality(scores: np.ndarray, choice: np.ndarray) -> float:
    """Mean score of the chosen models (NaN counts as 0); NaN for no prompts."""
    picked = chosen_scores(scores, choice)
    return float(picked.mean()) if picked.size else float("nan")


def unscored_share(scores: np.ndarray, choice: np.ndarray) -> float:
    """Share of prompts whose chosen model has no score (counted as 0 by :func:`mean_quality`)."""
    scores, choice = _check_choice(scores, choice)
    if not len(choice):
        return 0.0
    return float(np.mean(~np.isfinite(scores[np.arange(len(choice)), choice])))


def mean_cost(costs: np.ndarray | None, choice: np.ndarray) -> float | None:
    """Mean cost per prompt of the chosen models (NaN costs ignored); None when costs are unknown."""
    if costs is None:
        return None
    costs, choice = _check_choice(costs, choice)
    picked = costs[np.arange(len(choice)), choice]
    picked = picked[np.isfinite(picked)]
    return float(picked.mean()) if picked.size else None


def per_task_quality(scores: np.ndarray, choice: np.ndarray, tasks: Sequence[str]) -> dict[str, float]:
    """``{task: mean quality}`` over the prompts of each task (sorted by task name)."""
    picked = chosen_scores(scores, choice)
    labels = np.asarray(list(tasks))
    if labels.shape != picked.shape:
        raise DataError(f"tasks has {labels.size} labels for {picked.size} prompts")
    return {str(t): float(picked[labels == t].mean()) for t in sorted(set(labels.tolist()))}


def headroom_captured(quality: float, best_single_quality: float, oracle_quality: float) -> float | None:
    """Share of the best-single → oracle gap a router closes: ``(q - q_best) / (q_oracle - q_best)``.

    1 for the oracle, 0 for the best single model, negative when worse than it; None when the gap is 0.
    """
    gap = oracle_quality - best_single_quality
    if not math.isfinite(gap) or gap <= 0 or not math.isfinite(quality):
        return None
    return float((quality - best_single_quality) / gap)


def routing_distribution(choice: np.ndarray, models: Sequence[str]) -> dict[str, float]:
    """``{model: share of prompts routed to it}`` (every model listed, shares sum to 1)."""
    choice = np.asarray(choice, dtype=np.int64)
    counts = np.bincount(choice, minlength=len(models)) if choice.size else np.zeros(len(models))
    total = max(int(choice.size), 1)
    return {str(m): float(counts[j] / total) for j, m in enumerate(models)}


def cost_quality_curve(
    choose: Callable[[float], np.ndarray],
    scores: np.ndarray,
    costs: np.ndarray,
    tolerances: Sequence[float],
) -> dict[str, list[float]]:
    """Sweep ``tolerance``: the mean cost and quality of the choices ``choose(tolerance)`` at each value.

    Args:
        choose: ``tolerance -> (n,)`` chosen model per prompt.
        scores: ``(n, m)`` true quality (NaN counts as 0).
        costs: ``(n, m)`` true cost per prompt and model.
        tolerances: the values swept (e.g. 0 to 1).

    Returns:
        ``{"tolerance": [...], "cost": [...], "quality": [...]}``, one entry per tolerance.
    """
    out: dict[str, list[float]] = {"tolerance": [], "cost": [], "quality": []}
    for tol in tolerances:
        choice = choose(float(tol))
        cost = mean_cost(costs, choice)
        out["tolerance"].append(float(tol))
        out["cost"].append(float("nan") if cost is None else cost)
        out["quality"].append(mean_quality(scores, choice))
    return out


def normalised_curve_area(
    costs: Sequence[float], qualities: Sequence[float], cost_low: float, cost_high: float
) -> float | None:
    """Area under a cost–quality curve over the normalised cost axis ``[0, 1]``.

    Definition: each point's cost becomes ``x = (cost - cost_low) / (cost_high - cost_low)``. Sorting points by
    ``x`` (keeping the best quality per ``x``), the curve is the running maximum of quality — spending more
    never has to lower quality, as the cheaper operating point stays available — linearly interpolated between
    points, **0 left of the cheapest point** (the router cannot operate that cheaply) and constant right of the
    most expensive one. The area is the integral of that curve over ``x`` in ``[0, 1]`` (exact trapezoids), so
    it lies in ``[0, max quality]``; a router that reaches quality ``q`` at the cheapest single model's cost
    and stays there scores ``q``.

    Returns None when ``cost_high <= cost_low`` or no point has a finite cost and quality.
    """
    c = np.asarray(costs, dtype=np.float64)
    q = np.asarray(qualities, dtype=np.float64)
    if c.shape != q.shape:
        raise DataError(f"costs and qualities differ in length: {c.size} vs {q.size}")
    span = cost_high - cost_low
    ok = np.isfinite(c) & np.isfinite(q)
    if not (math.isfinite(span) and span > 0) or not ok.any():
        return None
    x, q = (c[ok] - cost_low) / span, q[ok]
    order = np.lexsort((-q, x))
    x, q = x[order], q[order]
    keep = np.r_[True, np.diff(x) > 0]  # best quality at each distinct x (sorted first)
    x, q = x[keep], np.maximum.accumulate(q[keep])
    if x[0] >= 1.0:
        return 0.0
    grid = np.unique(np.clip(np.r_[x, 1.0], max(x[0], 0.0), 1.0))
    values = np.interp(grid, x, q)
    return float(np.sum((grid[1:] - grid[:-1]) * (values[1:] + values[:-1]) / 2.0))


def cost_fraction_at_quality(
    costs: Sequence[float], qualities: Sequence[float], target_quality: float, reference_cost: float
) -> float | None:
    """Cheapest operating point reaching ``target_quality``, as a fraction of ``reference_cost``.

    With the best single model's quality and cost this is ``cost_fraction_at_best_single_quality``: e.g. 0.45
    means the router matches the best model's quality at 45% of its cost. Only the measured points count (no
    interpolation). None when no point reaches the target or the reference cost is not positive.
    """
    c = np.asarray(costs, dtype=np.float64)
    q = np.asarray(qualities, dtype=np.float64)
    ok = np.isfinite(c) & np.isfinite(q) & (q >= target_quality - 1e-12)
    if not ok.any() or not (math.isfinite(reference_cost) and reference_cost > 0):
        return None
    return float(c[ok].min() / reference_cost)


def nondecreasing_convex_hull(
    costs: Sequence[float], qualities: Sequence[float]
) -> tuple[list[float], list[float]]:
    """Vertices ``(costs, qualities)`` of the non-decreasing convex hull of cost–quality points (RouterBench).

    Any point on the segment between two operating points is reachable by sending each prompt to one of them at
    random in the right proportion, so the attainable curve is the upper concave hull of the points. It is cut
    at its highest point (paying more never has to lower quality) and, from the cheapest point with the best
    quality at that cost, rises monotonically. Non-finite points are ignored. Vertices are sorted by cost; the
    last one has the maximum quality. Empty lists when no point is finite.
    """
    c = np.asarray(costs, dtype=np.float64)
    q = np.asarray(qualities, dtype=np.float64)
    if c.shape != q.shape:
        raise DataError(f"costs and qualities differ in length: {c.size} vs {q.size}")
    ok = np.isfinite(c) & np.isfinite(q)
    c, q = c[ok], q[ok]
    if not c.size:
        return [], []
    order = np.lexsort((-q, c))
    c, q = c[order], q[order]
    keep = np.r_[True, np.diff(c) > 0]  # the best quality at each distinct cost
    c, q = c[keep], q[keep]
    hull: list[tuple[float, float]] = []
    for point in zip(c.tolist(), q.tolist()):  # Andrew's monotone chain, upper hull, left to right
        while len(hull) >= 2:
            (x1, y1), (x2, y2) = hull[-2], hull[-1]
            # drop the middle point when it lies on or below the chord from hull[-2] to the new point
            if (x2 - x1) * (point[1] - y1) - (y2 - y1) * (point[0] - x1) >= 0:
                hull.pop()
            else:
                break
        hull.append(point)
    top = max(range(len(hull)), key=lambda i: (hull[i][1], -i))  # the first (cheapest) highest vertex
    hull = hull[: top + 1]
    return [h[0] for h in hull], [h[1] for h in hull]


def aiq(costs: Sequence[float], qualities: Sequence[float], cost_low: float, cost_high: float) -> float | None:
    """RouterBench's AIQ ("average improvement in quality", arXiv 2403.12031): the area under the router's
    non-decreasing convex hull (:func:`nondecreasing_convex_hull`) over the normalised cost axis ``[0, 1]``.

    ``x = (cost - cost_low) / (cost_high - cost_low)`` with ``cost_low``/``cost_high`` the cheapest and the most
    expensive single model's mean cost, as for :func:`normalised_curve_area`, whose conventions hold here too:
    0 left of the router's cheapest point, flat right of its best one, clipped to ``[0, 1]``. RouterBench divides
    the integral over ``[c_low, c_high]`` by ``c_high - c_low``, which is this area. It lies in
    ``[0, max quality]`` and is at least :func:`normalised_curve_area` of the same points. None when
    ``cost_high <= cost_low`` or no point is finite.
    """
    hc, hq = nondecreasing_convex_hull(costs, qualities)
    if not hc:
        return None
    return normalised_curve_area(hc, hq, cost_low, cost_high)


def zero_router_curve(single_costs: Sequence[float], single_qualities: Sequence[float]) -> dict[str, list[float]]:
    """The zero router (RouterBench): the non-decreasing convex hull of the single models' ``(cost, quality)``.

    Returns ``{"cost": [...], "quality": [...]}``, the hull's vertices by cost. Its :func:`aiq` is the baseline a
    router must beat: anything below it does no better than mixing single models without reading the prompt.
    """
    hc, hq = nondecreasing_convex_hull(single_costs, single_qualities)
    return {"cost": hc, "quality": hq}


def quality_at_cost(costs: Sequence[float], qualities: Sequence[float], max_cost: float) -> float | None:
    """Best quality among the measured operating points costing at most ``max_cost`` (no interpolation).

    With ``max_cost`` = 25% or 50% of the best single model's cost: the quality a router keeps at a quarter or
    half of that model's price. None when no point is that cheap.
    """
    c = np.asarray(costs, dtype=np.float64)
    q = np.asarray(qualities, dtype=np.float64)
    if c.shape != q.shape:
        raise DataError(f"costs and qualities differ in length: {c.size} vs {q.size}")
    ok = np.isfinite(c) & np.isfinite(q) & (c <= max_cost + 1e-15)
    if not ok.any() or not math.isfinite(max_cost):
        return None
    return float(q[ok].max())


def mean_std(values: Sequence[float | None]) -> tuple[float | None, float | None]:
    """Mean and sample standard deviation (ddof=1; 0 for one value) of the non-None finite values."""
    v = np.array([x for x in values if x is not None and math.isfinite(x)], dtype=np.float64)
    if not v.size:
        return None, None
    return float(v.mean()), float(v.std(ddof=1)) if v.size > 1 else 0.0


def paired_comparison(reference: Sequence[float], other: Sequence[float]) -> dict[str, Any]:
    """Per-seed paired differences ``reference - other``: mean, std, wins/losses/ties, t-test and sign test.

    ``ttest_p`` is the two-sided paired t-test p-value (None with fewer than 2 seeds or identical differences);
    ``sign_test_p`` the two-sided exact binomial sign test over non-tied seeds (None when all tie).
    """
    from scipy import stats

    a = np.asarray(reference, dtype=np.float64)
    b = np.asarray(other, dtype=np.float64)
    if a.shape != b.shape:
        raise DataError(f"paired values differ in length: {a.size} vs {b.size}")
    d = a - b
    mean, std = mean_std(d.tolist())
    wins, losses = int(np.sum(d > 1e-12)), int(np.sum(d < -1e-12))
    ties = int(d.size - wins - losses)
    ttest_p = None
    if d.size >= 2 and np.ptp(d) > 1e-15:
        ttest_p = float(stats.ttest_rel(a, b).pvalue)
    sign_p = float(stats.binomtest(wins, wins + losses, 0.5).pvalue) if wins + losses else None
    return {
        "diff_mean": mean, "diff_std": std, "wins": wins, "losses": losses, "ties": ties,
        "ttest_p": ttest_p, "sign_test_p": sign_p, "n_seeds": int(d.size),
    }


def reliability_bins(expected: np.ndarray, truth: np.ndarray, n_bins: int = 10) -> dict[str, list[float | int]]:
    """The data of a reliability diagram: ``n_bins`` equal-width bins of ``expected`` in [0, 1].

    Args:
        expected: predicted expected scores, any shape.
        truth: true scores of the same shape; pairs with a non-finite value on either side are ignored.

    Returns:
        ``{"predicted": [...], "observed": [...], "count": [...]}`` per bin: the mean prediction, the mean true
        score (NaN for an empty bin) and the number of pairs.
    """
    e = np.asarray(expected, dtype=np.float64).ravel()
    t = np.asarray(truth, dtype=np.float64).ravel()
    if e.shape != t.shape:
        raise DataError(f"expected and truth must have the same size; got {e.size} and {t.size}")
    ok = np.isfinite(e) & np.isfinite(t)
    e, t = e[ok], t[ok]
    bins = np.clip((e * n_bins).astype(np.int64), 0, n_bins - 1)
    count = np.bincount(bins, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        predicted = np.bincount(bins, weights=e, minlength=n_bins) / count
        observed = np.bincount(bins, weights=t, minlength=n_bins) / count
    return {"predicted": predicted.tolist(), "observed": observed.tolist(), "count": count.astype(int).tolist()}


def expected_calibration_error(expected: np.ndarray, truth: np.ndarray, n_bins: int = 10) -> float:
    """Expected calibration error: over equal-width bins of ``expected`` in [0, 1], the mean of
    ``|mean(expected) - mean(truth)|`` weighted by the bin's share of the finite pairs (NaN without any pair)."""
    rel = reliability_bins(expected, truth, n_bins)
    count = np.asarray(rel["count"], dtype=np.float64)
    if count.sum() == 0:
        return float("nan")
    gap = np.abs(np.asarray(rel["predicted"]) - np.asarray(rel["observed"]))
    return float(np.sum(np.where(count > 0, gap, 0.0) * count) / count.sum())
