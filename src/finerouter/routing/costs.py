"""Per-prompt cost estimates for routing: from a price table, or learned from observed per-prompt costs.

Input length is counted with the router's encoder tokenizer when it has one (:func:`token_counter_for`), else as
characters. The counter is not saved with the cost model (it is the encoder's, and the encoder is rebuilt when a
router loads): the saved form records the tokenizer's name, and whoever loads it hands the counter back
(:meth:`CostModel.from_dict`'s ``token_counter``), as :func:`finerouter.routing.saving.load_router` does.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from finerouter.errors import ArtifactError, EncoderError, ParameterError

logger = logging.getLogger(__name__)

WINSOR_QUANTILES = (0.01, 0.99)
"""Answer lengths implied by observed costs are clipped to these per-model quantiles before averaging, so a few
mis-billed rows cannot move a model's expected answer length far."""

MIN_ANSWERS = 5
"""A model needs this many prompts with an observed cost and a price to learn its answer length."""

INPUT_UNITS = ("characters", "tokens")

COST_GROUPS = 16
"""At most this many groups of training prompts (k-means on their embeddings) each correct the estimates by their
mean residual per model: an answer's length, and so its cost, depends on the kind of prompt (an MBPP answer is code,
an ARC answer a letter), which a fit on the prompt's length alone cannot see."""

MIN_GROUP_PROMPTS = 50
"""Prompts with observed costs per group (so fewer groups on little data; none under two groups' worth)."""

GROUP_SHRINK = 20.0
"""A group's mean residual for a model is shrunk toward 0 by ``n / (n + GROUP_SHRINK)`` (n: its observed costs)."""


@dataclass(frozen=True)
class TokenCounter:
    """Counts input tokens: ``count(texts) -> list[int]``, named after the tokenizer (saved with the cost model)."""

    name: str
    count: Callable[[Sequence[str]], Sequence[int]]

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        counts = np.asarray(list(self.count(list(texts))), dtype=np.float64)
        if counts.shape != (len(texts),):
            raise EncoderError(f"token counter {self.name!r} returned {counts.size} counts for {len(texts)} texts")
        return counts


@dataclass(frozen=True)
class ResidualGroups:
    """Per-group corrections of cost estimates: ``centres`` ``(k, d)`` unit-norm k-means centres of the training
    prompts' embeddings, ``residuals`` ``(k, len(models))`` each group's shrunk mean of (observed − estimated) cost
    per model. A prompt takes its nearest centre's (cosine) row; a model not in ``models`` (added later) gets 0."""

    centres: np.ndarray
    models: tuple[str, ...]
    residuals: np.ndarray

    @classmethod
    def fit(cls, embeddings: np.ndarray, residuals: np.ndarray, models: Sequence[str], seed: int = 0
            ) -> ResidualGroups | None:  # fmt: skip
        """Groups from ``(n, d)`` embeddings and ``(n, m)`` residuals (NaN: no observed cost); None when fewer than
        two groups' worth of prompts (:data:`MIN_GROUP_PROMPTS`) have a cost."""
        from sklearn.cluster import KMeans

        rows = np.isfinite(residuals).any(axis=1)
        k = min(COST_GROUPS, int(rows.sum()) // MIN_GROUP_PROMPTS)
        if k < 2:
            return None
        emb = _unit(np.asarray(embeddings)[rows])
        labels = KMeans(n_clusters=k, n_init=4, random_state=seed).fit_predict(emb)
        centres = _unit(np.stack([emb[labels == g].mean(axis=0) for g in range(k)]))
        res = residuals[rows]
        table = np.zeros((k, res.shape[1]))
        for g in range(k):
            block = res[labels == g]
            n = np.isfinite(block).sum(axis=0)
            mean = np.nansum(block, axis=0) / np.maximum(n, 1)
            table[g] = mean * n / (n + GROUP_SHRINK)
        return cls(centres, tuple(models), table)

    def correction(self, embeddings: np.ndarray, models: Sequence[str]) -> np.ndarray:
        """``(n, len(models))`` the correction of each prompt's estimates (0 for models the groups do not know)."""
        group = np.argmax(_unit(embeddings) @ self.centres.T, axis=1)
        out = np.zeros((group.size, len(models)))
        for j, model in enumerate(models):
            if model in self.models:
                out[:, j] = self.residuals[group, self.models.index(model)]
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"centres": self.centres.round(6).tolist(), "models": list(self.models),
                "residuals": self.residuals.tolist()}  # fmt: skip

    @classmethod
    def from_dict(cls, config: dict[str, Any]) -> ResidualGroups:
        centres = np.asarray(config["centres"], dtype=np.float64)
        models = tuple(str(m) for m in config["models"])
        residuals = np.asarray(config["residuals"], dtype=np.float64)
        if centres.ndim != 2 or residuals.shape != (centres.shape[0], len(models)):
            raise ArtifactError(f"the saved cost groups have centres {centres.shape} and residuals "
                                f"{residuals.shape} for {len(models)} models")  # fmt: skip
        return cls(centres, models, residuals)


