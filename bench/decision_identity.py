"""Same decisions before and after a refactor: fit FineRouter at a reference commit and at the working tree on one
fixed dcrouter split, route the test prompts, and count the decisions (and score arrays) that differ.

The reference commit is checked out into a temporary git worktree and run in a child process with its own
``src`` first on ``PYTHONPATH``; the working tree runs the same way, so both see the same machine, the same
cached embeddings and the same public API (``FineRouter(...).fit``, ``score_embeddings``, ``route``).

    .venv/bin/python bench/decision_identity.py --ref 39da8bd                    # the full training split
    .venv/bin/python bench/decision_identity.py --ref 39da8bd --train-size 600   # quicker
    .venv/bin/python bench/decision_identity.py --ref 39da8bd --new 117d8a5      # two commits

Prints one line per routing rule (default, tolerance 0.05, cost weight, budget) with the count of differing
decisions, then the largest absolute difference of each score array; exits 1 if any decision differs.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parent.parent


def dump(out: Path, train_size: int | None, seed: int, cache_dir: str) -> None:
    """Fit on the dcrouter split ``seed`` and write the decisions (JSON) and score arrays (npz, no pickle)."""
    import numpy as np

    from finerouter import FineRouter
    from finerouter.data.locate import dataset_path, shared_data_dir
    from finerouter.data.readers import read_routing_data

    data = read_routing_data(dataset_path("dcrouter"), prices=shared_data_dir() / "dcrouter" / "prices.csv",
                             name="dcrouter")
    train, test = data.split(0.2, seed=seed)
    if train_size is not None and train_size < train.n_prompts:
        train = train.subset(np.random.default_rng(seed).permutation(train.n_prompts)[:train_size])
    router = FineRouter(cache_dir=cache_dir, seed=seed).fit(train)
    prompts = list(test.prompts)
    emb = router.encoder_.encode(prompts)
    scores = router.score_embeddings(emb)
    rules = {
        "default": {},
        "tolerance_0.05": {"tolerance": 0.05},
        "cost_weight_20": {"cost_weight": 20.0},
        "budget_0.5_per_1k": {"budget_per_1k": 0.5},
    }
    decisions = {name: [d.model for d in router.route(prompts, **kw)] for name, kw in rules.items()}
    out.mkdir(parents=True, exist_ok=True)
    (out / "decisions.json").write_text(json.dumps({"decisions": decisions, "fit_summary_mixing":
                                                    router.fit_summary_.get("mixing")}, default=str))
    arrays = {k: np.asarray(getattr(scores, k), dtype=np.float64) for k in ("stage1", "stage2", "final", "task",
                                                                           "confidence", "expected")}
    np.savez(out / "scores.npz", **arrays)


def run_child(src: Path, out: Path, args: argparse.Namespace) -> None:
    from finerouter.data.locate import shared_data_dir

    # the reference worktree lives elsewhere, so point both runs at the same shared data
    env = dict(os.environ, PYTHONPATH=str(src), FINEROUTER_DATA_DIR=str(shared_data_dir()))
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", str(out), "--seed", str(args.seed),
           "--cache-dir", args.cache_dir]
    if args.train_size is not None:
        cmd += ["--train-size", str(args.train_size)]
    print(f"running {src} ...", flush=True)
    subprocess.run(cmd, env=env, check=True, cwd=str(src.parent))


def run_at_commit(commit: str, tree: Path, out: Path, args: argparse.Namespace) -> None:
    """Check ``commit`` out into a temporary git worktree at ``tree``, dump its decisions into ``out``, remove it."""
    subprocess.run(["git", "worktree", "add", "--detach", str(tree), commit], cwd=ROOT, check=True, capture_output=True)
    try:
        run_child(tree / "src", out, args)
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=ROOT, check=False)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ref", default="HEAD", help="reference commit (default HEAD)")
    parser.add_argument("--new", default=None, help="commit to compare (default: the working tree)")
    parser.add_argument("--train-size", type=int, default=None, help="fit on this many training prompts")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cache-dir", default=str(ROOT / ".finerouter_cache"))
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        dump(Path(args.child), args.train_size, args.seed, args.cache_dir)
        return 0

    import numpy as np

    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        run_at_commit(args.ref, tmp_path / "ref", tmp_path / "out_ref", args)
        if args.new is None:
            run_child(ROOT / "src", tmp_path / "out_new", args)
        else:
            run_at_commit(args.new, tmp_path / "new", tmp_path / "out_new", args)
        ref = json.loads((tmp_path / "out_ref" / "decisions.json").read_text())
        new = json.loads((tmp_path / "out_new" / "decisions.json").read_text())
        differing = 0
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
        new_label = f"commit {args.new}" if args.new else f"the working tree at {head.stdout.strip()}"
        print(f"dcrouter split seed {args.seed}, train size {args.train_size or 'all'}: ref {args.ref} vs {new_label}")
        for rule, ref_models in ref["decisions"].items():
            new_models = new["decisions"][rule]
            diff = sum(a != b for a, b in zip(ref_models, new_models)) + abs(len(ref_models) - len(new_models))
            differing += diff
            print(f"  {rule:<20} {len(ref_models)} prompts, differing decisions: {diff}")
        print(f"  mixing ref {ref['fit_summary_mixing']} new {new['fit_summary_mixing']}"
              if ref["fit_summary_mixing"] != new["fit_summary_mixing"] else "  mixing choice: identical")
        with np.load(tmp_path / "out_ref" / "scores.npz") as a, np.load(tmp_path / "out_new" / "scores.npz") as b:
            for key in a.files:
                x, y = a[key], b[key]
                same = x.shape == y.shape and np.array_equal(x, y, equal_nan=True)
                gap = float(np.nanmax(np.abs(x - y))) if x.shape == y.shape and x.size else float("nan")
                print(f"  scores.{key:<11} {'bit-identical' if same else f'max |diff| {gap:.3g}'}")
        print(f"differing decisions in total: {differing}")
    return 1 if differing else 0


if __name__ == "__main__":
    raise SystemExit(main())
