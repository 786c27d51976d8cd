"""`RoutingDataset`: prompts × models quality scores, optional costs and coarse task labels."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from finerouter._validation import check_float, check_int
from finerouter.errors import DataError


@dataclass(eq=False)
class RoutingDataset:
    """Routing data: for each prompt, a quality score for each candidate model, plus optional cost.

    Attributes:
        prompts: ``(n,)`` prompt texts, each non-empty.
        models: ``(m,)`` model names, unique, ``m >= 2``.
        scores: ``(n, m)`` float64 quality in [0, 1]; NaN means the model was not evaluated on the prompt.
        costs: optional ``(n, m)`` float64 USD cost of each call; NaN where unknown.
        tasks: optional ``(n,)`` coarse task labels (the source benchmark); never a routing input.
        ids: ``(n,)`` unique string ids (generated as ``"0"``, ``"1"``... when not given).
        name: a short name for reports.
        source: where the data was read from, for error messages.
    """

    prompts: list[str]
    models: list[str]
    scores: np.ndarray
    costs: np.ndarray | None = None
    tasks: list[str] | None = None
    ids: list[str] | None = None
    name: str = "dataset"
    source: str = "<memory>"
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.prompts = [str(p) for p in self.prompts]
        self.models = [str(m) for m in self.models]
        n, m = len(self.prompts), len(self.models)
        where = self.source
        if m < 2:
            raise DataError(f"{where}: routing needs at least 2 models, found {m}: {self.models}")
        if len(set(self.models)) != m:
            dup = sorted({x for x in self.models if self.models.count(x) > 1})
            raise DataError(f"{where}: duplicate model names {dup}")
        try:
            self.scores = np.asarray(self.scores, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise DataError(f"{where}: scores are not numeric ({exc})") from exc
        if self.scores.shape != (n, m):
            raise DataError(f"{where}: scores have shape {self.scores.shape}, expected ({n}, {m})")
        for i, p in enumerate(self.prompts):
            if not p.strip():
                raise DataError(f"{where}: column 'prompt', row {i}: empty prompt")
        finite = self.scores[np.isfinite(self.scores)]
        if finite.size and (finite.min() < 0.0 or finite.max() > 1.0):
            r, c = np.argwhere(np.isfinite(self.scores) & ((self.scores < 0) | (self.scores > 1)))[0]
            raise DataError(
                f"{where}: column 'score::{self.models[c]}', row {r}: score {float(self.scores[r, c])!r} is outside "
                "[0, 1] (pass rescale=True to min-max rescale each model's scores)"
            )
        if np.isinf(self.scores).any():
            r, c = np.argwhere(np.isinf(self.scores))[0]
            raise DataError(f"{where}: column 'score::{self.models[c]}', row {r}: infinite score")
        if n:
            empty = np.where(~np.isfinite(self.scores).any(axis=0))[0]
            if empty.size:
                raise DataError(f"{where}: model(s) with no scores at all: {[self.models[j] for j in empty]}")
        if self.costs is not None:
            try:
                self.costs = np.asarray(self.costs, dtype=np.float64)
            except (TypeError, ValueError) as exc:
                raise DataError(f"{where}: costs are not numeric ({exc})") from exc
            if self.costs.shape != (n, m):
                raise DataError(f"{where}: costs have shape {self.costs.shape}, expected ({n}, {m})")
            if (self.costs[np.isfinite(self.costs)] < 0).any():
                r, c = np.argwhere(np.isfinite(self.costs) & (self.costs < 0))[0]
                raise DataError(f"{where}: column 'cost::{self.models[c]}', row {r}: negative cost")
        if self.tasks is not None:
            if len(self.tasks) != n:
                raise DataError(f"{where}: {len(self.tasks)} task labels for {n} prompts")
            self.tasks = [str(t) for t in self.tasks]
        if self.ids is None:
            self.ids = [str(i) for i in range(n)]
        else:
            self.ids = [str(i) for i in self.ids]
            if len(self.ids) != n:
                raise DataError(f"{where}: {len(self.ids)} ids for {n} prompts")
            if len(set(self.ids)) != n:
                seen: set[str] = set()
                for i, x in enumerate(self.ids):
                    if x in seen:
                        raise DataError(f"{where}: column 'id', row {i}: duplicate id {x!r}")
                    seen.add(x)

    # ------------------------------------------------------------------ basic views
    @property
    def n_prompts(self) -> int:
        return len(self.prompts)

    @property
    def n_models(self) -> int:
        return len(self.models)

    def __len__(self) -> int:
        return self.n_prompts

    def __repr__(self) -> str:
        extra = []
        if self.costs is not None:
            extra.append("costs")
        if self.tasks is not None:
            extra.append(f"{len(set(self.tasks))} tasks")
        more = (", " + ", ".join(extra)) if extra else ""
        return f"RoutingDataset(name={self.name!r}, prompts={self.n_prompts}, models={self.n_models}{more})"

    def model_means(self) -> np.ndarray:
        """``(m,)`` mean observed score per model (NaN ignored)."""
        with np.errstate(invalid="ignore"):
            return np.nanmean(self.scores, axis=0)

    def best_single_model(self) -> int:
        """Index of the model with the highest mean observed score."""
        return int(np.nanargmax(self.model_means()))

    def oracle_scores(self) -> np.ndarray:
        """``(n,)`` best observed score per prompt."""
        return np.nanmax(np.where(np.isfinite(self.scores), self.scores, -np.inf), axis=1)

    def subset(self, indices: Sequence[int] | np.ndarray) -> RoutingDataset:
        """A new dataset with the rows in ``indices`` (in that order)."""
        idx = np.asarray(indices, dtype=np.int64)
        return RoutingDataset(
            prompts=[self.prompts[i] for i in idx],
            models=list(self.models),
            scores=self.scores[idx].copy(),
            costs=None if self.costs is None else self.costs[idx].copy(),
            tasks=None if self.tasks is None else [self.tasks[i] for i in idx],
            ids=None if self.ids is None else [self.ids[i] for i in idx],
            name=self.name,
            source=self.source,
            meta=dict(self.meta),
        )

    def select_models(self, models: Sequence[str]) -> RoutingDataset:
        """A new dataset restricted to ``models`` (in that order)."""
        missing = [m for m in models if m not in self.models]
        if missing:
            raise DataError(f"{self.source}: unknown model(s) {missing}; known: {self.models}")
        cols = [self.models.index(m) for m in models]
        return RoutingDataset(
            prompts=list(self.prompts),
            models=list(models),
            scores=self.scores[:, cols].copy(),
            costs=None if self.costs is None else self.costs[:, cols].copy(),
            tasks=None if self.tasks is None else list(self.tasks),
            ids=list(self.ids or []),
            name=self.name,
            source=self.source,
            meta=dict(self.meta),
        )

    # ------------------------------------------------------------------ splits
    def split(self, test_size: float = 0.2, seed: int = 0) -> tuple[RoutingDataset, RoutingDataset]:
        """Split by unique prompt text into (train, test), stratified by ``tasks`` when present.

        Rows that share a prompt text always land on the same side, so no test prompt is seen in training.
        """
        test_size = check_float(test_size, "test_size", "RoutingDataset.split", low=0.0, high=1.0, closed="neither")
        seed = check_int(seed, "seed", "RoutingDataset.split", low=0)
        train_idx, test_idx = split_indices(self.prompts, self.tasks, test_size, seed)
        return self.subset(train_idx), self.subset(test_idx)

    # ------------------------------------------------------------------ I/O
    @classmethod
    def read(cls, path: str | os.PathLike[str], **kwargs: Any) -> RoutingDataset:
        """Read routing data from Parquet, CSV or JSONL (canonical, long or RouterBench layout).

        See :func:`finerouter.data.readers.read_routing_data` for the keyword arguments.
        """
        from finerouter.data.readers import read_routing_data

        return read_routing_data(path, **kwargs)

    def to_frame(self) -> Any:
        """The dataset as a pandas DataFrame in the canonical wide layout."""
        import pandas as pd

        cols: dict[str, Any] = {"id": self.ids, "prompt": self.prompts}
        if self.tasks is not None:
            cols["task"] = self.tasks
        for j, m in enumerate(self.models):
            cols[f"score::{m}"] = self.scores[:, j]
        if self.costs is not None:
            for j, m in enumerate(self.models):
                cols[f"cost::{m}"] = self.costs[:, j]
        return pd.DataFrame(cols)

    def write(self, path: str | os.PathLike[str]) -> None:
        """Write the canonical wide layout to ``.parquet``, ``.csv`` or ``.jsonl`` (atomically)."""
        from finerouter._io import atomic_write_bytes

        path = os.fspath(path)
        frame = self.to_frame()
        if path.endswith(".parquet"):
            import io

            buf = io.BytesIO()
            frame.to_parquet(buf, index=False)
            atomic_write_bytes(path, buf.getvalue())
        elif path.endswith(".csv"):
            atomic_write_bytes(path, frame.to_csv(index=False).encode("utf-8"))
        elif path.endswith(".jsonl"):
            atomic_write_bytes(path, frame.to_json(orient="records", lines=True).encode("utf-8"))
        else:
            raise DataError(f"{path}: unknown file type; use .parquet, .csv or .jsonl")


def split_indices(
    prompts: Sequence[str], tasks: Sequence[str] | None, test_size: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Row indices of a (train, test) split by unique prompt, stratified by task when given.

    Each unique prompt text is a group; a group's stratum is the task of its first row. Within each stratum
    ``round(test_size * groups)`` groups (at least 1 when the stratum has 2 or more) go to test.
    """
    rng = np.random.default_rng(seed)
    group_of: dict[str, int] = {}
    group_rows: list[list[int]] = []
    for i, p in enumerate(prompts):
        g = group_of.setdefault(p, len(group_rows))
        if g == len(group_rows):
            group_rows.append([])
        group_rows[g].append(i)
    strata: dict[str, list[int]] = {}
    for g, rows in enumerate(group_rows):
        key = tasks[rows[0]] if tasks is not None else ""
        strata.setdefault(key, []).append(g)
    test_groups: list[int] = []
    for key in sorted(strata):
        groups = np.array(strata[key])
        rng.shuffle(groups)
        k = int(round(test_size * len(groups)))
        if len(groups) >= 2:
            k = min(max(k, 1), len(groups) - 1)
        else:
            k = 0
        test_groups.extend(groups[:k].tolist())
    is_test = np.zeros(len(group_rows), dtype=bool)
    is_test[test_groups] = True
    train = [r for g, rows in enumerate(group_rows) if not is_test[g] for r in rows]
    test = [r for g, rows in enumerate(group_rows) if is_test[g] for r in rows]
    return np.array(sorted(train), dtype=np.int64), np.array(sorted(test), dtype=np.int64)
