"""Routing latency on this machine with the default encoder.

Prints, over N held-out prompts routed one at a time: the bare encoder's p50/p99, `FineRouter.route` p50/p99,
the router's overhead per prompt (everything but the encoder: classifier, quality estimator, score combination,
cost policy, the decision object) with its two largest parts and the same call with warm caches, and batch
throughput.

    .venv/bin/python bench/latency.py                      # fit on dcrouter (../shared/data), 500 prompts
    .venv/bin/python bench/latency.py --router DIR         # use a saved router instead
    .venv/bin/python bench/latency.py --train-size 1500    # a small-data router (the default: a 3-fit ensemble)
    .venv/bin/python bench/latency.py --train-size 1500 --ensemble-size 1   # the same data, one fit

The router's encoder is the bare (uncached) encoder during timing, so `route` pays the full encoder cost.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def _pct(xs: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(xs) * 1e3, q))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--router", type=Path, default=None, help="saved router directory (default: fit on --data)")
    ap.add_argument("--data", default="dcrouter", help="shared dataset name or a path")
    ap.add_argument("--n", type=int, default=500)
    ap.add_argument("--train-size", type=int, default=0, help="fit on this many training prompts (0: all)")
    ap.add_argument("--ensemble-size", default="auto", help="FineRouter's ensemble_size: auto (default) or a number")
    ap.add_argument("--cache-dir", type=Path, default=Path(".finerouter_cache"))
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = library default)")
    args = ap.parse_args()

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    from finerouter import FineRouter, RoutingDataset
    from finerouter.data.locate import dataset_path
    from finerouter.encoders import CachedEncoder, SentenceTransformerEncoder

    path = Path(args.data) if Path(args.data).exists() else dataset_path(args.data)
    data = RoutingDataset.read(path)
    train, test = data.split(test_size=0.2, seed=0)
    if args.train_size and args.train_size < len(train):
        train = train.subset(np.sort(np.random.default_rng(0).choice(len(train), args.train_size, replace=False)))
    bare = SentenceTransformerEncoder()
    if args.router is not None:
        router = FineRouter.load(args.router)
    else:
        t = time.perf_counter()
        size = args.ensemble_size if args.ensemble_size == "auto" else int(args.ensemble_size)
        router = FineRouter(encoder=CachedEncoder(bare, args.cache_dir), seed=0, ensemble_size=size).fit(train)
        print(f"fitted on {len(train)} prompts of {path.name} in {time.perf_counter() - t:.1f}s")
    router.encoder_ = bare  # time the real encoder, never the cache
    prompts = (test.prompts * (args.n // max(len(test), 1) + 1))[: args.n]

    for p in prompts[:20]:  # warm-up: model load, allocator, code paths
        router.route(p)
    enc_t, route_t, over_t = [], [], []
    for p in prompts:
        t0 = time.perf_counter()
        emb = bare.encode([p])
        t1 = time.perf_counter()
        router.route_embeddings(emb, [p])
        t2 = time.perf_counter()
        router.route(p)
        t3 = time.perf_counter()
        enc_t.append(t1 - t0)
        over_t.append(t2 - t1)
        route_t.append(t3 - t2)
    # Where the overhead goes, each timed right after encoding the prompt (as in `route`), except "warm".
    from finerouter._training import single_thread_blas

    parts: dict[str, list[float]] = {"classifier": [], "quality estimator": [], "warm route_embeddings": []}
    for p in prompts[:200]:
        emb = bare.encode([p])
        with single_thread_blas(force=True):
            t0 = time.perf_counter()
            task, _ = router.classifier_.predict(emb)
            t1 = time.perf_counter()
        parts["classifier"].append(t1 - t0)
        emb = bare.encode([p])
        with single_thread_blas(force=True):
            t0 = time.perf_counter()
            router.quality_.predict(emb, task)
            t1 = time.perf_counter()
        parts["quality estimator"].append(t1 - t0)
        router.route_embeddings(emb, [p])
        t0 = time.perf_counter()
        router.route_embeddings(emb, [p])
        parts["warm route_embeddings"].append(time.perf_counter() - t0)
    t = time.perf_counter()
    router.route(prompts)
    batch_s = time.perf_counter() - t

    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch threads {torch.get_num_threads()}")
    print(f"prompts: {len(prompts)} from {path.name} test split; encoder {bare.name}; {len(router.models_)} models, "
          f"{router.catalog_.n_tasks} tasks, {1 + len(getattr(router, 'members_', None) or [])} fit(s) averaged")
    print(f"bare encoder           p50 {_pct(enc_t, 50):7.2f} ms   p99 {_pct(enc_t, 99):7.2f} ms")
    print(f"route (single prompt)  p50 {_pct(route_t, 50):7.2f} ms   p99 {_pct(route_t, 99):7.2f} ms")
    print(f"router overhead        p50 {_pct(over_t, 50):7.3f} ms   p99 {_pct(over_t, 99):7.3f} ms   mean {np.mean(over_t) * 1e3:.3f} ms")
    for name, ts in parts.items():
        print(f"  {name:22s} p50 {_pct(ts, 50):7.3f} ms" + ("   (caches warm: the same call twice)" if "warm" in name
                                                          else "   (right after encoding)"))
    print(f"route p50 / encoder p50 = {np.percentile(route_t, 50) / np.percentile(enc_t, 50):.3f}")
    print(f"batch route: {len(prompts)} prompts in {batch_s:.2f}s = {len(prompts) / batch_s:.1f} prompts/s")


if __name__ == "__main__":
    main()
