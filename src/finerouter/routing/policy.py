"""Score combination (paper Eq. 5) and the cost/quality policy (tolerance, allowed models, max cost)."""

from __future__ import annotations

import numpy as np


def minmax_rows(x: np.ndarray) -> np.ndarray:
    """Min-max normalise each row of ``x`` (n, m) to [0, 1] over its finite entries.

    A row whose finite entries are all equal maps to 0 (it carries no preference); NaN entries map to 0 too, so a
    model with no information is never preferred by this term.
    """
    x = np.asarray(x, dtype=np.float64)
    finite = np.isfinite(x)
    if finite.all():  # the common case, in fewer operations: a constant row divides 0 by inf
        lo = x.min(axis=1, keepdims=True)
        span = x.max(axis=1, keepdims=True) - lo
        span[span <= 0] = np.inf
        return (x - lo) / span
    lo = np.where(finite, x, np.inf).min(axis=1, keepdims=True)
    hi = np.where(finite, x, -np.inf).max(axis=1, keepdims=True)
    span = hi - lo
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.where(span > 0, (x - lo) / np.where(span > 0, span, 1.0), 0.0)
    return np.where(finite, out, 0.0)


def combine_scores(stage2: np.ndarray, stage1: np.ndarray, alpha: float) -> np.ndarray:
    """``alpha * norm(stage2) + (1 - alpha) * norm(stage1)``, normalised per prompt across models (Eq. 5)."""
    return alpha * minmax_rows(stage2) + (1.0 - alpha) * minmax_rows(stage1)


def choose_models(
    final: np.ndarray,
    costs: np.ndarray | None = None,
    tolerance: float = 0.0,
    allowed: np.ndarray | None = None,
    max_cost: float | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Pick one model per prompt: the cheapest among those whose final score is within ``tolerance`` of the best.

    Args:
        final: ``(n, m)`` final routing scores (higher is better).
        costs: ``(n, m)`` estimated cost per call, or None (then the best score wins). Unknown (NaN) costs count as
            more expensive than any known cost, so they are never chosen *for being cheap*.
        tolerance: in [0, 1]; 0 picks the best score (the cheapest among exact ties).
        allowed: ``(m,)`` or ``(n, m)`` bool mask of models that may be chosen; None = all.
        max_cost: if given, models whose known cost exceeds it are not eligible. If that leaves no model for a
            prompt, the cheapest allowed model is chosen and the prompt is flagged.

    Returns:
        ``(choice (n,) int64, over_budget (n,) bool)`` — the chosen model per prompt, and whether ``max_cost``
        could not be met.

    Raising ``tolerance`` only enlarges the set of eligible models, so the chosen model's cost never goes up.
    """
    final = np.asarray(final, dtype=np.float64)
    n, m = final.shape
    eligible = np.isfinite(final)
    if allowed is not None:
        eligible &= np.broadcast_to(np.asarray(allowed, dtype=bool), (n, m))
    cost = None if costs is None else np.where(np.isfinite(costs), costs, np.inf)
    over_budget = np.zeros(n, dtype=bool)
    if max_cost is not None and cost is not None:
        within_budget = eligible & (cost <= max_cost)
        over_budget = ~within_budget.any(axis=1) & eligible.any(axis=1)
        # Where nothing fits the budget, fall back to the cheapest allowed model.
        cheapest = np.where(eligible, cost, np.inf).argmin(axis=1)
        fallback = np.zeros_like(eligible)
        fallback[np.arange(n), cheapest] = True
        eligible = np.where(over_budget[:, None], eligible & fallback, within_budget)
    masked = np.where(eligible, final, -np.inf)
    if cost is None:  # without costs the best score wins, whatever the tolerance
        return masked.argmax(axis=1).astype(np.int64), over_budget
    best = masked.max(axis=1, keepdims=True)
    within = eligible & (masked >= best - tolerance - 1e-12)
    # Cheapest within tolerance; among equal costs the higher score wins (lexicographic key).
    key_cost = np.where(within, cost, np.inf)
    min_cost = key_cost.min(axis=1, keepdims=True)
    tied = within & (key_cost <= min_cost)
    choice = np.where(tied, masked, -np.inf).argmax(axis=1)
    return choice.astype(np.int64), over_budget
