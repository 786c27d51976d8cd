"""Which mix should the mixing cross-validation keep by default? Candidate orders compared on dev parts.

``choose_weights`` keeps its first candidate (the default) unless another routes the held-out folds better by a
standard error, then falls back to the best single model unless the cross-fitted selection gains. Which mix comes
first therefore decides most fits where the folds cannot tell the mixes apart (a few hundred noisy prompts). This
benchmark fits the router's fits once per seed, keeps each fit's out-of-fold sources, and replays the choice under
several candidate orders offline, so every order is judged on the same fits.

For each dataset (optionally a judge-scored pool, ``--judge 55 --drop-labels``) and seed: the harness's split's
training part, cut to ``--train-size`` prompts, and a dev part (``bench/dev_variants.py``'s ``dev_split``). The
router's ``k`` small-data fits (seeds ``seed ... seed + k - 1``, each a single fit with the small-data settings, as
the ensemble's members are) are fitted on the fit part; for each order the weights are re-chosen from each fit's own
out-of-fold scores (its chosen stage-1 assignment's), the dev prompts are scored with them, and the fits' routing
scores are averaged as the ensemble averages them. Dev quality is the mean true score of the picked model; the
gain is over the best single model of the fit part.

    .venv/bin/python bench/default_mix.py --datasets routerdc,dcrouter --judge 55 --drop-labels --train-size 800 \\
        --seeds 0,1,2,3,4 --out bench/results/default_mix
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from dev_variants import dev_split, load_pool  # noqa: E402

from finerouter.routing.mixing import (  # noqa: E402
    CANDIDATE_MIXES, NEIGHBOUR_MIXES, NEIGHBOURS_ALONE, choose_weights, routing_mix,
)

EQ5_FIRST = ((0.5, 0.5, 0.0), *CANDIDATE_MIXES[1:], *NEIGHBOUR_MIXES)
NEIGHBOURS_FIRST = (NEIGHBOURS_ALONE, *EQ5_FIRST[:-1])
#: ``name: (candidates, route by the best mix even where the fallback would keep the best single model)``
ORDERS: dict[str, tuple[tuple[tuple[float, ...], ...], bool]] = {
    "eq5_first": (EQ5_FIRST, False),
    "neighbours_first": (NEIGHBOURS_FIRST, False),
    "eq5_first_no_fallback": (EQ5_FIRST, True),
    "neighbours_first_no_fallback": (NEIGHBOURS_FIRST, True),
}


def quality(truth: np.ndarray, picks: np.ndarray) -> float:
    return float(np.nan_to_num(truth, nan=0.0)[np.arange(picks.size), picks].mean())


def run_seed(data: Any, seed: int, args: argparse.Namespace) -> dict[str, Any]:
    from finerouter import FineRouter
    from finerouter.routing.scoring import _score_one

    fit, dev = dev_split(data, seed, 0.2, args.train_size)
    best = int(np.argmax(np.nanmean(fit.scores, axis=0)))
    rec: dict[str, Any] = {"seed": seed, "fit_prompts": fit.n_prompts, "dev_prompts": dev.n_prompts,
                           "best_single": quality(dev.scores, np.full(dev.n_prompts, best)), "fits": []}  # fmt: skip
    finals: dict[str, list[np.ndarray]] = {name: [] for name in ORDERS}
    t = time.perf_counter()
    emb = neighbours = None  # the dev prompts' embeddings and neighbour scores: the same for every fit
    for i in range(args.fits):
        router = FineRouter(cache_dir=args.cache_dir, seed=seed + i, ensemble_size=1, stage1_assignment="cv",
                            cv_folds=5).fit(fit)  # fmt: skip
        emb = router.encoder_.encode(dev.prompts) if emb is None else emb
        oof, own = router.out_of_fold_, _score_one(router, emb)
        if oof.neighbours is not None and neighbours is None:
            from finerouter.routing.neighbours import choose_k, neighbour_means

            ref = router.encoder_.encode(fit.prompts)
            neighbours = neighbour_means(emb, ref, fit.scores, choose_k(ref, fit.scores))
        methods = {}
        for name, (candidates, no_fallback) in ORDERS.items():
            if oof.neighbours is None:  # the source was not offered: only the paper's mixes
                candidates = tuple(c for c in candidates if len(c) == 3 or c[3] == 0)
            choice = choose_weights(oof.stage2, oof.stage1, oof.global_prior, oof.truth, oof.fold,
                                    candidates=candidates, neighbours=oof.neighbours)  # fmt: skip
            weights = choice.estimate_vector() if no_fallback else choice.vector()
            finals[name].append(routing_mix(weights, choice.scale, own.stage2, own.stage1, router.global_prior_,
                                            neighbours))  # fmt: skip
            methods[name] = choice.method
        rec["fits"].append({"seed": seed + i, "neighbours_offered": oof.neighbours is not None, "methods": methods})
    rec["seconds"] = time.perf_counter() - t
    rec["orders"] = {name: quality(dev.scores, np.argmax(np.mean(f, axis=0), axis=1)) for name, f in finals.items()}
    print(f"[{data.name} seed {seed}] best single {rec['best_single']:.4f} "
          + " ".join(f"{k} {v - rec['best_single']:+.4f}" for k, v in rec["orders"].items()), flush=True)
    return rec


def table(result: dict[str, Any]) -> list[str]:
    recs = result["records"]
    lines = [f"## {result['dataset']}", "", f"`{result['command']}`", "",
             "| candidate order | dev quality | gain over best single (mean ± SE) | seeds ≥ best single | fits falling back |",
             "|---|---:|---:|---:|---:|"]  # fmt: skip
    for name in ORDERS:
        gains = np.array([r["orders"][name] - r["best_single"] for r in recs])
        se = gains.std(ddof=1) / np.sqrt(gains.size) if gains.size > 1 else float("nan")
        falls = sum(f["methods"][name] == "fallback" for r in recs for f in r["fits"])
        quality_mean = np.mean([r["orders"][name] for r in recs])
        lines.append(f"| {name} | {quality_mean:.4f} | {gains.mean():+.4f} ± {se:.4f} | "
                     f"{int((gains >= -1e-12).sum())}/{gains.size} | {falls}/{sum(len(r['fits']) for r in recs)} |")
    lines += ["", "per seed, gain over best single: " + "; ".join(
        f"seed {r['seed']}: " + ", ".join(f"{k} {v - r['best_single']:+.4f}" for k, v in r["orders"].items())
        for r in recs), ""]  # fmt: skip
    return lines


def pool_parser(doc: str | None) -> argparse.ArgumentParser:
    """The options of the benchmarks that replay fits on a pool (this one, ``incumbent_margin.py``): the datasets,
    an optional judge-scored pool, the seeds and the embedding cache."""
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datasets", default="routerdc,dcrouter")
    ap.add_argument("--judge", type=int, default=0, help="a judge-scored pool of this many models")
    ap.add_argument("--drop-labels", action="store_true")
    ap.add_argument("--seeds", default="0,1,2,3,4")
    ap.add_argument("--cache-dir", default=".finerouter_cache")
    return ap


def main() -> None:
    ap = pool_parser(__doc__)
    ap.add_argument("--train-size", type=int, default=800)
    ap.add_argument("--fits", type=int, default=3, help="fits averaged, as the small-data ensemble")
    ap.add_argument("--out", type=Path, default=Path("bench/results/default_mix"))
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for name in [d.strip() for d in args.datasets.split(",") if d.strip()]:
        data = load_pool(name, judge=args.judge, drop_labels=args.drop_labels)
        records = [run_seed(data, int(s), args) for s in args.seeds.split(",")]
        tag = f"{name}{f'_judge{args.judge}' if args.judge else ''}{'_nolabels' if args.drop_labels else ''}" \
            f"_{args.train_size}"
        result = {"dataset": tag, "command": "python bench/default_mix.py " + " ".join(sys.argv[1:]),
                  "records": records}  # fmt: skip
        (args.out / f"{tag}.json").write_text(json.dumps(result, indent=1))
        (args.out / f"{tag}.md").write_text("\n".join(table(result)))
        print("\n".join(table(result)), flush=True)


if __name__ == "__main__":
    main()
