"""Neighbour means shrunk toward each model's overall mean: does a pseudo-count help the neighbour source?

The neighbour source (:mod:`finerouter.routing.neighbours`) estimates a model's score on a prompt by its mean over
the prompt's ``k`` nearest training prompts that observed it. A model observed on fewer of them (a table with holes:
not every model answered every prompt) gets a noisier mean, and the highest of 55 noisy means is often a model that
was merely lucky (the winner's curse). Shrinking each mean toward the model's overall mean with a pseudo-count ``c``,
``(sum + c * overall) / (count + c)``, pulls thinly observed means back more; on a complete table it mixes every
local mean with the model's global mean by the same factor.

Per dataset, pool (``real``, ``judge``: 55 judge-scored models without labels), training size and seed: a dev part
carved from the training split (``bench/dev_variants.py``'s ``dev_split``; never the test part) routed at tolerance 0
by ``best_single``, ``knn`` (raw means, ``k`` by leave-one-out: ``choose_k``) and ``shrunk`` (``k`` and ``c`` by
the same leave-one-out routing quality over a grid). With ``--holes F`` a fifth of the models lose a share ``F`` of
their scores in the fit part (at random); the dev part keeps every score, so quality is the true quality of the pick.

    .venv/bin/python bench/neighbour_shrinkage.py --datasets dcrouter,routerdc,routerbench_subset --pools judge \\
        --sizes 800 --seeds 0,1,2,3,4 [--holes 0.4]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from dev_variants import dev_split  # noqa: E402

from finerouter.routing.neighbours import K_GRID, _filled, _means, choose_k, neighbour_means  # noqa: E402

#: Pseudo-counts weighed by :func:`choose_k_c` (0: the raw means).
C_GRID = (0.0, 2.0, 5.0, 10.0, 20.0, 40.0, 80.0)
VARIANTS = ("best_single", "knn", "shrunk")


def _shrunk(sums: np.ndarray, counts: np.ndarray, overall: np.ndarray, c: float) -> np.ndarray:
    """The neighbour means (``neighbours._means``) with pseudo-count ``c`` toward ``overall``."""
    return _means(sums, counts, overall) if c == 0 else (sums + c * overall[None, :]) / (counts + c)


def choose_k_c(reference: np.ndarray, scores: np.ndarray) -> tuple[int, float]:
    """``(k, c)`` whose shrunk neighbour means route the training prompts best, leave-one-out (as ``choose_k``:
    each prompt by its ``k`` nearest other prompts, among its observed models; ties to the smaller ``k`` and ``c``)."""
    n = reference.shape[0]
    ks = sorted({min(int(k), n - 1) for k in K_GRID})
    observed, filled, overall = _filled(scores)
    sims = reference @ reference.T
    np.fill_diagonal(sims, -np.inf)
    top = np.argpartition(-sims, ks[-1] - 1, axis=1)[:, :ks[-1]]
    top = np.take_along_axis(top, np.argsort(-np.take_along_axis(sims, top, axis=1), axis=1), axis=1)
    sums, counts = np.cumsum(filled[top], axis=1), np.cumsum(observed[top], axis=1)
    best, best_q = (ks[0], 0.0), -np.inf
    for k in ks:
        for c in C_GRID:
            means = _shrunk(sums[:, k - 1], counts[:, k - 1], overall, c)
            pick = np.argmax(np.where(observed, means, -np.inf), axis=1)
            q = filled[np.arange(n), pick][observed.any(axis=1)].mean()
            if q > best_q + 1e-12:
                best, best_q = (k, c), q
    return best


def shrunk_means(queries: np.ndarray, reference: np.ndarray, scores: np.ndarray, k: int, c: float) -> np.ndarray:
    observed, filled, overall = _filled(scores)
    sims = queries @ reference.T
    top = np.argpartition(-sims, k - 1, axis=1)[:, :k]
    return _shrunk(filled[top].sum(axis=1), observed[top].sum(axis=1), overall, c)


def quality(truth: np.ndarray, est: np.ndarray) -> float:
    picks = np.argmax(np.nan_to_num(est, nan=-np.inf), axis=1)
    return float(np.nan_to_num(truth, nan=0.0)[np.arange(picks.size), picks].mean())


def run_seed(data: Any, emb_of: dict[str, np.ndarray], seed: int, size: int, holes: float) -> dict[str, Any]:
    fit, dev = dev_split(data, seed, 0.2, size)
    x = np.stack([emb_of[p] for p in fit.prompts]).astype(np.float32)
    xd = np.stack([emb_of[p] for p in dev.prompts]).astype(np.float32)
    y = np.array(fit.scores, dtype=np.float64)
    if holes:
        rng = np.random.default_rng(seed + 1000)
        holed = rng.choice(y.shape[1], max(1, y.shape[1] // 5), replace=False)
        for j in holed:
            y[rng.random(y.shape[0]) < holes, j] = np.nan
    truth = np.asarray(dev.scores, dtype=np.float64)
    k = choose_k(x, y)
    k2, c = choose_k_c(x, y)
    est = {"best_single": np.broadcast_to(np.nanmean(y, axis=0), truth.shape),
           "knn": neighbour_means(xd, x, y, k), "shrunk": shrunk_means(xd, x, y, k2, c)}  # fmt: skip
    return {"seed": seed, "k": k, "k_c": [k2, c], **{v: quality(truth, e) for v, e in est.items()}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datasets", default="dcrouter,routerdc,routerbench_subset")
    ap.add_argument("--pools", default="judge")
    ap.add_argument("--sizes", default="800")
    ap.add_argument("--seeds", default="0,1,2,3,4")
    ap.add_argument("--holes", type=float, default=0.0)
    ap.add_argument("--cache-dir", type=Path, default=Path(".finerouter_cache"))
    ap.add_argument("--out", type=Path, default=Path("bench/results/neighbour_shrinkage/results.json"))
    args = ap.parse_args()
    from finerouter.data.locate import dataset_path
    from finerouter.data.readers import read_routing_data
    from finerouter.evaluation.runner import embed_dataset
    from finerouter.evaluation.stress import judge_pool

    rows = []
    for name in args.datasets.split(","):
        data = read_routing_data(dataset_path(name), name=name)
        emb, _ = embed_dataset(data, None, args.cache_dir)
        emb_of = dict(zip(data.prompts, np.asarray(emb, dtype=np.float32)))
        for pool in args.pools.split(","):
            pooled = data if pool == "real" else judge_pool(data, n_models=55, drop_labels=True, seed=0)
            for size in [int(s) for s in args.sizes.split(",")]:
                for seed in [int(s) for s in args.seeds.split(",")]:
                    r = {"dataset": name, "pool": pool, "size": size, "holes": args.holes,
                         **run_seed(pooled, emb_of, seed, size, args.holes)}  # fmt: skip
                    rows.append(r)
                    print(f"{name} {pool} {size} seed {seed}: k {r['k']}, (k, c) {r['k_c']}; "
                          + ", ".join(f"{v} {r[v]:.4f}" for v in VARIANTS), flush=True)  # fmt: skip
    print(f"\nholes {args.holes}\n| dataset | pool | fit prompts | seeds | " + " | ".join(VARIANTS)
          + " | shrunk − knn (seeds above / below) |\n|---|---|---:|---:|" + "---:|" * (len(VARIANTS) + 1))
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault((r["dataset"], r["pool"], r["size"]), []).append(r)
    for (name, pool, size), rs in groups.items():
        d = np.array([r["shrunk"] - r["knn"] for r in rs])
        print(f"| {name} | {pool} | {size} | {len(rs)} | "
              + " | ".join(f"{np.mean([r[v] for r in rs]):.4f}" for v in VARIANTS)
              + f" | {d.mean():+.4f} ({(d > 1e-12).sum()} / {(d < -1e-12).sum()}) |", flush=True)  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"command": "python bench/neighbour_shrinkage.py " + " ".join(sys.argv[1:]),
                                    "results": rows}, indent=1) + "\n")  # fmt: skip


if __name__ == "__main__":
    main()
