"""Which stage-1 prior helps routing? Measured on validation data carved from each training split (never test).

For each seed: the harness's 80/20 split by unique prompt; the training part is split again 80/20 (seed + 100)
into fit and validation parts; a FineRouter is fitted on the fit part and routes the validation prompts at
tolerance 0. Compared, from one fit per configuration:

* the stage-1 prior alone and combined with stage 2 (``alpha`` 0.25 / 0.5 / 0.75), with
  - the task statistic: ``median`` (the paper) or ``mean``;
  - the assignment: ``threshold`` (best task if its probability >= 0.5, else Others) or ``argmax``;
* the discovery's Leiden iterations ``l`` (the paper's 3, or 1), given as configurations;
* stage 2 alone, the best single model (chosen on the fit part), and kNN for reference.

    .venv/bin/python bench/stage1_variants.py                                # dcrouter, seeds 0,1,2
    .venv/bin/python bench/stage1_variants.py --data routerbench_subset --seeds 0,1,2
    .venv/bin/python bench/stage1_variants.py --label-free    # the paper's discovery (as docs/models.md's table)

Prints mean ± std over seeds of the mean true score of the chosen model (a missing score counts 0).
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
    ap.add_argument("--iterations", default="3,1", help="Leiden iterations to compare")
    ap.add_argument("--cache-dir", type=Path, default=Path(".finerouter_cache"))
    ap.add_argument("--label-free", action="store_true",
                    help="the paper's label-free discovery (refine_task_labels=False); default: refine the labels")
    args = ap.parse_args()

    from _validation import validation_parts

    from finerouter.baselines import make_router
    from finerouter.data.locate import dataset_path
    from finerouter.data.readers import read_routing_data
    from finerouter.evaluation.runner import embed_dataset
    from finerouter.routing.policy import minmax_rows
    from finerouter.routing.fitting import stage1_matrix as _stage1_matrix
    from finerouter.routing.router import FineRouter

    data = read_routing_data(dataset_path(args.data), name=args.data)
    emb, encoder = embed_dataset(data, None, args.cache_dir)
    res: dict[str, list[float]] = {}

    def add(key: str, value: float) -> None:
        res.setdefault(key, []).append(value)

    for seed in (int(s) for s in args.seeds.split(",")):
        parts = validation_parts(data, emb, seed)  # the test part is never read
        fit, val, e_fit, e_val, quality = parts.fit, parts.val, parts.e_fit, parts.e_val, parts.quality
        add("best single", parts.best_single())
        add("kNN (k tuned)", quality(make_router("knn", seed=seed).fit(fit, e_fit).predict_scores(e_val, val)))
        for iters in (int(i) for i in args.iterations.split(",")):
            t = time.perf_counter()
            router = FineRouter(
                encoder=encoder, seed=seed, discovery={"iterations": iters}, refine_task_labels=not args.label_free
            ).fit(fit, embeddings=e_fit)
            scores = router.score_embeddings(e_val)
            stage2 = minmax_rows(scores.stage2)
            proba = router.classifier_.predict_proba(e_val)
            n_tasks = router.catalog_.n_tasks
            argmax = np.argmax(proba, axis=1)
            thresholded = np.where(proba[np.arange(len(argmax)), argmax] >= 0.5, argmax, n_tasks)
            tag = f"l={iters}"
            add(f"{tag} tasks", n_tasks)
            add(f"{tag} stage 2 only", quality(scores.stage2))
            for stat in ("median", "mean"):
                prior = _stage1_matrix(router.catalog_, fit.scores, router.discovery_labels_, stat)
                for assign, rows in (("threshold", thresholded), ("argmax", argmax)):
                    s1 = prior[rows]
                    add(f"{tag} {stat:6s} {assign:9s} stage 1 only", quality(s1))
                    for alpha in (0.25, 0.5, 0.75):
                        add(f"{tag} {stat:6s} {assign:9s} alpha {alpha}",
                            quality(alpha * stage2 + (1 - alpha) * minmax_rows(s1)))
            add(f"{tag} share assigned at 0.5", float(np.mean(thresholded < n_tasks)))
            print(f"seed {seed} l={iters}: fitted in {time.perf_counter() - t:.0f}s", flush=True)

    print(f"\n{args.data}: {len(res['best single'])} seeds, validation carved from each training split")
    for key, values in res.items():
        print(f"{key:45s} {np.mean(values):.4f} ± {np.std(values, ddof=1) if len(values) > 1 else 0.0:.4f}")


if __name__ == "__main__":
    main()
