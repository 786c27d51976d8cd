"""From a batch's scores to its routing decisions: the routing arguments checked, the model chosen per prompt by
the quality rule (tolerance on the final scores) or the cost-aware rule (``cost_weight`` or ``budget_per_1k`` on
the calibrated expected scores), and one :class:`~finerouter.routing.decision.RoutingDecision` per prompt."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from finerouter._validation import check_float
from finerouter.errors import ParameterError
from finerouter.routing.decision import RoutingDecision
from finerouter.routing.policy import choose_models, choose_models_cost_aware, route_to_budget, spend_per_1k

_OWNER = "FineRouter.route"


@dataclass
class RoutingRequest:
    """The checked routing arguments of :meth:`FineRouter.route` (see there)."""

    tolerance: float = 0.0
    allowed_models: list[str] | None = None
    max_cost: float | None = None
    cost_weight: float | None = None
    budget_per_1k: float | None = None

    @classmethod
    def checked(
        cls, tolerance: Any, allowed_models: Any, max_cost: Any, cost_weight: Any, budget_per_1k: Any,
        models: Sequence[str],
    ) -> RoutingRequest:
        """The arguments validated against the router's ``models`` (ParameterError naming the bad one)."""
        tolerance = check_float(tolerance, "tolerance", _OWNER, low=0.0, high=1.0)
        if max_cost is not None:
            max_cost = check_float(max_cost, "max_cost", _OWNER, low=0.0)
        if cost_weight is not None and budget_per_1k is not None:
            raise ParameterError(
                "The 'cost_weight' and 'budget_per_1k' parameters of FineRouter.route are mutually exclusive: "
                f"give one. Got cost_weight={cost_weight!r}, budget_per_1k={budget_per_1k!r}."
            )
        if cost_weight is not None:
            cost_weight = check_float(cost_weight, "cost_weight", _OWNER, low=0.0)
        if budget_per_1k is not None:
            budget_per_1k = check_float(budget_per_1k, "budget_per_1k", _OWNER, low=0.0)
        if allowed_models is not None:
            if isinstance(allowed_models, str):
                allowed_models = [allowed_models]
            allowed_models = list(allowed_models)
            unknown = [m for m in allowed_models if m not in models]
            if unknown:
                raise ParameterError(f"allowed_models names unknown model(s) {unknown}; known: {list(models)}")
            if not allowed_models:
                raise ParameterError("allowed_models is empty: name at least one model")
        return cls(tolerance, allowed_models, max_cost, cost_weight, budget_per_1k)

    @property
    def cost_aware(self) -> bool:
        return self.cost_weight is not None or self.budget_per_1k is not None

    def allowed_mask(self, models: Sequence[str]) -> np.ndarray | None:
        """``(m,)`` bool mask of the allowed models (None: all)."""
        if self.allowed_models is None:
            return None
        mask = np.zeros(len(models), dtype=bool)
        mask[[list(models).index(m) for m in self.allowed_models]] = True
        return mask


@dataclass
class Choice:
    """Per prompt, the chosen model and whether ``max_cost`` could not be met; what the choice ranked by."""

    model: np.ndarray  # (n,) int
    over_budget: np.ndarray  # (n,) bool
    rank_by: np.ndarray  # (n, m)
    cost_weight: float | None
    batch_note: str | None


def choose(scores: Any, costs: np.ndarray | None, request: RoutingRequest, allowed: np.ndarray | None) -> Choice:
    """Apply the request's rule to ``scores`` (:class:`~finerouter.routing.router.RouterScores`) and the
    ``(n, m)`` cost estimates (None: unknown)."""
    if not request.cost_aware:
        model, over = choose_models(scores.final, costs, request.tolerance, allowed, request.max_cost)
        return Choice(model, over, scores.final, None, None)
    name = "cost_weight" if request.cost_weight is not None else "budget_per_1k"
    if costs is None:
        raise ParameterError(
            f"FineRouter.route: '{name}' needs cost estimates, and this router has none (fit it with "
            "prices=..., or on data with per-prompt costs)"
        )
    if scores.expected is None:
        raise ParameterError(f"FineRouter.route: '{name}' needs the router's expected scores; refit it")
    batch_note = None
    cost_weight = request.cost_weight
    if request.budget_per_1k is not None:
        budget = request.budget_per_1k
        model, over, cost_weight = route_to_budget(
            scores.expected, costs, budget, allowed, request.max_cost, request.tolerance
        )
        spend = spend_per_1k(costs, model)
        batch_note = f"budget_per_1k={budget:g}: lambda={cost_weight:.6g}, batch spend {spend:.6g} USD per 1k"
        if spend > budget * (1 + 1e-9):
            batch_note += " (over budget: the cheapest allowed models already cost more)"
    else:
        model, over = choose_models_cost_aware(
            scores.expected, costs, cost_weight, allowed, request.max_cost, request.tolerance
        )
    return Choice(model, over, scores.expected - cost_weight * costs, cost_weight, batch_note)


def build_decisions(
    prompts: Sequence[str], models: list[str], tasks: list[Any], scores: Any, costs: np.ndarray | None,
    choice: Choice, request: RoutingRequest, allowed: np.ndarray | None, alpha: float,
) -> list[RoutingDecision]:
    """One decision per prompt: the chosen model, the ranking of the other allowed models, every score."""
    eligible = [True] * len(models) if allowed is None else allowed.tolist()
    # Plain Python values once for the batch: per-prompt numpy scalar indexing costs more than the maths.
    orders = np.argsort(-choice.rank_by, axis=1, kind="stable").tolist()
    expected_rows = [None] * len(prompts) if scores.expected is None else scores.expected.tolist()
    chosen, task_ids, over_budget = choice.model.tolist(), scores.task.tolist(), choice.over_budget.tolist()
    stage1, stage2, final = scores.stage1.tolist(), scores.stage2.tolist(), scores.final.tolist()
    confidence = scores.confidence.tolist()
    cost_rows = [[None] * len(models)] * len(prompts) if costs is None else costs.tolist()
    allowed_names = None if allowed is None else [models[j] for j in np.flatnonzero(allowed)]
    out = []
    for i, prompt in enumerate(prompts):
        c = chosen[i]
        order = [j for j in orders[i] if eligible[j] and j != c]
        t = task_ids[i]
        task = tasks[t] if t >= 0 else None
        notes = []
        if over_budget[i]:
            notes.append(f"no allowed model fits max_cost={request.max_cost}; chose the cheapest")
        if choice.batch_note is not None:
            notes.append(choice.batch_note)
        out.append(
            RoutingDecision(
                prompt=prompt,
                model=models[c],
                ranking=[models[c]] + [models[j] for j in order],
                models=list(models),
                stage1_scores=stage1[i],
                stage2_scores=stage2[i],
                final_scores=final[i],
                costs=list(cost_rows[i]),
                task_id=t if t >= 0 else None,
                task_description=task.description if task is not None else "Others",
                task_candidates=list(task.candidates) if task is not None else [],
                classifier_confidence=confidence[i],
                tolerance=request.tolerance,
                alpha=alpha,
                allowed_models=None if allowed_names is None else list(allowed_names),
                max_cost=request.max_cost,
                notes=notes,
                expected_scores=expected_rows[i],
                cost_weight=choice.cost_weight,
                budget_per_1k=request.budget_per_1k,
            )
        )
    return out


__all__ = ["Choice", "RoutingRequest", "build_decisions", "choose"]
