"""Two `bench/onboarding.py` runs on the same saved fits, paired: what a change to `add_model` did.

Both runs must have loaded the same refit and never-knew routers (`--routers-dir`), so the only difference is
`add_model`. For each (chooser, N) setting: the mean over (seed, held-out model) pairs of after − before in test
quality and in the share of the prompts where the held-out model is truly best on which it is picked, the number of
pairs where the quality rose / fell, and after − refit.

    .venv/bin/python bench/onboarding_compare.py --before OUT_A/dcrouter.json --after OUT_B/dcrouter.json

Several files per side (e.g. one run per seed) are pooled: ``--before A0/d.json A1/d.json --after B0/d.json B1/d.json``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np


def paired(before: dict[str, Any], after: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per setting present in both runs: paired differences over the (seed, model) records of both."""
    old = {(r["seed"], r["model"]): r for r in before["records"]}
    new = {(r["seed"], r["model"]): r for r in after["records"]}
    common = sorted(set(old) & set(new))
    for key in common:
        if abs(old[key]["refit"]["quality"] - new[key]["refit"]["quality"]) > 1e-12:
            raise SystemExit(f"seed {key[0]}, model {key[1]}: the refits differ, so the runs did not share their fits")
    settings = sorted({s for k in common for s in old[k]["added"] if s in new[k]["added"]},
                      key=lambda s: (s.split("/")[0], int(s.split("/")[1])))  # fmt: skip
    rows = []
    for setting in settings:
        have = [k for k in common if setting in old[k]["added"] and setting in new[k]["added"]]
        q_old = np.array([old[k]["added"][setting]["quality"] for k in have])
        q_new = np.array([new[k]["added"][setting]["quality"] for k in have])
        refit = np.array([new[k]["refit"]["quality"] for k in have])
        r_old = np.array([old[k]["added"][setting]["x_recall"] for k in have], dtype=float)
        r_new = np.array([new[k]["added"][setting]["x_recall"] for k in have], dtype=float)
        r_refit = np.array([new[k]["refit"]["x_recall"] for k in have], dtype=float)
        diff = q_new - q_old
        rows.append({
            "setting": setting, "pairs": len(have), "quality_before": float(q_old.mean()),
            "quality_after": float(q_new.mean()), "after_minus_before": float(diff.mean()),
            "se": float(diff.std(ddof=1) / np.sqrt(len(diff))) if len(diff) > 1 else float("nan"),
            "rose": int((diff > 1e-12).sum()), "fell": int((diff < -1e-12).sum()),
            "after_minus_refit": float((q_new - refit).mean()), "before_minus_refit": float((q_old - refit).mean()),
            "recall_before": float(np.nanmean(r_old)), "recall_after": float(np.nanmean(r_new)),
            "recall_refit": float(np.nanmean(r_refit)),
        })  # fmt: skip
    return rows


def pooled(paths: list[Path]) -> dict[str, Any]:
    """The records of several runs of one dataset as one run."""
    runs = [json.loads(p.read_text()) for p in paths]
    if len({r["dataset"] for r in runs}) != 1:
        raise SystemExit(f"the files hold different datasets: {sorted({r['dataset'] for r in runs})}")
    return {"dataset": runs[0]["dataset"], "records": [rec for r in runs for rec in r["records"]]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--before", type=Path, nargs="+", required=True, help="<dataset>.json files of bench/onboarding.py")
    ap.add_argument("--after", type=Path, nargs="+", required=True, help="the same runs' files from the changed code")
    args = ap.parse_args()
    before, after = pooled(args.before), pooled(args.after)
    print(f"{after['dataset']}: after = {' '.join(map(str, args.after))}; before = {' '.join(map(str, args.before))}")
    print("| setting | pairs | added − refit, before → after | after − before (± SE) | rose / fell | "
          "X picked where truly best, before → after (refit) |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in paired(before, after):
        print(f"| {r['setting']} | {r['pairs']} | {r['before_minus_refit']:+.4f} → {r['after_minus_refit']:+.4f} | "
              f"{r['after_minus_before']:+.4f} ± {r['se']:.4f} | {r['rose']} / {r['fell']} | "
              f"{r['recall_before']:.3f} → {r['recall_after']:.3f} ({r['recall_refit']:.3f}) |")


if __name__ == "__main__":
    main()
