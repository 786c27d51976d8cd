"""What each of the router's score sources is worth on dev parts carved from the training data (never the test part).

For each dataset and seed, the split of ``bench/dev_variants.py`` (the harness's training part, split again 80/20
into a fit and a dev part); the default FineRouter is fitted on the fit part and each source it can mix routes the
dev part alone (tolerance 0): Stage 2, the label prior (the router's own when it chose it, else one fitted on the
fit part), the hard task prior, the neighbour means (k = 20, 40), the global prior (the best single model), and
the router's final score. Then every normalised mix of Stage 2, the label prior, the hard task prior and the
neighbours on a grid of eighths, ranked by the mean gain over the best single model across seeds.

A diagnosis, not a selection: the grid is scored on the dev parts themselves, so its best row is optimistic. What
it is for is the shape (which sources carry the signal, which add noise); a change it suggests is then made as a
candidate the router's own cross-validation chooses among, and measured with ``bench/dev_variants.py``.

    .venv/bin/python bench/dev_sources.py --datasets dcrouter,routerdc --seeds 0,1,2 --out bench/results/dev_sources
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))

from dev_variants import dev_split, load_pool

MIXED = ("stage2", "label", "hard", "nb20", "nb40")


def _minmax(x: np.ndarray) -> np.ndarray:
    lo, hi = np.nanmin(x, axis=1, keepdims=True), np.nanmax(x, axis=1, keepdims=True)
    return np.nan_to_num((x - lo) / np.where(hi > lo, hi - lo, 1.0))


def sources(name: str, seed: int, train_size: int, cache_dir: Path) -> dict[str, Any]:
    """The dev part's truth and every source's ``(n, m)`` scores for one seed."""
    from finerouter import FineRouter
    from finerouter.routing.label_prior import LabelPrior
    from finerouter.routing.neighbours import neighbour_means

    fit, dev = dev_split(load_pool(name), seed, 0.2, train_size)
    router = FineRouter(cache_dir=cache_dir, seed=seed).fit(fit)
    fit_emb, dev_emb = router.encoder_.encode(fit.prompts), router.encoder_.encode(dev.prompts)
    scored = router.score_embeddings(dev_emb)
    rows = np.where(scored.task >= 0, scored.task, router.catalog_.n_tasks)
    fit_scores = np.asarray(fit.scores, dtype=np.float64)
    label = router.label_prior_ or LabelPrior.fit(fit_emb, fit.tasks, fit_scores, seed)
    truth = np.asarray(dev.scores, dtype=np.float64)
    out = {"truth": truth, "final": scored.final, "stage2": scored.stage2, "label": label.prior(dev_emb),
           "hard": router.stage1_[rows], "global": np.broadcast_to(router.global_prior_, truth.shape)}
    for k in (20, 40):
        out[f"nb{k}"] = neighbour_means(dev_emb, fit_emb, fit_scores, k=k)
    out["choice"] = {"assignment": router.mixing_.assignment, "method": router.mixing_.method,
                     "weights": router.mixing_.weights}
    return out


def quality(truth: np.ndarray, score: np.ndarray) -> float:
    """Mean true score of each prompt's top-scored model (a missing score counts 0), as the harness measures it."""
    from finerouter.evaluation.metrics import mean_quality

    return mean_quality(truth, np.argmax(score, axis=1))


def run(name: str, args: argparse.Namespace) -> dict[str, Any]:
    grid = [w for w in itertools.product(np.arange(0, 9) / 8, repeat=len(MIXED)) if abs(sum(w) - 1) < 1e-9]
    records, gains = [], {w: [] for w in grid}
    for seed in args.seeds:
        s = sources(name, seed, args.train_size, args.cache_dir)
        truth = s["truth"]
        best = quality(truth, s["global"])
        single = {k: quality(truth, s[k]) for k in ("final", *MIXED, "global")}
        norm = {k: _minmax(s[k]) for k in MIXED}
        tie = 1e-9 * _minmax(np.asarray(s["global"], dtype=np.float64))
        for w in grid:
            gains[w].append(quality(truth, sum(wi * norm[k] for wi, k in zip(w, MIXED)) + tie) - best)
        records.append({"seed": seed, "best_single": best, "oracle": float(np.nanmax(truth, axis=1).mean()),
                        "alone": single, "choice": s["choice"]})
        print(f"[{name} seed {seed}] " + ", ".join(f"{k} {v:.4f}" for k, v in single.items()), flush=True)
    top = sorted(grid, key=lambda w: -float(np.mean(gains[w])))[: args.top]
    return {"dataset": name, "train_size": args.train_size, "records": records,
            "top_mixes": [{"weights": dict(zip(MIXED, map(float, w))), "gains": gains[w]} for w in top]}


def report(result: dict[str, Any]) -> list[str]:
    keys = ["final", *MIXED, "global"]
    lines = [f"## {result['dataset']}" + (f", {result['train_size']} fit prompts" if result["train_size"] else ""),
             "", "| seed | " + " | ".join(keys) + " | router's choice |", "|---|" + "---:|" * len(keys) + "---|"]
    for r in result["records"]:
        c = r["choice"]
        w = c["weights"]
        lines.append(f"| {r['seed']} | " + " | ".join(f"{r['alone'][k]:.4f}" for k in keys)
                     + f" | {c['assignment']}, {c['method']}, stage2 {w['stage2']:.2f} / stage1 {w['stage1']:.2f} |")
    lines += ["", ("Best normalised mixes on the dev parts (optimistic: scored where chosen); gain over the best "
                   "single model per seed:"), "", "| " + " | ".join(MIXED) + " | gains | mean |",
              "|" + "---:|" * len(MIXED) + "---|---:|"]
    for t in result["top_mixes"]:
        g = t["gains"]
        lines.append("| " + " | ".join(f"{t['weights'][k]:.3f}" for k in MIXED)
                     + f" | {', '.join(f'{x:+.4f}' for x in g)} | {np.mean(g):+.4f} |")
    return lines + [""]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datasets", default="dcrouter")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--train-size", type=int, default=0)
    ap.add_argument("--top", type=int, default=8)
    ap.add_argument("--cache-dir", type=Path, default=Path(".finerouter_cache"))
    ap.add_argument("--out", type=Path, default=Path("bench/results/dev_sources"))
    args = ap.parse_args()
    args.seeds = [int(s) for s in args.seeds.split(",")]
    args.out.mkdir(parents=True, exist_ok=True)
    lines = ["# Each score source alone on dev parts of the training data", "",
             "`.venv/bin/python bench/dev_sources.py " + " ".join(sys.argv[1:]) + "`", ""]
    for name in args.datasets.split(","):
        result = run(name, args)
        tag = f"{name}_{args.train_size}" if args.train_size else name
        tmp = args.out / f".{tag}.json.tmp"
        tmp.write_text(json.dumps(result, indent=1))
        tmp.replace(args.out / f"{tag}.json")
        lines += report(result)
    tmp = args.out / ".report.md.tmp"
    tmp.write_text("\n".join(lines))
    tmp.replace(args.out / "report.md")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
