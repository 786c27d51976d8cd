"""Gather `bench/onboarding.py` runs of the same setting (one per seed, say) into one table per dataset.

Each run writes ``<out>/<dataset>.json``; this reads any number of them, pools the records of each dataset (a
record is one seed and one held-out model; a record repeated across files, same seed and model, is an error) and
prints the bench's summary over all of them (and the share of test prompts routed to the held-out model, beside
how often it is picked where truly best; each difference with its standard error over the runs,
`onboarding.paired_se`), then one row per seed, so that the issue's averages over held-out
models and seeds come from the saved outputs and nothing is added up by hand.

    .venv/bin/python bench/onboarding_summary.py bench/results/onboarding_routed/*/routerdc.json
    .venv/bin/python bench/onboarding_summary.py bench/results/onboarding_routed/*/*.json --out summary.md
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
from onboarding import summary_rows  # bench/onboarding.py, beside this script


def pooled(paths: list[Path]) -> dict[str, dict[str, Any]]:
    """Per dataset, the records of every file, each (seed, model, draw) once; the files each dataset's came from."""
    out: dict[str, dict[str, Any]] = {}
    for path in paths:
        result = json.loads(path.read_text())
        entry = out.setdefault(result["dataset"], {"records": [], "files": []})
        seen = {(r["seed"], r["model"], r.get("draw", 0)) for r in entry["records"]}
        for rec in result["records"]:
            if (rec["seed"], rec["model"], rec.get("draw", 0)) in seen:
                raise SystemExit(f"{path}: seed {rec['seed']}, model {rec['model']!r}, draw {rec.get('draw', 0)} is "
                                 f"already in {entry['files']}; pass each run once")  # fmt: skip
        entry["records"] += result["records"]
        entry["files"].append(str(path))
    return out


#: What an added router's result averages over draws of the new model's prompts (:func:`over_draws`).
AVERAGED = ("quality", "x_share", "x_recall", "seconds")


def over_draws(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One record per (seed, model): where several draws of the new model's prompts were run (``onboarding.py
    --draw``), the added routers' quality, share, pick rate and seconds averaged over them (the pick rate over the
    draws where the model is truly best somewhere), so that each seed and model is one run, as the fits are; its
    ``draws`` says how many. The refit and the never-knew router are the same fits in every draw."""
    groups: dict[tuple[int, str], list[dict[str, Any]]] = {}
    for rec in records:
        groups.setdefault((rec["seed"], rec["model"]), []).append(rec)
    out = []
    for recs in groups.values():
        first = dict(recs[0], draws=len(recs), added={})
        for key in {k for r in recs for k in r["added"]}:
            runs = [r["added"][key] for r in recs if key in r["added"]]
            first["added"][key] = dict(runs[0], **{f: float(np.nanmean([run[f] for run in runs])) for f in AVERAGED
                                                   if any(np.isfinite(run[f]) for run in runs)})  # fmt: skip
        out.append(first)
    return out


def table(records: list[dict[str, Any]]) -> list[str]:
    records = over_draws(records)
    draws = sorted({r["draws"] for r in records})
    lines = [f"draws of the new model's prompts per seed and model: {', '.join(map(str, draws))}", "",
             "| seeds | prompts chosen by / N | runs | added | refit | never knew X | added − refit | "
             "X picked where truly best: added / refit | share of prompts routed to X: added / refit | "
             "seconds to add / refit |", "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]  # fmt: skip
    seeds = sorted({r["seed"] for r in records})
    groups = [("all " + ",".join(map(str, seeds)), records)] if len(seeds) > 1 else []
    groups += [(str(s), [r for r in records if r["seed"] == s]) for s in seeds]
    for label, recs in groups:
        for row in summary_rows({"records": recs}):
            refit = "not recorded" if row["refit_seconds"] is None else f"{row['refit_seconds']:.0f}"
            lines.append(
                f"| {label} | {row['setting']} | {row['runs']} | {row['added']:.4f} | {row['refit']:.4f} | "
                f"{row['without']:.4f} | {row['added_minus_refit']:+.4f} ± {row['added_minus_refit_se']:.4f} | "
                f"{row['x_recall_added']:.3f} / {row['x_recall_refit']:.3f} "
                f"({row['x_recall_added'] - row['x_recall_refit']:+.3f} ± {row['x_recall_diff_se']:.3f}) | "
                f"{row['x_share_added']:.3f} / {row['x_share_refit']:.3f} | "
                f"{row['add_seconds']:.1f} / {refit} |"
            )
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("results", nargs="+", type=Path, help="<out>/<dataset>.json files written by bench/onboarding.py")
    ap.add_argument("--out", type=Path, default=None, help="also write the tables here (markdown)")
    args = ap.parse_args()
    lines = ["# Adding a model: runs pooled", "", "`.venv/bin/python bench/onboarding_summary.py "
             + " ".join(sys.argv[1:]) + "`", ""]  # fmt: skip
    for name, entry in sorted(pooled(args.results).items()):
        lines += [f"## {name}", "", "from: " + ", ".join(entry["files"]), "", *table(entry["records"]), ""]
    text = "\n".join(lines)
    if args.out is not None:
        args.out.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
