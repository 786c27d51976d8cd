"""Tried, not kept: a ridge regression beside the neighbour source's nearest-neighbour means.

FineRouter's neighbour source (:mod:`finerouter.routing.neighbours`) is the router's local estimate where discovery
finds no task (judge-scored pools of dozens of models, a few hundred prompts): each model's mean score over the
prompt's ``k`` nearest training prompts. A ridge regression of each model's scores on the embedding smooths the same
scores differently (one linear trend per model through every prompt, shrunk toward the model's mean as its penalty
grows), so the average of the two might be a better local estimate. This benchmark measures that candidate,
implemented here and not in the library (in the router it did not help: docs/models.md, "Tried, not kept"). Per
shared dataset, pool, training size and seed: the harness's split by unique prompt (``prepare_seed``'s, cut to the
size), and the test part routed at tolerance 0 by

* ``best_single``: the model with the highest mean training score;
* ``knn``: each model's mean over the ``k`` nearest training prompts, ``k`` by leave-one-out (``choose_k``);
* ``ridge``: a ridge regression of each model's scores on the embedding, its penalty by exact leave-one-out
  routing quality (``choose_ridge``);
* ``local``: the two averaged half and half (``local_estimates`` below).

With ``--dev`` the routed part is a dev part carved from the training part (``bench/dev_variants.py``'s
``dev_split``: 80/20 by unique prompt, the fit part cut to the size), never the test part.

No Stage 1, Stage 2, mixing or fallback: the router's own figures come from ``bench/stress.py``. Prints each seed,
then a table of means (and paired differences from ``knn``), and writes ``--out`` JSON.

    .venv/bin/python bench/local_source.py --datasets dcrouter,routerdc,routerbench_subset --pools judge \\
        --sizes 400,800 --seeds 0,1,2,3,4
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from finerouter.routing.neighbours import neighbour_means

#: The ridge penalties :func:`choose_ridge` weighs (on unit-norm sentence embeddings, unscaled sums of squares).
RIDGE_GRID = (1.0, 3.0, 10.0, 30.0, 100.0, 300.0, 1000.0)
#: :func:`choose_ridge` chooses on at most this many training prompts (a seeded sample beyond).
RIDGE_CHOICE_PROMPTS = 20_000

ROOT = Path(__file__).resolve().parent
VARIANTS = ("best_single", "knn", "ridge", "local")


@dataclass(frozen=True)
class RidgeFit:
    """A ridge regression of each model's scores on the prompt embedding, with an unpenalised intercept:
    ``predict(x) = (x - mean_x) @ coef + mean_y``. ``mean_x`` ``(d,)``, ``coef`` ``(d, m)``, ``mean_y`` ``(m,)``
    (NaN for a model never observed, which then predicts NaN); ``penalty`` the L2 penalty it was fitted with."""

    mean_x: np.ndarray
    coef: np.ndarray
    mean_y: np.ndarray
    penalty: float

    def predict(self, queries: np.ndarray) -> np.ndarray:
        """``(q, m)`` the predicted scores of ``queries`` ``(q, d)``."""
        return (np.asarray(queries, dtype=np.float64) - self.mean_x) @ self.coef + self.mean_y[None, :]


def _centred(reference: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(mean_x, centred x, mean_y, centred y)``: a score not observed counts as its model's mean (no pull)."""
    x = np.asarray(reference, dtype=np.float64)
    scores = np.asarray(scores, dtype=np.float64)
    observed = np.isfinite(scores)
    with np.errstate(invalid="ignore", divide="ignore"):
        overall = np.where(observed, scores, 0.0).sum(axis=0) / observed.sum(axis=0)
    y = np.where(observed, scores, np.nan_to_num(overall, nan=0.0)[None, :])
    mean_x = x.mean(axis=0)
    return mean_x, x - mean_x, overall, y - np.nan_to_num(overall, nan=0.0)[None, :]


def fit_ridge(reference: np.ndarray, reference_scores: np.ndarray, penalty: float) -> RidgeFit:
    """The ridge regression of ``reference_scores`` ``(n, m)`` (NaN = not evaluated) on ``reference`` ``(n, d)``
    with L2 ``penalty`` (> 0)."""
    mean_x, xc, mean_y, yc = _centred(reference, reference_scores)
    gram = xc.T @ xc
    gram[np.diag_indices_from(gram)] += float(penalty)
    coef = np.linalg.solve(gram, xc.T @ yc)
    return RidgeFit(mean_x, coef, mean_y, float(penalty))


