"""How should the router choose its mix? Policies compared on validation data carved from each training split.

For each seed: the harness's 80/20 split by unique prompt; the training part split again 80/20 (seed + 100) into
fit and validation parts (``bench/_validation.py``; the test part is never read), optionally cut to
``--train-size`` fit prompts and run on an enlarged pool (``--near``/``--dominated`` variants per real model,
:func:`finerouter.evaluation.stress.enlarge_pool`). One FineRouter fit per seed (``neighbours=True``, so its
cross-validation also computes the neighbour source) gives the out-of-fold scores every policy below chooses on
(:func:`finerouter.routing.mixing.choose_weights`, exactly as ``fit`` does), and the validation scores every
policy is measured on:

* ``eq5 family``: the normalised candidate mixes only (the router before stacked mixes);
* ``+stack``: also the stacked raw-scale mix of stage 2 and stage 1 (:mod:`finerouter.routing.stacking`);
* ``+stack, stack default``: the same with the stack as the default the others must beat;
* ``+neighbours``: also the neighbour mixes and the stack with neighbours (both defaults);
* ``stack, fallback`` / ``stack+nb, fallback``: the stack (without / with the neighbour source) alone, falling back
  to the best single model unless its cross-fitted out-of-fold gain is positive;
* ``stack always`` / ``stack+nb always``: the stack fitted on all out-of-fold scores, no selection, no fallback.

kNN (the harness's baseline, k tuned on its own dev part), the best single model and the oracle are the references.

    .venv/bin/python bench/mixing_policies.py --data routerdc --train-size 800 --near 3 --dominated 4 --seeds 0,1,2
    .venv/bin/python bench/mixing_policies.py --data dcrouter --seeds 0,1,2

Prints each seed's validation quality per policy and, at the end, the mean ± std over seeds and the share of the
best-single -> oracle headroom; ``--out FILE`` also writes them as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="routerdc", help="shared dataset name")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--near", type=int, default=0, help="noisy near-duplicate variants per real model")
    ap.add_argument("--dominated", type=int, default=0, help="dominated variants per real model")
    ap.add_argument("--blend", type=int, default=0,
                    help="grow the pool to this many models with blends of two real models (blend_pool)")
    ap.add_argument("--train-size", type=int, default=None, help="cut the fit part to this many prompts")
    ap.add_argument("--cv-folds", type=int, default=None, help="the router's cv_folds (default: the router's own)")
    ap.add_argument("--cache-dir", type=Path, default=Path(".finerouter_cache"))
    ap.add_argument("--out", type=Path, default=None, help="write the per-seed figures as JSON here")
    args = ap.parse_args()

    from _validation import validation_parts

    from finerouter.baselines import make_router
    from finerouter.data.locate import dataset_path
    from finerouter.data.readers import read_routing_data
    from finerouter.evaluation.runner import embed_dataset
    from finerouter.evaluation.stress import blend_pool, enlarge_pool
    from finerouter.routing.mixing import CANDIDATE_MIXES, NEIGHBOUR_MIXES, choose_weights, routing_mix
    from finerouter.routing.neighbours import neighbour_means
    from finerouter.routing.router import FineRouter
    from finerouter.routing.stacking import fit_stack

    data = read_routing_data(dataset_path(args.data), name=args.data)
    emb, encoder = embed_dataset(data, None, args.cache_dir)
    if args.near or args.dominated:
        data = enlarge_pool(data, n_near=args.near, n_dominated=args.dominated, seed=0)
    if args.blend:
        data = blend_pool(data, n_models=args.blend, seed=0)
    res: dict[str, list[float]] = {}
    chosen: list[dict[str, str]] = []
    setting = ""

    for seed in (int(s) for s in args.seeds.split(",")):
        parts = validation_parts(data, emb, seed)
        if args.train_size and args.train_size < parts.fit.n_prompts:
            keep = np.sort(np.random.default_rng(seed).choice(parts.fit.n_prompts, args.train_size, replace=False))
            parts.fit, parts.e_fit = parts.fit.subset(keep), parts.e_fit[keep]
            parts.overall = np.nanmean(parts.fit.scores, axis=0)
        setting = (f"{args.data}, {parts.fit.n_models} models, fit size {parts.fit.n_prompts}, validation size "
                   f"{parts.val.n_prompts}")
        t = time.perf_counter()
        extra = {} if args.cv_folds is None else {"cv_folds": args.cv_folds}
        router = FineRouter(encoder=encoder, seed=seed, neighbours=True, **extra).fit(parts.fit, embeddings=parts.e_fit)
        fit_seconds = time.perf_counter() - t
        oof = router.out_of_fold_
        val = router.score_embeddings(parts.e_val)
        val_nb = neighbour_means(parts.e_val, parts.e_fit, parts.fit.scores)
        g = router.global_prior_
        row: dict[str, float] = {}
        picks: dict[str, str] = {}

        def route(weights: np.ndarray, scale: str) -> float:
            return parts.quality(routing_mix(weights, scale, val.stage2, val.stage1, g, val_nb))

        def policy(name: str, **kwargs: object) -> None:
            c = choose_weights(oof.stage2, oof.stage1, oof.global_prior, oof.truth, oof.fold,
                               neighbours=oof.neighbours, **kwargs)
            row[name] = route(c.vector(), c.scale)
            w = ", ".join(f"{v:.2f}" for v in c.vector())
            picks[name] = f"{c.method} {c.scale} ({w}) oof gain {c.gain:+.4f} ± {c.gain_se or 0:.4f}"

        base = tuple(CANDIDATE_MIXES)
        with_nb = base + tuple(NEIGHBOUR_MIXES)
        policy("eq5 family (before)", candidates=base)
        policy("+stack", candidates=base, stacks=(("stage2", "stage1"),))
        policy("+stack, stack default", candidates=base, stacks=(("stage2", "stage1"),), stack_first=True)
        policy("+neighbours", candidates=with_nb, stacks=(("stage2", "stage1"), ("stage2", "stage1", "neighbours")))
        policy("+neighbours, stack default", candidates=with_nb,
               stacks=(("stage2", "stage1", "neighbours"), ("stage2", "stage1")), stack_first=True)
        single = ((0.0, 0.0, 1.0),)
        policy("stack, fallback", candidates=single, stacks=(("stage2", "stage1"),), stack_first=True)
        policy("stack+nb, fallback", candidates=single, stacks=(("stage2", "stage1", "neighbours"),),
               stack_first=True)
        w = fit_stack({"stage2": oof.stage2, "stage1": oof.stage1}, oof.global_prior, oof.truth)
        row["stack always"] = route(w, "raw")
        picks["stack always"] = ", ".join(f"{v:.2f}" for v in w)
        w = fit_stack({"stage2": oof.stage2, "stage1": oof.stage1, "neighbours": oof.neighbours},
                      oof.global_prior, oof.truth)
        row["stack+nb always"] = route(w, "raw")
        picks["stack+nb always"] = ", ".join(f"{v:.2f}" for v in w)
        row["router as fitted"] = parts.quality(val.final)
        row["stage 2 alone"] = parts.quality(val.stage2)
        row["neighbours alone"] = parts.quality(val_nb)
        knn = make_router("knn", seed=seed).fit(parts.fit, parts.e_fit)
        row["knn (baseline)"] = parts.quality(knn.predict_scores(parts.e_val))
        row["best single"] = parts.best_single()
        row["oracle"] = float(np.nan_to_num(parts.val.scores, nan=0.0).max(axis=1).mean())
        row["fit seconds"] = fit_seconds
        for k, v in row.items():
            res.setdefault(k, []).append(v)
        chosen.append(picks)
        print(f"seed {seed}: " + ", ".join(f"{k} {v:.4f}" for k, v in row.items()), flush=True)
        print(f"  choices: {picks}", flush=True)

    best = np.asarray(res["best single"])
    span = np.asarray(res["oracle"]) - best
    print(f"\n{setting}, seeds {args.seeds}")
    print(f"{'policy':32s} {'quality':>16s} {'headroom':>9s} {'>= best single':>15s}")
    for key, values in res.items():
        v = np.asarray(values)
        if key == "fit seconds":
            print(f"{key:32s} {v.mean():10.1f}")
            continue
        head = float(np.mean((v - best) / np.where(span > 0, span, np.nan)))
        wins = int(np.sum(v >= best - 1e-12))
        print(f"{key:32s} {v.mean():.4f} ± {v.std():.4f} {head:+9.3f} {wins:>12d}/{v.size}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"setting": setting, "seeds": args.seeds, "results": res,
                                        "choices": chosen}, indent=1))


if __name__ == "__main__":
    main()
