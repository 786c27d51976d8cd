"""How strong Stage 2 is on its own, and what a stronger one would add to the router's mix: dev parts only.

For each dataset and seed, the fit and dev parts of ``bench/dev_variants.py`` (the harness's training part split
again 80/20 by unique prompt; the test part never read). On the fit part:

* the default router (``FineRouter()``), whose stage-1 prior (the label prior or the task priors, as its
  cross-validation chose) and Stage 2 score the dev part;
* Stage 2's general adapters alone (``QualityEstimator(epochs_task=0)``), early-stopped on the dev MSE (the default)
  and on dev routing quality (``stop_on="routing"``);
* the MLP regressor and IPR-style baselines (one output per model from the prompt embedding; they early-stop on
  dev routing quality).

Each row routes the dev part by argmax: each source alone, and the router's stage-1 prior mixed with each Stage-2-like
source at weights ``w`` (``w·norm(source) + (1 − w)·norm(prior)``, per-prompt min-max as the router mixes), so that
one can see whether a stronger per-prompt estimate adds anything on top of the prior.

    .venv/bin/python bench/stage2_strength.py --datasets dcrouter --seeds 0,1,2,3,4
    .venv/bin/python bench/stage2_strength.py --datasets routerdc --seeds 0,1,2 --out bench/results/stage2_strength
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
sys.path.insert(0, str(ROOT))

from dev_variants import dev_split, load_pool  # noqa: E402

#: The mixing weights of the Stage-2-like source against the router's stage-1 prior.
WEIGHTS = (0.0, 0.25, 0.5, 0.75, 1.0)
#: The per-prompt sources compared: the router's own Stage 2 (task adapters included), its general adapters
#: stopped on MSE and on routing quality, and two baselines.
SOURCES = ("stage2", "general_mse", "general_routing", "mlp_regressor", "ipr")


def per_prompt_sources(router: Any, fit: Any, emb_fit: np.ndarray, emb_dev: np.ndarray, seed: int
                       ) -> dict[str, np.ndarray]:  # fmt: skip
    """``{source: (n_dev, m) scores}`` for every entry of :data:`SOURCES`."""
    from finerouter.baselines import make_router
    from finerouter.quality.estimator import QualityEstimator

    out = {"stage2": np.asarray(router.score_embeddings(emb_dev).stage2, dtype=np.float64)}
    for name, stop in (("general_mse", "mse"), ("general_routing", "routing")):
        qe = QualityEstimator(seed=seed, epochs_task=0, stop_on=stop).fit(emb_fit, fit.scores)
        out[name] = np.asarray(qe.predict_general(emb_dev), dtype=np.float64)
    for name in ("mlp_regressor", "ipr"):
        out[name] = np.asarray(make_router(name, seed=seed).fit(fit, emb_fit).predict_scores(emb_dev))
    return out


def run_seed(data: Any, seed: int, cache_dir: Path, train_size: int) -> dict[str, Any]:
    from finerouter import FineRouter
    from finerouter.evaluation.metrics import mean_quality
    from finerouter.routing.policy import minmax_rows

    fit, dev = dev_split(data, seed, 0.2, train_size)
    router = FineRouter(cache_dir=cache_dir, seed=seed).fit(fit)
    emb_fit, emb_dev = router.encoder_.encode(fit.prompts), router.encoder_.encode(dev.prompts)
    scores = router.score_embeddings(emb_dev)

    def quality(s: np.ndarray) -> float:
        return float(mean_quality(dev.scores, np.argmax(s, axis=1)))

    prior = np.asarray(scores.stage1, dtype=np.float64)
    prior = minmax_rows(np.where(np.isfinite(prior), prior, np.nanmin(prior)))
    rec: dict[str, Any] = {
        "seed": seed, "fit_prompts": fit.n_prompts, "dev_prompts": dev.n_prompts,
        "mixing": {k: float(v) for k, v in router.mixing_.weights.items()}, "assignment": router.mixing_.assignment,
        "router": quality(scores.final), "prior": quality(prior),
        "best_single": float(mean_quality(dev.scores, np.full(dev.n_prompts, int(np.nanargmax(
            np.nanmean(fit.scores, axis=0)))))),
        "mixed": {},
    }  # fmt: skip
    for name, s in per_prompt_sources(router, fit, emb_fit, emb_dev, seed).items():
        norm = minmax_rows(s)
        rec["mixed"][name] = {str(w): quality(w * norm + (1 - w) * prior) for w in WEIGHTS}
    return rec


def table(records: list[dict[str, Any]]) -> list[str]:
    def mean(values: list[float]) -> str:
        return f"{np.mean(values):.4f}"

    lines = [f"router (default) {mean([r['router'] for r in records])}; its stage-1 prior alone "
             f"{mean([r['prior'] for r in records])}; best single {mean([r['best_single'] for r in records])}; "
             f"mixes chosen: " + "; ".join(f"{r['assignment']} {r['mixing']}" for r in records), "",
             "| source | alone | " + " | ".join(f"w = {w}" for w in WEIGHTS[1:-1]) + " | best mix − prior alone |",
             "|---|---:|" + "---:|" * (len(WEIGHTS) - 2) + "---:|"]  # fmt: skip
    for name in SOURCES:
        cols = {w: [r["mixed"][name][str(w)] for r in records] for w in WEIGHTS}
        best = max(np.mean(cols[w]) for w in WEIGHTS[1:-1])
        lines.append(f"| {name} | {mean(cols[1.0])} | " + " | ".join(mean(cols[w]) for w in WEIGHTS[1:-1])
                     + f" | {best - np.mean(cols[0.0]):+.4f} |")  # fmt: skip
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datasets", default="dcrouter,routerdc")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--train-size", type=int, default=0, help="cut the fit part to this many prompts (0: all)")
    ap.add_argument("--cache-dir", type=Path, default=Path(".finerouter_cache"))
    ap.add_argument("--out", type=Path, default=ROOT / "results" / "stage2_strength")
    args = ap.parse_args()
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    args.out.mkdir(parents=True, exist_ok=True)
    command = ".venv/bin/python bench/stage2_strength.py " + " ".join(sys.argv[1:])
    for name in [d.strip() for d in args.datasets.split(",") if d.strip()]:
        data = load_pool(name)
        records = []
        for seed in seeds:
            records.append(run_seed(data, seed, args.cache_dir, args.train_size))
            print(f"[{name} seed {seed}] router {records[-1]['router']:.4f}, prior {records[-1]['prior']:.4f}, "
                  + ", ".join(f"{k} {v['1.0']:.4f}" for k, v in records[-1]["mixed"].items()), flush=True)
        tag = name + (f"_{args.train_size}" if args.train_size else "")
        (args.out / f"{tag}.json").write_text(json.dumps({"dataset": name, "train_size": args.train_size,
                                                          "records": records}, indent=1) + "\n")  # fmt: skip
        report = [f"## {tag}", "", f"`{command}`", "", *table(records), ""]
        (args.out / f"{tag}.md").write_text("\n".join(report))
        print("\n".join(report), flush=True)


if __name__ == "__main__":
    main()
