"""Adding a model to a fitted router (`FineRouter.add_model`) vs refitting with it, and vs never knowing it.

For each shared dataset and seed: an 80/20 split by unique prompt (stratified by task; the training part
optionally cut to ``--train-size`` prompts), and for each held-out model X:

* ``refit``: FineRouter fitted on the training part with every model (once per seed);
* ``without``: FineRouter fitted on the training part without X (the router that never knew X);
* ``added/<chooser>/<N>``: ``without`` + ``add_model(X)`` from X's scores on N training prompts, chosen by
  ``suggest_prompts`` (``suggest``) or at random (``random``); the other models' scores on those prompts are in the
  data too, as they are in the training table. ``--draw D`` draws those prompts again (another seed), the fits
  unchanged, so that several runs show how much a result owes to which prompts were drawn
  (``bench/onboarding_summary.py`` averages the draws of each seed and model).

Each router routes the test part (tolerance 0); quality is the mean true score of the chosen model. For X, "truly
best" prompts are the test prompts where X's score is strictly above every other model's; ``x_recall`` is the share
of them on which the router picks X. Prints one table and writes ``<out>/<dataset>.json`` and ``<out>/report.md``.

    .venv/bin/python bench/onboarding.py                                         # every dataset, model, 3 seeds (hours)
    .venv/bin/python bench/onboarding.py --datasets routerdc --seeds 0 --held-out 3 --n 100,300 --train-size 1500
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

ROOT = Path(__file__).resolve().parent
#: ``--draw D`` draws the suggested prompts with seed ``seed + DRAW_STRIDE * D`` (draw 0: the split's own seed).
DRAW_STRIDE = 1000
DATASETS = ("dcrouter", "routerbench_subset", "routerdc")


def held_out_models(data: Any, spec: str) -> list[str]:
    """``all``, a comma-separated list of names, or a count k: k models spread over the ranking by mean score
    (best, ..., worst)."""
    if spec == "all":
        return list(data.models)
    if spec.isdigit():
        order = np.argsort(-data.model_means(), kind="stable")
        picks = np.unique(np.round(np.linspace(0, len(order) - 1, int(spec))).astype(int))
        return [data.models[order[i]] for i in picks]
    names = [s.strip() for s in spec.split(",") if s.strip()]
    unknown = [n for n in names if n not in data.models]
    if unknown:
        raise SystemExit(f"unknown model(s) {unknown}; the dataset's models are {data.models}")
    return names


def evaluate(router: Any, test: Any, x: str) -> dict[str, float]:
    """Test quality of ``router`` and how often it picks ``x`` where ``x`` is truly best."""
    from finerouter.evaluation.metrics import mean_quality

    decisions = router.route(test.prompts)
    index = {m: j for j, m in enumerate(test.models)}
    picks = np.array([index[d.model] for d in decisions])
    scores = np.nan_to_num(test.scores, nan=-1.0)
    j = index[x]
    others = np.delete(scores, j, axis=1)
    truly_best = scores[:, j] > others.max(axis=1)
    out = {"quality": mean_quality(test.scores, picks), "x_share": float(np.mean(picks == j)),
           "x_truly_best_prompts": int(truly_best.sum())}  # fmt: skip
    out["x_recall"] = float(np.mean(picks[truly_best] == j)) if truly_best.any() else float("nan")
    return out


def router_key(dataset: str, seed: int, n_prompts: int, held_out: str | None = None) -> str:
    """The name a fit is saved under in ``--routers-dir``: the refit with every model (``held_out`` None), or the
    router fitted without ``held_out``, on ``n_prompts`` training prompts of the split of ``seed``."""
    stem = f"{dataset}_s{seed}_n{n_prompts}"
    return f"{stem}_refit" if held_out is None else f"{stem}_without_{held_out.replace('/', '_')}"


def one_model_arguments(ap: argparse.ArgumentParser) -> None:
    """The arguments of a bench that looks at one dataset, seed and held-out model on this bench's split and training
    cut (``bench/onboarding_members.py``, ``bench/task_shares.py``)."""
    ap.add_argument("--dataset", required=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--model", required=True)
    ap.add_argument("--train-size", type=int, default=1500)
    ap.add_argument("--test-size", type=float, default=0.2)
    ap.add_argument("--cache-dir", type=Path, default=Path(".finerouter_cache"))


def fitted(args: argparse.Namespace, key: str, train: Any, seed: int) -> tuple[Any, float | None]:
    """FineRouter fitted on ``train`` with ``seed``, and the seconds its fit took; with ``--routers-dir``, the router
    an earlier run saved there under ``key`` (each is saved after fitting), so that re-running the bench after a
    change to ``add_model`` or to routing refits nothing. The fitting code must be the same in both runs (the saved
    routers are what it fitted). A loaded router's fit time is the one recorded beside it when it was fitted
    (``KEY.seconds.json``), None where none was."""
    from finerouter import FineRouter

    path = None if args.routers_dir is None else args.routers_dir / key
    timing = None if args.routers_dir is None else args.routers_dir / f"{key}.seconds.json"
    if path is not None and (path / "manifest.json").exists():
        seconds = json.loads(timing.read_text())["fit_seconds"] if timing is not None and timing.exists() else None
        return with_task_shares(FineRouter.load(path, cache_dir=args.cache_dir), train), seconds
    t = time.perf_counter()
    router = FineRouter(cache_dir=args.cache_dir, seed=seed).fit(train)
    seconds = time.perf_counter() - t
    if path is not None:
        router.save(path)
        timing.write_text(json.dumps({"fit_seconds": seconds}) + "\n")
    return router, seconds


def with_task_shares(router: Any, train: Any) -> Any:
    """``router``, saved before fits recorded how their classifier routes the training prompts (the tasks' shares
    of the traffic, which ``add_model`` weighs new prompts by), with those shares recorded from ``train``, the
    prompts it was fitted on: what its fit would have recorded (``onboarding_mixing.record_task_shares``)."""
    from finerouter.routing.ensemble import members_of
    from finerouter.routing.onboarding_mixing import record_task_shares

    if all("task_shares" in (getattr(f, "fit_summary_", None) or {}) for f in (router, *members_of(router))):
        return router
    return record_task_shares(router, router.encoder_.encode(train.prompts))


def split_and_cut(data: Any, seed: int, test_size: float, train_size: int, dev: bool = False) -> tuple[Any, Any]:
    """``(train, test)``: the 80/20 split by unique prompt of ``seed``, the training part cut to ``train_size``
    prompts at random (0: all). With ``dev``, the test part is never read: ``(train, test)`` are the training part
    split again 80/20 by unique prompt (seed + 100) into a fit part (cut as above) and a dev part, on which choices
    about ``add_model`` are made."""
    train, test = data.split(test_size, seed=seed)
    if dev:
        train, test = train.split(0.2, seed=100 + seed)
    if train_size and train_size < train.n_prompts:
        train = train.subset(np.sort(np.random.default_rng(seed).choice(train.n_prompts, train_size, replace=False)))
    return train, test


def run_dataset(name: str, args: argparse.Namespace) -> dict[str, Any]:
    from finerouter.data.locate import dataset_path
    from finerouter.data.readers import read_routing_data
    from finerouter.routing.ensemble import members_of
    from finerouter.routing.suggestions import suggest_prompts

    data = read_routing_data(dataset_path(name), name=name)
    if args.judge:  # the held-out data's regime: dozens of judge-scored models (bench/stress.py's judge pools)
        from finerouter.evaluation.stress import judge_pool

        data = judge_pool(data, args.judge, drop_labels=args.judge_drop_labels, seed=0)
        name = f"{name}_judge{args.judge}{'-nolabels' if args.judge_drop_labels else ''}"
    if args.dev:  # its own fits (the saved routers' keys name the part they were fitted on)
        name = f"{name}_dev"
    records: list[dict[str, Any]] = []
    for seed in args.seeds:
        train, test = split_and_cut(data, seed, args.test_size, args.train_size, args.dev)
        if args.test_limit and args.test_limit < test.n_prompts:
            test = test.subset(np.sort(np.random.default_rng(seed + 1).choice(test.n_prompts, args.test_limit, replace=False)))
        refit, refit_seconds = fitted(args, router_key(name, seed, train.n_prompts), train, seed)
        took = "loaded, fit time not recorded" if refit_seconds is None else f"{refit_seconds:.0f}s"
        print(f"[{name} seed {seed}] refit with all {data.n_models} models on {train.n_prompts} prompts: {took}",
              flush=True)  # fmt: skip
        for x in held_out_models(data, args.held_out):
            rest = [m for m in data.models if m != x]
            without, without_seconds = fitted(args, router_key(name, seed, train.n_prompts, x),
                                              train.select_models(rest), seed)
            rec: dict[str, Any] = {"seed": seed, "model": x, "draw": args.draw, "train_prompts": train.n_prompts,
                                   "refit_seconds": refit_seconds, "without_seconds": without_seconds,
                                   "refit": evaluate(refit, test, x), "without": evaluate(without, test, x), "added": {}}  # fmt: skip
            for chooser in args.choosers:
                for n in args.n:
                    if chooser == "suggest":
                        idx = suggest_prompts(without, n, train.prompts, seed=seed + DRAW_STRIDE * args.draw)
                    else:
                        idx = np.random.default_rng([seed, n] + ([args.draw] if args.draw else [])).choice(
                            train.n_prompts, min(n, train.n_prompts), replace=False)
                    sample = train.subset(np.sort(idx))
                    if not np.isfinite(sample.scores[:, sample.models.index(x)]).any():
                        continue
                    t = time.perf_counter()
                    added = without.add_model(x, sample)
                    seconds = time.perf_counter() - t
                    result = evaluate(added, test, x)
                    every = [added, *members_of(added)]  # each fit of an ensemble decides for itself
                    result.update(seconds=seconds, n_prompts=int(sample.n_prompts),
                                  change=added.fit_summary_["model_changes"][-1], fits=len(every),
                                  fits_falling_back_to_x=sum("fell_back_to_new_model" in f.fit_summary_[
                                      "model_changes"][-1] for f in every),
                                  fits_fallen_back=sum(getattr(f.mixing_, "method", None) == "fallback"
                                                       for f in [without, *members_of(without)]),
                                  fits_routing_again=sum(f.fit_summary_["model_changes"][-1].get(
                                      "fallback_reweighed", {}).get("routes_again", False) for f in every),
                                  fallback_evidence=[f.fit_summary_["model_changes"][-1].get("fallback_reweighed")
                                                     for f in every])  # fmt: skip
                    rec["added"][f"{chooser}/{n}"] = result
                    print(f"  {x}: {chooser} N={n}: quality {result['quality']:.4f} (refit {rec['refit']['quality']:.4f}, "
                          f"without {rec['without']['quality']:.4f}), x recall {result['x_recall']:.3f} "
                          f"(refit {rec['refit']['x_recall']:.3f}), {seconds:.1f}s; fits fallen back "
                          f"{result['fits_fallen_back']}, routing again {result['fits_routing_again']}",
                          flush=True)  # fmt: skip
            records.append(rec)
    return {"dataset": name, "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
            "records": records}  # fmt: skip


def mean_known(values: list[float | None]) -> float | None:
    """Mean of the values that were measured (fits loaded from ``--routers-dir`` without a recorded time are None; a
    pick rate is NaN where the model is truly best nowhere); None if none was."""
    known = [v for v in values if v is not None and np.isfinite(v)]
    return float(np.mean(known)) if known else None


def paired_se(diff: np.ndarray) -> float:
    """The standard error of the mean of per-run differences (NaN with fewer than two), the runs taken as independent:
    the held-out models of one seed share its refit, so it is a rough guide to the noise, not a test."""
    return float(np.std(diff, ddof=1) / np.sqrt(diff.size)) if diff.size > 1 else float("nan")


def summary_rows(result: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per (chooser, N): means over held-out models and seeds, and the standard errors of the differences
    (:func:`paired_se`)."""
    recs = result["records"]
    keys = sorted({k for r in recs for k in r["added"]}, key=lambda k: (k.split("/")[0], int(k.split("/")[1])))
    rows = []
    for key in keys:
        have = [r for r in recs if key in r["added"]]
        added = np.array([r["added"][key]["quality"] for r in have])
        refit = np.array([r["refit"]["quality"] for r in have])
        without = np.array([r["without"]["quality"] for r in have])
        recall_added = np.nanmean([r["added"][key]["x_recall"] for r in have])
        recall_refit = np.nanmean([r["refit"]["x_recall"] for r in have])
        recall_diff = np.array([r["added"][key]["x_recall"] - r["refit"]["x_recall"] for r in have], dtype=float)
        rows.append({
            "setting": key, "runs": len(have), "added": float(added.mean()), "refit": float(refit.mean()),
            "without": float(without.mean()), "added_minus_refit": float((added - refit).mean()),
            "added_minus_refit_se": paired_se(added - refit),
            "x_recall_added": float(recall_added), "x_recall_refit": float(recall_refit),
            "x_recall_diff_se": paired_se(recall_diff[np.isfinite(recall_diff)]),
            "x_share_added": float(np.mean([r["added"][key]["x_share"] for r in have])),
            "x_share_refit": float(np.mean([r["refit"]["x_share"] for r in have])),
            "add_seconds": float(np.mean([r["added"][key]["seconds"] for r in have])),
            "refit_seconds": mean_known([r["refit_seconds"] for r in have]),
        })  # fmt: skip
    return rows


