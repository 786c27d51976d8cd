"""A graded fallback: route away from the best single model only where the router's score says so by a margin.

Today the mixing cross-validation ends in a yes/no: route by the chosen mix, or fall back to the best single model
(the *incumbent*) on every prompt. Where the held-out folds cannot tell a small gain from noise (a few hundred
judge-scored prompts, a pool led everywhere by one model) the fallback throws the gain away, and where routing is
kept it also switches on prompts where the mix prefers another model by a hair. The *margin* rule routes by the mix
plus a bonus ``b`` on the incumbent's (per-prompt normalised) routing score: ``b = 0`` is routing, ``b >= 1`` is the
fallback, and between them the router leaves the incumbent only where another model leads it clearly. ``b`` is
chosen on the out-of-fold scores among a grid (ties to the larger), and the choice is cross-fitted like the mix's
(each fold's prompts get the mix and the margin chosen on the other folds); the router routes only if that
cross-fitted gain over the incumbent is positive.

This benchmark fits the router's fits once per seed on dev parts carved from the training split
(``bench/dev_variants.py``'s ``dev_split``), keeps each fit's out-of-fold sources, and replays the choice offline:
``fitted`` (each fit's own choice), ``no_fallback`` (its best routing mix even where it fell back) and ``margin``.
The fits' routing scores are averaged as the small-data ensemble averages them. Each fit's sources are cached in
``--work`` (npz), so that rules can be replayed without refitting.

    .venv/bin/python bench/incumbent_margin.py --datasets routerdc --judge 55 --drop-labels --train-size 800 \\
        --seeds 0,1,2,3,4 --out bench/results/incumbent_margin
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

from default_mix import pool_parser, quality  # noqa: E402
from dev_variants import dev_split, load_pool  # noqa: E402

from finerouter.routing.mixing import (  # noqa: E402
    CANDIDATE_MIXES, NEIGHBOUR_MIXES, NEIGHBOURS_ALONE, choose_weights, routing_mix,
)

MARGINS = (0.0, 0.025, 0.05, 0.1, 0.15, 0.2, 0.3, 0.5, 1.01)


def candidates_of(neighbours_offered: bool, neighbours_first: bool) -> tuple[tuple[float, ...], ...]:
    """The candidate mixes ``fitting.cross_validate_mixing`` offers (alpha 0.5)."""
    cands = ((0.5, 0.5, 0.0), *CANDIDATE_MIXES[1:])
    if not neighbours_offered:
        return cands
    rest = tuple(c for c in NEIGHBOUR_MIXES if c != NEIGHBOURS_ALONE)
    return (NEIGHBOURS_ALONE, *cands, *rest) if neighbours_first else cands + NEIGHBOUR_MIXES


def fit_sources(data: Any, fit: Any, dev: Any, seed: int, args: argparse.Namespace, emb: np.ndarray | None,
                ref: np.ndarray | None) -> dict[str, np.ndarray]:
    """Fit one single-fit router (seed ``seed``) and return its out-of-fold and dev sources."""
    from finerouter import FineRouter
    from finerouter.routing.neighbours import choose_k, neighbour_means
    from finerouter.routing.scoring import _score_one

    router = FineRouter(cache_dir=args.cache_dir, seed=seed, ensemble_size=1).fit(fit)
    emb = router.encoder_.encode(dev.prompts) if emb is None else emb
    oof, own = router.out_of_fold_, _score_one(router, emb)
    out = {"oof_stage2": oof.stage2, "oof_stage1": oof.stage1, "oof_global": oof.global_prior,
           "oof_truth": oof.truth, "oof_fold": oof.fold, "dev_stage2": own.stage2, "dev_stage1": own.stage1,
           "global": router.global_prior_, "fitted_weights": router.mixing_.vector(),
           "fitted_estimate": router.mixing_.estimate_vector(),
           "fitted_fallback": np.array(router.mixing_.method == "fallback"),
           "neighbours_first": np.array(router.mixing_.default is not None
                                        and router.mixing_.default.get("neighbours", 0.0) == 1.0)}  # fmt: skip
    if oof.neighbours is not None:
        ref = router.encoder_.encode(fit.prompts) if ref is None else ref
        out["oof_neighbours"] = oof.neighbours
        out["dev_neighbours"] = neighbour_means(emb, ref, np.asarray(fit.scores, dtype=np.float64),
                                                choose_k(ref, np.asarray(fit.scores, dtype=np.float64)))
    return out | {"_emb": emb}


def margin_picks(weights: np.ndarray, s: dict[str, np.ndarray], rows: np.ndarray, prefix: str,
                 incumbent: np.ndarray) -> np.ndarray:
    """``(len(MARGINS), len(rows))`` the model each margin picks on ``rows`` of the ``prefix`` sources (out of fold:
    each fold's rows with that fold's global prior)."""
    nb = s.get(prefix + "neighbours")
    out = np.empty((len(MARGINS), rows.size), dtype=np.int64)
    parts = [np.flatnonzero(s["oof_fold"][rows] == f) for f in np.unique(s["oof_fold"][rows])] \
        if prefix == "oof_" else [np.arange(rows.size)]
    for part in parts:
        r = rows[part]
        glob = s["oof_global"][r][0] if prefix == "oof_" else s["global"]
        final = routing_mix(weights, "normalised", s[prefix + "stage2"][r], s[prefix + "stage1"][r], glob,
                            None if nb is None else nb[r])  # fmt: skip
        bonus = np.zeros_like(final)
        bonus[np.arange(r.size), incumbent[r]] = 1.0
        out[:, part] = np.stack([np.argmax(final + b * bonus, axis=1) for b in MARGINS])
    return out


def margin_choice(s: dict[str, np.ndarray], cands: tuple[tuple[float, ...], ...]) -> dict[str, Any]:
    """The margin rule on one fit's out-of-fold sources: the mix and margin, and the cross-fitted gain."""
    truth0 = np.nan_to_num(s["oof_truth"], nan=0.0)
    fold = s["oof_fold"]
    n = truth0.shape[0]
    incumbent = np.argmax(s["oof_global"], axis=1)  # per row: its fold's best single model
    nb = s.get("oof_neighbours")

    def choose(rows: np.ndarray) -> tuple[np.ndarray, int]:
        c = choose_weights(s["oof_stage2"][rows], s["oof_stage1"][rows], s["oof_global"][rows], s["oof_truth"][rows],
                           fold[rows], candidates=cands, neighbours=None if nb is None else nb[rows])  # fmt: skip
        w = c.estimate_vector()
        picks = margin_picks(w, s, rows, "oof_", incumbent)
        q = truth0[rows[None, :], picks].mean(axis=1)
        best = max(range(len(MARGINS)), key=lambda k: (round(q[k], 12), k))  # ties: the larger margin
        return w, best

    selected = np.empty(n)
    for f in np.unique(fold):
        held = np.flatnonzero(fold == f)
        w, k = choose(np.flatnonzero(fold != f))
        selected[held] = truth0[held, margin_picks(w, s, held, "oof_", incumbent)[k]]
    single = truth0[np.arange(n), incumbent]
    diff = selected - single
    w, k = choose(np.arange(n))
    return {"weights": w, "margin": MARGINS[k], "gain": float(diff.mean()),
            "se": float(diff.std(ddof=1) / np.sqrt(n)), "route": bool(diff.mean() > 0)}


