"""How close route-time cost estimates come to the real per-prompt costs of held-out prompts.

    .venv/bin/python bench/cost_estimates.py                          # routerbench_subset, 5 seeds
    .venv/bin/python bench/cost_estimates.py --seeds 3 --test-size 0.3

For each seed the data is split by unique prompt (``split_indices``, stratified by task, as the evaluation runner
does), :class:`finerouter.routing.costs.CostModel` is fitted on the training part's costs and estimates the test
part's. No router is fitted. Printed per estimator, mean ± std over seeds:

* ``MAPE``: mean absolute percentage error of the estimated vs the real cost, over every (test prompt, model) pair
  with a real cost;
* ``spend error``: per model, |estimated total spend on the test prompts / real total spend − 1|, averaged over
  models: what a budget sees, where over- and under-estimates cancel;
* ``task spend error``: the same per (model, source task), averaged: what a budget sees when routing sends one kind
  of prompt to a model and another kind elsewhere, as cost-aware routing does.

Estimators:

* ``linear, characters``: the cost model before token counting (``cost = a + b · characters`` per model);
* ``linear, MiniLM tokens``: the same fit on the router encoder's token counts (the packaged MiniLM tokenizer),
  what a FineRouter with the default encoder fitted before the groups;
* ``linear, MiniLM tokens, groups``: that fit corrected per group of similar training prompts (k-means on the MiniLM
  embeddings, each group's shrunk mean residual per model: :class:`finerouter.routing.costs.ResidualGroups`), what
  a FineRouter fits now and the evaluation runner's route-time costs use;
* reference rows, not used for routing: ``median regression, MiniLM tokens`` (least absolute deviations on the
  same feature: a lower MAPE, but it estimates the median cost, so a batch's spend is biased low) and
  ``per-task linear (oracle tasks)``, the same linear fit per source task, using the test prompts' task labels,
  which a router does not have: how much of the error is the answer's length varying with the task.
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def _fit_lad(x: np.ndarray, y: np.ndarray, iters: int = 60) -> np.ndarray:
    """Intercept and slope minimising sum |y - a - b x| (iteratively reweighted least squares)."""
    design = np.stack([np.ones_like(x), x], axis=1)
    coef, *_ = np.linalg.lstsq(design, y, rcond=None)
    floor = 1e-9 * max(float(np.abs(y).mean()), 1e-30)
    for _ in range(iters):
        w = 1.0 / np.sqrt(np.maximum(np.abs(y - design @ coef), floor))
        coef, *_ = np.linalg.lstsq(design * w[:, None], y * w, rcond=None)
    return coef


def _errors(estimate: np.ndarray, truth: np.ndarray, tasks: np.ndarray) -> tuple[float, float, float]:
    """(MAPE over known cells, mean over models of |estimated spend / real spend - 1|, the same over (model,
    task) pairs)."""
    known = np.isfinite(truth) & (truth > 0)
    mape = float(np.mean(np.abs(estimate[known] - truth[known]) / truth[known]))
    spend, task_spend = [], []
    for j in range(truth.shape[1]):
        ok = known[:, j] & np.isfinite(estimate[:, j])
        if ok.any():
            spend.append(abs(estimate[ok, j].sum() / truth[ok, j].sum() - 1.0))
        for task in np.unique(tasks):
            rows = ok & (tasks == task)
            if rows.any():
                task_spend.append(abs(estimate[rows, j].sum() / truth[rows, j].sum() - 1.0))
    return mape, float(np.mean(spend)), float(np.mean(task_spend))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="routerbench_subset", help="a shared dataset name or a table path")
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--test-size", type=float, default=0.2)
    ap.add_argument("--cache-dir", default=".finerouter_cache", help="embedding cache (for the groups)")
    args = ap.parse_args()

    from pathlib import Path

    from finerouter.data.dataset import split_indices
    from finerouter.data.locate import dataset_path
    from finerouter.data.readers import read_routing_data
    from finerouter.encoders import for_corpus, get_encoder
    from finerouter.encoders.sentence_transformer import SentenceTransformerEncoder
    from finerouter.routing.costs import CostModel, TokenCounter, token_counter_for

    path = Path(args.data) if Path(args.data).exists() else dataset_path(args.data)
    data = read_routing_data(path)
    if data.costs is None or data.meta.get("cost_source") == "prices":
        raise SystemExit(f"{path}: no observed per-prompt costs to compare estimates with")
    counter = token_counter_for(SentenceTransformerEncoder())
    t = time.perf_counter()
    tokens = counter(data.prompts)  # counted once; CostModel counts the same way through the counter
    count_s = time.perf_counter() - t
    emb = np.asarray(for_corpus(get_encoder(None, cache_dir=args.cache_dir), data.prompts).encode(data.prompts))

    index = {p: float(n) for p, n in zip(data.prompts, tokens)}
    precounted = TokenCounter(counter.name, lambda texts: [index[text] for text in texts])
    tasks = np.asarray(data.tasks) if data.tasks is not None else np.zeros(data.n_prompts, dtype=object)
    rows: dict[str, list[tuple[float, float]]] = {}
    for seed in range(args.seeds):
        train, test = split_indices(data.prompts, data.tasks, args.test_size, seed)
        tr_prompts = [data.prompts[i] for i in train]
        te_prompts = [data.prompts[i] for i in test]
        truth = data.costs[test]
        estimates = {
            "linear, characters": CostModel.fit(data.models, tr_prompts, data.costs[train]).estimate(te_prompts),
            "linear, MiniLM tokens": CostModel.fit(
                data.models, tr_prompts, data.costs[train], token_counter=precounted
            ).estimate(te_prompts),
            "linear, MiniLM tokens, groups": CostModel.fit(
                data.models, tr_prompts, data.costs[train], token_counter=precounted, embeddings=emb[train]
            ).estimate(te_prompts, emb[test]),
        }
        lad = np.full(truth.shape, np.nan)
        per_task = np.full(truth.shape, np.nan)
        for j in range(data.n_models):
            ok = np.isfinite(data.costs[train, j])
            coef = _fit_lad(tokens[train][ok], data.costs[train][ok, j])
            lad[:, j] = np.clip(coef[0] + coef[1] * tokens[test], 0.0, None)
            for task in np.unique(tasks):
                tr_rows, te_rows = train[(tasks[train] == task) & ok], test[tasks[test] == task]
                if len(tr_rows) and len(te_rows):
                    sub = CostModel.fit([data.models[j]], [data.prompts[i] for i in tr_rows],
                                        data.costs[tr_rows, j:j + 1], token_counter=precounted)
                    per_task[tasks[test] == task, j] = sub.estimate([data.prompts[i] for i in te_rows])[:, 0]
        estimates["median regression, MiniLM tokens (reference)"] = lad
        estimates["per-task linear, oracle tasks (reference)"] = per_task
        for name, est in estimates.items():
            rows.setdefault(name, []).append(_errors(est, truth, tasks[test]))

    print(f"{data.name}: {data.n_prompts} prompts x {data.n_models} models, {args.seeds} seeds, test size "
          f"{args.test_size}; MiniLM token counts of all prompts in {count_s:.2f}s "
          f"({np.mean([len(p) for p in data.prompts]) / np.mean(tokens):.2f} characters per token)")
    print(f"{'estimator':48s} {'MAPE':>16s} {'spend error':>16s} {'task spend error':>18s}")
    for name, values in rows.items():
        arr = np.array(values)
        print(f"{name:48s} " + " ".join(f"{arr[:, k].mean():7.1%} ± {arr[:, k].std():5.1%}" for k in range(3)))


if __name__ == "__main__":
    main()
