"""Router settings compared on dev parts carved from the training data (never the test part).

For each dataset and seed: the harness's 80/20 split by unique prompt (the test part set aside, unused); the
training part split again 80/20 by unique prompt (seed + 17) into a fit part (optionally cut to ``--train-size``
prompts, optionally with the pool grown to ``--blend`` models, enlarged 5x by ``--enlarge``, or judge-scored by
``--judge`` models, ``--drop-labels`` without the task labels) and a dev part. Each
variant is a FineRouter with some parameters set, fitted on the fit part, routing the dev part at tolerance 0; the
table gives mean ± std over seeds, the paired gain over ``default`` and on how many seeds it is above it.

Variants: ``default`` (the defaults of the code that runs: every result in ``bench/results/dev_variants/`` was run
when the default was one fit with hard assignment, before the small-data ``"auto"`` defaults), ``single_fit`` (one
fit, hard assignment: that old default), and each with one fit and hard assignment unless named: ``soft``
(``stage1_assignment="soft"``), ``ensemble3`` (``ensemble_size=3``), ``soft_ensemble3``, ``folds5``
(``cv_folds=5``), ``soft_folds5``, ``stack_nb`` (``stacking=True, neighbours=True``),
``soft_ensemble3_stack_nb`` (all four); on top of the defaults, discovery made coarser: ``tau03`` / ``tau02``
(``tau`` 0.3 / 0.2: more graph edges kept), ``resolution05`` (Leiden resolution 0.5: fewer communities);
``stop_routing``: Stage 2 early-stopped on dev routing quality (``quality={"stop_on": "routing"}``);
``neighbours``: the neighbour source among the mixing candidates (``neighbours=True``); ``default_ensemble3``: three
fits, the rest the defaults (a ``stage1_assignment`` named outright, as in ``ensemble3``, takes the label prior out). With ``--knn`` the harness's kNN baseline (k tuned on its own dev splits of
the fit part) is fitted on the same fit part as a reference row.

    .venv/bin/python bench/dev_variants.py --datasets routerdc,dcrouter --train-size 1500 --variants default,soft
    .venv/bin/python bench/dev_variants.py --datasets dcrouter,routerbench_subset --variants default,soft
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
#: One fit with hard assignment: the default before the small-data settings (and the default above 2,000 prompts).
_ONE = {"ensemble_size": 1, "stage1_assignment": "hard"}
VARIANTS: dict[str, dict[str, Any]] = {
    "default": {},
    "no_label": {"label_prior": False},  # without the data's labels as a stage-1 candidate (routing/label_prior.py)
    "single_fit": dict(_ONE),
    "soft": {**_ONE, "stage1_assignment": "soft"},
    "ensemble3": {**_ONE, "ensemble_size": 3},
    "soft_ensemble3": {"stage1_assignment": "soft", "ensemble_size": 3},
    # three fits, everything else the default (a stage1_assignment named outright takes the label prior out)
    "default_ensemble3": {"ensemble_size": 3},
    "folds5": {**_ONE, "cv_folds": 5},
    # the default with cv_folds="auto" (5 folds on at most 2,000 unique prompts, 3 above: routing/regime.py)
    "folds_auto": {"cv_folds": "auto"},
    "soft_folds5": {**_ONE, "stage1_assignment": "soft", "cv_folds": 5},
    "stack_nb": {**_ONE, "stacking": True, "neighbours": True},
    "soft_ensemble3_stack_nb": {"stage1_assignment": "soft", "ensemble_size": 3, "stacking": True, "neighbours": True},
    # discovery's granularity, on top of the defaults (coarser tasks: more edges kept, or fewer communities)
    "tau03": {"discovery": {"tau": 0.3}},
    "tau02": {"discovery": {"tau": 0.2}},
    "resolution05": {"discovery": {"resolution": 0.5}},
    # Stage 2's phase 1 early-stopped on dev routing quality instead of dev MSE (QualityEstimator(stop_on=...))
    "stop_routing": {"quality": {"stop_on": "routing"}},
    # models outside every group's coverage set left out of Stage 2 (QualityEstimator(prune_coverage=...))
    "prune": {"quality": {"prune_coverage": 0.8}},
    # the neighbour source (routing/neighbours.py) among the mixing candidates, on top of the defaults
    "neighbours": {"neighbours": True},
}


def load_pool(name: str, blend: int = 0, prices: Any = None, enlarge: bool = False, judge: int = 0,
              drop_labels: bool = False) -> Any:
    """A shared dataset, its pool grown to ``blend`` models (``evaluation.stress.blend_pool``), enlarged 5x with
    near-duplicates and dominated variants (``evaluation.stress.enlarge_pool``, as ``bench/stress.py``'s
    ``pool/<size>`` settings), or grown to ``judge`` judge-scored models (``evaluation.stress.judge_pool``, without
    the task labels with ``drop_labels``) when asked."""
    from finerouter.data.locate import dataset_path
    from finerouter.data.readers import read_routing_data

    data = read_routing_data(dataset_path(name), prices=prices, name=name)
    if blend:
        from finerouter.evaluation.stress import blend_pool

        data = blend_pool(data, blend, seed=0)
    if enlarge:
        from finerouter.evaluation.stress import enlarge_pool

        data = enlarge_pool(data, seed=0)
    if judge:
        from finerouter.evaluation.stress import judge_pool

        data = judge_pool(data, judge, drop_labels=drop_labels, seed=0)
    return data


def dev_split(data: Any, seed: int, test_size: float = 0.2, train_size: int = 0) -> tuple[Any, Any]:
    """``(fit, dev)``: the harness's split's training part (the test part set aside), split again 80/20 by unique
    prompt (seed + 17); the fit part cut to ``train_size`` prompts when that is smaller (0: all)."""
    from finerouter.data.dataset import split_indices

    train, _ = data.split(test_size, seed=seed)
    fit_i, dev_i = split_indices(train.prompts, train.tasks, 0.2, seed + 17)
    if train_size and train_size < fit_i.size:
        fit_i = np.sort(np.random.default_rng(seed).choice(fit_i, train_size, replace=False))
    return train.subset(fit_i), train.subset(dev_i)


def run(name: str, args: argparse.Namespace) -> dict[str, Any]:
    from finerouter import FineRouter
    from finerouter.evaluation.metrics import mean_quality

    data = load_pool(name, args.blend, enlarge=args.enlarge, judge=args.judge, drop_labels=args.drop_labels)
    records = []
    for seed in args.seeds:
        fit, dev = dev_split(data, seed, args.test_size, args.train_size)
        rec: dict[str, Any] = {"seed": seed, "fit_prompts": fit.n_prompts, "dev_prompts": dev.n_prompts,
                               "best_single": mean_quality(dev.scores, np.full(dev.n_prompts, int(np.argmax(
                                   np.nanmean(fit.scores, axis=0))))), "variants": {}}  # fmt: skip
        emb = None
        for variant in args.variants:
            t = time.perf_counter()
            router = FineRouter(cache_dir=args.cache_dir, seed=seed, **VARIANTS[variant]).fit(fit)
            seconds = time.perf_counter() - t
            if emb is None:
                emb = router.encoder_.encode(dev.prompts)
            quality = mean_quality(dev.scores, np.argmax(router.score_embeddings(emb).final, axis=1))
            rec["variants"][variant] = {"quality": quality, "seconds": seconds,
                                        "mixing": router.fit_summary_["mixing"]["method"],
                                        "assignment": router.mixing_.assignment}  # fmt: skip
            print(f"[{name} seed {seed}] {variant}: {quality:.4f} ({router.fit_summary_['mixing']['method']}, "
                  f"{router.mixing_.assignment}, "
                  f"{seconds:.0f}s; best single {rec['best_single']:.4f})", flush=True)  # fmt: skip
        if args.knn:
            from finerouter.baselines import make_router

            knn = make_router("knn", seed=seed).fit(fit, router.encoder_.encode(fit.prompts))
            rec["knn"] = mean_quality(dev.scores, knn.route(emb, tolerance=0.0))
            print(f"[{name} seed {seed}] knn: {rec['knn']:.4f}", flush=True)
        records.append(rec)
    return {"dataset": name, "blend": args.blend, "enlarge": args.enlarge, "judge": args.judge,
            "drop_labels": args.drop_labels, "train_size": args.train_size,
            "records": records}


def table(result: dict[str, Any], variants: list[str]) -> list[str]:
    recs = result["records"]
    base = np.array([r["variants"][variants[0]]["quality"] for r in recs])
    lines = [f"| variant | dev quality (mean ± std) | gain over {variants[0]} (mean ± std) | seeds above | fit s |",
             "|---|---:|---:|---:|---:|"]  # fmt: skip
    for v in variants:
        q = np.array([r["variants"][v]["quality"] for r in recs])
        d = q - base
        sd = (lambda x: x.std(ddof=1) if x.size > 1 else 0.0)
        lines.append(f"| {v} | {q.mean():.4f} ± {sd(q):.4f} | {d.mean():+.4f} ± {sd(d):.4f} | "
                     f"{(d > 0).sum()}/{d.size} | {np.mean([r['variants'][v]['seconds'] for r in recs]):.0f} |")  # fmt: skip
    if all("knn" in r for r in recs):
        q = np.array([r["knn"] for r in recs])
        d = q - base
        lines.append(f"| knn (baseline) | {q.mean():.4f} ± {q.std(ddof=1) if q.size > 1 else 0.0:.4f} | "
                     f"{d.mean():+.4f} ± {d.std(ddof=1) if d.size > 1 else 0.0:.4f} | {(d > 0).sum()}/{d.size} | – |")
    lines += ["", f"best single (chosen on the fit part) {np.mean([r['best_single'] for r in recs]):.4f}"]
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datasets", default="routerdc,dcrouter,routerbench_subset")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--variants", default="default,soft")
    ap.add_argument("--train-size", type=int, default=0, help="cut the fit part to this many prompts (0: all)")
    ap.add_argument("--blend", type=int, default=0, help="grow the pool to this many models (evaluation.stress)")
    ap.add_argument("--enlarge", action="store_true", help="enlarge the pool 5x (evaluation.stress.enlarge_pool)")
    ap.add_argument("--judge", type=int, default=0, help="a judge-scored pool of this many models (evaluation.stress)")
    ap.add_argument("--drop-labels", action="store_true", help="with --judge: drop the data's task labels")
    ap.add_argument("--knn", action="store_true", help="also fit the kNN baseline on each fit part (reference)")
    ap.add_argument("--test-size", type=float, default=0.2)
    ap.add_argument("--cache-dir", type=Path, default=Path(".finerouter_cache"))
    ap.add_argument("--out", type=Path, default=ROOT / "results" / "dev_variants")
    args = ap.parse_args()
    args.seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    args.variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [v for v in args.variants if v not in VARIANTS]
    if unknown:
        raise SystemExit(f"unknown variant(s) {unknown}; known: {sorted(VARIANTS)}")
    args.out.mkdir(parents=True, exist_ok=True)
    command = ".venv/bin/python bench/dev_variants.py " + " ".join(sys.argv[1:])
    report = [f"`{command}`", ""]
    for name in [d.strip() for d in args.datasets.split(",") if d.strip()]:
        result = run(name, args)
        tag = name + (f"_blend{args.blend}" if args.blend else "") + ("_pool" if args.enlarge else "")
        tag += (f"_judge{args.judge}" if args.judge else "") + ("_nolabels" if args.drop_labels else "") + (
            f"_{args.train_size}" if args.train_size else "")
        tag += "_" + "-".join(args.variants)
        (args.out / f"{tag}.json").write_text(json.dumps(result, indent=1, default=float) + "\n")
        report += [f"## {tag}", "", *table(result, args.variants), ""]
        print("\n".join(report[-(len(args.variants) + 6):]), flush=True)
    path = args.out / "report.md"
    previous = path.read_text() if path.exists() else "# Router settings on dev parts of the training data\n"
    path.write_text(previous + "\n" + "\n".join(report) + "\n")


if __name__ == "__main__":
    main()
