"""How much two prompts' model rankings agree, per dataset and pool: why discovery finds no task in judge-scored pools.

Discovery keeps a k-nearest-neighbour edge only when the chance-corrected rank-biased overlap of its two prompts'
model rankings is at least ``tau`` (0.4, the paper's). For each setting this prints that RBO (p = 0.9) over random
prompt pairs and over the 5-nearest-neighbour pairs of the embedding graph (on up to 2,000 prompts, seeded): the
median, the 90th percentile and the share at least 0.4, and what ``TaskDiscovery()`` (defaults) finds on 800 of the
sampled prompts: tasks and the share of prompts in "Others". Where almost no edge reaches 0.4, the graph has no edge
left and every prompt is "Others": Stage 1 is then the global prior.

    .venv/bin/python bench/ranking_agreement.py
    .venv/bin/python bench/ranking_agreement.py --settings dcrouter,dcrouter:judge55
    .venv/bin/python bench/ranking_agreement.py --settings dcrouter:blend55,routerdc:enlarge   # the other stress pools
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))

SETTINGS = "dcrouter,routerdc,routerbench_subset,dcrouter:judge55,routerdc:judge55"


def agreement(name: str, pool: str, n_sample: int, tau: float, cache_dir: Path) -> dict[str, float]:
    from dev_variants import load_pool
    from finerouter.discovery.ranking import rank_models
    from finerouter.discovery.rbo import chance_corrected_rbo, extrapolated_rbo
    from finerouter.evaluation.runner import embed_dataset

    judge = int(pool.removeprefix("judge")) if pool.startswith("judge") else 0
    blend = int(pool.removeprefix("blend")) if pool.startswith("blend") else 0
    data = load_pool(name, blend=blend, enlarge=pool == "enlarge", judge=judge, drop_labels=bool(judge))
    rng = np.random.default_rng(0)
    idx = rng.choice(data.n_prompts, min(data.n_prompts, n_sample), replace=False)
    ranks = rank_models(data.scores[idx])
    m = data.n_models

    def rbo(u: np.ndarray, v: np.ndarray) -> np.ndarray:
        return chance_corrected_rbo(extrapolated_rbo(ranks[u], ranks[v], 0.9), m, 0.9)

    a, b = rng.integers(0, idx.size, 20_000), rng.integers(0, idx.size, 20_000)
    random_pairs = rbo(a[a != b], b[a != b])
    emb, _ = embed_dataset(data, None, cache_dir)
    e = emb[idx]
    sims = e @ e.T
    np.fill_diagonal(sims, -np.inf)
    near = np.argsort(-sims, axis=1)[:, :5]
    knn_pairs = rbo(np.repeat(np.arange(idx.size), 5), near.ravel())
    from finerouter.discovery import TaskDiscovery

    sub = np.arange(min(800, idx.size))
    found = TaskDiscovery().fit(e[sub], data.scores[idx][sub], model_names=data.models).catalog_
    out = {"models": m, "tasks": found.n_tasks, "others_share": found.others.size / sub.size}
    for label, values in (("random", random_pairs), ("knn", knn_pairs)):
        out[f"{label}_median"] = float(np.median(values))
        out[f"{label}_q90"] = float(np.quantile(values, 0.9))
        out[f"{label}_share_at_tau"] = float(np.mean(values >= tau))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--settings", default=SETTINGS,
                    help="dataset or dataset:judge<M> / dataset:blend<M> / dataset:enlarge, comma-separated")
    ap.add_argument("--sample", type=int, default=2000)
    ap.add_argument("--tau", type=float, default=0.4)
    ap.add_argument("--cache-dir", type=Path, default=Path(".finerouter_cache"))
    args = ap.parse_args()
    print(f"| setting | models | random pairs: median / q90 / share >= {args.tau} | 5-NN edges: median / q90 / share "
          f">= {args.tau} | tasks found on 800 prompts (Others) |\n|---|---:|---|---|---|")
    for setting in [s.strip() for s in args.settings.split(",") if s.strip()]:
        name, _, pool = setting.partition(":")
        r = agreement(name, pool, args.sample, args.tau, args.cache_dir)
        print(f"| {setting} | {r['models']} | {r['random_median']:.3f} / {r['random_q90']:.3f} / "
              f"{r['random_share_at_tau']:.3f} | {r['knn_median']:.3f} / {r['knn_q90']:.3f} / "
              f"{r['knn_share_at_tau']:.3f} | {r['tasks']} ({r['others_share']:.0%}) |", flush=True)


if __name__ == "__main__":
    main()