def _unit(x: np.ndarray) -> np.ndarray:
    """Rows of ``x`` at unit L2 norm (:func:`~finerouter.encoders.base.l2_normalise`), as float64 for the k-means."""
    from finerouter.encoders.base import l2_normalise

    return l2_normalise(x).astype(np.float64)


def token_counter_for(encoder: Any) -> TokenCounter | None:
    """The input-token counter of ``encoder`` (or of the encoder a :class:`CachedEncoder` wraps), None when it has
    no ``count_tokens``. Nothing is loaded until the counter is called."""
    for candidate in (encoder, getattr(encoder, "encoder", None)):
        count = getattr(candidate, "count_tokens", None)
        if callable(count):
            name = str(getattr(candidate, "name", type(candidate).__name__)).split("|", 1)[0]
            return TokenCounter(name, count)
    return None


def observed_costs(dataset: Any) -> np.ndarray | None:
    """``dataset.costs`` when they were observed, None when the reader computed them from a price table
    (``meta["cost_source"] == "prices"``): learning answer lengths from those would only recover the table's
    assumed length."""
    if getattr(dataset, "meta", {}).get("cost_source") == "prices":
        return None
    return dataset.costs


def costs_to_learn(dataset: Any, prices: Any) -> np.ndarray | None:
    """The costs :meth:`CostModel.fit` learns from, for ``FineRouter.fit`` and the evaluation alike: with a price
    table, only observed ones (:func:`observed_costs`: costs the reader derived from the table teach nothing);
    without one, the data's costs whatever their source, the only cost information there is."""
    return observed_costs(dataset) if prices is not None else dataset.costs


