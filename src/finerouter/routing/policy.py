"""Score combination (paper Eq. 5) and the cost/quality policies.

Two decision rules share the constraints ``allowed`` (models that may be chosen) and ``max_cost`` (USD per call):

* :func:`choose_models`: the cheapest model whose normalised final score is within ``tolerance`` of the best;
* :func:`choose_models_cost_aware`: ``argmax_m expected_m - cost_weight * cost_m`` on the router's calibrated
  expected scores (score scale) and estimated USD costs; :func:`solve_cost_weight` and :func:`route_to_budget` pick
  ``cost_weight`` so that a batch's expected spend per 1,000 prompts meets a budget.
"""

from __future__ import annotations

import math

import numpy as np

from finerouter.errors import DataError, ParameterError


def minmax_rows(x: np.ndarray, reference: np.ndarray | None = None) -> np.ndarray:
    """Min-max normalise each row of ``x`` (n, m) to [0, 1] over its finite entries.

    A row whose finite entries are all equal maps to 0 (it carries no preference); NaN entries map to 0 too, so a
    model with no information is never preferred by this term.

    ``reference``: column indices whose finite entries alone set each row's minimum and span; every column is
    mapped by them, the others unclipped (above 1 or below 0 where they lie beyond the reference's range; clip the
    input first with :func:`clip_to_reference` to tie them to it instead). A router with models added after its
    fit normalises over its fitted models, so that a new model cannot rescale how the old ones' scores are
    weighed (:func:`~finerouter.routing.scoring.reference_models`). A row whose reference entries are all equal is
    normalised over every column.
    """
    x = np.asarray(x, dtype=np.float64)
    if reference is not None:
        return _minmax_rows_over(x, np.asarray(reference, dtype=np.int64))
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


def _minmax_rows_over(x: np.ndarray, reference: np.ndarray) -> np.ndarray:
    finite = np.isfinite(x)
    sub, ok = x[:, reference], finite[:, reference]
    lo = np.where(ok, sub, np.inf).min(axis=1, keepdims=True)
    span = np.where(ok, sub, -np.inf).max(axis=1, keepdims=True) - lo
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.where(span > 0, (x - lo) / np.where(span > 0, span, 1.0), minmax_rows(x))
    return np.where(finite, out, 0.0)


def clip_to_reference(x: np.ndarray, reference: np.ndarray | None) -> np.ndarray:
    """``x`` (n, m) with each row's columns outside ``reference`` clipped to the range of that row's finite
    ``reference`` entries (a row without any keeps its values; NaN stays NaN). None: ``x`` itself. A router with
    added models clips their stage-2 estimates this way: an added model's few-prompt adapter may then tie the best
    fitted model's estimate on a prompt, never outshine it (see
    :func:`~finerouter.routing.scoring.reference_models`)."""
    if reference is None:
        return x
    x = np.asarray(x, dtype=np.float64)
    reference = np.asarray(reference, dtype=np.int64)
    sub = x[:, reference]
    ok = np.isfinite(sub)
    have = ok.any(axis=1, keepdims=True)
    lo = np.where(have, np.where(ok, sub, np.inf).min(axis=1, keepdims=True), -np.inf)
    hi = np.where(have, np.where(ok, sub, -np.inf).max(axis=1, keepdims=True), np.inf)
    out = np.clip(x, lo, hi)
    out[:, reference] = sub
    return out


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
    cost = None if costs is None else np.where(np.isfinite(costs), costs, np.inf)
    eligible, over_budget = eligible_models(final, cost, allowed, max_cost)
    masked = np.where(eligible, final, -np.inf)
    if cost is None:  # without costs the best score wins, whatever the tolerance
        return masked.argmax(axis=1).astype(np.int64), over_budget
    best = masked.max(axis=1, keepdims=True)
    within = eligible & (masked >= best - tolerance - 1e-12)
    return _cheapest(within, cost, masked), over_budget


