"""Tables with holes: the router fitted on K scored models per prompt, routed on complete test prompts.

``finerouter collect --sample-models K`` scores K of the pool's models per prompt, and a request log only the model
that answered. This benchmark takes a shared dataset, keeps K randomly drawn scores per training prompt (the
harness's split by unique prompt; seeded), fits the default router on that table and routes the test split, whose
scores stay complete (its quality is the true quality of the picks). It compares how the fit-time choices count a
pick of a model the prompt was not scored on (``--count-unscored``, several comma-separated: each is a fit):

* ``zero``: as 0, the evaluation's convention for a test prompt (the rule before 2026-12-06);
* ``mean``: as the model's mean score on the part the choice was learned on;
* ``robust``: the doubly robust value, the default (``finerouter.routing.holes.robust_truth``).

Printed per seed: the router's test quality, the best single model's (chosen on the sparse training table), the
label prior alone (each label's mean per model on the sparse table, by the classifier's beliefs: what routing by
the data's benchmarks could give) and the mixing the fit chose.

    .venv/bin/python bench/sparse_tables.py --datasets dcrouter --per-prompt 2,4 --seeds 0,1,2 \\
        --count-unscored zero,robust --out bench/results/sparse_tables
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np


def _zero(truth: np.ndarray, estimate: np.ndarray) -> np.ndarray:
    return np.nan_to_num(np.asarray(truth, dtype=np.float64), nan=0.0)


def _mean(truth: np.ndarray, estimate: np.ndarray) -> np.ndarray:
    truth = np.asarray(truth, dtype=np.float64)
    e = np.nan_to_num(np.broadcast_to(np.asarray(estimate, dtype=np.float64), truth.shape), nan=0.0)
    return np.where(np.isfinite(truth), truth, e)


def counting(rule: str) -> None:
    """Make the fit-time choices count unscored picks by ``rule`` (patches the two modules that call it)."""
    import finerouter.routing.fitting as fitting
    import finerouter.routing.mixing as mixing
    from finerouter.routing.holes import robust_truth

    fn = {"zero": _zero, "mean": _mean, "robust": robust_truth}[rule]
    mixing.robust_truth = fitting.robust_truth = fn


def sparse_copy(train: Any, per_prompt: int, seed: int) -> Any:
    """``train`` with ``per_prompt`` randomly drawn scores kept per prompt (the others NaN)."""
    rng = np.random.default_rng(seed + 31)
    scores = np.array(train.scores, dtype=np.float64)
    keep = np.zeros(scores.shape, dtype=bool)
    for i in range(scores.shape[0]):
        keep[i, rng.choice(scores.shape[1], min(per_prompt, scores.shape[1]), replace=False)] = True
    out = train.subset(np.arange(train.n_prompts))
    out.scores[...] = np.where(keep, scores, np.nan)
    return out


def run(data: Any, per_prompt: int, seed: int, rule: str, args: argparse.Namespace) -> dict[str, Any]:
    from finerouter import FineRouter
    from finerouter.evaluation.metrics import mean_quality
    from finerouter.routing.label_prior import LabelPrior

    counting(rule)
    name = data.name
    train, test = data.split(0.2, seed=seed)
    sparse = sparse_copy(train, per_prompt, seed)
    t = time.perf_counter()
    router = FineRouter(cache_dir=args.cache_dir, seed=seed).fit(sparse)
    seconds = time.perf_counter() - t
    emb = router.encoder_.encode(test.prompts)
    best = int(np.nanargmax(np.nanmean(sparse.scores, axis=0)))
    rec = {"dataset": name, "per_prompt": per_prompt, "seed": seed, "count_unscored": rule,
           "quality": mean_quality(test.scores, np.argmax(router.score_embeddings(emb).final, axis=1)),
           "best_single": mean_quality(test.scores, np.full(test.n_prompts, best)),
           "oracle": float(np.mean(np.nanmax(test.scores, axis=1))), "seconds": round(seconds, 1),
           "mixing": [{"method": r.mixing_.method, "assignment": r.mixing_.assignment,
                       "weights": {k: v for k, v in r.mixing_.weights.items() if v},
                       "oof_quality": {k: round(v, 4) for k, v in r.mixing_.oof_quality.items()},
                       "gain": r.mixing_.gain, "gain_se": r.mixing_.gain_se}
                      for r in [router, *getattr(router, "members_", [])]]}  # fmt: skip
    if sparse.tasks is not None:
        prior = LabelPrior.fit(router.encoder_.encode(sparse.prompts), sparse.tasks, sparse.scores, seed)
        rec["label_prior_alone"] = mean_quality(test.scores, np.argmax(prior.prior(emb), axis=1))
    print(f"[{name} K={per_prompt} seed {seed} {rule}] quality {rec['quality']:.4f}, best single "
          f"{rec['best_single']:.4f}, label prior alone {rec.get('label_prior_alone', float('nan')):.4f}; "
          + "; ".join(f"{m['method']} {m['assignment']} {m['weights']}" for m in rec["mixing"])
          + f" ({seconds:.0f}s)", flush=True)  # fmt: skip
    return rec


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datasets", default="dcrouter")
    ap.add_argument("--per-prompt", default="2,4", help="scores kept per training prompt")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--count-unscored", default="zero,robust")
    ap.add_argument("--cache-dir", default=".finerouter_cache")
    ap.add_argument("--out", type=Path, default=Path("bench/results/sparse_tables"))
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    from finerouter.data.locate import dataset_path
    from finerouter.data.readers import read_routing_data

    rows = []
    for name in args.datasets.split(","):
        data = read_routing_data(dataset_path(name), name=name)  # once: each run copies what it changes
        rows += [run(data, int(k), int(seed), rule, args) for k in args.per_prompt.split(",")
                 for seed in args.seeds.split(",") for rule in args.count_unscored.split(",")]  # fmt: skip
    lines = ["| dataset | scores per prompt | rule | seeds | router | best single | label prior alone | "
             "router − best single (seeds above / below) | fits falling back |",
             "|---|---:|---|---:|---:|---:|---:|---:|---:|"]
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault((r["dataset"], r["per_prompt"], r["count_unscored"]), []).append(r)
    for (name, k, rule), rs in groups.items():
        d = np.array([r["quality"] - r["best_single"] for r in rs])
        falls = sum(m["method"] == "fallback" for r in rs for m in r["mixing"])
        lines.append(f"| {name} | {k} | {rule} | {len(rs)} | {np.mean([r['quality'] for r in rs]):.4f} | "
                     f"{np.mean([r['best_single'] for r in rs]):.4f} | "
                     f"{np.mean([r.get('label_prior_alone', np.nan) for r in rs]):.4f} | {d.mean():+.4f} "
                     f"({(d > 1e-12).sum()} / {(d < -1e-12).sum()}) | {falls}/{sum(len(r['mixing']) for r in rs)} |")
    print("\n".join(lines))
    tag = "_".join([args.datasets, "k" + args.per_prompt, args.count_unscored]).replace(",", "_")
    (args.out / f"{tag}.json").write_text(json.dumps(
        {"command": "python bench/sparse_tables.py " + " ".join(sys.argv[1:]), "results": rows}, indent=1) + "\n")
    (args.out / f"{tag}.md").write_text("`python bench/sparse_tables.py " + " ".join(sys.argv[1:]) + "`\n\n"
                                        + "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
