"""Per-prompt cost estimates for routing: from a price table, or learned from observed per-prompt costs."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from finerouter.errors import ArtifactError


class CostModel:
    """Estimates the USD cost of sending each prompt to each model.

    Three sources, in order of preference:
    - ``prices``: a :class:`finerouter.data.prices.Prices` table (input/output USD per million tokens); input tokens
      are estimated from the prompt text and output tokens by the table's documented default.
    - ``linear``: fitted from a dataset's observed per-prompt costs, per model, as
      ``cost = a + b * len(prompt in characters)`` (least squares, clipped at 0). Real per-prompt costs grow with
      prompt length and model price, which this captures; it cannot know the answer's length in advance.
    - ``none``: costs unknown; routing then ignores cost.
    """

    def __init__(self, models: Sequence[str], prices: Any = None, linear: np.ndarray | None = None) -> None:
        self.models = list(models)
        self.prices = prices
        self.linear = None if linear is None else np.asarray(linear, dtype=np.float64)  # (m, 2): intercept, slope

    @property
    def kind(self) -> str:
        """``"prices"``, ``"linear"`` or ``"none"``: where the estimates come from."""
        if self.prices is not None:
            return "prices"
        if self.linear is not None:
            return "linear"
        return "none"

    @classmethod
    def fit(
        cls, models: Sequence[str], prompts: Sequence[str], costs: np.ndarray | None, prices: Any = None
    ) -> CostModel:
        """Use ``prices`` when given, else fit the linear model on observed ``costs`` (n, m), else none."""
        if prices is not None:
            return cls(models, prices=prices)
        if costs is None or not np.isfinite(costs).any():
            return cls(models)
        lengths = np.array([len(p) for p in prompts], dtype=np.float64)
        coef = np.zeros((len(models), 2))
        for j in range(len(models)):
            ok = np.isfinite(costs[:, j])
            if ok.sum() < 2:
                coef[j] = [np.nanmean(costs[:, j]) if ok.any() else np.nan, 0.0]
                continue
            x = np.stack([np.ones(ok.sum()), lengths[ok]], axis=1)
            sol, *_ = np.linalg.lstsq(x, costs[ok, j], rcond=None)
            coef[j] = sol
        return cls(models, linear=coef)

    def estimate(self, prompts: Sequence[str]) -> np.ndarray | None:
        """``(n, m)`` estimated USD cost, or None when costs are unknown."""
        if self.prices is not None:
            return np.asarray(self.prices.estimate_costs(list(prompts), self.models), dtype=np.float64)
        if self.linear is not None:
            lengths = np.array([len(p) for p in prompts], dtype=np.float64)
            est = self.linear[None, :, 0] + lengths[:, None] * self.linear[None, :, 1]
            return np.clip(est, 0.0, None)
        return None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able config (``kind``, ``models``, and ``prices`` or ``linear``) for :meth:`from_dict`."""
        config: dict[str, Any] = {"kind": self.kind, "models": self.models}
        if self.prices is not None:
            config["prices"] = self.prices.to_dict()
        if self.linear is not None:
            config["linear"] = [[None if not np.isfinite(v) else float(v) for v in row] for row in self.linear]
        return config

    @classmethod
    def from_dict(cls, config: dict[str, Any]) -> CostModel:
        """The cost model saved by :meth:`to_dict`; ArtifactError when ``config`` is not one."""
        from finerouter.data.prices import Prices

        try:
            prices = None if config.get("prices") is None else Prices.from_dict(config["prices"])
            linear = None
            if config.get("linear") is not None:
                rows = config["linear"]
                linear = np.array([[np.nan if v is None else v for v in row] for row in rows], dtype=np.float64)
            models = [str(m) for m in config["models"]]
        except (AttributeError, KeyError, TypeError, ValueError) as exc:  # DataError is a ValueError
            raise ArtifactError(f"the saved cost model is malformed ({exc})") from exc
        if linear is not None and linear.shape != (len(models), 2):
            raise ArtifactError(
                f"the saved cost model's linear coefficients have shape {linear.shape}; expected ({len(models)}, 2)"
            )
        return cls(models, prices=prices, linear=linear)
