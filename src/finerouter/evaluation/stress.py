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

:func:`blend_pool` builds the other shape of a large pool: ``n_models`` in all, the real ones plus *blends*, each
the per-prompt mixture of two real models (on each prompt one of the two's real score, chosen at random) with a
share of its answers failed (score 0; the share drawn per blend between 0 and ``max_drop``). So the added models
have real per-prompt structure and a spread of means: a handful within a few points of the best, most far behind,
as in a pool of dozens of chat models of different strengths.

:func:`judge_pool` builds that pool as an LLM judge would score it: ``n_models`` in all, every score continuous in
[0, 1] instead of mostly 0/1. Each model's *latent* quality on a prompt is a real model's score (the real models) or
a weighted average ``w * a + (1 - w) * b`` of two real models' scores with a share of answers failed (latent 0; the
blends, as in :func:`blend_pool`); the judge then reports a Beta-distributed score whose mean is
``floor + (1 - 2 * floor) * latent`` and whose concentration is ``concentration``: a right answer gets a high score
that varies from answer to answer, a wrong one a low score that does too, and partially right answers land in
between. So the pool keeps the real per-prompt structure, the spread of strengths (a handful near the best, most far
behind), and adds the per-answer noise of judge scores, which no router can learn and which makes every ranking
a strict one (no ties). A NaN (unevaluated) score stays NaN; a blend costs ``w * cost_a + (1 - w) * cost_b``.
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


def blend_pool(
    data: RoutingDataset, n_models: int = 55, max_drop: float = 0.6, seed: int = 0
) -> RoutingDataset:
    """``data`` with blended models added until the pool holds ``n_models`` (see the module docstring).

    Blend ``k`` is named ``"<a>+<b>~blend<k>"``; on a prompt where it takes model ``a``'s score it also costs what
    ``a`` costs there. A NaN (unevaluated) score stays NaN. The real models keep their columns, first.
    """
    n_models, max_drop, scores, costs = _checked_growth(data, n_models, max_drop, "blend_pool")
    rng = np.random.default_rng(seed)
    n, m = scores.shape
    names = list(data.models)
    new_scores, new_costs = [scores], [] if costs is None else [costs]
    for k in range(n_models - m):
        a, b = rng.choice(m, size=2, replace=m < 2)
        take_a = rng.random(n) < 0.5
        blended = np.where(take_a, scores[:, a], scores[:, b])
        blended = np.where(rng.random(n) < rng.uniform(0.0, max_drop), np.where(np.isnan(blended), np.nan, 0.0),
                           blended)
        new_scores.append(blended[:, None])
        if costs is not None:
            new_costs.append(np.where(take_a, costs[:, a], costs[:, b])[:, None])
        names.append(f"{data.models[a]}+{data.models[b]}~blend{k + 1}")
    return _grown_pool(data, names, np.concatenate(new_scores, axis=1),
                       None if costs is None else np.concatenate(new_costs, axis=1), "blend",
                       {"blended_pool": {"n_models": n_models, "max_drop": max_drop, "seed": seed}})


def judge_pool(
    data: RoutingDataset,
    n_models: int = 55,
    max_drop: float = 0.6,
    floor: float = 0.1,
    concentration: float = 8.0,
    drop_labels: bool = False,
    seed: int = 0,
) -> RoutingDataset:
    """``data`` as judge-scored continuous scores, with blends added until the pool holds ``n_models``.

    See the module docstring. The real models keep their names (their scores become judge scores of their real
    ones); blend ``k`` is named ``"<a>+<b>~judge<k>"``. ``drop_labels=True`` also drops the data's coarse task
    labels, as in a pool of chat models scored on users' prompts, which carry no benchmark label.
    """
    n_models, max_drop, scores, costs = _checked_growth(data, n_models, max_drop, "judge_pool")
    floor = check_float(floor, "floor", "judge_pool", low=0.0, high=0.49)
    concentration = check_float(concentration, "concentration", "judge_pool", low=0.1)
    rng = np.random.default_rng(seed)
    n, m = scores.shape
    names = list(data.models)
    latent, new_costs = [scores], [] if costs is None else [costs]
    for k in range(n_models - m):
        a, b = rng.choice(m, size=2, replace=m < 2)
        w = rng.uniform(0.0, 1.0)
        mixed = w * scores[:, a] + (1.0 - w) * scores[:, b]
        failed = rng.random(n) < rng.uniform(0.0, max_drop)
        latent.append(np.where(failed & np.isfinite(mixed), 0.0, mixed)[:, None])
        if costs is not None:
            new_costs.append((w * costs[:, a] + (1.0 - w) * costs[:, b])[:, None])
        names.append(f"{data.models[a]}+{data.models[b]}~judge{k + 1}")
    mean = floor + (1.0 - 2.0 * floor) * np.clip(np.concatenate(latent, axis=1), 0.0, 1.0)
    known = np.isfinite(mean)
    judged = np.full(mean.shape, np.nan)
    mu = mean[known]
    judged[known] = rng.beta(mu * concentration, (1.0 - mu) * concentration)
    settings = {"n_models": n_models, "max_drop": max_drop, "floor": floor, "concentration": concentration,
                "drop_labels": drop_labels, "seed": seed}
    return _grown_pool(data, names, judged, None if costs is None else np.concatenate(new_costs, axis=1), "judge",
                       {"judge_pool": settings}, keep_labels=not drop_labels)


def _checked_growth(
    data: RoutingDataset, n_models: int, max_drop: float, owner: str
) -> tuple[int, float, np.ndarray, np.ndarray | None]:
    """``n_models`` and ``max_drop`` checked for ``owner``, and ``data``'s scores and costs as float64 arrays."""
    n_models = check_int(n_models, "n_models", owner, low=data.n_models)
    max_drop = check_float(max_drop, "max_drop", owner, low=0.0, high=1.0)
    costs = None if data.costs is None else np.asarray(data.costs, dtype=np.float64)
    return n_models, max_drop, np.asarray(data.scores, dtype=np.float64), costs


def _grown_pool(
    data: RoutingDataset, names: list[str], scores: np.ndarray, costs: np.ndarray | None, kind: str,
    meta: dict, keep_labels: bool = True,
) -> RoutingDataset:
    """``data``'s prompts with a new pool: ``names`` and their ``scores`` / ``costs``, named ``<name>+<kind><m>``."""
    return RoutingDataset(
        prompts=list(data.prompts), models=names, scores=scores, costs=costs,
        tasks=None if data.tasks is None or not keep_labels else list(data.tasks),
        ids=None if data.ids is None else list(data.ids), name=f"{data.name}+{kind}{len(names)}",
        source=data.source, meta={**data.meta, **meta},
    )  # fmt: skip


__all__ = ["blend_pool", "enlarge_pool", "judge_pool"]
