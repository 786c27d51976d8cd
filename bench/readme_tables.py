"""Render the README's results block from ``bench/results/<dataset>/results.json`` (written by bench/quality.py).

    .venv/bin/python bench/readme_tables.py            # print the block
    .venv/bin/python bench/readme_tables.py --write    # replace the block between the README's markers

``tests/test_readme.py`` checks that the README's block is exactly what this renders, so the README's tables
always match ``bench/results/``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
START, END = "<!-- results:start -->", "<!-- results:end -->"
ORDER = ("dcrouter", "routerbench_subset", "routerdc")


def _fmt(x: float | None, spec: str) -> str:
    return "–" if x is None else format(x, spec)


def render(results_dir: Path = RESULTS) -> str:
    """The markdown block: one table per dataset found, routers sorted by mean quality."""
    parts: list[str] = []
    for name in ORDER:
        path = results_dir / name / "results.json"
        if not path.is_file():
            continue
        res = json.loads(path.read_text(encoding="utf-8"))
        routers = res["routers"]
        created = res.get("created", res.get("date", ""))
        parts.append(
            f"**{name}** — {len(res['seeds'])} seeds, test size {res['test_size']}, encoder `{res.get('encoder')}`"
            + (f", run {created}" if created else "")
            + (f" at commit `{res['commit']}`" if res.get("commit") else "")
            + f" ([report](bench/results/{name}/report.md))\n"
        )
        has_cost = any(r.get("cost_mean") is not None for r in routers.values())
        head = "| router | quality (mean ± std) | headroom captured |"
        sep = "|---|---|---|"
        has_lambda = any("lambda_curve" in r for r in routers.values())
        if has_cost:
            head += " cost / prompt (USD) | cost at best-single quality |"
            sep += "---|---|"
        if has_cost and has_lambda:
            head += " AIQ (tolerance) | AIQ (λ) | cost at best-single quality (λ) |"
            sep += "---|---|---|"
        parts.append(head)
        parts.append(sep)
        for key, r in sorted(routers.items(), key=lambda kv: -kv[1]["quality_mean"]):
            row = (
                f"| {key}{' ✱' if r.get('uses_test_labels') else ''} | {r['quality_mean']:.3f} ± "
                f"{r['quality_std']:.3f} | {_fmt(r.get('headroom_mean'), '+.2f')} |"
            )
            if has_cost:
                frac = r.get("cost_fraction_at_best_single_quality")
                if frac is not None:
                    reach = f"{100 * frac:.0f}%"
                else:
                    reach = "never" if r.get("curve") else "–"
                row += f" {_fmt(r.get('cost_mean'), '.6f')} | {reach} |"
            if has_cost and has_lambda:
                lam = r.get("lambda_curve") or {}
                lam_frac = lam.get("cost_fraction_at_best_single_quality")
                lam_reach = "–" if not lam else ("never" if lam_frac is None else f"{100 * lam_frac:.0f}%")
                row += f" {_fmt(r.get('aiq_mean'), '.3f')} | {_fmt(lam.get('aiq_mean'), '.3f')} | {lam_reach} |"
            parts.append(row)
        zero = res.get("zero_router")
        if has_cost and has_lambda and zero and zero.get("aiq_mean") is not None:
            parts.append("")
            parts.append(f"Zero router (convex hull of the single models): AIQ {zero['aiq_mean']:.3f}.")
        parts.append("")
    if not parts:
        return "(no results yet: run `.venv/bin/python bench/quality.py`)\n"
    parts.append("✱ uses information not available at routing time (test scores or the test prompt's benchmark label).")
    return "\n".join(parts) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--write", action="store_true", help="update README.md in place")
    args = ap.parse_args()
    block = render()
    if not args.write:
        print(block)
        return
    readme = ROOT / "README.md"
    text = readme.read_text(encoding="utf-8")
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    readme.write_text(f"{head}{START}\n{block}{END}{tail}", encoding="utf-8")


if __name__ == "__main__":
    main()
