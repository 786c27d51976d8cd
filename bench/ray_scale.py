"""Scale on Ray: embedding throughput and discovery at scale, with and without the Ray engine.

Three parts, each printed as one line per configuration (``--json``: one JSON object per line):

1. **Embedding throughput** of the real MiniLM encoder on ``--prompts`` prompts of ``../shared/data/dcrouter``
   (``FINEROUTER_DATA_DIR`` overrides the folder), into a fresh embedding cache each time: the plain path
   (``CachedEncoder.encode``), then the Ray engine with 1 and with 2 workers (each 1 CPU; the local cluster gets
   the machine's CPUs). Prompts per second count everything from the call to the vectors (for Ray: the
   pipeline, the actors loading the model, the cache writes), not the cluster's start, which is printed apart.
2. **Ray's fixed overhead** on small data: ``--small`` prompts embedded by each path (the model already loaded
   in the plain path; Ray builds its actors anew, as every job does).
3. **Discovery of ``--n`` synthetic prompts** (384-d planted embeddings and 11 models, as
   ``bench/discovery_scale.py``; cached under ``--cache-dir``), each in a fresh process: plain
   ``TaskDiscovery(knn="auto")`` (one HNSW index above 20,000 prompts), then the same with the Ray engine
   searching ``--shards`` database shards in parallel tasks (a HNSW index per shard, the top lists merged) and
   Leiden on the merged graph in the driver. Printed: wall and CPU seconds of the driver, the driver's peak RSS
   (``VmHWM``), the Ray workers' peak RSS (the largest and the sum, from ``/proc``, over the ``ray::`` processes
   of the run's cluster), tasks found, ARI against the planted sub-tasks and between the two runs.

Usage::

    python bench/ray_scale.py --n 1000000              # the full run (docs/scale.md)
    python bench/ray_scale.py --n 100000 --prompts 3000
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

N_DOMAINS, SUBTASKS_PER_DOMAIN = 40, 8
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def _status_kib(pid: int | str, field: str) -> int:
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return -1


def _ray_worker_peaks() -> list[float]:
    """Peak RSS (GiB, ``VmHWM``) of every ``ray::`` worker process of this machine (this run's cluster)."""
    peaks = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as fh:
                cmd = fh.read().split(b"\0")[0].decode("utf-8", "replace")
        except OSError:
            continue
        if cmd.startswith("ray::"):
            hwm = _status_kib(entry, "VmHWM")
            if hwm > 0:
                peaks.append(hwm / (1 << 20))
    return peaks


def _cpu() -> float:
    import resource

    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def _prompts(n: int) -> list[str]:
    from finerouter.data.locate import dataset_path
    from finerouter.data.readers import read_routing_data

    data = read_routing_data(dataset_path("dcrouter"))
    return list(dict.fromkeys(data.prompts))[:n]


def run_embedding(n_prompts: int, n_small: int) -> list[dict]:
    """Part 1 and 2 in this process: the plain path, then Ray with 1 and 2 workers."""
    import numpy as np

    from finerouter.encoders import CachedEncoder, SentenceTransformerEncoder
    from finerouter.engines import RayEngine, embed_texts
    from finerouter.engines.ray_engine import runtime_env

    texts = _prompts(n_prompts)
    small = [t + " (small)" for t in texts[:n_small]]
    out = []
    encoder = SentenceTransformerEncoder()
    encoder.encode(["warm up"])  # the plain path's model load is not part of its throughput
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        plain = CachedEncoder(encoder, Path(tmp) / "plain").encode(texts)
        seconds = time.perf_counter() - t0
        out.append({"part": "embed", "path": "plain", "workers": 1, "prompts": len(texts), "seconds": round(seconds, 2),
                    "prompts_per_s": round(len(texts) / seconds, 1)})
        t0 = time.perf_counter()
        encoder.encode(small)
        out.append({"part": "overhead", "path": "plain", "prompts": len(small),
                    "seconds": round(time.perf_counter() - t0, 2)})
        import ray

        t0 = time.perf_counter()
        ray.init(include_dashboard=False, runtime_env=runtime_env(), log_to_driver=False, configure_logging=False)
        out.append({"part": "cluster_start", "seconds": round(time.perf_counter() - t0, 2),
                    "cpus": ray.cluster_resources().get("CPU")})
        for workers in (1, 2):
            engine = RayEngine("local", workers=workers, batch_size=128)
            t0 = time.perf_counter()
            vectors = embed_texts(CachedEncoder(encoder, Path(tmp) / f"ray{workers}"), texts, engine)
            seconds = time.perf_counter() - t0
            out.append({"part": "embed", "path": "ray", "workers": workers, "prompts": len(texts),
                        "seconds": round(seconds, 2), "prompts_per_s": round(len(texts) / seconds, 1),
                        "max_abs_diff_vs_plain": float(np.abs(vectors - plain).max())})
        t0 = time.perf_counter()
        embed_texts(encoder, small, RayEngine("local", workers=1, batch_size=128))
        out.append({"part": "overhead", "path": "ray", "prompts": len(small),
                    "seconds": round(time.perf_counter() - t0, 2)})
        ray.shutdown()
    return out


def _inputs(n: int, seed: int, cache_dir: Path):
    import numpy as np

    from finerouter._io import load_arrays, save_arrays
    from finerouter.data.synthetic import make_synthetic_embeddings, planted_assignment, planted_scores, planted_skills

    rng = np.random.default_rng(seed)
    domain, subtask = planted_assignment(n, N_DOMAINS, SUBTASKS_PER_DOMAIN, rng)
    skills = planted_skills(N_DOMAINS, SUBTASKS_PER_DOMAIN, 11, rng)
    scores = planted_scores(subtask, skills, rng)
    path = cache_dir / f"embeddings-n{n}-d384-seed{seed}.safetensors"
    if path.is_file():
        emb = load_arrays(path)["embeddings"]
    else:
        emb = make_synthetic_embeddings(domain, subtask, dim=384, seed=seed)
        save_arrays(path, {"embeddings": emb})
    return emb, scores, subtask


def run_discovery(n: int, shards: int, use_ray: bool, seed: int, cache_dir: Path, labels_out: Path) -> dict:
    """Part 3, one configuration, in this (fresh) process."""
    import numpy as np
    from sklearn.metrics import adjusted_rand_score

    from finerouter.discovery import TaskDiscovery

    emb, scores, subtask = _inputs(n, seed, cache_dir)
    engine, start_s = None, 0.0
    if use_ray:
        import ray

        from finerouter.engines import RayEngine
        from finerouter.engines.ray_engine import runtime_env

        t0 = time.perf_counter()
        ray.init(include_dashboard=False, runtime_env=runtime_env(), log_to_driver=False, configure_logging=False)
        start_s = time.perf_counter() - t0
        engine = RayEngine("local", knn_shard_rows=-(-n // shards))
    models = [f"model-{j:02d}" for j in range(11)]
    load = os.getloadavg()[0]
    t0, c0 = time.perf_counter(), _cpu()
    disc = TaskDiscovery(knn="auto", seed=seed, engine=engine).fit(emb, scores, model_names=models)
    seconds, cpu = time.perf_counter() - t0, _cpu() - c0
    workers = _ray_worker_peaks() if use_ray else []
    np.save(labels_out, disc.labels_)
    inside = disc.labels_ >= 0
    return {
        "part": "discovery", "path": "ray" if use_ray else "plain", "n_prompts": n,
        "shards": shards if use_ray else 1, "seconds": round(seconds, 1), "driver_cpu_seconds": round(cpu, 1),
        "cluster_start_seconds": round(start_s, 1), "load_average_before": round(load, 2),
        "driver_peak_rss_gib": round(_status_kib("self", "VmHWM") / (1 << 20), 2),
        "worker_peak_rss_gib_max": round(max(workers), 2) if workers else None,
        "worker_peak_rss_gib_sum": round(sum(workers), 2) if workers else None,
        "ray_worker_processes": len(workers), "knn": disc.level_stats_[0]["knn"],
        "recall_at_k": None if disc.knn_recall_ is None else round(disc.knn_recall_, 4),
        "n_tasks": disc.catalog_.n_tasks, "share_in_tasks": round(disc.catalog_.share_in_tasks, 4),
        "ari_vs_planted": round(float(adjusted_rand_score(subtask[inside], disc.labels_[inside])), 4),
        "timings": disc.timings_,
    }


def _child(args: list[str]) -> dict:
    proc = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr[-4000:])
        raise SystemExit(proc.returncode)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _show(res: dict, as_json: bool) -> None:
    if as_json:
        print(json.dumps(res), flush=True)
        return
    part = res["part"]
    if part == "embed":
        extra = f"  max |diff| vs plain {res['max_abs_diff_vs_plain']:.1e}" if "max_abs_diff_vs_plain" in res else ""
        print(f"embed     {res['path']:<5} workers={res['workers']}  {res['prompts']} prompts in {res['seconds']:.1f} s"
              f" = {res['prompts_per_s']:.1f} prompts/s{extra}", flush=True)
    elif part == "overhead":
        print(f"overhead  {res['path']:<5} {res['prompts']} prompts in {res['seconds']:.2f} s", flush=True)
    elif part == "cluster_start":
        print(f"ray.init  local cluster ({res['cpus']:.0f} CPUs) started in {res['seconds']:.1f} s", flush=True)
    else:
        workers = ("" if res["worker_peak_rss_gib_max"] is None else
                   f", {res['ray_worker_processes']} Ray workers peak max {res['worker_peak_rss_gib_max']:.2f} GiB"
                   f" / sum {res['worker_peak_rss_gib_sum']:.2f} GiB")
        print(f"discovery {res['path']:<5} n={res['n_prompts']:,} shards={res['shards']}  {res['seconds']:.1f} s "
              f"(driver CPU {res['driver_cpu_seconds']:.1f} s, load {res['load_average_before']:.1f})  driver peak "
              f"{res['driver_peak_rss_gib']:.2f} GiB{workers}  {res['knn']} recall@5 {res['recall_at_k']}  tasks "
              f"{res['n_tasks']}  ARI vs planted {res['ari_vs_planted']:.3f}", flush=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=1_000_000, help="synthetic prompts for the discovery part")
    ap.add_argument("--shards", type=int, default=2, help="kNN database shards (Ray tasks) for the discovery part")
    ap.add_argument("--prompts", type=int, default=3000, help="dcrouter prompts for the embedding part")
    ap.add_argument("--small", type=int, default=64, help="prompts for Ray's fixed overhead")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--skip-embedding", action="store_true")
    ap.add_argument("--skip-discovery", action="store_true")
    ap.add_argument("--cache-dir", type=Path, default=Path(".finerouter_cache") / "bench")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--child", help=argparse.SUPPRESS)  # internal: one part in a fresh process
    args = ap.parse_args(argv)
    args.cache_dir.mkdir(parents=True, exist_ok=True)
    if args.child == "embed":
        print(json.dumps(run_embedding(args.prompts, args.small)), flush=True)
        return 0
    if args.child in ("plain", "ray"):
        labels = args.cache_dir / f"labels-{args.child}-n{args.n}.npy"
        print(json.dumps(run_discovery(args.n, args.shards, args.child == "ray", args.seed, args.cache_dir, labels)))
        return 0
    common = ["--n", str(args.n), "--shards", str(args.shards), "--seed", str(args.seed), "--cache-dir",
              str(args.cache_dir)]
    print(f"# {time.strftime('%Y-%m-%d %H:%M')} on {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}", flush=True)
    if not args.skip_embedding:
        for res in _child(["--child", "embed", "--prompts", str(args.prompts), "--small", str(args.small)]):
            _show(res, args.json)
    if not args.skip_discovery:
        for path in ("plain", "ray"):
            _show(_child(["--child", path, *common]), args.json)
        import numpy as np
        from sklearn.metrics import adjusted_rand_score

        a, b = (np.load(args.cache_dir / f"labels-{p}-n{args.n}.npy") for p in ("plain", "ray"))
        print(f"discovery plain vs ray: ARI {adjusted_rand_score(a, b):.4f} between the two labelings", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
