"""Which score mix routes best? Measured on validation data carved from each training split (never test).

For each seed: the harness's 80/20 split by unique prompt; the training part split again 80/20 (seed + 100) into
fit and validation parts (``bench/_validation.py``), optionally cut to ``--train-size`` fit prompts and run on an
enlarged pool (``--pool``: :func:`finerouter.evaluation.stress.enlarge_pool`). One default FineRouter fit
(``mixing="cv"``) gives every mix below from the same scores; one ``mixing="paper", stage1_shrinkage=False`` fit
is the paper's Eq. 5 on unshrunk task means; kNN and the best single model are the reference.

    .venv/bin/python bench/mixing_variants.py --data dcrouter --seeds 0,1,2
    .venv/bin/python bench/mixing_variants.py --data routerdc --pool --train-size 800 --seeds 0,1,2

Prints, per seed and as mean ± std over seeds, the mean true score of the routed model on the validation prompts,
and the mix the cross-validation chose.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="dcrouter", help="shared dataset name")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--pool", action="store_true", help="enlarge the pool 5x (near-duplicates + dominated models)")
    ap.add_argument("--train-size", type=int, default=None, help="cut the fit part to this many prompts")
    ap.add_argument("--cache-dir", type=Path, default=Path(".finerouter_cache"))
    args = ap.parse_args()

    from _validation import validation_parts

    from finerouter.baselines import make_router
    from finerouter.data.locate import dataset_path
    from finerouter.data.readers import read_routing_data
    from finerouter.evaluation.runner import embed_dataset
    from finerouter.evaluation.stress import enlarge_pool
    from finerouter.routing.mixing import CANDIDATE_MIXES, mix
    from finerouter.routing.router import FineRouter

    data = read_routing_data(dataset_path(args.data), name=args.data)
    emb, encoder = embed_dataset(data, None, args.cache_dir)
    if args.pool:
        data = enlarge_pool(data, seed=0)
    res: dict[str, list] = {}

    def add(key: str, value: object) -> None:
        res.setdefault(key, []).append(value)

    for seed in (int(s) for s in args.seeds.split(",")):
        parts = validation_parts(data, emb, seed)  # the test part is never read
        if args.train_size and args.train_size < parts.fit.n_prompts:
            keep = np.sort(np.random.default_rng(seed).choice(parts.fit.n_prompts, args.train_size, replace=False))
            parts.fit, parts.e_fit = parts.fit.subset(keep), parts.e_fit[keep]
            parts.overall = np.nanmean(parts.fit.scores, axis=0)
        t = time.perf_counter()
        router = FineRouter(encoder=encoder, seed=seed).fit(parts.fit, embeddings=parts.e_fit)
        add("fit seconds (default)", time.perf_counter() - t)
        scores = router.score_embeddings(parts.e_val)
        add("best single", parts.best_single())
        add("default (cv mixing, shrunk prior)", parts.quality(scores.final))
        for w in CANDIDATE_MIXES:
            add(f"mix {w}", parts.quality(mix(np.array(w), scores.stage2, scores.stage1, router.global_prior_)))
        paper = FineRouter(encoder=encoder, seed=seed, mixing="paper", stage1_shrinkage=False)
        paper.fit(parts.fit, embeddings=parts.e_fit)
        add("paper Eq. 5, unshrunk", parts.quality(paper.score_embeddings(parts.e_val).final))
        add("stage 2 alone", parts.quality(scores.stage2))
        add("stage 1 alone (shrunk)", parts.quality(scores.stage1))
        knn = make_router("knn", seed=seed).fit(parts.fit, parts.e_fit)
        add("knn", parts.quality(knn.predict_scores(parts.e_val)))
        m = router.mixing_
        add("chosen", f"{m.weights} {m.method} (gain {m.gain:+.4f} ± {m.gain_se:.4f})")
        print(f"seed {seed}: " + ", ".join(f"{k} {v[-1]:.4f}" if isinstance(v[-1], float) else f"{k} {v[-1]}"
                                            for k, v in res.items()), flush=True)
    print(f"\n{args.data}{' pool x5' if args.pool else ''}, fit size {parts.fit.n_prompts}, "
          f"{parts.fit.n_models} models, validation size {parts.val.n_prompts}")
    for key, values in res.items():
        if isinstance(values[0], float):
            print(f"{key:36s} {np.mean(values):.4f} ± {np.std(values):.4f}")
        else:
            for v in values:
                print(f"{key:36s} {v}")


if __name__ == "__main__":
    main()