def _cheapest(mask: np.ndarray, cost: np.ndarray, score: np.ndarray) -> np.ndarray:
    """``(n,)`` int64: per row, the cheapest model in ``mask`` (``cost``: unknown = inf); among equal costs the
    higher ``score`` wins (a lexicographic key)."""
    key_cost = np.where(mask, cost, np.inf)
    tied = mask & (key_cost <= key_cost.min(axis=1, keepdims=True))
    return np.where(tied, score, -np.inf).argmax(axis=1).astype(np.int64)


def _as_batch(expected: np.ndarray, costs: np.ndarray, owner: str) -> tuple[np.ndarray, np.ndarray]:
    """``expected`` and ``costs`` as float arrays; DataError naming ``owner`` unless both are ``(n, m)``."""
    expected = np.asarray(expected, dtype=np.float64)
    cost = np.asarray(costs, dtype=np.float64)
    if expected.ndim != 2 or cost.shape != expected.shape:
        raise DataError(
            f"{owner}: expected and costs must both be (n, m) arrays; got {expected.shape} and {cost.shape}"
        )
    return expected, cost


def _is_number(value: object) -> bool:
    """Whether ``value`` is a real number (a Python or numpy int or float, not a bool)."""
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))


def eligible_models(
    scores: np.ndarray, cost: np.ndarray | None, allowed: np.ndarray | None, max_cost: float | None
) -> tuple[np.ndarray, np.ndarray]:
    """``(eligible (n, m), over_budget (n,))``: finite score, allowed, and within ``max_cost`` when a model fits.

    ``cost`` has unknown costs as ``inf``. Where no allowed model fits ``max_cost``, the cheapest allowed one is
    the only eligible model and the prompt is flagged.
    """
    n, m = scores.shape
    eligible = np.isfinite(scores)
    if allowed is not None:
        eligible &= np.broadcast_to(np.asarray(allowed, dtype=bool), (n, m))
    over_budget = np.zeros(n, dtype=bool)
    if max_cost is not None and cost is not None:
        within_budget = eligible & (cost <= max_cost)
        over_budget = ~within_budget.any(axis=1) & eligible.any(axis=1)
        cheapest = np.where(eligible, cost, np.inf).argmin(axis=1)
        fallback = np.zeros_like(eligible)
        fallback[np.arange(n), cheapest] = True
        eligible = np.where(over_budget[:, None], eligible & fallback, within_budget)
    return eligible, over_budget


def _cost_aware_utility(expected: np.ndarray, cost: np.ndarray, cost_weight: float, eligible: np.ndarray) -> np.ndarray:
    """``(n, m)`` ``expected - cost_weight * cost`` where eligible, ``-inf`` elsewhere (``cost``: unknown = inf).

    A row whose eligible models all have unknown costs falls back to its expected scores. ``cost_weight`` is
    finite here (``inf`` is handled by the caller).
    """
    if cost_weight == 0:
        util = expected.copy()
    else:
        util = expected - cost_weight * cost  # inf cost -> -inf
    util = np.where(eligible, util, -np.inf)
    stuck = eligible.any(axis=1) & ~np.isfinite(util).any(axis=1)
    if stuck.any():
        util[stuck] = np.where(eligible[stuck], expected[stuck], -np.inf)
    return util


