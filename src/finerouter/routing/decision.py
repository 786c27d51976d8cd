"""`RoutingDecision`: the explained outcome of routing one prompt."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any


def _clean(x: float | None) -> float | None:
    if x is None:
        return None
    x = float(x)
    return None if math.isnan(x) or math.isinf(x) else x


@dataclass
class RoutingDecision:
    """Which model a prompt goes to, and why.

    Attributes:
        prompt: the routed text.
        model: the chosen model.
        ranking: the eligible models ordered best-first by final score (the gateway's fallback order).
        models: every model the router knows, in its order; the score lists below follow it.
        stage1_scores: per model, the assigned task's mean (or median) score (the stage-1 prior), raw.
        stage2_scores: per model, the quality estimator's prediction, raw.
        final_scores: per model, ``alpha * norm(stage2) + (1 - alpha) * norm(stage1)``.
        costs: per model, the estimated USD cost of this prompt (None where unknown).
        task_id: the assigned task, or None for "Others".
        task_description: that task's description ("Others" when none).
        task_candidates: that task's candidate models (empty for "Others").
        classifier_confidence: the task classifier's probability for the assigned (or best) task.
        tolerance: the tolerance used; ``allowed_models``/``max_cost``: the request's constraints.
        expected_scores: per model, the calibrated expected score (score scale), what cost-aware routing trades
            against cost; None for decisions made before it existed.
        cost_weight: the lambda (quality points per USD) of a cost-aware decision, given or solved for the
            budget; None for tolerance routing.
        budget_per_1k: the budget (USD per 1,000 prompts) the batch was routed to; None when not asked.
    """

    prompt: str
    model: str
    ranking: list[str]
    models: list[str]
    stage1_scores: list[float]
    stage2_scores: list[float]
    final_scores: list[float]
    costs: list[float | None]
    task_id: int | None
    task_description: str
    task_candidates: list[str]
    classifier_confidence: float
    tolerance: float
    alpha: float
    allowed_models: list[str] | None = None
    max_cost: float | None = None
    notes: list[str] = field(default_factory=list)
    expected_scores: list[float] | None = None
    cost_weight: float | None = None
    budget_per_1k: float | None = None

    @property
    def cost(self) -> float | None:
        """Estimated cost of the chosen model."""
        return self.costs[self.models.index(self.model)]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict (NaN/inf become null)."""
        d = asdict(self)
        for key in ("stage1_scores", "stage2_scores", "final_scores", "costs", "expected_scores"):
            if d[key] is not None:
                d[key] = [_clean(v) for v in d[key]]
        d["classifier_confidence"] = _clean(d["classifier_confidence"])
        d["cost"] = _clean(self.cost)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RoutingDecision:
        d = dict(d)
        d.pop("cost", None)
        return cls(**d)
