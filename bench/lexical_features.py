"""Does lexical signal help routing? The MiniLM embedding beside a TF-IDF projection fitted on the training prompts.

The label classifier reads benchmarks better from character n-grams than from MiniLM (``bench/label_classifier.py``:
accuracy 0.891 vs 0.874 on dcrouter, 0.923 vs 0.881 on routerdc), so the text carries signal the frozen sentence
embedding does not. This benchmark asks whether routers gain from it: each router is fitted on two prompt
representations of the same prompts and routes the same dev part,

* ``embedding``: the MiniLM sentence embedding (unit norm), what every router reads today;
* ``hybrid``: the embedding and a lexical vector side by side, each of unit norm, scaled by ``1/sqrt(2)`` so the
  result is a unit vector whose cosine is the mean of the two cosines. The lexical vector is character 2-4-gram
  TF-IDF of the prompt (``sublinear_tf``, ``min_df=2``, at most 100,000 features) projected by a truncated SVD to
  ``--svd-dim`` (128) dimensions and L2-normalised, both fitted on the fit part's prompts only.

Dev parts (``bench/_validation.py``: the harness's training split, split 80/20 again; the test part is never read),
fit part optionally cut to ``--train-size``. Routers: ``knn``, ``mlp_regressor`` (the harness's baselines), the label
prior alone (``label_prior``, where the data has task labels) and, with ``--finerouter``, the default router. Quality
is the mean true score of the routed model on the dev part (tolerance 0). Prints each seed and a table of means with
the paired gain of ``hybrid`` over ``embedding``; writes ``--out`` JSON.

    .venv/bin/python bench/lexical_features.py --datasets dcrouter,routerdc,routerbench_subset --seeds 0,1,2
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent
FEATURES = ("embedding", "hybrid")


def lexical_vectors(fit_prompts: list[str], other: list[str], dim: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``(fit, other)`` unit-norm SVD projections of character 2-4-gram TF-IDF, fitted on ``fit_prompts``."""
    from sklearn.decomposition import TruncatedSVD
    from sklearn.feature_extraction.text import TfidfVectorizer

    tfidf = TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 4), min_df=2, sublinear_tf=True, max_features=100_000)
    x_fit = tfidf.fit_transform(fit_prompts)
    svd = TruncatedSVD(n_components=min(dim, x_fit.shape[1] - 1), random_state=seed).fit(x_fit)
    out = []
    for x in (x_fit, tfidf.transform(other)):
        z = svd.transform(x)
        out.append(z / np.maximum(np.linalg.norm(z, axis=1, keepdims=True), 1e-12))
    return out[0], out[1]


def hybrid(emb: np.ndarray, lex: np.ndarray) -> np.ndarray:
    """The two unit vectors side by side over ``sqrt(2)``: a unit vector, cosine = the mean of the two cosines."""
    return (np.hstack([emb, lex]) / np.sqrt(2.0)).astype(np.float32)


