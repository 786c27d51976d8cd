"""Training time of the Stage-2 quality estimator and the task classifier at the paper's scale.

SYNTHETIC data (no text, no encoder): cached-embedding-like vectors (384-d, L2-normalised) in ``--tasks``
clusters plus an Others share, ``--models`` models whose scores depend on the cluster and on the prompt, ~5% NaN,
and ``--tasks`` tasks of 2-5 candidate models (mean ~3.5, as the paper's 332 tasks with 3.55 candidates).
Prints each phase's wall time and epochs run, held-out MSE against the per-model mean predictor, the
classifier's training time and held-out macro-F1, single-prompt inference latency (median of many calls) and
batch throughput, and peak memory.

    .venv/bin/python bench/train_scale.py                          # 300K prompts x 11 models, 300 tasks
    .venv/bin/python bench/train_scale.py --n 20000 --tasks 40     # a quick run

Epochs and batch sizes are chosen for the CPU budget (target: Stage-2 training <= 15 min on 2 cores); the
library defaults (batch 256, 30 + 20 epochs) are meant for datasets of a few thousand prompts.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import time

import numpy as np


def make_data(n: int, d: int, m: int, n_tasks: int, others: float, seed: int):
    """Synthetic (embeddings, scores, task labels, candidates, centres)."""
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((n_tasks, d)).astype(np.float32)
    centers /= np.linalg.norm(centers, axis=1, keepdims=True)
    labels = rng.integers(0, n_tasks, n)
    emb = np.empty((n, d), dtype=np.float32)
    for start in range(0, n, 50_000):  # blocks keep the temporary float64 noise small
        sl = slice(start, start + 50_000)
        emb[sl] = centers[labels[sl]] + (0.6 / np.sqrt(d)) * rng.standard_normal((len(labels[sl]), d)).astype(
            np.float32
        )
    is_other = rng.random(n) < others
    emb[is_other] = rng.standard_normal((int(is_other.sum()), d)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    labels[is_other] = -1
    skill = rng.uniform(0.2, 0.8, (n_tasks + 1, m)).astype(np.float32)
    direction = rng.standard_normal((m, d)).astype(np.float32) / np.sqrt(d) * 4
    base = skill[np.where(labels >= 0, labels, n_tasks)]
    scores = np.clip(
        base + 0.15 * np.tanh(emb @ direction.T) + 0.08 * rng.standard_normal((n, m)).astype(np.float32), 0, 1
    )
    scores[rng.random((n, m)) < 0.05] = np.nan
    sizes = rng.integers(2, 6, n_tasks)  # 2..5 candidates, mean 3.5
    candidates = [list(np.argsort(-skill[t])[: sizes[t]].astype(int)) for t in range(n_tasks)]
    return emb, scores.astype(np.float32), labels.astype(np.int64), candidates, centers


def median_latency(fn, repeats: int) -> float:
    for _ in range(20):
        fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return float(np.median(times))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=300_000, help="training prompts (plus --test held out)")
    ap.add_argument("--test", type=int, default=10_000)
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--models", type=int, default=11)
    ap.add_argument("--tasks", type=int, default=300)
    ap.add_argument("--others", type=float, default=0.3, help="share of Others prompts")
    ap.add_argument("--epochs-general", type=int, default=6)
    ap.add_argument("--epochs-task", type=int, default=6)
    ap.add_argument(
        "--batch-size",
        type=int,
        default=1024,
        help="phase 1 prompts per step (phase 2: chunks of batch/2, at most 128)",
    )
    ap.add_argument("--clf-epochs", type=int, default=8)
    ap.add_argument("--clf-batch-size", type=int, default=2048)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    import logging

    import torch

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    from finerouter.classify import TaskClassifier
    from finerouter.quality import QualityEstimator

    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"torch {torch.__version__} ({torch.get_num_threads()} threads)"
    )
    t = time.perf_counter()
    emb, scores, labels, cands, centers = make_data(
        args.n + args.test, args.dim, args.models, args.tasks, args.others, args.seed
    )
    tr, te = slice(0, args.n), slice(args.n, args.n + args.test)
    print(
        f"data: {args.n} train + {args.test} test prompts x {args.models} models, d={args.dim}, "
        f"{args.tasks} tasks, {sum(map(len, cands)) / len(cands):.2f} candidates per task "
        f"(generated in {time.perf_counter() - t:.1f}s)"
    )

    # ---- Stage 2: quality estimator
    est = QualityEstimator(
        epochs_general=args.epochs_general, epochs_task=args.epochs_task, batch_size=args.batch_size, seed=args.seed
    )
    t, cpu = time.perf_counter(), time.process_time()
    est.fit(emb[tr], scores[tr], labels[tr], cands)
    total, cpu = time.perf_counter() - t, time.process_time() - cpu
    print(
        f"stage-2 fit: {total:.1f}s wall ({cpu:.1f}s CPU, load average {os.getloadavg()[0]:.1f}) = "
        f"phase 1 (general) {est.fit_seconds_['general']:.1f}s "
        f"[{est.n_epochs_general_}/{args.epochs_general} epochs] + phase 2 (task adapters) "
        f"{est.fit_seconds_['task']:.1f}s [{est.n_epochs_task_}/{args.epochs_task} epochs, "
        f"{est.n_slots_} adapters, {est.tasks_specialised_}/{est.n_tasks_} tasks specialised], "
        f"batch {args.batch_size}"
    )
    obs = ~np.isnan(scores[te])
    mean_pred = np.broadcast_to(np.nanmean(scores[tr], axis=0), scores[te].shape)

    def mse(p: np.ndarray) -> float:
        return float(np.mean((p[obs] - scores[te][obs]) ** 2))

    t = time.perf_counter()
    pred = est.predict(emb[te], labels[te])
    batch_s = time.perf_counter() - t
    print(
        f"held-out MSE: MoE {mse(pred):.5f}, general adapters only {mse(est.predict_general(emb[te])):.5f}, "
        f"per-model mean {mse(mean_pred):.5f}"
    )

    # ---- Stage 1: task classifier
    clf = TaskClassifier(epochs=args.clf_epochs, batch_size=args.clf_batch_size, seed=args.seed)
    desc = centers + (0.5 / np.sqrt(args.dim)) * np.random.default_rng(1).standard_normal(centers.shape).astype(
        np.float32
    )
    t, cpu = time.perf_counter(), time.process_time()
    clf.fit(emb[tr], labels[tr], desc)
    clf_s, cpu = time.perf_counter() - t, time.process_time() - cpu
    m = clf.evaluate(emb[te], labels[te])
    print(
        f"classifier fit: {clf_s:.1f}s wall ({cpu:.1f}s CPU) [{clf.n_epochs_}/{args.clf_epochs} epochs, "
        f"batch {args.clf_batch_size}], "
        f"held-out macro-F1 {m['macro_f1']:.3f}, assigned {m['assigned_share']:.3f}, accuracy {m['accuracy']:.3f}"
    )

    # ---- inference latency
    task_rows = np.flatnonzero(labels[te] >= 0)
    i = args.n + int(task_rows[0])
    e1, l1 = emb[i : i + 1], labels[i : i + 1]
    q_task = median_latency(lambda: est.predict(e1, l1), 3000)
    q_other = median_latency(lambda: est.predict(e1, np.array([-1])), 3000)
    c_one = median_latency(lambda: clf.predict(e1), 3000)
    print(
        f"single prompt (median): quality.predict {q_task * 1e3:.3f} ms (task prompt), "
        f"{q_other * 1e3:.3f} ms (Others); classifier.predict {c_one * 1e3:.3f} ms"
    )
    print(f"batch: quality.predict {args.test} prompts in {batch_s:.2f}s ({args.test / batch_s:.0f} prompts/s)")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 / 1024
    print(f"peak RSS: {peak:.2f} GiB")


if __name__ == "__main__":
    main()
