"""Routing quality on the three public datasets of ../shared/data: FineRouter, its ablations and the baselines.

For each dataset: 5 random 80/20 splits by unique prompt (stratified by task), every router fitted on the
training part and scored on the test part, with the default encoder (packaged all-MiniLM-L6-v2, embeddings
cached once per dataset). Writes ``results.json``, ``report.md``, ``cost_quality.png`` and
``routing_distribution.png`` under ``bench/results/<dataset>/`` and prints a summary.

    .venv/bin/python bench/quality.py                                   # all three datasets, all routers
    .venv/bin/python bench/quality.py --datasets dcrouter --seeds 2     # quicker
    .venv/bin/python bench/quality.py --routers best_single,oracle,knn,mlp_regressor

Costs: dcrouter has none per prompt, so its prices.csv estimates them (input tokens ≈ characters / 4, plus a
fixed answer length); routerbench_subset has real per-prompt costs; routerdc has no cost (no curves).

Reference values from the issue (MiniLM, 5 random 80/20 splits by unique prompt), to sanity-check baselines:
dcrouter best single 0.614, kNN-40 0.641, MLP regressor 0.630, coarse-task best 0.659, oracle 0.796;
routerbench_subset best single (GPT-4) 0.880 at $0.0050 per prompt, kNN-40 0.863 at $0.0041, oracle 0.976.
"""

from __future__ import annotations

import argparse
import logging
import os
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

DATASETS = ("dcrouter", "routerbench_subset", "routerdc")
ROOT = Path(__file__).resolve().parent


def _commit() -> str | None:
    """The repository's HEAD commit (short), with ``+dirty`` when src/ has uncommitted changes; None outside git."""
    import subprocess

    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "src"], cwd=ROOT.parent, capture_output=True,
                               text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return head + ("+dirty" if dirty else "")


def run_one(name: str, args: argparse.Namespace) -> dict:
    from finerouter.data.locate import dataset_path, shared_data_dir
    from finerouter.data.readers import read_routing_data
    from finerouter.evaluation.report import write_outputs
    from finerouter.evaluation.runner import embed_dataset, run_evaluation

    prices = shared_data_dir() / "dcrouter" / "prices.csv" if name == "dcrouter" else None
    data = read_routing_data(dataset_path(name), prices=prices, name=name)
    t = time.perf_counter()
    spec = args.encoder
    if args.truncation is not None:
        from finerouter.encoders import get_encoder

        spec = get_encoder(args.encoder, truncation=args.truncation)
    emb, encoder = embed_dataset(data, spec, args.cache_dir)
    print(f"[{name}] {data}; embeddings {emb.shape} in {time.perf_counter() - t:.1f}s", flush=True)

    def progress(description: str, done: int, total: int) -> None:
        print(f"[{name}] {done}/{total} {description}", flush=True)

    results = run_evaluation(
        data, emb, routers=args.routers, seeds=args.seeds, test_size=args.test_size, prices=prices,
        encoder=encoder, progress=progress,
    )
    results["commit"] = _commit()
    paths = write_outputs(results, args.out / name)
    print(f"[{name}] wrote {paths['report']}", flush=True)
    return results


def summary(name: str, results: dict) -> None:
    print(f"\n== {name}: {len(results['seeds'])} seeds, test size {results['test_size']} ==")
    def num(x: float | None) -> str:
        return "–" if x is None else f"{x:.3f}"

    print(f"{'router':22s} {'quality':>16s} {'cost/prompt':>12s} {'headroom':>9s} {'area':>7s} {'AIQ':>7s} "
          f"{'cost@best':>9s} {'q@25%':>7s} {'q@50%':>7s}")
    for router, rec in results["routers"].items():
        q = f"{rec['quality_mean']:.4f} ± {rec['quality_std'] or 0:.4f}"
        c = "–" if rec["cost_mean"] is None else f"${rec['cost_mean']:.6f}"
        h = "–" if rec["headroom_mean"] is None else f"{rec['headroom_mean']:+.3f}"
        frac = rec.get("cost_fraction_at_best_single_quality")
        f = "–" if "curve" not in rec else ("never" if frac is None else f"{frac:.0%}")
        print(f"{router:22s} {q:>16s} {c:>12s} {h:>9s} {num(rec.get('curve_area_mean')):>7s} "
              f"{num(rec.get('aiq_mean')):>7s} {f:>9s} {num(rec.get('quality_at_25pct_best_single_cost')):>7s} "
              f"{num(rec.get('quality_at_50pct_best_single_cost')):>7s}")
        lam = rec.get("lambda_curve")
        if lam:
            frac = lam.get("cost_fraction_at_best_single_quality")
            f = "never" if frac is None else f"{frac:.0%}"
            print(f"{'  λ-curve':22s} {'':>16s} {'':>12s} {'':>9s} {'':>7s} {num(lam.get('aiq_mean')):>7s} "
                  f"{f:>9s} {num(lam.get('quality_at_25pct_best_single_cost')):>7s} "
                  f"{num(lam.get('quality_at_50pct_best_single_cost')):>7s}")
    zero = results.get("zero_router")
    if zero and zero.get("aiq_mean") is not None:
        print(f"zero router (hull of the single models) AIQ {zero['aiq_mean']:.3f}")
    comp = results["comparisons"]
    if comp.get("reference"):
        print(f"paired differences, {comp['reference']} minus:")
        for other, c in comp["against"].items():
            p = "–" if c["ttest_p"] is None else f"{c['ttest_p']:.3g}"
            wlt = f"{c['wins']}/{c['losses']}/{c['ties']}"
            print(f"  {other:20s} {c['diff_mean']:+.4f} ± {c['diff_std']:.4f}  (W/L/T {wlt}, t-test p {p})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datasets", default=",".join(DATASETS), help="comma-separated subset of " + ", ".join(DATASETS))
    ap.add_argument("--routers", default=None, help="comma-separated routers (default: all registered)")
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--test-size", type=float, default=0.2)
    ap.add_argument("--encoder", default=None, help="sentence-transformers model (default: packaged MiniLM)")
    ap.add_argument("--truncation", default=None, choices=["head", "tail", "head_tail"],
                    help="which tokens of a prompt longer than the encoder's window it reads (default: the encoder's)")
    ap.add_argument("--cache-dir", type=Path, default=Path(".finerouter_cache"))
    ap.add_argument("--out", type=Path, default=ROOT / "results")
    ap.add_argument("--verbose", action="store_true")
    args = ap.parse_args()
    args.routers = [r.strip() for r in args.routers.split(",") if r.strip()] if args.routers else None
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    names = [d.strip() for d in args.datasets.split(",") if d.strip()]
    unknown = sorted(set(names) - set(DATASETS))
    if unknown:
        ap.error(f"unknown dataset(s) {unknown}; choose from {list(DATASETS)}")
    t0 = time.perf_counter()
    all_results = {name: run_one(name, args) for name in names}
    for name, res in all_results.items():
        summary(name, res)
    print(f"\ntotal {time.perf_counter() - t0:.0f}s")


if __name__ == "__main__":
    main()