def run_seed(data: Any, emb: np.ndarray, seed: int, size: int | None, svd_dim: int, routers: list[str]) -> dict:
    from _validation import validation_parts
    from finerouter.baselines import make_router
    from finerouter.routing.label_prior import LabelPrior

    parts = validation_parts(data, emb, seed)
    fit, e_fit = parts.fit, parts.e_fit
    if size is not None and size < fit.n_prompts:
        keep = np.sort(np.random.default_rng(seed).choice(fit.n_prompts, size, replace=False))
        fit, e_fit = fit.subset(keep), e_fit[keep]
    overall = np.nanmean(fit.scores, axis=0)
    truth = np.nan_to_num(parts.val.scores, nan=0.0)

    def quality(scores: np.ndarray) -> float:
        pick = np.argmax(np.nan_to_num(scores, nan=-np.inf) + 1e-9 * overall, axis=1)
        return float(truth[np.arange(len(pick)), pick].mean())

    t = time.perf_counter()
    lex_fit, lex_val = lexical_vectors(list(fit.prompts), list(parts.val.prompts), svd_dim, seed)
    feats = {"embedding": (e_fit, parts.e_val), "hybrid": (hybrid(e_fit, lex_fit), hybrid(parts.e_val, lex_val))}
    out: dict[str, Any] = {"seed": seed, "n_fit": fit.n_prompts, "n_val": parts.val.n_prompts,
                           "lexical_seconds": round(time.perf_counter() - t, 1),
                           "best_single": quality(np.broadcast_to(overall, truth.shape)),
                           "oracle": float(truth.max(axis=1).mean())}  # fmt: skip
    for feature, (x_fit, x_val) in feats.items():
        for name in routers:
            if name == "label_prior":
                prior = LabelPrior.fit(x_fit, fit.tasks, fit.scores, seed) if fit.tasks is not None else None
                if prior is None:
                    continue
                out[f"{name}/{feature}"] = quality(prior.prior(x_val))
                continue
            router = make_router(name, seed=seed).fit(fit, x_fit)
            out[f"{name}/{feature}"] = quality(router.predict_scores(x_val))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datasets", default="dcrouter,routerdc,routerbench_subset")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--train-size", type=int, default=None, help="cut the fit part to this many prompts")
    ap.add_argument("--pool", default="real", choices=("real", "judge", "blend"),
                    help="real: the data as read; judge: evaluation.stress.judge_pool (55 models, labels dropped); "
                    "blend: evaluation.stress.blend_pool (55 models)")  # fmt: skip
    ap.add_argument("--svd-dim", type=int, default=128)
    ap.add_argument("--routers", default="knn,mlp_regressor,label_prior")
    ap.add_argument("--finerouter", action="store_true", help="also the default FineRouter (slow)")
    ap.add_argument("--cache-dir", type=Path, default=Path(".finerouter_cache"))
    ap.add_argument("--out", type=Path, default=ROOT / "results" / "lexical_features" / "results.json")
    args = ap.parse_args()

    from finerouter.data.locate import dataset_path
    from finerouter.data.readers import read_routing_data
    from finerouter.evaluation.runner import embed_dataset
    from finerouter.evaluation.stress import blend_pool, judge_pool

    routers = [r for r in args.routers.split(",") if r] + (["finerouter"] if args.finerouter else [])
    rows: list[dict[str, Any]] = []
    for name in args.datasets.split(","):
        data = read_routing_data(dataset_path(name), name=name)
        emb, _ = embed_dataset(data, None, args.cache_dir)
        if args.pool == "judge":
            data = judge_pool(data, n_models=55, drop_labels=True, seed=0)
        elif args.pool == "blend":
            data = blend_pool(data, n_models=55, seed=0)
        emb = np.asarray(emb, dtype=np.float32)
        for seed in (int(s) for s in args.seeds.split(",")):
            r = {"dataset": name, "pool": args.pool,
                 **run_seed(data, emb, seed, args.train_size, args.svd_dim, routers)}  # fmt: skip
            rows.append(r)
            print(f"{name} seed {seed} ({r['n_fit']} fit / {r['n_val']} dev prompts): "
                  + ", ".join(f"{k} {v:.4f}" for k, v in r.items() if "/" in k)
                  + f"; best single {r['best_single']:.4f}, oracle {r['oracle']:.4f}", flush=True)  # fmt: skip
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps({"settings": {k: str(v) for k, v in vars(args).items()}, "results": rows},
                                           indent=1) + "\n")  # fmt: skip
    print("\n| dataset | router | seeds | embedding | hybrid | hybrid − embedding (seeds above / below) "
          "| best single |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for name in args.datasets.split(","):
        rs = [r for r in rows if r["dataset"] == name]
        for router in routers:
            pairs = [(r[f"{router}/embedding"], r[f"{router}/hybrid"]) for r in rs if f"{router}/hybrid" in r]
            if not pairs:
                continue
            a, b = np.array(pairs).T
            d = b - a
            print(f"| {name} | {router} | {len(d)} | {a.mean():.4f} | {b.mean():.4f} | {d.mean():+.4f} "
                  f"({(d > 0).sum()} / {(d < 0).sum()}) | {np.mean([r['best_single'] for r in rs]):.4f} |")


if __name__ == "__main__":
    main()
