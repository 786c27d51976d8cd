"""The task classifier and the quality estimator on a real routing dataset.

Embeds the prompts with the default encoder (through the embedding cache), discovers tasks with
``TaskDiscovery()`` defaults, splits the rows at random (train / test), then prints:

* the quality estimator's held-out MSE (MoE, general adapters only, per-model mean) and the mean score of the
  model each predictor routes to (argmax), next to the best single model and the oracle;
* the task classifier's held-out metrics on the discovered task labels (task encodings = the embeddings of the
  catalog's descriptions) and on the dataset's own benchmark labels (task encodings = the embeddings of
  "<benchmark> benchmark question").

    .venv/bin/python bench/models_real.py                      # dcrouter from ../shared/data
    .venv/bin/python bench/models_real.py --data routerdc --cache-dir .finerouter_cache
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
    ap.add_argument("--data", default="dcrouter", help="shared dataset name or a path")
    ap.add_argument("--cache-dir", type=Path, default=Path(".finerouter_cache"))
    ap.add_argument("--test-size", type=float, default=0.2)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    from finerouter.classify import TaskClassifier
    from finerouter.data.dataset import RoutingDataset
    from finerouter.data.locate import dataset_path
    from finerouter.discovery import TaskDiscovery
    from finerouter.encoders import get_encoder
    from finerouter.quality import QualityEstimator

    path = Path(args.data) if Path(args.data).exists() else dataset_path(args.data)
    data = RoutingDataset.read(path)
    encoder = get_encoder(cache_dir=args.cache_dir)
    t = time.perf_counter()
    emb = encoder.encode(data.prompts)
    print(f"{path.name}: {data.n_prompts} prompts x {data.n_models} models, embedded in {time.perf_counter() - t:.1f}s")
    disc = TaskDiscovery(seed=args.seed).fit(emb, data.scores, model_names=data.models, prompts=data.prompts)
    labels, catalog = disc.labels_, disc.catalog_
    print(f"discovery: {catalog.n_tasks} tasks, {np.mean(labels >= 0):.1%} of prompts in a task")

    rng = np.random.default_rng(args.seed)
    perm = rng.permutation(data.n_prompts)
    n_test = int(round(args.test_size * data.n_prompts))
    te, tr = perm[:n_test], perm[n_test:]
    y = np.asarray(data.scores, dtype=np.float64)

    # ---- quality estimator
    index = {name: j for j, name in enumerate(data.models)}
    candidates = [[index[c] for c in task.candidates] for task in catalog.tasks]
    t, cpu = time.perf_counter(), time.process_time()
    est = QualityEstimator(seed=args.seed).fit(emb[tr], y[tr], labels[tr], candidates)
    wall, cpu = time.perf_counter() - t, time.process_time() - cpu
    print(
        f"quality estimator fit: {wall:.1f}s wall ({cpu:.1f}s CPU, load average {os.getloadavg()[0]:.1f}); "
        f"phase 1 {est.n_epochs_general_} epochs, phase 2 {est.n_epochs_task_} epochs, "
        f"{est.tasks_specialised_}/{est.n_tasks_} tasks specialised"
    )
    obs = ~np.isnan(y[te])
    filled = np.nan_to_num(y[te])

    def mse(p: np.ndarray) -> float:
        return float(np.mean((p[obs] - y[te][obs]) ** 2))

    def routed(p: np.ndarray) -> float:
        return float(np.mean(filled[np.arange(len(te)), p.argmax(axis=1)]))

    mean = np.broadcast_to(np.nanmean(y[tr], axis=0), y[te].shape)
    moe, general = est.predict(emb[te], labels[te]), est.predict_general(emb[te])
    print(f"  held-out MSE: MoE {mse(moe):.4f}, general only {mse(general):.4f}, per-model mean {mse(mean):.4f}")
    best_single = int(np.nanargmax(np.nanmean(y[tr], axis=0)))
    print(
        f"  mean score of the routed model: MoE {routed(moe):.3f}, general only {routed(general):.3f}, "
        f"best single ({data.models[best_single]}) {float(np.mean(filled[:, best_single])):.3f}, "
        f"oracle {float(np.mean(filled.max(axis=1))):.3f}"
    )

    # ---- task classifier
    if catalog.n_tasks:
        desc = encoder.encode([task.description for task in catalog.tasks])
        clf = TaskClassifier(seed=args.seed).fit(emb[tr], labels[tr], desc)
        m = clf.evaluate(emb[te], labels[te])
        print(
            f"classifier, discovered tasks ({catalog.n_tasks}): macro-F1 {m['macro_f1']:.3f}, "
            f"accuracy {m['accuracy']:.3f}, assigned {m['assigned_share']:.3f} ({clf.n_epochs_} epochs)"
        )
    if data.tasks is not None:
        names, coarse = np.unique(np.asarray(data.tasks), return_inverse=True)
        desc = encoder.encode([f"{name} benchmark question" for name in names])
        clf = TaskClassifier(seed=args.seed).fit(emb[tr], coarse[tr], desc)
        m = clf.evaluate(emb[te], coarse[te])
        print(
            f"classifier, benchmark labels ({len(names)}): macro-F1 {m['macro_f1']:.3f}, "
            f"accuracy {m['accuracy']:.3f}, assigned {m['assigned_share']:.3f} ({clf.n_epochs_} epochs)"
        )


if __name__ == "__main__":
    main()
