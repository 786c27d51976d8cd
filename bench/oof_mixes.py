"""Each candidate mix's out-of-fold routing quality in one fit's mixing cross-validation, per fold.

Fits one FineRouter (one fit, the neighbour source offered) on a dev-variants fit part (``bench/dev_variants.py``'s
split: the harness's training part, split again, cut to ``--train-size``; ``--judge N`` a judge-scored pool without
labels) and prints, from ``router.out_of_fold_``, the routing quality of every candidate mix on the training prompts
(each scored by a router fitted without its fold), overall and per fold, next to the choice the cross-validation
made and the router's quality on the dev part. It shows how far apart the folds are compared with the gains the
mixing must tell apart.

    .venv/bin/python bench/oof_mixes.py --dataset routerdc --judge 55 --train-size 800 --seed 1
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))


def main() -> None:
    from dev_variants import dev_split, load_pool
    from finerouter import FineRouter
    from finerouter.evaluation.metrics import mean_quality
    from finerouter.routing.mixing import CANDIDATE_MIXES, NEIGHBOUR_MIXES, mix

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default="routerdc")
    ap.add_argument("--judge", type=int, default=0)
    ap.add_argument("--train-size", type=int, default=800)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cache-dir", type=Path, default=Path(".finerouter_cache"))
    args = ap.parse_args()
    data = load_pool(args.dataset, judge=args.judge, drop_labels=bool(args.judge))
    fit, dev = dev_split(data, args.seed, 0.2, args.train_size)
    router = FineRouter(cache_dir=args.cache_dir, seed=args.seed, neighbours=True, ensemble_size=1).fit(fit)
    summary = router.fit_summary_["mixing"]
    print(json.dumps({k: summary.get(k) for k in ("weights", "method", "oof_quality", "gain", "gain_se",
                                                   "neighbour_k", "folds")}, default=float))  # fmt: skip
    oof = router.out_of_fold_
    folds = np.unique(oof.fold)
    print("| mix (stage 2, stage 1, global, neighbours) | out of fold | " + " | ".join(f"fold {f}" for f in folds)
          + " |\n|---|---:|" + "---:|" * folds.size)
    for weights in CANDIDATE_MIXES + NEIGHBOUR_MIXES:
        w = np.array(list(weights) + [0.0] * (4 - len(weights)))
        pick = np.argmax(mix(w, oof.stage2, oof.stage1, oof.global_prior[0], oof.neighbours), axis=1)
        per_fold = [mean_quality(oof.truth[oof.fold == f], pick[oof.fold == f]) for f in folds]
        print(f"| {tuple(float(x) for x in w)} | {mean_quality(oof.truth, pick):.4f} | "
              + " | ".join(f"{q:.4f}" for q in per_fold) + " |")
    emb = router.encoder_.encode(dev.prompts)
    best = int(np.argmax(np.nanmean(fit.scores, axis=0)))
    print(f"dev part: router {mean_quality(dev.scores, np.argmax(router.score_embeddings(emb).final, axis=1)):.4f}, "
          f"best single {mean_quality(dev.scores, np.full(dev.n_prompts, best)):.4f}")


if __name__ == "__main__":
    main()