def choose_models_cost_aware(
    expected: np.ndarray,
    costs: np.ndarray,
    cost_weight: float,
    allowed: np.ndarray | None = None,
    max_cost: float | None = None,
    tolerance: float = 0.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Pick one model per prompt by ``argmax_m expected_m - cost_weight * cost_m``.

    Units: ``expected`` is on the score scale (e.g. 0-1 accuracy), ``costs`` in USD per call, so ``cost_weight``
    (lambda) is in *quality points per USD*: a model must be expected to score ``cost_weight * x`` higher to be
    worth ``x`` USD more. ``cost_weight = 0`` is the best expected score; large values approach the cheapest
    model; ``inf`` is the cheapest eligible model (ties: the higher expected score).

    Args:
        expected: ``(n, m)`` calibrated expected score per model (NaN: no estimate, never chosen).
        costs: ``(n, m)`` estimated USD cost per call; unknown (NaN) costs are never chosen while a model with a
            known cost is eligible and ``cost_weight > 0``.
        cost_weight: lambda >= 0, in quality points per USD.
        allowed: ``(m,)`` or ``(n, m)`` bool mask of models that may be chosen; None = all.
        max_cost: models whose known cost exceeds it are not eligible; if none fits, the cheapest allowed model
            is chosen and the prompt flagged (as :func:`choose_models`).
        tolerance: in score units; among models whose utility is within ``tolerance`` of the best, the cheapest.

    Returns:
        ``(choice (n,) int64, over_budget (n,) bool)``.

    The chosen model's cost never increases as ``cost_weight`` grows (for any tolerance): the batch's spend is a
    non-increasing step function of ``cost_weight``, which :func:`solve_cost_weight` relies on.
    """
    expected, cost = _as_batch(expected, costs, "choose_models_cost_aware")
    if not _is_number(cost_weight) or not float(cost_weight) >= 0:
        raise ParameterError(
            "The 'cost_weight' parameter of choose_models_cost_aware must be a float in [0, inf] "
            f"(quality points per USD). Got {cost_weight!r}."
        )
    cost = np.where(np.isfinite(cost), cost, np.inf)
    eligible, over_budget = eligible_models(expected, cost, allowed, max_cost)
    if np.isinf(cost_weight):  # the cheapest eligible model; equal costs: the higher expected score
        return _cheapest(eligible, cost, expected), over_budget
    util = _cost_aware_utility(expected, cost, float(cost_weight), eligible)
    if tolerance <= 0:
        return util.argmax(axis=1).astype(np.int64), over_budget
    within = eligible & (util >= util.max(axis=1, keepdims=True) - tolerance - 1e-12)
    return _cheapest(within, cost, util), over_budget


def spend_per_1k(costs: np.ndarray, choice: np.ndarray) -> float:
    """Expected USD spend per 1,000 prompts of ``choice`` under ``(n, m)`` cost estimates (unknown costs: 0)."""
    costs = np.asarray(costs, dtype=np.float64)
    if not len(choice):
        return 0.0
    picked = costs[np.arange(len(choice)), choice]
    return float(1000.0 * np.nansum(picked) / len(choice))


def _cheapest_weight(expected: np.ndarray, cost: np.ndarray, eligible: np.ndarray) -> float:
    """A finite lambda at which every prompt's utility ranks the cheapest eligible model first (strictly)."""
    c = np.where(eligible & np.isfinite(cost), cost, np.inf)
    q = np.where(eligible, expected, np.nan)
    c_min = c.min(axis=1, keepdims=True)
    rows = np.arange(len(c))
    q_cheap = q[rows, np.where(np.isfinite(c_min[:, 0]), c.argmin(axis=1), 0)][:, None]
    dc = c - c_min
    dq = q - q_cheap
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = np.where((dc > 0) & np.isfinite(dc) & np.isfinite(dq), dq / np.where(dc > 0, dc, 1.0), 0.0)
    top = float(ratio.max()) if ratio.size else 0.0
    return max(top, 0.0) * 2.0 + 1.0


def solve_cost_weight(
    expected: np.ndarray,
    costs: np.ndarray,
    budget_per_1k: float,
    allowed: np.ndarray | None = None,
    max_cost: float | None = None,
    tolerance: float = 0.0,
) -> float:
    """The smallest ``cost_weight`` whose batch spend per 1,000 prompts is at most ``budget_per_1k`` (USD).

    The spend of :func:`choose_models_cost_aware` on the batch is a non-increasing step function of lambda, so
    the smallest lambda meeting the budget gives the largest spend ``<= budget_per_1k``: the best quality the
    budget allows under this rule. Found by bisection on a log scale between 0 and the lambda at which every
    prompt gets its cheapest eligible model, to a relative width of 1e-9. Returns 0 when the best-expected
    choices already fit; when even the cheapest choices exceed the budget, returns that "always cheapest"
    lambda (the spend then exceeds the budget: check with :func:`spend_per_1k`).
    """
    expected, cost_arr = _as_batch(expected, costs, "solve_cost_weight")
    if not _is_number(budget_per_1k) or not (math.isfinite(budget_per_1k) and budget_per_1k >= 0):
        raise ParameterError(
            "The 'budget_per_1k' parameter of solve_cost_weight must be a float in [0, inf) (USD per 1,000 "
            f"prompts). Got {budget_per_1k!r}."
        )

    def spend(lam: float) -> float:
        choice, _ = choose_models_cost_aware(expected, cost_arr, lam, allowed, max_cost, tolerance)
        return spend_per_1k(cost_arr, choice)

    if spend(0.0) <= budget_per_1k:
        return 0.0
    cost = np.where(np.isfinite(cost_arr), cost_arr, np.inf)
    eligible, _ = eligible_models(expected, cost, allowed, max_cost)
    hi = _cheapest_weight(expected, cost, eligible)
    if spend(hi) > budget_per_1k:
        return hi
    lo = hi * 1e-12
    if spend(lo) <= budget_per_1k:
        return lo
    while hi / lo > 1.0 + 1e-9:  # invariant: spend(lo) > budget >= spend(hi)
        mid = float(np.sqrt(lo * hi))
        if spend(mid) <= budget_per_1k:
            hi = mid
        else:
            lo = mid
    return hi


def route_to_budget(
    expected: np.ndarray,
    costs: np.ndarray,
    budget_per_1k: float,
    allowed: np.ndarray | None = None,
    max_cost: float | None = None,
    tolerance: float = 0.0,
) -> tuple[np.ndarray, np.ndarray, float]:
    """Choices whose batch spend per 1,000 prompts meets ``budget_per_1k`` as closely as the costs allow.

    First lambda = :func:`solve_cost_weight`. At that lambda the spend is at most the budget, but one lambda step
    can move many prompts at once (calibrated scores are piecewise constant, so prompts share breakpoints). The
    prompts whose choice changes just below lambda are then moved back to their pricier choice, best quality gain
    per extra USD first, while the spend stays within the budget. The result is the lambda rule's choice for every
    other prompt, and never above the budget unless even the cheapest choices are.

    Returns:
        ``(choice (n,) int64, over_budget (n,) bool, cost_weight)``; ``over_budget`` flags prompts where
        ``max_cost`` could not be met (as :func:`choose_models`).
    """
    expected, cost_arr = _as_batch(expected, costs, "route_to_budget")
    lam = solve_cost_weight(expected, cost_arr, budget_per_1k, allowed, max_cost, tolerance)
    choice, over = choose_models_cost_aware(expected, cost_arr, lam, allowed, max_cost, tolerance)
    n = len(choice)
    if lam == 0.0 or n == 0:
        return choice, over, lam
    below, _ = choose_models_cost_aware(expected, cost_arr, lam / (1.0 + 1e-8), allowed, max_cost, tolerance)
    rows = np.flatnonzero(below != choice)
    if rows.size:
        c = np.nan_to_num(cost_arr, nan=0.0)
        extra = c[rows, below[rows]] - c[rows, choice[rows]]
        gain = np.nan_to_num(expected[rows, below[rows]] - expected[rows, choice[rows]], nan=0.0)
        order = np.argsort(-gain / np.where(extra > 0, extra, np.inf), kind="stable")
        room = budget_per_1k * n / 1000.0 - float(np.nansum(c[np.arange(n), choice]))
        for k in order:
            if extra[k] <= room + 1e-15:
                choice[rows[k]] = below[rows[k]]
                room -= extra[k]
    return choice, over, lam