def run_seed(data: Any, seed: int, args: argparse.Namespace) -> dict[str, Any]:
    fit, dev = dev_split(data, seed, 0.2, args.train_size)
    best = int(np.argmax(np.nanmean(fit.scores, axis=0)))
    fits = args.fits or (3 if len(set(fit.prompts)) <= 2000 else 1)
    rec: dict[str, Any] = {"seed": seed, "fit_prompts": fit.n_prompts, "dev_prompts": dev.n_prompts,
                           "best_single": quality(dev.scores, np.full(dev.n_prompts, best)), "fits": []}  # fmt: skip
    finals: dict[str, list[np.ndarray]] = {"fitted": [], "no_fallback": [], "margin": []}
    t = time.perf_counter()
    emb = ref = None
    tag = f"{data.name}_{args.tag}_s{seed}"
    for i in range(fits):
        path = args.work / f"{tag}_f{i}.npz"
        if path.exists():
            s = dict(np.load(path))
        else:
            s = fit_sources(data, fit, dev, seed + i, args, emb, ref)
            emb = s.pop("_emb")
            np.savez(path, **s)
        cands = candidates_of("oof_neighbours" in s, bool(s["neighbours_first"]))
        replay = choose_weights(s["oof_stage2"], s["oof_stage1"], s["oof_global"], s["oof_truth"], s["oof_fold"],
                                candidates=cands, neighbours=s.get("oof_neighbours"))  # fmt: skip
        same = bool(np.allclose(replay.vector(), s["fitted_weights"]))
        m = margin_choice(s, cands)
        rows = np.arange(dev.n_prompts)
        inc = np.array(int(np.argmax(s["global"])))
        finals["fitted"].append(routing_mix(s["fitted_weights"], "normalised", s["dev_stage2"], s["dev_stage1"],
                                            s["global"], s.get("dev_neighbours")))  # fmt: skip
        finals["no_fallback"].append(routing_mix(s["fitted_estimate"], "normalised", s["dev_stage2"],
                                                 s["dev_stage1"], s["global"], s.get("dev_neighbours")))  # fmt: skip
        margin = m["margin"] if m["route"] else MARGINS[-1]
        final = routing_mix(m["weights"], "normalised", s["dev_stage2"], s["dev_stage1"], s["global"],
                            s.get("dev_neighbours"))  # fmt: skip
        final[rows, inc] += margin
        finals["margin"].append(final)
        rec["fits"].append({"fitted_fallback": bool(s["fitted_fallback"]), "replayed_same": same,
                            "margin": margin, "margin_gain": m["gain"], "margin_se": m["se"],
                            "fitted_gain": replay.gain})  # fmt: skip
    rec["seconds"] = time.perf_counter() - t
    rec["rules"] = {k: quality(dev.scores, np.argmax(np.mean(f, axis=0), axis=1)) for k, f in finals.items()}
    print(f"[{data.name} seed {seed}] best single {rec['best_single']:.4f} "
          + " ".join(f"{k} {v - rec['best_single']:+.4f}" for k, v in rec["rules"].items())
          + " margins " + ",".join(f"{f['margin']}" for f in rec["fits"])
          + " replayed " + ",".join(str(f["replayed_same"]) for f in rec["fits"]), flush=True)
    return rec


