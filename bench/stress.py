"""Routing quality in the small-data, large-pool regime: learning curves and enlarged model pools.

For each shared dataset, every router is run by the harness (``run_evaluation``: 80/20 splits by unique prompt,
stratified by task, N seeds) in these settings:

* ``base/<size>``: the real pool, the training part of each split cut to ``size`` prompts (a seeded random
  subset; ``all`` = the whole training part), the test part unchanged: a learning curve.
* ``pool/<size>``: the pool enlarged by :func:`finerouter.evaluation.stress.enlarge_pool` (each real model joined
  by 2 noisy near-duplicates and 2 clearly dominated variants: 5x the models), at the same training sizes.
* ``blend<M>/<size>``: the pool grown to ``--blend-models`` models (55 by default) by
  :func:`finerouter.evaluation.stress.blend_pool` (per-prompt mixtures of two real models with a share of their
  answers failed: a spread of strengths, a handful near the best and most far behind), at ``--blend-sizes``.
* ``judge<M>/<size>`` (``judge<M>-nolabels/<size>`` with ``--judge-drop-labels``): the same kind of pool scored
  as an LLM judge would, by :func:`finerouter.evaluation.stress.judge_pool` (continuous scores in [0, 1] with
  per-answer noise; no ties), at ``--judge-sizes``; with ``--judge-drop-labels`` without the benchmark labels,
  as chat prompts come; ``--judge-concentration`` sets the judge's noise (``judge<M>-nolabels-c<value>/<size>``).

Prints, per setting, each router's mean quality ± std over seeds, its share of the best-single -> oracle
headroom, and on how many seeds it routed at least as well as the best single model; writes
``bench/results/stress/<dataset>.json`` and ``bench/results/stress/report.md``.

    .venv/bin/python bench/stress.py                                      # everything (hours on 2 cores)
    .venv/bin/python bench/stress.py --datasets routerdc --sizes 500,1000 --pool-sizes 1000 --seeds 5
    .venv/bin/python bench/stress.py --routers best_single,oracle,knn,finerouter --seeds 2   # quicker
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

ROOT = Path(__file__).resolve().parent
DATASETS = ("dcrouter", "routerbench_subset", "routerdc")
ROUTERS = (
    "oracle", "best_single", "random", "knn", "mlp_classifier", "mlp_regressor", "matrix_factorization", "routerdc",
    "ipr", "finerouter",
)


def _sizes(text: str) -> list[int | None]:
    return [None if s.strip() == "all" else int(s) for s in text.split(",") if s.strip()]


def summarise(results: dict[str, Any]) -> dict[str, Any]:
    """The per-router figures the report prints, from one ``run_evaluation`` result."""
    best = [s["best_single_quality"] for s in results["splits"]]
    out: dict[str, Any] = {}
    for name, rec in results["routers"].items():
        q = rec["per_seed"]["quality"]
        ref = best
        out[name] = {
            "quality_mean": rec["quality_mean"],
            "quality_std": rec["quality_std"],
            "headroom_mean": rec["headroom_mean"],
            "seeds_at_least_best_single": int(sum(a >= b - 1e-12 for a, b in zip(q, ref))),
            "n_seeds": len(q),
            "quality_per_seed": [float(x) for x in q],
            "best_single_per_seed": [float(x) for x in ref],
            "fit_seconds_mean": rec.get("fit_seconds_mean"),
            "mixing": [i.get("mixing") for i in rec["per_seed"].get("info", []) if isinstance(i, dict)] or None,
            "fits": [i.get("fits") for i in rec["per_seed"].get("info", []) if isinstance(i, dict)] or None,
        }
    return out


def run_dataset(name: str, args: argparse.Namespace) -> dict[str, Any]:
    from finerouter.data.locate import dataset_path, shared_data_dir
    from finerouter.data.readers import read_routing_data
    from finerouter.evaluation.runner import embed_dataset, run_evaluation
    from finerouter.evaluation.stress import blend_pool, enlarge_pool, judge_pool

    prices = shared_data_dir() / "dcrouter" / "prices.csv" if name == "dcrouter" else None
    data = read_routing_data(dataset_path(name), prices=prices, name=name)
    emb, encoder = embed_dataset(data, None, args.cache_dir)
    settings = [("base", s) for s in _sizes(args.sizes)] + [("pool", s) for s in _sizes(args.pool_sizes)]
    settings += [("blend", s) for s in _sizes(args.blend_sizes)]
    settings += [("judge", s) for s in _sizes(args.judge_sizes)]
    pooled = blended = judged = None
    out: dict[str, Any] = {"dataset": name, "n_prompts": data.n_prompts, "seeds": args.seeds, "settings": {}}
    for pool, size in settings:
        if pool == "pool" and pooled is None:
            pooled = enlarge_pool(data, seed=0)
        if pool == "blend" and blended is None:
            blended = blend_pool(data, n_models=args.blend_models, seed=0)
        if pool == "judge" and judged is None:
            judged = judge_pool(data, n_models=args.blend_models, drop_labels=args.judge_drop_labels,
                                concentration=args.judge_concentration, seed=0)
        d = {"pool": pooled, "blend": blended, "judge": judged}.get(pool) or data
        label = {"blend": f"blend{args.blend_models}",
                 "judge": f"judge{args.blend_models}{'-nolabels' if args.judge_drop_labels else ''}"
                          f"{'' if args.judge_concentration == 8.0 else f'-c{args.judge_concentration:g}'}"}.get(pool, pool)
        key = f"{label}/{'all' if size is None else size}"
        t = time.perf_counter()
        res = run_evaluation(
            d, emb, routers=args.routers, seeds=args.seeds, train_size=size, prices=prices, encoder=encoder,
            tolerances=(0.0,),
        )
        summary = summarise(res)
        out["settings"][key] = {
            "n_models": d.n_models,
            "n_train": [s["n_train"] for s in res["splits"]],
            "oracle": res["oracle_quality_mean"],
            "best_single": res["best_single"],
            "seconds": round(time.perf_counter() - t, 1),
            "routers": summary,
        }
        print(f"\n[{name}] {key}: {d.n_models} models, {time.perf_counter() - t:.0f}s", flush=True)
        print(f"  oracle {res['oracle_quality_mean']:.4f}", flush=True)
        for router, rec in summary.items():
            std = rec["quality_std"] or 0.0
            head = "–" if rec["headroom_mean"] is None else f"{rec['headroom_mean']:+.3f}"
            print(f"  {router:22s} {rec['quality_mean']:.4f} ± {std:.4f}  headroom {head:>7s}  "
                  f">= best single on {rec['seeds_at_least_best_single']}/{rec['n_seeds']} seeds", flush=True)
    return out


def report(all_results: dict[str, Any]) -> str:
    """A markdown table per dataset: rows = routers, columns = settings, cells = mean quality (headroom share)."""
    lines = ["# Stress settings: learning curves and enlarged pools", "",
             "Generated by `bench/stress.py`; cells are mean test quality over seeds (share of the best-single -> "
             "oracle headroom; seeds at least as good as the best single model).", ""]
    for name, res in all_results.items():
        keys = list(res["settings"])
        lines += [f"## {name}", "", "| router | " + " | ".join(keys) + " |", "|---" * (len(keys) + 1) + "|"]
        routers = list(next(iter(res["settings"].values()))["routers"]) if keys else []
        for router in routers:
            cells = []
            for k in keys:
                rec = res["settings"][k]["routers"].get(router)
                if rec is None:
                    cells.append("–")
                    continue
                head = "" if rec["headroom_mean"] is None else f" ({rec['headroom_mean']:+.2f}"
                cells.append(f"{rec['quality_mean']:.3f}{head}; {rec['seeds_at_least_best_single']}/{rec['n_seeds']})")
            lines.append(f"| {router} | " + " | ".join(cells) + " |")
        lines.append("")
        lines.append("models: " + ", ".join(f"{k} {res['settings'][k]['n_models']}" for k in keys))
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datasets", default=",".join(DATASETS))
    ap.add_argument("--sizes", default="500,1000,2000,all", help="training sizes for the real pool")
    ap.add_argument("--pool-sizes", default="500,1000,2000,all", help="training sizes for the enlarged pool")
    ap.add_argument("--blend-sizes", default="", help="training sizes for the blended pool (e.g. 800)")
    ap.add_argument("--blend-models", type=int, default=55, help="models in the blended and judged pools")
    ap.add_argument("--judge-sizes", default="", help="training sizes for the judge-scored pool (e.g. 800)")
    ap.add_argument("--judge-drop-labels", action="store_true", help="the judge-scored pool without task labels")
    ap.add_argument("--judge-concentration", type=float, default=8.0,
                    help="the judge's Beta concentration (judge_pool's; higher: less per-answer noise, '-c<value>' "
                         "in the setting's name when not 8)")
    ap.add_argument("--routers", default=",".join(ROUTERS))
    ap.add_argument("--seeds", default="5", help="a number of seeds (0..N-1) or a comma-separated list of seeds")
    ap.add_argument("--cache-dir", type=Path, default=Path(".finerouter_cache"))
    ap.add_argument("--out", type=Path, default=ROOT / "results" / "stress")
    args = ap.parse_args()
    args.routers = [r.strip() for r in args.routers.split(",") if r.strip()]
    args.seeds = [int(s) for s in args.seeds.split(",")] if "," in args.seeds else int(args.seeds)
    args.out.mkdir(parents=True, exist_ok=True)
    from finerouter._io import atomic_write_json
    from finerouter.evaluation.runner import clean_for_json

    all_results: dict[str, Any] = {}
    for name in [d.strip() for d in args.datasets.split(",") if d.strip()]:
        res = run_dataset(name, args)
        all_results[name] = res
        atomic_write_json(args.out / f"{name}.json", clean_for_json(res))
    # the report covers every dataset whose results are on disk (runs of one dataset at a time add up)
    on_disk = {p.stem: json.loads(p.read_text()) for p in sorted(args.out.glob("*.json"))}
    (args.out / "report.md").write_text(report(on_disk), encoding="utf-8")
    print(f"\nwrote {args.out / 'report.md'}")


if __name__ == "__main__":
    main()