def choose_ridge(
    reference: np.ndarray, reference_scores: np.ndarray, grid: tuple[float, ...] = RIDGE_GRID, seed: int = 0
) -> float | None:
    """The ridge penalty of ``grid`` that routes the training prompts best, each by a fit without itself.

    The leave-one-out predictions of a ridge regression with an intercept are exact in closed form (the
    residual over one minus the prompt's leverage), so every penalty costs one pass over a thin SVD of the
    centred embeddings. Each prompt is routed to the highest predicted of its observed models and scores that
    model's true score; the highest mean wins, ties the larger penalty (the smoother fit). On more than
    :data:`RIDGE_CHOICE_PROMPTS` prompts, a seeded sample of that many chooses. None when fewer than 3 prompts or
    an empty grid leave nothing to choose on.
    """
    scores = np.asarray(reference_scores, dtype=np.float64)
    n = scores.shape[0]
    grid = tuple(sorted({float(g) for g in grid if float(g) > 0}))
    if n < 3 or not grid:
        return None
    rows = np.arange(n)
    if n > RIDGE_CHOICE_PROMPTS:
        rows = np.sort(np.random.default_rng(seed).choice(n, size=RIDGE_CHOICE_PROMPTS, replace=False))
    scores = scores[rows]
    _, xc, mean_y, yc = _centred(np.asarray(reference)[rows], scores)
    mean_y = np.nan_to_num(mean_y, nan=0.0)
    u, s, _ = np.linalg.svd(xc, full_matrices=False)
    uty = u.T @ yc
    own = np.isfinite(scores)
    routable = own.any(axis=1)
    best, best_quality = grid[0], -np.inf
    for penalty in grid:
        shrink = s**2 / (s**2 + penalty)
        fitted = u @ (shrink[:, None] * uty)  # centred fit; the intercept's leverage is 1/n
        leverage = np.einsum("ij,j,ij->i", u, shrink, u) + 1.0 / rows.size
        loo = yc - (yc - fitted) / np.maximum(1.0 - leverage, 1e-9)[:, None] + mean_y[None, :]
        pick = np.argmax(np.where(own, loo, -np.inf), axis=1)
        quality = scores[np.arange(rows.size), pick][routable].mean() if routable.any() else -np.inf
        if quality >= best_quality:  # ties: the larger penalty (the grid is ascending)
            best, best_quality = penalty, quality
    return best


def local_estimates(
    queries: np.ndarray, reference: np.ndarray, reference_scores: np.ndarray, k: int | None = None,
    ridge: RidgeFit | None = None,
) -> np.ndarray:
    """``(q, m)`` the neighbour source: :func:`neighbour_means` over ``k`` neighbours, averaged half and half with
    ``ridge``'s predictions where one is given (a model the ridge cannot predict keeps its neighbour mean); the
    neighbour mean alone without it (artifacts saved before the ridge)."""
    means = neighbour_means(queries, reference, reference_scores, k)
    if ridge is None:
        return means
    predicted = ridge.predict(queries)
    return np.where(np.isfinite(predicted), 0.5 * (means + predicted), means)


def _quality(scores: np.ndarray, picks: np.ndarray) -> float:
    """Mean true score of the picked model (an unscored pick scores as the harness counts it: nothing)."""
    from finerouter.evaluation.metrics import mean_quality

    return float(mean_quality(scores, picks))


