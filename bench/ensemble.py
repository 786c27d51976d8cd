"""Seed ensembles (``FineRouter(ensemble_size=k)``) on dev parts carved from the training data, never the test part.

For each dataset and seed: the harness's 80/20 split by unique prompt (the test part is set aside, unused); the
training part split again 80/20 by unique prompt into a fit part (optionally cut to ``--train-size`` prompts)
and a dev part. One router is fitted on the fit part with ``ensemble_size`` = the largest k asked for; routing
the dev part by its first k fits (the router and its first k - 1 members: exactly what ``ensemble_size=k``
fits, the members being seeded ``seed + 1, ...``) gives the dev quality of every k from one fit. Prints a table
(mean ± std over seeds, and the paired gain over k = 1) and writes ``<out>/<dataset>.json`` and
``<out>/report.md``.

    .venv/bin/python bench/ensemble.py --datasets routerdc,dcrouter --seeds 0,1,2 --train-size 1500
    .venv/bin/python bench/ensemble.py --datasets routerdc --blend 55      # the 55-model blended pool
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

ROOT = Path(__file__).resolve().parent


def dev_quality(router: Any, dev: Any, ks: list[int]) -> dict[int, float]:
    """Dev quality of the ensemble of the router's first k fits, for each k in ``ks``."""
    from finerouter.evaluation.metrics import mean_quality
    from finerouter.routing.ensemble import average_scores, members_of
    from finerouter.routing.scoring import _score_one

    emb = router.encoder_.encode(dev.prompts)
    every = [_score_one(router, emb)] + [_score_one(m, emb) for m in members_of(router)]
    out = {}
    for k in ks:
        mixed = average_scores(every[0], every[1:k])
        out[k] = mean_quality(dev.scores, np.argmax(mixed.final, axis=1))
    return out


def run(name: str, args: argparse.Namespace) -> dict[str, Any]:
    from dev_variants import dev_split, load_pool

    from finerouter import FineRouter

    data = load_pool(name, args.blend)
    records = []
    for seed in args.seeds:
        fit, dev = dev_split(data, seed, args.test_size, args.train_size)
        t = time.perf_counter()
        router = FineRouter(cache_dir=args.cache_dir, seed=seed, ensemble_size=max(args.k)).fit(fit)
        seconds = time.perf_counter() - t
        quality = dev_quality(router, dev, args.k)
        timings = router.fit_summary_["seconds"]
        best_single = float(np.nanmean(np.nan_to_num(dev.scores, nan=0.0), axis=0).max())
        oracle = float(np.nan_to_num(dev.scores, nan=0.0).max(axis=1).mean())
        rec = {"seed": seed, "fit_prompts": fit.n_prompts, "dev_prompts": dev.n_prompts, "quality": quality,
               "best_single": best_single, "oracle": oracle, "fit_seconds": seconds,
               "ensemble_seconds": timings.get("ensemble"), "mixing": router.fit_summary_["mixing"]["method"],
               "n_tasks": router.fit_summary_["ensemble"]["n_tasks"]}  # fmt: skip
        records.append(rec)
        print(f"[{name} seed {seed}] fit {fit.n_prompts}, dev {dev.n_prompts}: "
              + ", ".join(f"k={k} {q:.4f}" for k, q in quality.items())
              + f" (best single {best_single:.4f}; fit {seconds:.0f}s of which members {timings.get('ensemble', 0):.0f}s)",
              flush=True)  # fmt: skip
    return {"dataset": name, "blend": args.blend, "train_size": args.train_size, "records": records}


def table(result: dict[str, Any], ks: list[int]) -> list[str]:
    recs = result["records"]
    base = np.array([r["quality"][1] for r in recs])
    lines = ["| k | dev quality (mean ± std) | gain over k = 1 (mean ± std) | seeds above k = 1 |", "|---:|---:|---:|---:|"]
    for k in ks:
        q = np.array([r["quality"][k] for r in recs])
        d = q - base
        lines.append(f"| {k} | {q.mean():.4f} ± {q.std(ddof=1) if q.size > 1 else 0:.4f} | {d.mean():+.4f} ± "
                     f"{d.std(ddof=1) if d.size > 1 else 0:.4f} | {(d > 0).sum()}/{d.size} |")  # fmt: skip
    single = np.mean([r["best_single"] for r in recs])
    oracle = np.mean([r["oracle"] for r in recs])
    members = np.mean([r["ensemble_seconds"] or 0 for r in recs])
    fit = np.mean([r["fit_seconds"] for r in recs])
    lines += ["", (f"best single {single:.4f}, oracle {oracle:.4f}; fit {fit:.0f} s, of which the "
                   f"{max(ks) - 1} members {members:.0f} s")]  # fmt: skip
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datasets", default="routerdc,dcrouter,routerbench_subset")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--k", default="1,2,3,5", help="ensemble sizes to report (the largest is fitted)")
    ap.add_argument("--train-size", type=int, default=0, help="cut the fit part to this many prompts (0: all)")
    ap.add_argument("--blend", type=int, default=0, help="grow the pool to this many models (evaluation.stress)")
    ap.add_argument("--test-size", type=float, default=0.2)
    ap.add_argument("--cache-dir", type=Path, default=Path(".finerouter_cache"))
    ap.add_argument("--out", type=Path, default=ROOT / "results" / "ensemble")
    args = ap.parse_args()
    args.seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    args.k = sorted({int(s) for s in args.k.split(",") if s.strip()} | {1})
    args.out.mkdir(parents=True, exist_ok=True)
    command = ".venv/bin/python bench/ensemble.py " + " ".join(sys.argv[1:])
    report = ["# Seed ensembles on dev parts of the training data", "", f"`{command}`", ""]
    for name in [d.strip() for d in args.datasets.split(",") if d.strip()]:
        result = run(name, args)
        tag = name + (f"_blend{args.blend}" if args.blend else "") + (f"_{args.train_size}" if args.train_size else "")
        (args.out / f"{tag}.json").write_text(json.dumps(result, indent=1, default=float) + "\n")
        report += [f"## {tag}", "", *table(result, args.k), ""]
        print("\n".join(report[-(len(args.k) + 5):]), flush=True)
    path = args.out / "report.md"
    previous = path.read_text() if path.exists() else ""
    path.write_text((previous + "\n" if previous else "") + "\n".join(report) + "\n")


if __name__ == "__main__":
    main()
