"""Which calibration of the expected scores serves the cost-aware rule? Measured on dev parts carved from the
training data (never the test part).

For each dataset and seed: the harness's 80/20 split by unique prompt (the test part set aside, unused); the
training part split again 80/20 by unique prompt (seed + 17) into a fit part and a dev part. One FineRouter is
fitted on the fit part (with the dataset's prices where it has them, as ``bench/quality.py`` does); its
out-of-fold scores (``router.out_of_fold_``) are what every calibration below is fitted on, and the dev part is
routed by the cost-aware rule (``argmax expected - lambda * cost``, lambda solved for 41 budgets as the harness's
lambda-curve does). Compared:

* ``isotonic``: a plain isotonic map (a step function: raw scores in one block tie exactly);
* ``centred``: centred isotonic regression (:meth:`finerouter.routing.mixing.Calibration.fit`, the default);
* ``isotonic+eps``: the step function with ties broken by ``1e-6 * raw``;
* ``raw``: the uncalibrated raw mix;
* ``per_model``: centred isotonic regression fitted for each model on its own column;
* ``router``: the router's own expected scores (``centred`` for one fit; with ``--ensemble-size k`` the mean of
  the k fits' calibrated scores, while the other columns pass the k fits' mean stage-1 and stage-2 scores through
  the first fit's mix and calibrations, which were fitted on that fit's own out-of-fold scores).

Reported per seed: the cost (share of the best single model's) at which the curve first reaches the best single
model's dev quality (the best single model chosen on the fit part), the curve's top quality, and the expected
calibration error on the dev part.

    .venv/bin/python bench/calibration_variants.py --datasets dcrouter,routerbench_subset --seeds 0,1,2
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


def step_isotonic(raw: np.ndarray, truth: np.ndarray) -> Any:
    """The plain isotonic map (what the router used before centred isotonic regression)."""
    from sklearn.isotonic import IsotonicRegression

    ok = np.isfinite(raw) & np.isfinite(truth)
    iso = IsotonicRegression(out_of_bounds="clip", y_min=0.0, y_max=1.0).fit(raw[ok], truth[ok])
    return lambda x: np.interp(x, iso.X_thresholds_, iso.y_thresholds_)


def run(name: str, seed: int, cache_dir: Path, ensemble_size: int | str = "auto") -> dict[str, Any]:
    from dev_variants import dev_split, load_pool

    from finerouter import FineRouter
    from finerouter.data.locate import shared_data_dir
    from finerouter.evaluation.metrics import cost_fraction_at_quality, expected_calibration_error, mean_cost, mean_quality
    from finerouter.evaluation.seeds import _lambda_curve
    from finerouter.routing.mixing import Calibration, raw_mix

    prices = shared_data_dir() / "dcrouter" / "prices.csv" if name == "dcrouter" else None
    data = load_pool(name, prices=prices)
    if data.costs is None:
        raise SystemExit(f"{name} has no costs: the cost-aware rule needs them")
    fit, dev = dev_split(data, seed)
    router = FineRouter(cache_dir=cache_dir, seed=seed, prices=prices, ensemble_size=ensemble_size).fit(fit)
    scores = router.score_embeddings(router.encoder_.encode(dev.prompts))
    oof = router.out_of_fold_
    weights = router.mixing_.estimate_vector()
    raw_oof_m = raw_mix(weights, oof.stage2, oof.stage1, oof.global_prior, oof.neighbours)
    raw_dev = raw_mix(weights, scores.stage2, scores.stage1, router.global_prior_, None)
    raw_oof, truth = raw_oof_m.ravel(), oof.truth.ravel()
    step = step_isotonic(raw_oof, truth)
    per_model = np.column_stack([Calibration.fit(raw_oof_m[:, j], oof.truth[:, j])(raw_dev[:, j])
                                 for j in range(raw_dev.shape[1])])  # fmt: skip
    variants = {"isotonic": step(raw_dev), "centred": Calibration.fit(raw_oof, truth)(raw_dev),
                "isotonic+eps": step(raw_dev) + 1e-6 * raw_dev, "raw": raw_dev,
                "per_model": per_model, "router": scores.expected}  # fmt: skip
    route_costs = router.estimate_costs(dev.prompts)
    best = int(np.argmax(np.nanmean(fit.scores, axis=0)))
    q_best = mean_quality(dev.scores, np.full(dev.n_prompts, best))
    c_best = mean_cost(dev.costs, np.full(dev.n_prompts, best))
    out: dict[str, Any] = {"seed": seed, "mixing": router.fit_summary_["mixing"]["method"], "best_single": q_best}
    for label, expected in variants.items():
        curve = _lambda_curve(expected, route_costs, dev.scores, dev.costs, 41)
        out[label] = {
            "cost_fraction": cost_fraction_at_quality(curve["cost"], curve["quality"], q_best, c_best),
            "top_quality": float(max(curve["quality"])),
            "ece": expected_calibration_error(expected, dev.scores),
        }
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datasets", default="dcrouter,routerbench_subset")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--cache-dir", type=Path, default=Path(".finerouter_cache"))
    ap.add_argument("--ensemble-size", default="auto", help="the router's ensemble_size (an int or auto)")
    ap.add_argument("--out", type=Path, default=ROOT / "results" / "calibration_variants")
    args = ap.parse_args()
    labels = ("isotonic", "centred", "isotonic+eps", "raw", "per_model", "router")
    lines = [f"`.venv/bin/python bench/calibration_variants.py {' '.join(sys.argv[1:])}`", "",
             "Cost at best-single quality (share of its cost; `never` = not reached) / expected calibration error:", "",
             "| dataset | seed | mixing | " + " | ".join(labels) + " |", "|---|---:|---|" + "---|" * len(labels)]  # fmt: skip
    size = args.ensemble_size if args.ensemble_size == "auto" else int(args.ensemble_size)
    results = []
    for name in [d.strip() for d in args.datasets.split(",") if d.strip()]:
        for seed in [int(s) for s in args.seeds.split(",") if s.strip()]:
            rec = run(name, seed, args.cache_dir, size)
            rec["dataset"] = name
            results.append(rec)
            cells = []
            for label in labels:
                frac = rec[label]["cost_fraction"]
                cells.append(f"{'never' if frac is None else f'{100 * frac:.1f}%'} / {rec[label]['ece']:.4f}")
            lines.append(f"| {name} | {seed} | {rec['mixing']} | " + " | ".join(cells) + " |")
            print(lines[-1], flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(results, indent=1, default=float) + "\n")
    (args.out / "report.md").write_text("# Calibrations for the cost-aware rule, on dev parts\n\n" + "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
