"""Gather `bench/onboarding.py` runs of the same setting (one per seed, say) into one table per dataset.

Each run writes ``<out>/<dataset>.json``; this reads any number of them, pools the records of each dataset (a
record is one seed and one held-out model; a record repeated across files, same seed and model, is an error) and
prints the bench's summary over all of them (and the share of test prompts routed to the held-out model, beside
how often it is picked where truly best; each difference with its standard error over the runs,
`onboarding.paired_se`), then one row per seed, so that the issue's averages over held-out
models and seeds come from the saved outputs and nothing is added up by hand. ``--by-model SETTING`` adds one row
per held-out model (each seed, then over seeds): how many test prompts it is truly best on (what its pick rate is a
share of), its pick rates and its shares of the routed prompts, added and refit, so that where the averages move can
be seen.

    .venv/bin/python bench/onboarding_summary.py bench/results/onboarding_routed/*/routerdc.json
    .venv/bin/python bench/onboarding_summary.py bench/results/onboarding_routed/*/*.json --out summary.md
    .venv/bin/python bench/onboarding_summary.py bench/results/onboarding_routed/*/dcrouter.json --by-model suggest/300
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
from onboarding import mean_known, summary_rows  # bench/onboarding.py, beside this script


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


def by_model(records: list[dict[str, Any]], setting: str) -> list[str]:
    """One row per (seed, held-out model), draws averaged (:func:`over_draws`), ordered by the refit's share of
    prompts routed to the model; then per model over seeds (prompts truly best summed, the rest averaged)."""
    rows = [(r["seed"], r["model"], r["refit"]["x_truly_best_prompts"], r["added"][setting]["x_recall"],
             r["refit"]["x_recall"], r["added"][setting]["x_share"], r["refit"]["x_share"], r["draws"])
            for r in over_draws(records) if setting in r["added"]]  # fmt: skip
    lines = [f"per held-out model ({setting}; draws averaged), by the refit's share of prompts routed to it:", "",
             "| seed | model | draws | test prompts where truly best | picked there: added / refit | "
             "share of prompts routed to it: added / refit |", "|---|---|---:|---:|---:|---:|"]  # fmt: skip
    for seed, model, best, rec_a, rec_r, sh_a, sh_r, draws in sorted(rows, key=lambda r: (r[0], -r[6], r[1])):
        lines.append(f"| {seed} | {model} | {draws} | {best} | {rec_a:.3f} / {rec_r:.3f} | {sh_a:.3f} / {sh_r:.3f} |")
    for model in sorted({r[1] for r in rows}, key=lambda m: (-np.mean([r[6] for r in rows if r[1] == m]), m)):
        mine = [r for r in rows if r[1] == model]
        mean = [mean_known([r[i] for r in mine]) for i in (3, 4, 5, 6)]
        mean = [float("nan") if m is None else m for m in mean]
        lines.append(f"| all | {model} | – | {sum(r[2] for r in mine)} | {mean[0]:.3f} / {mean[1]:.3f} | "
                     f"{mean[2]:.3f} / {mean[3]:.3f} |")  # fmt: skip
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("results", nargs="+", type=Path, help="<out>/<dataset>.json files written by bench/onboarding.py")
    ap.add_argument("--out", type=Path, default=None, help="also write the tables here (markdown)")
    ap.add_argument("--by-model", default=None, metavar="SETTING",
                    help="also one row per held-out model for SETTING (e.g. suggest/300)")
    args = ap.parse_args()
    lines = ["# Adding a model: runs pooled", "", "`.venv/bin/python bench/onboarding_summary.py "
             + " ".join(sys.argv[1:]) + "`", ""]  # fmt: skip
    for name, entry in sorted(pooled(args.results).items()):
        lines += [f"## {name}", "", "from: " + ", ".join(entry["files"]), "", *table(entry["records"]), ""]
        if args.by_model:
            lines += [*by_model(entry["records"], args.by_model), ""]
    text = "\n".join(lines)
    if args.out is not None:
        args.out.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