class CostModel:
    """Estimates the USD cost of sending each prompt to each model.

    Three sources, in order of preference:
    - ``prices``: a :class:`finerouter.data.prices.Prices` table (input/output USD per million tokens). Input
      tokens come from the token counter when there is one, else from the table's characters rule. The answer
      length is the model's ``output_tokens_`` learned from observed costs where :meth:`fit` had them (each
      observed cost solved for its answer length, :meth:`Prices.answer_tokens`, then the winsorised mean per
      model: the mean, because routing adds costs up against budgets), else the table's default.
    - ``linear``: fitted from observed per-prompt costs, per model, as ``cost = a + b * input length`` (least
      squares, clipped at 0), the length in tokens (``input_unit == "tokens"``) or characters. ``a`` absorbs the
      expected answer cost; real costs grow with prompt length and model price, which this captures. Models a
      price table lacks get this fit too when there are costs.
    - ``none``: costs unknown; routing then ignores cost.

    Args:
        models: the ``m`` model names, in the order of the estimate's columns.
        prices: the price table, or None.
        linear: ``(m, 2)`` intercept and slope per model (NaN rows: no fit), or None.
        output_tokens: ``(m,)`` learned expected answer tokens per model (NaN: the table's default), or None.
        input_unit: what ``linear``'s slope multiplies: ``"characters"`` or ``"tokens"``.
        tokenizer: name of the tokenizer the input tokens were counted with at fit time (None: no tokenizer).
        token_counter: the counter to use at estimate time (not saved).
        groups: per-group corrections by the prompt's embedding (:class:`ResidualGroups`), or None.
    """

    def __init__(
        self,
        models: Sequence[str],
        prices: Any = None,
        linear: np.ndarray | None = None,
        *,
        output_tokens: np.ndarray | None = None,
        input_unit: str = "characters",
        tokenizer: str | None = None,
        token_counter: TokenCounter | None = None,
        groups: ResidualGroups | None = None,
    ) -> None:
        self.models = list(models)
        self.groups = groups
        self.prices = prices
        self.linear = None if linear is None else np.asarray(linear, dtype=np.float64)  # (m, 2): intercept, slope
        self.output_tokens = None if output_tokens is None else np.asarray(output_tokens, dtype=np.float64)
        if input_unit not in INPUT_UNITS:
            raise ParameterError(f"The 'input_unit' parameter of CostModel must be one of {INPUT_UNITS}. Got {input_unit!r}.")
        self.input_unit = input_unit
        self.tokenizer = tokenizer
        self.token_counter = token_counter

    @property
    def kind(self) -> str:
        """``"prices"``, ``"linear"`` or ``"none"``: where the estimates come from."""
        if self.prices is not None:
            return "prices"
        if self.linear is not None:
            return "linear"
        return "none"

    # ------------------------------------------------------------------ input length
    def _input_tokens(self, prompts: Sequence[str]) -> np.ndarray | None:
        """``(n,)`` token counts from the counter, None without one (callers then use characters)."""
        if self.token_counter is None:
            return None
        return np.maximum(self.token_counter(prompts), 1.0)

    def _linear_lengths(self, prompts: Sequence[str], tokens: np.ndarray | None) -> np.ndarray:
        """``(n,)`` lengths in :attr:`input_unit`; tokens without a counter fall back to characters / 4."""
        if self.input_unit == "characters":
            return np.array([len(p) for p in prompts], dtype=np.float64)
        if tokens is not None:
            return tokens
        from finerouter.data.prices import DEFAULT_CHARS_PER_TOKEN

        return np.maximum(1.0, np.ceil(np.array([len(p) for p in prompts], dtype=np.float64) / DEFAULT_CHARS_PER_TOKEN))

    # ------------------------------------------------------------------ fit
    @classmethod
    def fit(
        cls,
        models: Sequence[str],
        prompts: Sequence[str],
        costs: np.ndarray | None,
        prices: Any = None,
        *,
        token_counter: TokenCounter | None = None,
        embeddings: np.ndarray | None = None,
    ) -> CostModel:
        """Learn the estimates from ``prompts`` and their observed ``costs`` ``(n, m)`` (USD; None or NaN: unknown).

        With ``prices``: each priced model's expected answer length from the observed costs (where it has at
        least :data:`MIN_ANSWERS` of them), and a linear fit for the models the table lacks. Without: the linear
        fit for every model. Without costs: the table's defaults, or none. ``token_counter`` counts input tokens
        (else characters); pass None for costs the reader computed from ``prices`` (:func:`observed_costs`).
        With the prompts' ``embeddings`` ``(n, d)``, the residuals of those estimates on the observed costs are then
        averaged per group of similar prompts (:class:`ResidualGroups`), and :meth:`estimate` adds a prompt's group's
        mean when given its embedding.
        """
        models = list(models)
        unit = "tokens" if token_counter is not None else "characters"
        tokenizer = None if token_counter is None else token_counter.name
        base = cls(models, prices, input_unit=unit, tokenizer=tokenizer, token_counter=token_counter)
        if costs is None or not np.isfinite(costs).any():
            return base
        costs = np.asarray(costs, dtype=np.float64)
        tokens = base._input_tokens(prompts)
        to_fit = list(range(len(models)))
        if prices is not None:
            tokens_in = tokens if tokens is not None else prices.input_tokens(prompts).astype(np.float64)
            answers = prices.answer_tokens(tokens_in, models, costs)
            base.output_tokens = _expected_answer_tokens(answers, models, float(prices.output_tokens))
            to_fit = [j for j, m in enumerate(models) if m not in prices and np.isfinite(costs[:, j]).any()]
            if not to_fit:
                return base._with_groups(prompts, tokens, costs, embeddings)
        lengths = base._linear_lengths(prompts, tokens)
        coef = np.full((len(models), 2), np.nan)
        for j in to_fit:
            ok = np.isfinite(costs[:, j])
            if ok.sum() < 2:
                coef[j] = [np.nanmean(costs[:, j]) if ok.any() else np.nan, 0.0]
                continue
            x = np.stack([np.ones(ok.sum()), lengths[ok]], axis=1)
            sol, *_ = np.linalg.lstsq(x, costs[ok, j], rcond=None)
            coef[j] = sol
        base.linear = coef
        return base._with_groups(prompts, tokens, costs, embeddings)

    def _with_groups(self, prompts: Sequence[str], tokens: np.ndarray | None, costs: np.ndarray,
                     embeddings: np.ndarray | None) -> CostModel:  # fmt: skip
        """This model with :class:`ResidualGroups` learned from its own residuals on ``costs`` (no embeddings, too
        few costs, or costs that are these estimates to rounding, as a price table's own: unchanged); ``tokens``: the
        prompts' input token counts :meth:`fit` made (not counted twice)."""
        estimated = None if embeddings is None or self.kind == "none" else self._estimate(list(prompts), tokens, None)
        if estimated is not None:
            residuals = costs - estimated
            scale = np.nanmean(np.abs(costs)) if np.isfinite(costs).any() else 0.0
            if np.isfinite(residuals).any() and np.nanmax(np.abs(residuals)) > 1e-6 * scale:
                self.groups = ResidualGroups.fit(embeddings, residuals, self.models)
        return self

    # ------------------------------------------------------------------ estimate
    def estimate(self, prompts: Sequence[str], embeddings: np.ndarray | None = None) -> np.ndarray | None:
        """``(n, m)`` estimated USD cost, or None when costs are unknown (NaN for a model with no estimate); with the
        prompts' ``embeddings`` and learned :attr:`groups`, corrected by each prompt's group (clipped at 0)."""
        if self.kind == "none":
            return None
        prompts = list(prompts)
        return self._estimate(prompts, self._input_tokens(prompts), embeddings)

    def _estimate(self, prompts: list[str], tokens: np.ndarray | None, embeddings: np.ndarray | None) -> np.ndarray:
        """:meth:`estimate` with the prompts' input token counts already made (:meth:`_input_tokens`)."""
        out = np.full((len(prompts), len(self.models)), np.nan)
        if self.prices is not None:
            out = np.asarray(
                self.prices.estimate_costs(prompts, self.models, input_tokens=tokens, output_tokens=self.output_tokens),
                dtype=np.float64,
            )
        if self.linear is not None:
            rows = np.isfinite(self.linear).all(axis=1) & ~np.isfinite(out).all(axis=0)
            if rows.any():
                lengths = self._linear_lengths(prompts, tokens)
                est = self.linear[None, :, 0] + lengths[:, None] * self.linear[None, :, 1]
                out[:, rows] = np.clip(est[:, rows], 0.0, None)
        if self.groups is not None and embeddings is not None:
            out = np.clip(out + self.groups.correction(embeddings, self.models), 0.0, None)
        return out

    # ------------------------------------------------------------------ saving
    def to_dict(self) -> dict[str, Any]:
        """A JSON-able config for :meth:`from_dict`: ``kind``, ``models``, ``input_unit``, ``tokenizer`` and, where
        learned, ``prices``, ``output_tokens``, ``linear`` (NaN saved as null)."""
        config: dict[str, Any] = {
            "kind": self.kind, "models": self.models, "input_unit": self.input_unit, "tokenizer": self.tokenizer,
        }
        if self.prices is not None:
            config["prices"] = self.prices.to_dict()
        if self.output_tokens is not None:
            config["output_tokens"] = [_json_float(v) for v in self.output_tokens]
        if self.linear is not None:
            config["linear"] = [[_json_float(v) for v in row] for row in self.linear]
        if self.groups is not None:
            config["groups"] = self.groups.to_dict()
        return config

    @classmethod
    def from_dict(cls, config: dict[str, Any], token_counter: TokenCounter | None = None) -> CostModel:
        """The cost model saved by :meth:`to_dict` (also the older form without ``input_unit``, ``tokenizer`` and
        ``output_tokens``: characters, no tokenizer); ArtifactError when ``config`` is not one.

        ``token_counter`` should be the counter of the tokenizer named in the config (the loaded router's
        encoder's). Without one, input tokens fall back to characters / 4 (a warning says so); with another
        tokenizer, its counts are used (a warning names both).
        """
        from finerouter.data.prices import Prices

        try:
            prices = None if config.get("prices") is None else Prices.from_dict(config["prices"])
            linear = None
            if config.get("linear") is not None:
                rows = config["linear"]
                linear = np.array([[np.nan if v is None else v for v in row] for row in rows], dtype=np.float64)
            output_tokens = None
            if config.get("output_tokens") is not None:
                output_tokens = np.array(
                    [np.nan if v is None else v for v in config["output_tokens"]], dtype=np.float64
                )
            models = [str(m) for m in config["models"]]
            unit = str(config.get("input_unit", "characters"))
            tokenizer = config.get("tokenizer")
            tokenizer = None if tokenizer is None else str(tokenizer)
            groups = None if config.get("groups") is None else ResidualGroups.from_dict(config["groups"])
        except (AttributeError, KeyError, TypeError, ValueError) as exc:  # DataError is a ValueError
            raise ArtifactError(f"the saved cost model is malformed ({exc})") from exc
        if unit not in INPUT_UNITS:
            raise ArtifactError(f"the saved cost model's input_unit is {unit!r}; expected one of {INPUT_UNITS}")
        if linear is not None and linear.shape != (len(models), 2):
            raise ArtifactError(
                f"the saved cost model's linear coefficients have shape {linear.shape}; expected ({len(models)}, 2)"
            )
        if output_tokens is not None and output_tokens.shape != (len(models),):
            raise ArtifactError(
                f"the saved cost model has {output_tokens.size} output lengths for {len(models)} models"
            )
        if tokenizer is None:
            token_counter = None  # fitted on characters: estimate on characters, whatever the encoder
        elif token_counter is None:
            logger.warning(
                "the cost model was fitted on %s tokens and this encoder has no tokenizer; input tokens are "
                "estimated as characters / 4", tokenizer,
            )
        elif token_counter.name != tokenizer:
            logger.warning(
                "the cost model was fitted on %s tokens; counting input tokens with %s instead",
                tokenizer, token_counter.name,
            )
        return cls(models, prices=prices, linear=linear, output_tokens=output_tokens, input_unit=unit,
                   tokenizer=tokenizer, token_counter=token_counter, groups=groups)


def _json_float(value: float) -> float | None:
    return float(value) if np.isfinite(value) else None


def _expected_answer_tokens(answers: np.ndarray, models: Sequence[str], default: float) -> np.ndarray | None:
    """``(m,)`` winsorised mean answer length per model from ``(n, m)`` implied lengths (NaN: too few to learn, or
    every cost is the table's own estimate, its ``default`` length to rounding); None when no model has any."""
    learned = np.full(len(models), np.nan)
    for j, model in enumerate(models):
        col = answers[:, j]
        col = col[np.isfinite(col)]
        if col.size < MIN_ANSWERS or np.allclose(col, default, rtol=0.0, atol=1e-6):
            continue
        below = int((col < -0.5).sum())
        if below:
            logger.warning(
                "%s: %d of %d observed costs are below the price table's input cost alone; the table's prices or "
                "the token counts do not match how the data was billed", model, below, col.size,
            )
        lo, hi = np.quantile(col, WINSOR_QUANTILES)
        learned[j] = max(0.0, float(np.mean(np.clip(col, lo, hi))))
    return learned if np.isfinite(learned).any() else None
