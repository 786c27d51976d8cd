"""Model list prices and per-prompt cost estimates.

A prices file is a CSV with one row per model::

    model,input_usd_per_mtok,output_usd_per_mtok
    qwen2.5-7b-instruct,0.2,0.2

Prices are USD per million tokens. Routing data without per-prompt cost (for example ``dcrouter``) gets an
estimated cost for each (prompt, model) pair, and the router estimates the cost of new prompts the same way:

* input tokens = ``max(1, ceil(len(prompt) / chars_per_token))``, with ``chars_per_token = 4`` (``len`` counts
  Unicode code points). This is the usual rule of thumb for English text with BPE tokenizers; it needs no
  tokenizer download and costs one ``len`` per prompt. Callers that have a tokenizer pass its counts instead
  (``input_tokens=``; the router passes its encoder's, see :class:`finerouter.routing.costs.CostModel`).
* output tokens = ``output_tokens`` (default 256) for every prompt: the answer is not known before routing.
  Callers that learned each model's expected answer length pass it per model (``output_tokens=``).
* cost = ``(input_tokens * input_usd_per_mtok + output_tokens * output_usd_per_mtok) / 1e6``.

A model missing from the table gets NaN (unknown cost), never 0. :meth:`Prices.answer_tokens` inverts the rule:
from observed per-prompt costs it recovers each answer's length in tokens.
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from finerouter._validation import check_float, check_int
from finerouter.errors import DataError

REQUIRED_COLUMNS = ("model", "input_usd_per_mtok", "output_usd_per_mtok")
DEFAULT_OUTPUT_TOKENS = 256
DEFAULT_CHARS_PER_TOKEN = 4.0


def _price(value: Any, where: str) -> float:
    """Parse one price cell; ``where`` names file, column, row and model for the error."""
    text = "" if value is None else str(value).strip()
    if not text:
        raise DataError(f"{where}: missing price")
    try:
        price = float(text)
    except ValueError:
        raise DataError(f"{where}: price {text!r} is not a number") from None
    if not math.isfinite(price):
        raise DataError(f"{where}: price {text!r} is not a finite number")
    if price < 0:
        raise DataError(f"{where}: price {price:g} is negative")
    return price


class Prices:
    """List prices per model (USD per million input / output tokens) and the cost estimate built on them.

    Args:
        table: ``{model: (input_usd_per_mtok, output_usd_per_mtok)}``.
        output_tokens: assumed answer length in tokens, the same for every prompt.
        chars_per_token: characters per input token in the input-length estimate.
        source: where the table came from, for error messages.
    """

    def __init__(
        self,
        table: Mapping[str, tuple[float, float]],
        *,
        output_tokens: int = DEFAULT_OUTPUT_TOKENS,
        chars_per_token: float = DEFAULT_CHARS_PER_TOKEN,
        source: str = "<memory>",
    ) -> None:
        self.output_tokens = check_int(output_tokens, "output_tokens", "Prices", low=0)
        self.chars_per_token = check_float(
            chars_per_token, "chars_per_token", "Prices", low=0.0, closed="neither"
        )
        self.source = str(source)
        parsed: dict[str, tuple[float, float]] = {}
        for model, pair in table.items():
            name = str(model).strip()
            if not name:
                raise DataError(f"{self.source}: empty model name in the prices table")
            try:
                in_price, out_price = pair
            except (TypeError, ValueError):
                raise DataError(
                    f"{self.source}: model {name!r}: expected (input_usd_per_mtok, output_usd_per_mtok), got {pair!r}"
                ) from None
            parsed[name] = (
                _price(in_price, f"{self.source}: model {name!r}, input_usd_per_mtok"),
                _price(out_price, f"{self.source}: model {name!r}, output_usd_per_mtok"),
            )
        if not parsed:
            raise DataError(f"{self.source}: the prices table has no models")
        self._table = parsed

    # ------------------------------------------------------------------ construction
    @classmethod
    def read(
        cls,
        path: str | os.PathLike[str],
        *,
        output_tokens: int = DEFAULT_OUTPUT_TOKENS,
        chars_per_token: float = DEFAULT_CHARS_PER_TOKEN,
    ) -> Prices:
        """Read a prices CSV (``model,input_usd_per_mtok,output_usd_per_mtok``; other columns are ignored).

        Raises:
            DataError: the file is missing or unreadable, a required column is missing, a model name is empty
                or repeated, or a price is missing, non-numeric or negative (naming file, column, row, model).
        """
        where = os.fspath(path)
        try:
            with open(where, encoding="utf-8-sig", newline="") as fh:
                reader = csv.DictReader(fh)
                header = [h.strip() for h in (reader.fieldnames or [])]
                missing = [c for c in REQUIRED_COLUMNS if c not in header]
                if missing:
                    raise DataError(
                        f"{where}: prices file is missing column(s) {missing}; expected columns "
                        f"{list(REQUIRED_COLUMNS)}, found {header}"
                    )
                reader.fieldnames = header
                table: dict[str, tuple[float, float]] = {}
                first_row: dict[str, int] = {}
                for row_no, row in enumerate(reader):
                    line = reader.line_num
                    model = (row.get("model") or "").strip()
                    if not model:
                        raise DataError(f"{where}: column 'model', row {row_no} (line {line}): empty model name")
                    if model in table:
                        raise DataError(
                            f"{where}: column 'model', row {row_no} (line {line}): model {model!r} is listed twice "
                            f"(first at row {first_row[model]})"
                        )
                    prices = tuple(
                        _price(row.get(col), f"{where}: column {col!r}, row {row_no} (line {line}), model {model!r}")
                        for col in REQUIRED_COLUMNS[1:]
                    )
                    table[model] = (prices[0], prices[1])
                    first_row[model] = row_no
        except FileNotFoundError:
            raise DataError(f"{where}: prices file not found") from None
        except (OSError, UnicodeDecodeError, csv.Error) as exc:
            raise DataError(f"{where}: cannot read the prices file ({exc})") from exc
        if not table:
            raise DataError(f"{where}: the prices file has no rows")
        return cls(table, output_tokens=output_tokens, chars_per_token=chars_per_token, source=where)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Prices:
        """Inverse of :meth:`to_dict`."""
        try:
            table = {str(k): (v[0], v[1]) for k, v in dict(data["prices"]).items()}
        except (KeyError, TypeError, IndexError) as exc:
            raise DataError(f"invalid prices dictionary ({exc!r})") from exc
        return cls(
            table,
            output_tokens=data.get("output_tokens", DEFAULT_OUTPUT_TOKENS),
            chars_per_token=data.get("chars_per_token", DEFAULT_CHARS_PER_TOKEN),
            source=str(data.get("source", "<memory>")),
        )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready description: ``{"prices": {model: [in, out]}, "output_tokens", "chars_per_token",
        "source"}``."""
        return {
            "prices": {m: [p[0], p[1]] for m, p in self._table.items()},
            "output_tokens": self.output_tokens,
            "chars_per_token": self.chars_per_token,
            "source": self.source,
        }

    # ------------------------------------------------------------------ views
    @property
    def models(self) -> list[str]:
        """The priced model names, in file order."""
        return list(self._table)

    def __contains__(self, model: object) -> bool:
        return model in self._table

    def __len__(self) -> int:
        return len(self._table)

    def __repr__(self) -> str:
        return f"Prices(models={len(self._table)}, output_tokens={self.output_tokens}, source={self.source!r})"

    def price(self, model: str) -> tuple[float, float]:
        """``(input_usd_per_mtok, output_usd_per_mtok)`` of ``model``; DataError naming the table when it has none."""
        try:
            return self._table[model]
        except KeyError:
            raise DataError(
                f"{self.source}: no price for model {model!r}; the table prices {sorted(self._table)}"
            ) from None

    def missing(self, models: Iterable[str]) -> list[str]:
        """The names in ``models`` that have no price."""
        return [m for m in models if m not in self._table]

    # ------------------------------------------------------------------ estimates
    def input_tokens(self, prompts: Sequence[str]) -> np.ndarray:
        """``(n,)`` int64 estimated input tokens: ``max(1, ceil(len(prompt) / chars_per_token))``."""
        chars = np.fromiter((len(p) for p in prompts), dtype=np.float64, count=len(prompts))
        return np.maximum(1, np.ceil(chars / self.chars_per_token)).astype(np.int64)

    def _rates(self, models: Sequence[str]) -> np.ndarray:
        """``(m, 2)`` USD per million input / output tokens; NaN rows for unpriced models."""
        nan = (math.nan, math.nan)
        return np.array([self._table.get(str(m), nan) for m in models], dtype=np.float64).reshape(len(models), 2)

    def estimate_costs(
        self,
        prompts: Sequence[str],
        models: Sequence[str],
        *,
        input_tokens: Sequence[float] | np.ndarray | None = None,
        output_tokens: Sequence[float] | np.ndarray | None = None,
    ) -> np.ndarray:
        """``(n, m)`` float64 estimated USD cost of sending each prompt to each model (NaN: model has no price).

        Args:
            prompts: the ``n`` prompt texts.
            models: the ``m`` model names.
            input_tokens: optional ``(n,)`` input-token counts (e.g. from a tokenizer), used instead of the
                characters rule of :meth:`input_tokens`.
            output_tokens: optional ``(m,)`` expected answer length per model; NaN entries use the table's
                ``output_tokens``.
        """
        if isinstance(prompts, str):
            prompts = [prompts]
        if isinstance(models, str):
            models = [models]
        if input_tokens is None:
            tokens_in = self.input_tokens(prompts).astype(np.float64)
        else:
            tokens_in = np.asarray(input_tokens, dtype=np.float64).reshape(-1)
            if tokens_in.shape != (len(prompts),) or not np.isfinite(tokens_in).all() or (tokens_in < 0).any():
                raise DataError(
                    f"{self.source}: input_tokens must be {len(prompts)} finite counts >= 0, one per prompt; "
                    f"got shape {tokens_in.shape}"
                )
        tokens_out = np.full(len(models), float(self.output_tokens))
        if output_tokens is not None:
            given = np.asarray(output_tokens, dtype=np.float64).reshape(-1)
            if given.shape != (len(models),) or (given[np.isfinite(given)] < 0).any():
                raise DataError(
                    f"{self.source}: output_tokens must be {len(models)} counts >= 0 (NaN: the default "
                    f"{self.output_tokens}), one per model; got {given.tolist()}"
                )
            tokens_out = np.where(np.isfinite(given), given, tokens_out)
        rates = self._rates(models)
        per_call = tokens_in[:, None] * rates[None, :, 0] + tokens_out[None, :] * rates[None, :, 1]
        return per_call / 1e6

    def answer_tokens(
        self, input_tokens: Sequence[float] | np.ndarray, models: Sequence[str], costs: np.ndarray
    ) -> np.ndarray:
        """``(n, m)`` answer length in tokens implied by observed per-call ``costs`` ``(n, m)`` (USD).

        The cost rule solved for the output: ``(cost * 1e6 - input_tokens * input_price) / output_price``. It is
        NaN where the cost is unknown, the model is unpriced or its output price is 0 (nothing to learn from);
        it can be negative where the observed cost is below the input cost alone (the table's prices or the
        token count do not match how the data was billed), which callers should treat as a mismatch, not clip.
        """
        tokens_in = np.asarray(input_tokens, dtype=np.float64).reshape(-1)
        costs = np.asarray(costs, dtype=np.float64)
        if costs.shape != (tokens_in.size, len(models)):
            raise DataError(
                f"{self.source}: costs have shape {costs.shape}; expected ({tokens_in.size}, {len(models)})"
            )
        rates = self._rates(models)
        out_price = np.where(rates[:, 1] > 0, rates[:, 1], np.nan)
        with np.errstate(invalid="ignore"):
            return (costs * 1e6 - tokens_in[:, None] * rates[None, :, 0]) / out_price[None, :]


__all__ = ["DEFAULT_CHARS_PER_TOKEN", "DEFAULT_OUTPUT_TOKENS", "REQUIRED_COLUMNS", "Prices"]
