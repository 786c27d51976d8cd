"""Budgets over a sliding window of the gateway's traffic.

A budget (USD per 1,000 requests) cannot be met by one prompt alone: whether a prompt may go to a pricey model
depends on what the other prompts cost. The library meets a budget over the prompts of one ``route`` call
(:func:`finerouter.routing.policy.route_to_budget`); the gateway meets it over its recent traffic instead.

Each *budget stream* (a client key and a budget) keeps a :class:`BudgetWindow`: the last ``max_requests``
decisions routed under that budget (and, with ``max_age_s``, no older than that), each with its per-model
expected scores, estimated costs, eligible models and the estimated cost of the model chosen. A new batch is
routed with ``cost_weight`` = lambda solved on the window (:func:`~finerouter.routing.policy.solve_cost_weight`):
the smallest lambda whose choices on the window's prompts would spend at most the target. The target is the
budget corrected by half the window's realised deviation from it, ``B + 0.5 * (B - spend)``, clipped to
``[0, 2B]``: the lambda rule's spend is a step function (prompts share breakpoints), so the plain solve lands
under the budget; the correction makes the controller alternate across a breakpoint so the window's *average*
spend tracks ``B``. Until the window holds :data:`MIN_WINDOW_REQUESTS` decisions (a cold start), each batch is
routed with ``budget_per_1k`` on itself.

Everything is deterministic given the traffic and the clock (injectable, for tests).
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from finerouter.routing.decision import RoutingDecision
from finerouter.routing.policy import eligible_models, solve_cost_weight

if TYPE_CHECKING:
    from finerouter.serving.batcher import RouteOptions
    from finerouter.serving.metrics import GatewayMetrics

MIN_WINDOW_REQUESTS = 10
"""Decisions a window needs before lambda is solved on it (fewer: each batch is routed to the budget alone)."""

FEEDBACK_GAIN = 0.5
"""The share of the window's deviation from the budget that the next target makes up."""


@dataclass(frozen=True)
class _Entry:
    at: float
    expected: np.ndarray  # (m,)
    costs: np.ndarray  # (m,) USD, NaN where unknown
    eligible: np.ndarray  # (m,) bool: the models this request could have been given
    spent: float  # estimated USD of the chosen model (0 when unknown)


def _row(values: Sequence[float | None] | None, m: int) -> np.ndarray:
    if values is None:
        return np.full(m, np.nan)
    return np.array([np.nan if v is None else float(v) for v in values], dtype=np.float64)


