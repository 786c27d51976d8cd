"""The experiment runner: repeated train/test splits by unique prompt, every router fitted on the training part
and scored on the test part, aggregated over seeds into one JSON-ready result.

Protocol, per seed ``s``:

1. split by unique prompt text, stratified by the dataset's ``task`` label
   (:func:`finerouter.data.dataset.split_indices` with ``seed=s``); test prompts with no score at all are dropped;
2. fit each router on the training part only (routers that tune hyper-parameters carve a dev part out of it);
3. route the test prompts at tolerance 0 with route-time cost estimates (:class:`finerouter.routing.costs.CostModel`
   fitted on the training part: from ``prices`` when given, else a per-model linear fit of the observed costs
   against prompt length), and score the choices against the true test scores and costs;
4. for routers that output scores, sweep ``tolerance`` over ``tolerances`` to trace a cost–quality curve.

The embeddings are computed by the caller, once per dataset (see :func:`embed_dataset`), so the runner never
embeds and adding a router does not re-embed. The per-seed records are aggregated into the result by
:mod:`finerouter.evaluation.aggregate`; :func:`clean_for_json` is re-exported from there.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from finerouter._validation import check_float, check_int
from finerouter.data.dataset import RoutingDataset
from finerouter.errors import DataError, ParameterError
from finerouter.evaluation.aggregate import (
    aggregate_seeds,
    clean_for_json,
)
from finerouter.evaluation.seeds import (
    EvaluationInputs,
    SeedSplit,
    evaluate_group,
    fit_groups,
    prepare_seed,
)

logger = logging.getLogger(__name__)

DEFAULT_TOLERANCES = tuple(float(x) for x in np.round(np.linspace(0.0, 1.0, 21), 4))
NAN_POLICY = "a chosen model without a score on the prompt counts as 0; test prompts with no score at all are dropped"

ProgressFn = Callable[[str, int, int], None]


def embed_dataset(
    dataset: RoutingDataset, encoder: Any = None, cache_dir: Any = None, *, engine: Any = None
) -> tuple[np.ndarray, Any]:
    """``((n, d) float32 embeddings, encoder)`` of every prompt, through an on-disk cache when ``cache_dir`` is set.

    Args:
        encoder: None (the packaged all-MiniLM-L6-v2), a sentence-transformers model name or path, or an Encoder.
        cache_dir: embedding cache folder (:class:`finerouter.encoders.CachedEncoder`); a second run, or one with
            more routers, reads the vectors back instead of embedding again.
        engine: where the embedding runs (:func:`finerouter.engines.embed_texts`; None: here).
    """
    from finerouter.encoders import for_corpus, get_encoder
    from finerouter.engines.embedding import embed_texts

    unique = list(dict.fromkeys(dataset.prompts))
    enc = for_corpus(get_encoder(encoder, cache_dir=cache_dir), unique)
    vectors = np.asarray(embed_texts(enc, unique, engine), dtype=np.float32)
    row = {p: i for i, p in enumerate(unique)}
    return vectors[[row[p] for p in dataset.prompts]], enc


def _seeds(seeds: int | Sequence[int]) -> list[int]:
    if isinstance(seeds, (int, np.integer)) and not isinstance(seeds, bool):
        n = check_int(seeds, "seeds", "run_evaluation", low=1)
        return list(range(n))
    out = [check_int(s, "seeds", "run_evaluation", low=0) for s in seeds]
    if not out or len(set(out)) != len(out):
        raise ParameterError(f"The 'seeds' parameter of run_evaluation must be distinct seeds. Got {list(seeds)!r}.")
    return out


def run_evaluation(
    dataset: RoutingDataset,
    embeddings: np.ndarray,
    *,
    routers: Sequence[str] | None = None,
    seeds: int | Sequence[int] = 5,
    test_size: float = 0.2,
    train_size: int | None = None,
    prices: Any = None,
    encoder: Any = None,
    router_params: dict[str, dict[str, Any]] | None = None,
    tolerances: Sequence[float] = DEFAULT_TOLERANCES,
    reference: str = "finerouter",
    progress: ProgressFn | None = None,
    engine: Any = None,
) -> dict[str, Any]:
    """Evaluate ``routers`` on ``dataset`` over several random splits; return the aggregated results.

    Args:
        dataset: the routing data.
        embeddings: ``(n, d)`` prompt embeddings, row ``i`` for ``dataset.prompts[i]``.
        routers: names from :data:`finerouter.baselines.ROUTERS` (default: all of them).
        seeds: number of splits (seeds ``0..N-1``) or the seeds themselves.
        test_size: share of unique prompts held out per split, in (0, 1).
        train_size: if given, each split's training part is cut to this many prompts (a seeded random subset;
            the test part is unchanged), for learning curves.
        prices: :class:`finerouter.data.prices.Prices` (or a CSV path) for route-time cost estimates; test costs
            come from the data (a reader given prices fills them), else from these prices.
        encoder: the encoder that produced ``embeddings`` (the FineRouter variants embed task descriptions).
        router_params: ``{router name: {hyper-parameter: value}}`` overrides.
        tolerances: values swept for the cost–quality curves, in [0, 1].
        reference: the router every other one is compared with, seed by seed (skipped when not evaluated).
        progress: optional ``f(description, done, total)`` called as routers finish.
        engine: None or a local engine: seeds and routers one after the other here. A distributed engine
            (:class:`finerouter.engines.RayEngine`): every seed x router (the FineRouter variants sharing a fit
            together) is one engine task (:mod:`finerouter.evaluation.seeds`); the results are the same.

    Returns:
        A JSON-serialisable dict: ``dataset``, ``seeds``, ``models``, ``routers`` (per router: ``quality_mean``,
        ``quality_std``, ``cost_mean``, ``per_task``, ``headroom_mean``, ``routing_distribution``, ``curve``,
        ``curve_area_mean``, ``cost_fraction_at_best_single_quality``...), ``single_models``, ``comparisons``.
    """
    from finerouter.baselines import ROUTERS

    t_start = time.perf_counter()
    if not isinstance(dataset, RoutingDataset):
        raise ParameterError(f"run_evaluation expects a RoutingDataset. Got {type(dataset).__name__}.")
    emb = np.asarray(embeddings, dtype=np.float32)
    if emb.ndim != 2 or emb.shape[0] != dataset.n_prompts:
        raise DataError(f"run_evaluation: embeddings must have shape ({dataset.n_prompts}, d); got {emb.shape}")
    seed_list = _seeds(seeds)
    test_size = check_float(test_size, "test_size", "run_evaluation", low=0.0, high=1.0, closed="neither")
    tols = [check_float(t, "tolerances", "run_evaluation", low=0.0, high=1.0) for t in tolerances]
    if train_size is not None:
        train_size = check_int(train_size, "train_size", "run_evaluation", low=10)
    names = list(routers) if routers is not None else list(ROUTERS)
    unknown = [n for n in names if n not in ROUTERS]
    if unknown:
        raise ParameterError(f"Unknown router(s) {unknown}; known routers: {list(ROUTERS)}")
    if not names:
        raise ParameterError("run_evaluation: no routers to evaluate")
    names = list(dict.fromkeys(names))
    params = router_params or {}
    if isinstance(prices, str) or hasattr(prices, "__fspath__"):
        from finerouter.data.prices import Prices

        prices = Prices.read(prices)

    per_seed: dict[str, list[dict[str, Any]]] = {n: [] for n in names}
    singles: list[dict[str, Any]] = []
    seed_meta: list[dict[str, Any]] = []
    total, done = len(seed_list) * len(names), 0
    distributed = getattr(engine, "distributed", False)
    inputs = EvaluationInputs(dataset, emb, encoder, prices, params, tols)
    units: list[tuple[SeedSplit, list[str]]] = []
    for seed in seed_list:
        split = prepare_seed(dataset, seed, test_size, train_size, prices, emb)
        singles.append(split.single)
        seed_meta.append(split.meta)
        logger.info(
            "seed %d: %d train / %d test prompts; best single %s", seed, split.meta["n_train"], split.meta["n_test"],
            split.meta["best_single_model"],
        )
        if not distributed:

            def record(name: str, rec: dict[str, Any], seed: int = seed) -> None:
                nonlocal done
                per_seed[name].append(rec)
                done += 1
                logger.info("seed %d %-20s quality %.4f (fit %.1fs)", seed, name, rec["quality"], rec["fit_seconds"])
                if progress is not None:
                    progress(f"seed {seed}: {name}", done, total)

            evaluate_group(inputs, (split, names), record)
        else:
            units.extend((split, group) for group in fit_groups(names, seed, inputs))
    if distributed:  # every (seed, group) a task; the records land in the sequential run's order
        from finerouter.engines.embedding import encoder_builder

        if encoder is not None and hasattr(encoder, "encode"):
            inner = getattr(encoder, "encoder", encoder)  # a CachedEncoder's model, rebuilt where the task runs
            inputs.encoder = encoder_builder(inner)
        # units are in seed order, so each router's records are too
        for (split, _), result in zip(units, engine.run_tasks(evaluate_group, units, shared=inputs)):
            for name, rec in result:
                per_seed[name].append(rec)
                done += 1
                if progress is not None:
                    progress(f"seed {split.seed}: {name}", done, total)

    result = aggregate_seeds(dataset, names, seed_list, per_seed, singles, seed_meta, tols, reference)
    result.update({
        "test_size": test_size,
        "train_size": train_size,
        "encoder": getattr(encoder, "name", None if encoder is None else str(encoder)),
        "cost_source": dataset.meta.get("cost_source", "data" if dataset.costs is not None else None),
        "route_cost_model": "prices" if prices is not None else ("linear" if dataset.costs is not None else "none"),
        "nan_policy": NAN_POLICY,
        "tolerances": tols,
        "elapsed_seconds": round(time.perf_counter() - t_start, 2),
        "created": time.strftime("%Y-%m-%d", time.gmtime()),
    })
    return result


__all__ = [
    "DEFAULT_TOLERANCES",
    "NAN_POLICY",
    "clean_for_json",
    "embed_dataset",
    "run_evaluation",
]
