"""Does refining the data's coarse task labels help? FineRouter configurations compared on validation data.

For each seed: the harness's 80/20 split by unique prompt (stratified by task); the training part is split again
80/20 (seed + 100) into fit and validation parts; the test part is never read. Each configuration is one
FineRouter fitted on the fit part; it routes the validation prompts at tolerance 0. Printed per configuration
(mean ± std over seeds): tasks found, the largest task's share of the fit prompts, the tasks' purity (share of
a task's prompts carrying its most common coarse label, weighted by size), and the mean true score of the chosen
model (a missing score counts 0) with stage 1 alone, stage 2 alone and the final score at alpha 0.25 / 0.5 /
0.75. The best single model (chosen on the fit part), kNN (k tuned) and the coarse label's best model (the label
given at validation time) are printed for reference.

    .venv/bin/python bench/discovery_variants.py                           # dcrouter, seeds 0,1,2
    .venv/bin/python bench/discovery_variants.py --data routerdc --seeds 0,1,2
    .venv/bin/python bench/discovery_variants.py --configs '{"wd": {"quality": {"weight_decay": 1e-3}}}'
    .venv/bin/python bench/discovery_variants.py --configs '{"auto (default)": {}}'

``--configs`` takes a JSON object ``{name: FineRouter keyword arguments}`` (default: the paper's label-free
discovery against always refining the labels, and refining with fewer Leiden rounds; ``{}`` is FineRouter's
default, ``refine_task_labels="auto"``).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")

DEFAULT_CONFIGS = {
    "label-free (paper)": {"refine_task_labels": False},
    "refined": {"refine_task_labels": True},
    "refined, l=2": {"refine_task_labels": True, "discovery": {"iterations": 2}},
    "refined, l=1": {"refine_task_labels": True, "discovery": {"iterations": 1}},
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="dcrouter", help="shared dataset name")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--configs", default=None, help="JSON {name: FineRouter kwargs}")
    ap.add_argument("--cache-dir", type=Path, default=Path(".finerouter_cache"))
    args = ap.parse_args()

    from _validation import validation_parts

    from finerouter.baselines import make_router
    from finerouter.data.locate import dataset_path
    from finerouter.data.readers import read_routing_data
    from finerouter.evaluation.runner import embed_dataset
    from finerouter.routing.policy import minmax_rows
    from finerouter.routing.router import FineRouter

    configs = json.loads(args.configs) if args.configs else DEFAULT_CONFIGS
    data = read_routing_data(dataset_path(args.data), name=args.data)
    if data.tasks is None:
        raise SystemExit(f"{args.data} has no task labels: nothing to refine")
    emb, encoder = embed_dataset(data, None, args.cache_dir)
    res: dict[str, list[float]] = {}

    def add(key: str, value: float) -> None:
        res.setdefault(key, []).append(float(value))

    def norm(x: np.ndarray) -> np.ndarray:
        return np.nan_to_num(minmax_rows(x), nan=0.0)

    t_all = time.perf_counter()
    for seed in (int(s) for s in args.seeds.split(",")):
        parts = validation_parts(data, emb, seed)  # the test part is never read
        fit, val, e_fit, e_val, quality = parts.fit, parts.val, parts.e_fit, parts.e_val, parts.quality
        add("best single", parts.best_single())
        add("kNN (k tuned)", quality(make_router("knn", seed=seed).fit(fit, e_fit).predict_scores(e_val, val)))
        fit_labels, val_labels = np.asarray(fit.tasks), np.asarray(val.tasks)
        label_means = {t: np.nanmean(fit.scores[fit_labels == t], axis=0) for t in np.unique(fit_labels)}
        add("coarse label given", quality(np.stack([label_means[t] for t in val_labels])))
        for name, kwargs in configs.items():
            t = time.perf_counter()
            router = FineRouter(encoder=encoder, seed=seed, **kwargs).fit(fit, embeddings=e_fit)
            labels = router.discovery_labels_
            n_tasks = router.catalog_.n_tasks
            sizes = np.bincount(labels[labels >= 0], minlength=max(n_tasks, 1))
            purity = [np.unique(fit_labels[labels == k], return_counts=True)[1].max() for k in range(n_tasks)]
            add(f"{name} | tasks", n_tasks)
            add(f"{name} | largest task share", sizes.max() / len(labels))
            add(f"{name} | task purity", np.sum(purity) / max(sizes.sum(), 1))
            scores = router.score_embeddings(e_val)
            s1, s2 = norm(scores.stage1), norm(scores.stage2)
            add(f"{name} | stage 1 only", quality(s1))
            add(f"{name} | stage 2 only", quality(scores.stage2))
            for alpha in (0.25, 0.5, 0.75):
                add(f"{name} | alpha {alpha}", quality(alpha * s2 + (1 - alpha) * s1))
            print(f"seed {seed} {name}: fitted and scored in {time.perf_counter() - t:.0f}s", flush=True)

    seeds = len(res["best single"])
    print(f"\n{args.data}: {seeds} seeds, validation carved from each training split ({time.perf_counter() - t_all:.0f}s)")
    for key, values in res.items():
        spread = np.std(values, ddof=1) if len(values) > 1 else 0.0
        print(f"{key:50s} {np.mean(values):.4f} ± {spread:.4f}")


if __name__ == "__main__":
    main()