class BudgetWindow:
    """The sliding window of one budget stream, and the lambda that keeps its spend at the budget.

    Not thread-safe by itself: :class:`BudgetWindows` locks around every call.

    Args:
        budget_per_1k: the budget, USD per 1,000 requests.
        max_requests: the most recent decisions kept.
        max_age_s: decisions older than this (by ``clock``) are dropped; None keeps them.
        clock: seconds, monotonic.
    """

    def __init__(
        self,
        budget_per_1k: float,
        *,
        max_requests: int,
        max_age_s: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.budget_per_1k = float(budget_per_1k)
        self.max_age_s = max_age_s
        self.clock = clock
        self._entries: deque[_Entry] = deque(maxlen=max_requests)
        self.min_requests = min(MIN_WINDOW_REQUESTS, max_requests)
        self.cost_weight: float | None = None  # the lambda last routed with (None: none yet, or a cold start)

    def _expire(self) -> None:
        if self.max_age_s is None:
            return
        oldest = self.clock() - self.max_age_s
        while self._entries and self._entries[0].at < oldest:
            self._entries.popleft()

    def __len__(self) -> int:
        self._expire()
        return len(self._entries)

    def spend_per_1k(self) -> float:
        """The window's realised estimated spend, USD per 1,000 requests (0 when empty)."""
        self._expire()
        if not self._entries:
            return 0.0
        return 1000.0 * sum(e.spent for e in self._entries) / len(self._entries)

    def target_per_1k(self) -> float:
        """The budget the next batch is solved for: ``B + 0.5 (B - window spend)``, in ``[0, 2B]`` (``B`` while
        the window is empty)."""
        b = self.budget_per_1k
        if not len(self):
            return b
        return min(2.0 * b, max(0.0, b + FEEDBACK_GAIN * (b - self.spend_per_1k())))

    def plan(self, tolerance: float) -> dict[str, float]:
        """The cost-aware argument for routing the next batch: ``{"cost_weight": lambda}`` solved on the window,
        or ``{"budget_per_1k": target}`` on a cold start."""
        self._expire()
        target = self.target_per_1k()
        if len(self._entries) < self.min_requests:
            return {"budget_per_1k": target}
        expected = np.stack([e.expected for e in self._entries])
        costs = np.stack([e.costs for e in self._entries])
        eligible = np.stack([e.eligible for e in self._entries])
        lam = solve_cost_weight(expected, costs, target, allowed=eligible, tolerance=tolerance)
        return {"cost_weight": lam}

    def record(self, decisions: Sequence[RoutingDecision]) -> None:
        """Add routed decisions to the window (their expected scores, costs, eligible models and spend)."""
        now = self.clock()
        for d in decisions:
            m = len(d.models)
            expected, costs = _row(d.expected_scores, m), _row(d.costs, m)
            allowed = None
            if d.allowed_models is not None:
                allowed = np.isin(np.array(d.models), np.array(d.allowed_models))
            eligible, _ = eligible_models(
                expected[None, :], np.where(np.isfinite(costs), costs, np.inf)[None, :], allowed, d.max_cost
            )
            spent = d.cost
            self._entries.append(_Entry(now, expected, costs, eligible[0], 0.0 if spent is None else float(spent)))
        if decisions:
            self.cost_weight = decisions[-1].cost_weight
        self._expire()


def budget_label(budget_per_1k: float) -> str:
    """The ``budget_per_1k`` label value of a stream's metrics."""
    return f"{budget_per_1k:g}"


class BudgetWindows:
    """Every budget stream of one gateway, keyed by ``(client key, budget_per_1k)``; thread-safe.

    Holds at most ``max_windows`` streams; the least recently used one is forgotten (and its gauges removed)
    when a new one would exceed that, so clients sending ever new budgets cannot grow memory without bound.

    Args:
        max_requests, max_age_s, clock: as :class:`BudgetWindow`.
        max_windows: the most streams kept.
        metrics: the gateway's metrics; the per-stream gauges are updated after each batch.
    """

    def __init__(
        self,
        *,
        max_requests: int,
        max_age_s: float | None = None,
        max_windows: int = 64,
        clock: Callable[[], float] = time.monotonic,
        metrics: GatewayMetrics | None = None,
    ) -> None:
        self.max_requests = max_requests
        self.max_age_s = max_age_s
        self.max_windows = max_windows
        self.clock = clock
        self.metrics = metrics
        self._windows: OrderedDict[tuple[str, float], BudgetWindow] = OrderedDict()
        self._lock = threading.Lock()

    def window(self, key: str, budget_per_1k: float) -> BudgetWindow:
        """The stream's window (created on first use)."""
        with self._lock:
            return self._get(key, budget_per_1k)

    def _get(self, key: str, budget_per_1k: float) -> BudgetWindow:
        name = (key, float(budget_per_1k))
        w = self._windows.get(name)
        if w is None:
            w = BudgetWindow(budget_per_1k, max_requests=self.max_requests, max_age_s=self.max_age_s, clock=self.clock)
            self._windows[name] = w
            while len(self._windows) > self.max_windows:
                (old_key, old_budget), _ = self._windows.popitem(last=False)
                if self.metrics is not None:
                    self.metrics.forget_budget(old_key, budget_label(old_budget))
        self._windows.move_to_end(name)
        return w

    def plan(self, options: RouteOptions) -> dict[str, Any]:
        """The router's keyword arguments for a batch routed under ``options``' budget stream."""
        assert options.budget_per_1k is not None
        kwargs = options.kwargs()
        kwargs.pop("budget_per_1k", None)
        with self._lock:
            kwargs.update(self._get(options.budget_key, options.budget_per_1k).plan(options.tolerance))
        return kwargs

    def record(self, options: RouteOptions, decisions: Sequence[RoutingDecision]) -> None:
        """Add a routed batch to its stream's window and mark each decision with the stream's budget."""
        assert options.budget_per_1k is not None
        budget = float(options.budget_per_1k)
        with self._lock:
            w = self._get(options.budget_key, budget)
            w.record(decisions)
            spend, n, lam = w.spend_per_1k(), len(w), w.cost_weight
        note = (
            f"gateway budget window ({options.budget_key!r}, budget_per_1k={budget:g}): lambda={lam:.6g}, "
            f"window spend {spend:.6g} USD per 1k over {n} requests"
        )
        for d in decisions:
            d.budget_per_1k = budget
            d.notes = [x for x in d.notes if not x.startswith("budget_per_1k=")] + [note]
        if self.metrics is not None:
            self.metrics.set_budget(options.budget_key, budget_label(budget), lam or 0.0, spend, n)

    def snapshot(self) -> list[dict[str, Any]]:
        """Every stream's key, budget, current lambda, window spend per 1k and size (for tests and /healthz)."""
        with self._lock:
            return [
                {"key": k, "budget_per_1k": b, "cost_weight": w.cost_weight, "window_spend_per_1k": w.spend_per_1k(),
                 "window_requests": len(w)}
                for (k, b), w in self._windows.items()
            ]


__all__ = ["FEEDBACK_GAIN", "MIN_WINDOW_REQUESTS", "BudgetWindow", "BudgetWindows", "budget_label"]