def report(results: list[dict[str, Any]], command: str) -> str:
    lines = ["# Adding a model without refitting", "", f"`{command}`", ""]
    for result in results:
        lines += [f"## {result['dataset']}", "",
                  "held out: " + ", ".join(sorted({r['model'] for r in result['records']})), "",
                  ("| prompts chosen by / N | runs | added | refit | never knew X | added − refit | X picked where truly "
                   "best: added / refit | seconds to add / refit |"), "|---|---:|---:|---:|---:|---:|---:|---:|"]  # fmt: skip
        for row in summary_rows(result):
            refit_time = "not recorded" if row["refit_seconds"] is None else f"{row['refit_seconds']:.0f}"
            lines.append(
                f"| {row['setting']} | {row['runs']} | {row['added']:.4f} | {row['refit']:.4f} | {row['without']:.4f} | "
                f"{row['added_minus_refit']:+.4f} | {row['x_recall_added']:.3f} / {row['x_recall_refit']:.3f} | "
                f"{row['add_seconds']:.1f} / {refit_time} |"
            )
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datasets", default=",".join(DATASETS))
    ap.add_argument("--seeds", default="0,1,2", help="comma-separated seeds")
    ap.add_argument("--held-out", default="all", help="all, a comma-separated list of models, or a count k (spread over the ranking)")
    ap.add_argument("--n", default="50,100,300,1000", help="prompts of the new model's scores")
    ap.add_argument("--choosers", default="suggest,random")
    ap.add_argument("--train-size", type=int, default=0, help="cut the training part to this many prompts (0: all)")
    ap.add_argument("--test-size", type=float, default=0.2)
    ap.add_argument("--test-limit", type=int, default=0, help="route at most this many test prompts (0: all)")
    ap.add_argument("--cache-dir", type=Path, default=Path(".finerouter_cache"))
    ap.add_argument("--out", type=Path, default=ROOT / "results" / "onboarding")
    ap.add_argument("--judge", type=int, default=0,
                    help="grow each dataset to this many judge-scored models first (evaluation.stress.judge_pool; 0: as is)")
    ap.add_argument("--judge-drop-labels", action="store_true", help="the judge-scored pool without task labels")
    ap.add_argument("--draw", type=int, default=0,
                    help="which draw of the new model's prompts (0: the split's seed, as before; D > 0: another draw "
                         "of the same size, to measure how much a result owes to the draw)")
    ap.add_argument("--routers-dir", type=Path, default=None,
                    help="save the refit and never-knew routers here, and load them from here when present")
    ap.add_argument("--dev", action="store_true",
                    help="never read the test part: fit on 80%% of the training part, route the other 20%% (seed + 100)")
    ap.add_argument("--paired-targets", choices=("on", "off"), default=None,
                    help="train the added model's adapters on its scores less the fitted models' shared residual "
                         "or on its raw scores (default: the library's quality.onboarding.PAIRED_TARGETS)")
    args = ap.parse_args()
    if args.paired_targets is not None:
        import finerouter.quality.onboarding as quality_onboarding

        quality_onboarding.PAIRED_TARGETS = args.paired_targets == "on"
    args.seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    args.n = [int(s) for s in args.n.split(",") if s.strip()]
    args.choosers = [c.strip() for c in args.choosers.split(",") if c.strip()]
    args.out.mkdir(parents=True, exist_ok=True)
    results = []
    for name in [d.strip() for d in args.datasets.split(",") if d.strip()]:
        result = run_dataset(name, args)
        (args.out / f"{name}.json").write_text(json.dumps(result, indent=1, default=float) + "\n")
        results.append(result)
    import sys

    text = report(results, ".venv/bin/python bench/onboarding.py " + " ".join(sys.argv[1:]))
    (args.out / "report.md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
