"""Throughput of ``finerouter collect``: requests per second and CPU seconds per request against a slow upstream.

A fake OpenAI-compatible upstream answering after ``--delay-ms`` (200 ms) runs in its own process
(``python -m finerouter.testing.upstreams``); this process runs the :class:`~finerouter.collect.collect.Collector`
with its production transport (aiohttp), the answers store (fsync'd group commit) and a prices file, pinned to one
CPU core. For each concurrency it collects fresh prompts into a fresh folder and prints: requests, wall seconds,
requests per second, the ideal (concurrency / delay), the mean number of requests in flight (Little's law: the
recorded latencies summed over the wall time) and CPU milliseconds of this process (event loop plus the fsync
thread) per request. A short warm-up run first keeps import and first-connection costs out of the figures.

    .venv/bin/python bench/collect_throughput.py
    .venv/bin/python bench/collect_throughput.py --concurrency 1,4,16,64 --delay-ms 200 --requests-per-slot 8
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--concurrency", default="1,4,16,64")
    parser.add_argument("--delay-ms", type=float, default=200.0)
    parser.add_argument("--requests-per-slot", type=int, default=8, help="requests per concurrency slot (at least 24 in all)")
    args = parser.parse_args()

    from finerouter.collect.collect import Collector
    from finerouter.collect.prompts import Prompt, prompt_key
    from finerouter.data.prices import Prices
    from finerouter.serving.config import parse_gateway_config

    server = subprocess.Popen(
        [sys.executable, "-m", "finerouter.testing.upstreams", "--names", "model-a", "--delay-ms", str(args.delay_ms)],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        urls = json.loads(server.stdout.readline())
        if hasattr(os, "sched_setaffinity") and len(os.sched_getaffinity(0)) > 1:
            cpus = sorted(os.sched_getaffinity(0))
            os.sched_setaffinity(0, {cpus[0]})  # the collector on one core
            os.sched_setaffinity(server.pid, set(cpus[1:]))  # the upstream on the others
        upstreams = parse_gateway_config({"upstreams": {"model-a": {"base_url": urls["model-a"]}}}).upstreams
        prices = Prices({"model-a": (0.5, 1.5)})
        print(f"upstream delay {args.delay_ms:g} ms; collector on {len(os.sched_getaffinity(0))} core(s); "
              f"python {sys.version.split()[0]}")
        print("| concurrency | requests | wall s | requests/s | ideal/s | mean in flight | CPU ms / request |")
        print("|---|---|---|---|---|---|---|")
        for warm, c in [(True, 4), *((False, int(x)) for x in args.concurrency.split(","))]:
            n = max(24, c * args.requests_per_slot)
            texts = [f"run {c}{'w' if warm else ''} prompt {i}: explain the number {i * 7919 % 1000}" for i in range(n)]
            prompts = [Prompt(t, prompt_key(t)) for t in texts]
            with tempfile.TemporaryDirectory() as out:
                collector = Collector(upstreams, Path(out), prices=prices, concurrency=c)
                cpu0, t0 = time.process_time(), time.perf_counter()
                report = asyncio.run(collector.run(prompts))
                wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
                in_flight = sum(r["latency_s"] for r in collector.store.records) / wall
            assert report.answered == n and report.failed == 0, report
            if warm:
                continue
            ideal = c / (args.delay_ms / 1000.0)
            rps = n / wall
            print(f"| {c} | {n} | {wall:.2f} | {rps:.1f} | {ideal:.1f} | {in_flight:.1f} | {cpu / n * 1000:.2f} |")
    finally:
        server.terminate()
        server.wait(timeout=10)


if __name__ == "__main__":
    main()
