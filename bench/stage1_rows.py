"""Which training prompts should a task's stage-1 prior average over? Measured on dev parts (the test part is never
read).

Discovery puts a prompt in a task partly by its model ranking (a graph edge needs the two prompts' rankings to
agree), so on a task's *members* the models that rank first there score higher than on the prompts the classifier
sends to that task at routing, which it does from the text alone. Two stage-1 priors from the same discovery and
classifier, each the shrunk mean score per task and model (``FineRouter``'s default statistic):

* ``members``: over the prompts discovery put in each task (the paper's task statistics; before 2026-12-05 the
  default's too, and still ``mixing="paper"``'s);
* ``routed``: over each prompt's task as the classifier assigns it, cross-fitted
  (:func:`finerouter.routing.fitting.routed_tasks`, the default since).

Each routes the dev prompts by the prior of the task the classifier assigns them, alone (the model with the highest
prior; exact ties to the better model overall), with discovery label-free (the paper's) and refining the data's
labels (what ``refine_task_labels="auto"`` chooses where it routes better). Also printed: the *optimism* of each
prior, i.e. per task, the prior of the task's leading model minus that model's mean score on the dev prompts routed
to the task, weighted by the dev prompts per task (how much the prior overstates the model it routes to).

Dev parts (``bench/_validation.py``): the harness's training split of each seed, split 80/20 again; the fit part
optionally cut to ``--train-size`` prompts. Prints one line per seed and setting, then means; writes ``--out`` JSON.

    .venv/bin/python bench/stage1_rows.py --datasets dcrouter,routerdc,routerbench_subset --seeds 0,1,2
    .venv/bin/python bench/stage1_rows.py --datasets dcrouter --seeds 0,1,2,3,4 --train-size 1500
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

ROOT = Path(__file__).resolve().parent


def optimism(prior: np.ndarray, rows: np.ndarray, truth: np.ndarray) -> float:
    """Per task row, the prior of its leading model minus that model's mean true score on the prompts routed there,
    weighted by those prompts."""
    total, gaps = 0, 0.0
    for r in np.unique(rows):
        on = rows == r
        top = int(np.nanargmax(prior[r]))
        gaps += on.sum() * (prior[r, top] - float(np.mean(truth[on, top])))
        total += on.sum()
    return gaps / max(total, 1)


def run_seed(name: str, data: Any, emb: np.ndarray, encoder: Any, seed: int, size: int | None) -> list[dict[str, Any]]:
    from _validation import validation_parts

    from finerouter import FineRouter
    from finerouter.routing import fitting

    parts = validation_parts(data, emb, seed)
    fit, e_fit = parts.fit, parts.e_fit
    if size is not None and size < fit.n_prompts:
        keep = np.sort(np.random.default_rng(seed).choice(fit.n_prompts, size, replace=False))
        fit, e_fit = fit.subset(keep), e_fit[keep]
    scores = np.asarray(fit.scores, dtype=np.float64)
    truth = np.nan_to_num(parts.val.scores, nan=0.0)
    router = FineRouter(encoder=encoder, seed=seed)  # its settings: the default discovery, classifier, shrinkage
    prompts = list(fit.prompts)
    out = []
    settings = [("label_free", None)] + ([("refined", list(fit.tasks))] if fit.tasks is not None else [])
    for setting, groups in settings:
        t = time.perf_counter()
        disc = fitting.discover(router, e_fit, scores, fit.models, prompts, prompts, groups)
        clf = fitting.fit_classifier(router, encoder, e_fit, disc)
        n_tasks = disc.catalog_.n_tasks
        task = clf.predict(parts.e_val)[0] if clf is not None else np.full(len(truth), -1)
        rows = np.where(task >= 0, task, n_tasks)
        routed = fitting.routed_tasks(router, e_fit, disc, getattr(clf, "task_text_embeddings_", None))
        rec: dict[str, Any] = {"dataset": name, "seed": seed, "setting": setting, "n_fit": len(prompts),
                               "tasks": n_tasks, "best_single": parts.best_single(),
                               "routed_equals_member": float(np.mean(routed == disc.labels_))}  # fmt: skip
        for key, labels in (("members", disc.labels_), ("routed", routed)):
            prior = fitting.stage1_prior(router, disc.catalog_, scores, labels)
            rec[key] = parts.quality(np.nan_to_num(prior[rows], nan=-1.0))
            rec[f"{key}_optimism"] = optimism(prior, rows, truth)
        rec["seconds"] = round(time.perf_counter() - t, 1)
        print(f"{name} seed {seed} ({len(prompts)} fit prompts) {setting}: {n_tasks} tasks, members "
              f"{rec['members']:.4f} (optimism {rec['members_optimism']:+.4f}), routed {rec['routed']:.4f} (optimism "
              f"{rec['routed_optimism']:+.4f}), routed − members {rec['routed'] - rec['members']:+.4f}; best single "
              f"{rec['best_single']:.4f}; same task {rec['routed_equals_member']:.2f}", flush=True)  # fmt: skip
        out.append(rec)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datasets", default="dcrouter,routerdc,routerbench_subset")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--train-size", type=int, default=None, help="cut the fit part to this many prompts")
    ap.add_argument("--cache-dir", type=Path, default=Path(".finerouter_cache"))
    ap.add_argument("--out", type=Path, default=ROOT / "results" / "stage1_rows" / "results.json")
    args = ap.parse_args()

    from finerouter.data.locate import dataset_path
    from finerouter.data.readers import read_routing_data
    from finerouter.evaluation.runner import embed_dataset

    records: list[dict[str, Any]] = []
    for name in args.datasets.split(","):
        data = read_routing_data(dataset_path(name), name=name)
        emb, encoder = embed_dataset(data, None, args.cache_dir)
        for seed in (int(s) for s in args.seeds.split(",")):
            records += run_seed(name, data, emb, encoder, seed, args.train_size)
    print("\n| data | fit prompts | discovery | seeds | members | routed | routed − members (min, max) | optimism: "
          "members / routed |\n|---|---:|---|---:|---:|---:|---:|---:|")  # fmt: skip
    for key in sorted({(r["dataset"], r["n_fit"], r["setting"]) for r in records}):
        have = [r for r in records if (r["dataset"], r["n_fit"], r["setting"]) == key]
        diff = np.array([r["routed"] - r["members"] for r in have])
        print(f"| {key[0]} | {key[1]} | {key[2]} | {len(have)} | {np.mean([r['members'] for r in have]):.4f} | "
              f"{np.mean([r['routed'] for r in have]):.4f} | {diff.mean():+.4f} "
              f"({diff.min():+.4f}, {diff.max():+.4f}) | "
              f"{np.mean([r['members_optimism'] for r in have]):+.4f} / "
              f"{np.mean([r['routed_optimism'] for r in have]):+.4f} |")  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".tmp")
    tmp.write_text(json.dumps({"command": vars(args) | {"out": str(args.out), "cache_dir": str(args.cache_dir)},
                               "records": records}, indent=1) + "\n")  # fmt: skip
    tmp.replace(args.out)


if __name__ == "__main__":
    main()
