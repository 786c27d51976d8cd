"""Scale benchmark for stage-1 task discovery on SYNTHETIC clustered embeddings.

For each size (default 30K, 100K and 300K prompts; 11 models; 384-d embeddings) this runs
``TaskDiscovery(knn="auto")`` -- HNSW above 20,000 prompts -- in a fresh child process and prints wall
seconds (and CPU seconds, since the machine may be shared), the child's peak resident memory (``VmHWM``, which includes the embeddings themselves), the HNSW
recall@k against exact search on a 500-prompt sample, and how well the planted sub-tasks are recovered.

The embeddings are generated once per size and cached as safetensors under ``--cache-dir`` (they stand in
for cached encoder output, so encoding time is not part of the figures). The plant: 40 domains x 8 sub-tasks
(320 fine tasks), each sub-task with its own model ranking; see :mod:`finerouter.data.synthetic`.

Usage::

    python bench/discovery_scale.py                       # 30000 100000 300000
    python bench/discovery_scale.py --sizes 30000 --json  # one size, JSON lines
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

N_DOMAINS, SUBTASKS_PER_DOMAIN = 40, 8


def _status_kib(field: str) -> int:
    with open("/proc/self/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return -1


def _peak_rss_gib() -> float:
    hwm = _status_kib("VmHWM")
    if hwm < 0:  # not Linux: fall back to getrusage (KiB on Linux, bytes on macOS)
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak / (1 << 30) if sys.platform == "darwin" else peak / (1 << 20)
    return hwm / (1 << 20)


def run_one(n: int, n_models: int, dim: int, seed: int, cache_dir: Path) -> dict:
    """Generate (or load) the inputs for ``n`` prompts, time discovery, and return the figures."""
    import numpy as np
    from sklearn.metrics import adjusted_rand_score

    from finerouter._io import load_arrays, save_arrays
    from finerouter.data.synthetic import make_synthetic_embeddings, planted_assignment, planted_scores, planted_skills
    from finerouter.discovery import TaskDiscovery

    rng = np.random.default_rng(seed)
    domain, subtask = planted_assignment(n, N_DOMAINS, SUBTASKS_PER_DOMAIN, rng)
    skills = planted_skills(N_DOMAINS, SUBTASKS_PER_DOMAIN, n_models, rng)
    scores = planted_scores(subtask, skills, rng)
    path = cache_dir / f"embeddings-n{n}-d{dim}-seed{seed}.safetensors"
    if path.is_file():
        emb = load_arrays(path)["embeddings"]
    else:
        emb = make_synthetic_embeddings(domain, subtask, dim=dim, seed=seed)
        save_arrays(path, {"embeddings": emb})
    models = [f"model-{j:02d}" for j in range(n_models)]
    rss_before = _status_kib("VmRSS") / (1 << 20)

    import resource

    def cpu() -> float:
        ru = resource.getrusage(resource.RUSAGE_SELF)
        return ru.ru_utime + ru.ru_stime

    load_before = os.getloadavg()[0]
    t0, c0 = time.perf_counter(), cpu()
    disc = TaskDiscovery(knn="auto", seed=seed).fit(emb, scores, model_names=models)
    seconds, cpu_seconds = time.perf_counter() - t0, cpu() - c0

    cat = disc.catalog_
    inside = disc.labels_ >= 0
    return {
        "n_prompts": n,
        "n_models": n_models,
        "dim": dim,
        "seconds": round(seconds, 1),
        "cpu_seconds": round(cpu_seconds, 1),
        "load_average_before": round(load_before, 2),
        "peak_rss_gib": round(_peak_rss_gib(), 2),
        "rss_before_fit_gib": round(rss_before, 2),
        "knn": disc.level_stats_[0]["knn"],
        "recall_at_k": None if disc.knn_recall_ is None else round(disc.knn_recall_, 4),
        "n_tasks": cat.n_tasks,
        "planted_subtasks": N_DOMAINS * SUBTASKS_PER_DOMAIN,
        "share_in_tasks": round(cat.share_in_tasks, 4),
        "ari_vs_planted": round(float(adjusted_rand_score(subtask[inside], disc.labels_[inside])), 4),
        "mean_candidates": round(cat.mean_candidates, 2),
        "communities_per_round": [s["communities"] for s in disc.level_stats_],
        "timings": disc.timings_,
        "threads": os.environ.get("OMP_NUM_THREADS", str(os.cpu_count())),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[30_000, 100_000, 300_000])
    ap.add_argument("--models", type=int, default=11)
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cache-dir", type=Path, default=Path(".finerouter_cache") / "bench")
    ap.add_argument("--json", action="store_true", help="print one JSON object per size instead of a table")
    ap.add_argument("--one", type=int, help=argparse.SUPPRESS)  # internal: run one size in this process
    args = ap.parse_args(argv)
    args.cache_dir.mkdir(parents=True, exist_ok=True)

    if args.one is not None:
        print(json.dumps(run_one(args.one, args.models, args.dim, args.seed, args.cache_dir)), flush=True)
        return 0

    results = []
    for n in args.sizes:
        # a fresh process per size, so the peak-memory figure belongs to that size alone
        cmd = [sys.executable, __file__, "--one", str(n), "--models", str(args.models), "--dim", str(args.dim),
               "--seed", str(args.seed), "--cache-dir", str(args.cache_dir)]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            sys.stderr.write(proc.stderr)
            return proc.returncode
        res = json.loads(proc.stdout.strip().splitlines()[-1])
        results.append(res)
        if args.json:
            print(json.dumps(res), flush=True)
        else:
            print(
                f"n={res['n_prompts']:>7,}  {res['seconds']:>7.1f} s (CPU {res['cpu_seconds']:.1f} s, load "
                f"{res['load_average_before']:.1f})  peak RSS {res['peak_rss_gib']:.2f} GiB  "
                f"{res['knn']} recall@5 {res['recall_at_k']}  tasks {res['n_tasks']} (planted "
                f"{res['planted_subtasks']})  in tasks {res['share_in_tasks']:.1%}  ARI {res['ari_vs_planted']:.3f}  "
                f"candidates {res['mean_candidates']:.2f}/{res['n_models']}  rounds {res['communities_per_round']}",
                flush=True,
            )
            print(f"           phases (s): {res['timings']}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
