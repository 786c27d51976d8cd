"""How much a router depends on the models it was fitted with, beyond routing to them: fit FineRouter on one split
with every model and without one model X, several seeds each, and route the test part among the models both know.

If X is never the best choice, a router without it should route as well as one with it. The difference shows
what X's scores gave discovery (one more ranking per prompt for the RBO filter) and the cross-validated mixing:
the part of the gap between ``add_model`` and a full refit that no frozen router can close
(docs/onboarding.md). Per seed: the test quality of the final score, the stage-1 prior alone and Stage 2 alone
(each routing among the models without X), the mixing method, the number of tasks and the largest task sizes.

    .venv/bin/python bench/model_set.py --dataset routerdc --train-size 1500 --seeds 0,1,2     # X: the weakest model
    .venv/bin/python bench/model_set.py --dataset dcrouter --drop "some/model" --seeds 0,1
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

ROOT = Path(__file__).resolve().parent


def measure(router: Any, emb: np.ndarray, test: Any, models: list[str]) -> dict[str, Any]:
    """Test quality of the final score, stage 1 and stage 2 among ``models`` (a subset of the router's)."""
    from finerouter.evaluation.metrics import mean_quality

    scores = router.score_embeddings(emb)
    cols = [router.models_.index(m) for m in models]
    truth = test.scores[:, [test.models.index(m) for m in models]]
    out = {name: mean_quality(truth, np.argmax(np.nan_to_num(getattr(scores, name)[:, cols], nan=-1.0), axis=1))
           for name in ("final", "stage1", "stage2")}  # fmt: skip
    sizes = sorted((t.size for t in router.catalog_.tasks), reverse=True)
    out.update(mixing=router.fit_summary_["mixing"]["method"], n_tasks=router.catalog_.n_tasks, largest_tasks=sizes[:3])
    return out


def main() -> None:
    from finerouter import FineRouter
    from finerouter.data.locate import dataset_path
    from finerouter.data.readers import read_routing_data

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default="routerdc")
    ap.add_argument("--drop", default="", help="the model left out (default: the one with the lowest mean score)")
    ap.add_argument("--split-seed", type=int, default=0)
    ap.add_argument("--seeds", default="0,1,2", help="router seeds")
    ap.add_argument("--train-size", type=int, default=1500, help="cut the training part to this many prompts (0: all)")
    ap.add_argument("--cache-dir", type=Path, default=Path(".finerouter_cache"))
    ap.add_argument("--out", type=Path, default=ROOT / "results" / "model_set")
    args = ap.parse_args()
    data = read_routing_data(dataset_path(args.dataset), name=args.dataset)
    drop = args.drop or data.models[int(np.argmin(data.model_means()))]
    if drop not in data.models:
        raise SystemExit(f"unknown model {drop!r}; the dataset's models are {data.models}")
    train, test = data.split(0.2, seed=args.split_seed)
    if args.train_size and args.train_size < train.n_prompts:
        rows = np.random.default_rng(args.split_seed).choice(train.n_prompts, args.train_size, replace=False)
        train = train.subset(np.sort(rows))
    rest = [m for m in data.models if m != drop]
    records: list[dict[str, Any]] = []
    emb = None
    for seed in [int(s) for s in args.seeds.split(",") if s.strip()]:
        for label, fit_data in (("every model", train), (f"without {drop}", train.select_models(rest))):
            router = FineRouter(cache_dir=args.cache_dir, seed=seed).fit(fit_data)
            if emb is None:
                emb = router.encoder_.encode(test.prompts)
            rec = {"seed": seed, "fitted_with": label, **measure(router, emb, test, rest)}
            if label == "every model":  # how often the full router picks the dropped model
                rec["dropped_model_share"] = float(np.mean(np.argmax(router.score_embeddings(emb).final, axis=1)
                                                           == router.models_.index(drop)))  # fmt: skip
            records.append(rec)
            print(json.dumps(rec, default=float), flush=True)
    lines = [f"`.venv/bin/python bench/model_set.py {' '.join(sys.argv[1:])}`", "",
             f"{args.dataset}, split {args.split_seed}, {train.n_prompts} training prompts, test {test.n_prompts}; "
             f"dropped: {drop}", "",
             "| seed | fitted with | final | stage 1 alone | stage 2 alone | mixing | tasks | largest tasks |",
             "|---:|---|---:|---:|---:|---|---:|---|"]  # fmt: skip
    for r in records:
        lines.append(f"| {r['seed']} | {r['fitted_with']} | {r['final']:.4f} | {r['stage1']:.4f} | {r['stage2']:.4f} | "
                     f"{r['mixing']} | {r['n_tasks']} | {', '.join(map(str, r['largest_tasks']))} |")  # fmt: skip
    for label in ("every model", f"without {drop}"):
        sel = [r for r in records if r["fitted_with"] == label]
        lines.append(f"| mean | {label} | {np.mean([r['final'] for r in sel]):.4f} | "
                     f"{np.mean([r['stage1'] for r in sel]):.4f} | {np.mean([r['stage2'] for r in sel]):.4f} | | | |")  # fmt: skip
    share = [r["dropped_model_share"] for r in records if "dropped_model_share" in r]
    lines += ["", f"the router fitted with every model routes {100 * np.mean(share):.1f}% of the test prompts to {drop}"]
    text = "\n".join(lines)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{args.dataset}.md").write_text(text + "\n")
    (args.out / f"{args.dataset}.json").write_text(json.dumps(records, indent=1, default=float) + "\n")
    print(text)


if __name__ == "__main__":
    main()
