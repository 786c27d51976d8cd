"""How many models Stage 2's pruning leaves out (``QualityEstimator(prune_coverage=...)``), per shared dataset and pool.

For each shared dataset and pool (the real one, and the stress pools of ``bench/stress.py``: the 55-model blended and
judge-scored pools, the 5x enlarged pool), a seeded sample of ``--sample`` prompts, and
:func:`finerouter.quality.pruning.models_to_prune` at ``--coverage`` with two groupings: the data's own task labels
(what a router that found those tasks would use) and one group (every prompt in Others, as where discovery finds no
task). Prints the pool size and the number of models pruned for each.

    .venv/bin/python bench/pruning.py
"""

from __future__ import annotations

import argparse

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datasets", default="dcrouter,routerdc,routerbench_subset")
    ap.add_argument("--sample", type=int, default=800)
    ap.add_argument("--coverage", type=float, default=0.8)
    args = ap.parse_args()

    from finerouter.data.locate import dataset_path
    from finerouter.data.readers import read_routing_data
    from finerouter.evaluation.stress import blend_pool, enlarge_pool, judge_pool
    from finerouter.quality.pruning import models_to_prune

    print("| dataset | pool | models | pruned, the data's labels as groups | pruned, one group |")
    print("|---|---|---:|---:|---:|")
    for name in args.datasets.split(","):
        data = read_routing_data(dataset_path(name), name=name)
        labels = np.unique(np.asarray(data.tasks, dtype=str), return_inverse=True)[1]
        pools = {"real": data, "blend55": blend_pool(data, 55, seed=0), "enlarged": enlarge_pool(data, seed=0),
                 "judge55": judge_pool(data, 55, drop_labels=True, seed=0)}  # fmt: skip
        rows = np.random.default_rng(0).choice(data.n_prompts, min(args.sample, data.n_prompts), replace=False)
        for pool, d in pools.items():
            scores = np.asarray(d.scores, dtype=np.float64)[rows]
            by_label = models_to_prune(scores, labels[rows], args.coverage)
            one = models_to_prune(scores, np.zeros(rows.size, dtype=np.int64), args.coverage)
            print(f"| {name} | {pool} | {d.n_models} | {len(by_label)} | {len(one)} |", flush=True)


if __name__ == "__main__":
    main()
