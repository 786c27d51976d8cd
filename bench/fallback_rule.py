"""How much cross-validated evidence should a fit need before it routes rather than fall back to the best single
model? Measured on dev parts carved from the training data (never the test part).

For each setting and seed: the harness's 80/20 split by unique prompt (the test part set aside, unused); the
training part split again 80/20 by unique prompt (seed + 17) into a fit part (cut to ``--train-size`` prompts, the
pool optionally grown by ``--blend`` or ``--enlarge`` as ``bench/stress.py`` does) and a dev part
(``bench/dev_variants.py``'s split). One default FineRouter is fitted on the fit part; each of its fits (the
router and its ensemble members) has its cross-fitted out-of-fold gain over the best single model and that gain's
paired standard error (``mixing_.gain``, ``mixing_.gain_se``). The rules compared re-route the dev part from the
same fits, with every fit whose evidence the rule finds too weak made to route by the global prior (the best single
model), exactly as ``choose_weights``'s fallback does:

* ``se0`` (the default): a fit routes when its gain is positive;
* ``se0.5`` / ``se1`` / ``se2``: when its gain exceeds 0.5 / 1 / 2 standard errors;
* ``pooled1``: every fit routes as fitted when the fits' mean gain exceeds their mean standard error (one fit's
  standard error: the fits share the prompts, so their errors are not independent), else all fall back.

Reported: dev quality per rule, its gain over the best single model, the fits' gains and standard errors.

    .venv/bin/python bench/fallback_rule.py --dataset routerbench_subset --enlarge --train-size 1000 --seeds 0,1,2
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
RULES = ("se0", "se0.5", "se1", "se2", "pooled1")


def routes(rule: str, gains: np.ndarray, ses: np.ndarray) -> np.ndarray:
    """``(k,)`` bool: which fits route (the others fall back) under ``rule``, from each fit's cross-fitted gain and
    its standard error (NaN gain: the fit fell back for want of folds)."""
    gains = np.nan_to_num(gains, nan=0.0)
    ses = np.nan_to_num(ses, nan=0.0)
    if rule.startswith("se"):
        k = float(rule[2:])
        return (gains > 0) & (gains > k * ses)
    if rule == "pooled1":
        return np.full(gains.shape, bool(gains.mean() > ses.mean())) & (gains > 0)
    raise ValueError(rule)


def run(args: argparse.Namespace, seed: int) -> dict[str, Any]:
    from dev_variants import dev_split, load_pool

    from finerouter import FineRouter
    from finerouter.evaluation.metrics import mean_quality
    from finerouter.routing.ensemble import members_of
    from finerouter.routing.scoring import _score_one, global_normalised

    data = load_pool(args.dataset, args.blend, enlarge=args.enlarge)
    fit, dev = dev_split(data, seed, 0.2, args.train_size)
    router = FineRouter(cache_dir=args.cache_dir, seed=seed).fit(fit)
    emb = router.encoder_.encode(dev.prompts)
    fits = [router, *members_of(router)]
    finals = [_score_one(f, emb).final for f in fits]
    single = np.broadcast_to(global_normalised(router), finals[0].shape)
    # a fit that fell back at fit time routes by the global prior already: its cv weights are its estimate_weights,
    # which this bench does not re-route (a stricter rule never makes a fallback fit route)
    gains = np.array([np.nan if f.mixing_.gain is None else f.mixing_.gain for f in fits], dtype=np.float64)
    ses = np.array([np.nan if f.mixing_.gain_se is None else f.mixing_.gain_se for f in fits], dtype=np.float64)
    best = int(np.argmax(np.nanmean(fit.scores, axis=0)))
    rec: dict[str, Any] = {
        "seed": seed, "fit_prompts": fit.n_prompts, "dev_prompts": dev.n_prompts, "n_models": fit.n_models,
        "best_single": mean_quality(dev.scores, np.full(dev.n_prompts, best)),
        "methods": [f.mixing_.method for f in fits], "gains": gains.tolist(), "ses": ses.tolist(), "rules": {},
    }
    for rule in RULES:
        on = routes(rule, gains, ses)
        mean = np.mean([fi if (ok and f.mixing_.method == "cv") else single for fi, ok, f in zip(finals, on, fits)],
                       axis=0)
        rec["rules"][rule] = mean_quality(dev.scores, np.argmax(mean, axis=1))
    print(f"[seed {seed}] best single {rec['best_single']:.4f}; " + ", ".join(
        f"{r} {q:.4f}" for r, q in rec["rules"].items()) + "; fits " + ", ".join(
        f"{m} {g:+.4f}±{s:.4f}" for m, g, s in zip(rec["methods"], gains, ses)), flush=True)
    return rec


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default="routerbench_subset")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--train-size", type=int, default=1000)
    ap.add_argument("--blend", type=int, default=0)
    ap.add_argument("--enlarge", action="store_true")
    ap.add_argument("--cache-dir", type=Path, default=Path(".finerouter_cache"))
    ap.add_argument("--out", type=Path, default=ROOT / "results" / "fallback_rule")
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT))
    recs = [run(args, int(s)) for s in args.seeds.split(",") if s.strip()]
    tag = args.dataset + (f"_blend{args.blend}" if args.blend else "") + ("_pool" if args.enlarge else "") + \
        f"_{args.train_size}"
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{tag}.json").write_text(json.dumps(recs, indent=1, default=float) + "\n")
    base = np.array([r["best_single"] for r in recs])
    lines = [f"## {tag}", "", f"`.venv/bin/python bench/fallback_rule.py {' '.join(sys.argv[1:])}`", "",
             "| rule | dev quality | gain over best single (mean) | seeds >= best single |", "|---|---:|---:|---:|"]
    for rule in RULES:
        q = np.array([r["rules"][rule] for r in recs])
        lines.append(f"| {rule} | {q.mean():.4f} | {(q - base).mean():+.4f} | {(q >= base - 1e-12).sum()}/{q.size} |")
    lines += ["", f"best single {base.mean():.4f}; fits' cross-fitted gains ± SE per seed: " + "; ".join(
        ", ".join(f"{g:+.4f}±{s:.4f}" for g, s in zip(r["gains"], r["ses"])) for r in recs), ""]
    path = args.out / "report.md"
    previous = path.read_text() if path.exists() else "# Fallback rules on dev parts\n\n"
    path.write_text(previous + "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