def table(result: dict[str, Any]) -> list[str]:
    """The rules' dev quality and gain over the best single model (mean ± SE over seeds), against ``fitted``."""
    recs = result["records"]
    head = "| rule | dev quality | gain over best single (mean ± SE) | seeds ≥ best single | seeds above fitted |"
    lines = [f"## {result['dataset']}", "", f"`{result['command']}`", "", head, "|---|---:|---:|---:|---:|"]
    for name in recs[0]["rules"]:
        gains = np.array([r["rules"][name] - r["best_single"] for r in recs])
        se = np.std(gains, ddof=1) / np.sqrt(gains.size) if gains.size > 1 else float("nan")
        vs = np.array([r["rules"][name] - r["rules"]["fitted"] for r in recs])
        lines.append(f"| {name} | {np.mean([r['rules'][name] for r in recs]):.4f} | {gains.mean():+.4f} ± {se:.4f} "
                     f"| {int((gains >= -1e-12).sum())}/{gains.size} | {int((vs > 1e-12).sum())} above, "
                     f"{int((vs < -1e-12).sum())} below |")
    lines += ["", "per seed (gain over best single; margins per fit): " + "; ".join(
        f"seed {r['seed']}: " + ", ".join(f"{k} {v - r['best_single']:+.4f}" for k, v in r["rules"].items())
        + " [" + ",".join(str(f["margin"]) for f in r["fits"]) + "]" for r in recs), ""]  # fmt: skip
    return lines


def main() -> None:
    ap = pool_parser(__doc__)
    ap.add_argument("--train-size", type=int, default=0, help="fit prompts (0: all)")
    ap.add_argument("--fits", type=int, default=0, help="fits averaged (0: 3 on small data, else 1)")
    ap.add_argument("--work", type=Path, default=Path(".finerouter_cache/incumbent_margin"))
    ap.add_argument("--out", type=Path, default=Path("bench/results/incumbent_margin"))
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    args.work.mkdir(parents=True, exist_ok=True)
    for name in [d.strip() for d in args.datasets.split(",") if d.strip()]:
        data = load_pool(name, judge=args.judge, drop_labels=args.drop_labels)
        args.tag = f"{f'judge{args.judge}' if args.judge else 'real'}{'_nolabels' if args.drop_labels else ''}" \
            f"_{args.train_size or 'all'}"
        records = [run_seed(data, int(s), args) for s in args.seeds.split(",")]
        tag = f"{name}_{args.tag}"
        result = {"dataset": tag, "command": "python bench/incumbent_margin.py " + " ".join(sys.argv[1:]),
                  "margins": MARGINS, "records": records}  # fmt: skip
        (args.out / f"{tag}.json").write_text(json.dumps(result, indent=1))
        (args.out / f"{tag}.md").write_text("\n".join(table(result)))
        print("\n".join(table(result)), flush=True)


if __name__ == "__main__":
    main()
