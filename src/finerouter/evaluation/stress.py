"""Stress settings for the harness: enlarged model pools built from real routing data.

Users' pools hold dozens of models, a few of them close to each other and most far behind; the public datasets
hold 7-11 frontier-ish models. :func:`enlarge_pool` turns a real dataset into that regime without inventing a
score format: every real model keeps its column, and gets

* ``n_near`` near-duplicate variants, whose score on each prompt is the original's, except that with probability
  ``noise`` it is replaced by the original's score on another, random prompt (so the variant has the same score
  distribution, 0/1 or continuous, and is within a few points of the original on average);
* ``n_dominated`` clearly dominated variants, whose score on each prompt is the original's with probability
  ``keep`` and 0 otherwise (so their expected score is ``keep`` times the original's).

Variants cost what the original costs (the same column), so cost curves stay meaningful. Everything is seeded.
"""

from __future__ import annotations

import numpy as np

from finerouter._validation import check_float, check_int
from finerouter.data.dataset import RoutingDataset


def enlarge_pool(
    data: RoutingDataset,
    n_near: int = 2,
    n_dominated: int = 2,
    noise: float = 0.15,
    keep: float = 0.5,
    seed: int = 0,
) -> RoutingDataset:
    """``data`` with each model joined by ``n_near`` noisy near-duplicates and ``n_dominated`` dominated variants.

    The result has ``m * (1 + n_near + n_dominated)`` models: the originals first (same names and columns), then
    ``"<model>~near<k>"`` and ``"<model>~dom<k>"`` per model. NaN (unevaluated) scores stay NaN in every variant.
    """
    owner = "enlarge_pool"
    n_near = check_int(n_near, "n_near", owner, low=0)
    n_dominated = check_int(n_dominated, "n_dominated", owner, low=0)
    noise = check_float(noise, "noise", owner, low=0.0, high=1.0)
    keep = check_float(keep, "keep", owner, low=0.0, high=1.0)
    rng = np.random.default_rng(seed)
    scores = np.asarray(data.scores, dtype=np.float64)
    n, m = scores.shape
    names = list(data.models)
    columns = [scores]
    cost_columns = [] if data.costs is None else [np.asarray(data.costs, dtype=np.float64)]
    for kind, count in (("near", n_near), ("dom", n_dominated)):
        for k in range(count):
            if kind == "near":
                other = rng.integers(0, n, size=(n, m))
                swap = rng.random((n, m)) < noise
                variant = np.where(swap, scores[other, np.arange(m)[None, :]], scores)
                variant = np.where(np.isnan(variant), scores, variant)  # an unscored donor: keep the original
            else:
                variant = np.where(rng.random((n, m)) < keep, scores, 0.0)
            variant = np.where(np.isnan(scores), np.nan, variant)
            columns.append(variant)
            names.extend(f"{model}~{kind}{k + 1}" for model in data.models)
            if data.costs is not None:
                cost_columns.append(np.asarray(data.costs, dtype=np.float64))
    return RoutingDataset(
        prompts=list(data.prompts),
        models=names,
        scores=np.concatenate(columns, axis=1),
        costs=None if data.costs is None else np.concatenate(cost_columns, axis=1),
        tasks=None if data.tasks is None else list(data.tasks),
        ids=None if data.ids is None else list(data.ids),
        name=f"{data.name}+pool{len(names)}",
        source=data.source,
        meta={**data.meta, "enlarged_pool": {"n_near": n_near, "n_dominated": n_dominated, "noise": noise,
                                              "keep": keep, "seed": seed}},
    )


__all__ = ["enlarge_pool"]