def run_seed(data: Any, emb: np.ndarray, seed: int, size: int | None, dev: bool = False) -> dict[str, Any]:
    from finerouter.data.dataset import split_indices
    from finerouter.routing.neighbours import choose_k

    train_idx, test_idx = split_indices(data.prompts, data.tasks, 0.2, seed)
    if dev:  # bench/dev_variants.py's dev_split: the training part split 80/20 again, the test part never read
        part = data.subset(train_idx)
        fit_i, dev_i = split_indices(part.prompts, part.tasks, 0.2, seed + 17)
        if size is not None and size < fit_i.size:
            fit_i = np.sort(np.random.default_rng(seed).choice(fit_i, size, replace=False))
        train_idx, test_idx = train_idx[fit_i], train_idx[dev_i]
    elif size is not None and size < len(train_idx):  # the harness's cut (evaluation.seeds.prepare_seed)
        keep = np.random.default_rng(seed + 7).choice(len(train_idx), size=size, replace=False)
        train_idx = np.sort(train_idx[keep])
    scores = np.asarray(data.scores, dtype=np.float64)
    test_idx = test_idx[np.isfinite(scores[test_idx]).any(axis=1)]
    x, y = emb[train_idx], scores[train_idx]
    xt, yt = emb[test_idx], scores[test_idx]
    t = time.perf_counter()
    k, penalty = choose_k(x, y), choose_ridge(x, y)
    ridge = fit_ridge(x, y, penalty)
    estimates = {
        "best_single": np.broadcast_to(np.nanmean(y, axis=0), yt.shape),
        "knn": neighbour_means(xt, x, y, k),
        "ridge": ridge.predict(xt),
        "local": local_estimates(xt, x, y, k, ridge),
    }
    out: dict[str, Any] = {"seed": seed, "n_train": int(len(train_idx)), "k": int(k), "penalty": penalty,
                           "seconds": round(time.perf_counter() - t, 2)}  # fmt: skip
    for name, est in estimates.items():
        out[name] = _quality(yt, np.argmax(np.nan_to_num(est, nan=-np.inf), axis=1))
    out["oracle"] = float(np.mean(np.nanmax(yt, axis=1)))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datasets", default="dcrouter,routerdc,routerbench_subset")
    ap.add_argument("--pools", default="judge", help="comma list of: real (the data as read), judge (judge_pool, "
                    "55 models, labels dropped), blend (blend_pool, 55 models)")  # fmt: skip
    ap.add_argument("--sizes", default="400,800", help="training sizes; 'all' for the whole training part")
    ap.add_argument("--seeds", default="0,1,2,3,4")
    ap.add_argument("--dev", action="store_true", help="route a dev part carved from the training part "
                    "(bench/dev_variants.py's dev_split) instead of the test part")  # fmt: skip
    ap.add_argument("--cache-dir", type=Path, default=Path(".finerouter_cache"))
    ap.add_argument("--out", type=Path, default=ROOT / "results" / "local_source" / "results.json")
    args = ap.parse_args()

    from finerouter.data.locate import dataset_path
    from finerouter.data.readers import read_routing_data
    from finerouter.evaluation.runner import embed_dataset
    from finerouter.evaluation.stress import blend_pool, judge_pool

    sizes = [None if s == "all" else int(s) for s in args.sizes.split(",")]
    seeds = [int(s) for s in args.seeds.split(",")]
    rows: list[dict[str, Any]] = []
    for name in args.datasets.split(","):
        data = read_routing_data(dataset_path(name), name=name)
        emb, _ = embed_dataset(data, None, args.cache_dir)
        emb = np.asarray(emb, dtype=np.float64)
        for pool in args.pools.split(","):
            pooled = {"real": lambda: data, "judge": lambda: judge_pool(data, n_models=55, drop_labels=True, seed=0),
                      "blend": lambda: blend_pool(data, n_models=55, seed=0)}[pool]()  # fmt: skip
            for size in sizes:
                for seed in seeds:
                    r = {"dataset": name, "pool": pool, "size": "all" if size is None else size,
                         **run_seed(pooled, emb, seed, size, args.dev)}  # fmt: skip
                    rows.append(r)
                    print(f"{name} {pool} {r['size']} seed {seed}: k {r['k']}, penalty {r['penalty']:g}; "
                          + ", ".join(f"{v} {r[v]:.4f}" for v in VARIANTS), flush=True)  # fmt: skip
    print("\n| dataset | pool | training prompts | seeds | " + " | ".join(VARIANTS)
          + " | local − knn (seeds above / below) | local − ridge |")  # fmt: skip
    print("|---|---|---:|---:|" + "---:|" * (len(VARIANTS) + 2))
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault((r["dataset"], r["pool"], r["size"]), []).append(r)
    for (name, pool, size), rs in groups.items():
        mean = {v: float(np.mean([r[v] for r in rs])) for v in VARIANTS}
        d_knn = np.array([r["local"] - r["knn"] for r in rs])
        d_ridge = np.array([r["local"] - r["ridge"] for r in rs])
        print(f"| {name} | {pool} | {size} | {len(rs)} | " + " | ".join(f"{mean[v]:.4f}" for v in VARIANTS)
              + f" | {d_knn.mean():+.4f} ({(d_knn > 0).sum()} / {(d_knn < 0).sum()}) | {d_ridge.mean():+.4f} |")  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"settings": {k: str(v) for k, v in vars(args).items()}, "results": rows},
                                   indent=1) + "\n")  # fmt: skip


if __name__ == "__main__":
    main()
