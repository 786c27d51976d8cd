"""What routing very long prompts costs: time per prompt and resident memory before and after.

    .venv/bin/python bench/long_prompts.py --n 40 --chars 1000000

Fits a small router on synthetic data with the packaged MiniLM (or loads ``--router DIR``), routes one
short prompt to warm up, then routes ``--n`` distinct prompts of 2,000 characters (enough to fill the
encoder's 256 tokens: the baseline), ``--n`` distinct prompts of ``--chars`` characters one at a time, and one
batch of eight. Prints the median and max time per prompt of both, the batch's time, and the process's RSS
before and after the long prompts (read from /proc/self/statm, so Linux only) and its peak. ``--uncapped`` sets
``MAX_CHARS_PER_TOKEN`` so high that nothing is cut, to show what tokenising the whole text costs;
``--truncation head_tail`` (or ``tail``) fits the router with that cut, to show what reading the end costs.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import time
from pathlib import Path

import numpy as np

_WORDS = (
    "the model router answers questions about python code algebra history poems translation of french "
    "sentences summaries tables databases proofs and recipes while users wait for quick replies"
).split()


def _rss_mib() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _router(path: Path | None, truncation: str | None):
    from finerouter.encoders import get_encoder
    from finerouter.routing.router import FineRouter

    if path is not None:
        return FineRouter.load(path)
    from finerouter.data.synthetic import make_synthetic_routing_data

    data = make_synthetic_routing_data(n_prompts=120, n_models=4, seed=0)
    fast = {"classifier": {"epochs": 5}, "quality": {"epochs_general": 3, "epochs_task": 2}}
    encoder = None if truncation is None else get_encoder(None, truncation=truncation)
    return FineRouter(seed=0, encoder=encoder, **fast).fit(data)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=40, help="long prompts routed one at a time")
    parser.add_argument("--chars", type=int, default=1_000_000, help="characters per long prompt")
    parser.add_argument("--router", type=Path, default=None, help="a saved router (default: fit a small one)")
    parser.add_argument("--uncapped", action="store_true", help="tokenise whole texts (the behaviour before the cut)")
    parser.add_argument("--truncation", default=None, choices=["head", "tail", "head_tail"],
                        help="which tokens the fitted router's encoder reads (default: the encoder's)")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

    from finerouter.encoders import sentence_transformer

    if args.uncapped:
        sentence_transformer.MAX_CHARS_PER_TOKEN = 10**12
    router = _router(args.router, args.truncation)
    rng = np.random.default_rng(0)
    body = " ".join(_WORDS[i] for i in rng.integers(0, len(_WORDS), size=args.chars // 5 + 1))
    router.route("Warm up: what is 2 + 2?")
    router.route(f"Warm up with a long one. {body}"[: args.chars])

    baseline = []
    for i in range(args.n):
        prompt = f"Document {i}: please summarise the following. {body}"[:2000]
        t0 = time.perf_counter()
        router.route(prompt)
        baseline.append(time.perf_counter() - t0)

    rss_before = _rss_mib()
    seconds = []
    for i in range(args.n):
        prompt = f"Document {i}: please summarise the following. {body}"[: args.chars]  # a new string each time
        t0 = time.perf_counter()
        router.route(prompt)
        seconds.append(time.perf_counter() - t0)
        del prompt
    batch = [f"Batch document {i}: translate the following. {body}"[: args.chars] for i in range(8)]
    t0 = time.perf_counter()
    router.route(batch)
    batch_s = time.perf_counter() - t0
    del batch
    rss_after = _rss_mib()

    cap = "uncapped" if args.uncapped else f"cut at {router.encoder_.max_chars:,} chars; {router.encoder_.name}"
    print(f"{args.n} prompts of {args.chars:,} characters ({cap}), routed one at a time")
    print(f"time per prompt: median {statistics.median(seconds):.3f} s, max {max(seconds):.3f} s "
          f"(2,000-character prompts: median {statistics.median(baseline):.3f} s, max {max(baseline):.3f} s)")
    print(f"batch of 8 long prompts: {batch_s:.3f} s")
    print(f"RSS before {rss_before:.0f} MiB, after {rss_after:.0f} MiB ({rss_after - rss_before:+.0f} MiB); "
          f"peak {_peak_rss_mib():.0f} MiB")


if __name__ == "__main__":
    main()
