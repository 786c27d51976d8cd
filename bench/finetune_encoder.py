"""Does fine-tuning MiniLM on the routing scores (EncoderFineTuner, the paper's Stage-2 phase 1) route better than the
frozen encoder? Measured on validation parts carved from each training split (``bench/_validation.py``; the test
part is never read).

For each dataset and seed: the harness's 80/20 split by unique prompt, its training part split again 80/20 into fit
and validation parts; the fit part cut to ``--train-size`` prompts and the validation part to ``--val-size``. Then:

* ``EncoderFineTuner`` fine-tunes the packaged all-MiniLM-L6-v2 on the fit part (its own dev part, early stopping,
  ``--epochs``, ``--max-seq-length``, ``--threads``), timed: wall seconds and training prompts/s;
* the fit and validation prompts are embedded with the frozen MiniLM and with the fine-tuned one (both at the
  encoder's default 256 tokens, as ``finerouter fit --encoder DIR`` embeds);
* FineRouter (defaults) and the kNN baseline are fitted on each embedding of the fit part and route the validation
  part: quality is the mean true score of the routed model (``ValidationParts.quality``).

    .venv/bin/python bench/finetune_encoder.py --datasets dcrouter,routerdc --seeds 0,1 --train-size 1000 \\
        --val-size 1000 --epochs 2 --max-seq-length 64 --out bench/results/finetune_encoder/results.json

Prints each run's figures and a mean table; ``--out`` writes them as JSON. The fine-tuned encoders are kept under
``--work-dir`` (git-ignored by default), so a re-run with the same settings reuses them (``resume=True``).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datasets", default="dcrouter,routerdc")
    ap.add_argument("--seeds", default="0")
    ap.add_argument("--train-size", type=int, default=1000, help="cut the fit part to this many prompts")
    ap.add_argument("--val-size", type=int, default=1000, help="cut the validation part to this many prompts")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--max-seq-length", type=int, default=64, help="tokens per prompt while fine-tuning")
    ap.add_argument("--lr", type=float, default=2e-5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--cache-dir", type=Path, default=Path(".finerouter_cache"))
    ap.add_argument("--work-dir", type=Path, default=Path(".finerouter_cache/finetune_bench"))
    ap.add_argument("--out", type=Path, default=None, help="write the per-run figures as JSON here")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    for noisy in ("sentence_transformers", "finerouter.encoders.sentence_transformer", "httpx"):
        logging.getLogger(noisy).setLevel(logging.WARNING)

    from _validation import validation_parts

    from finerouter.baselines import make_router
    from finerouter.data.locate import dataset_path
    from finerouter.data.readers import read_routing_data
    from finerouter.encoders import get_encoder
    from finerouter.encoders.finetune import EncoderFineTuner
    from finerouter.evaluation.runner import embed_dataset
    from finerouter.routing.router import FineRouter

    runs: list[dict[str, object]] = []
    for name in args.datasets.split(","):
        data = read_routing_data(dataset_path(name), name=name)
        emb, frozen = embed_dataset(data, None, args.cache_dir)
        for seed in (int(s) for s in args.seeds.split(",")):
            parts = validation_parts(data, emb, seed)
            rng = np.random.default_rng(seed)
            if args.train_size < parts.fit.n_prompts:
                keep = np.sort(rng.choice(parts.fit.n_prompts, args.train_size, replace=False))
                parts.fit, parts.e_fit = parts.fit.subset(keep), parts.e_fit[keep]
                parts.overall = np.nanmean(parts.fit.scores, axis=0)
            if args.val_size < parts.val.n_prompts:
                keep = np.sort(rng.choice(parts.val.n_prompts, args.val_size, replace=False))
                parts.val, parts.e_val = parts.val.subset(keep), parts.e_val[keep]

            tuner = EncoderFineTuner(epochs=args.epochs, lr=args.lr, max_seq_length=args.max_seq_length,
                                     seed=seed, threads=args.threads)
            out = args.work_dir / f"{name}-s{seed}-n{args.train_size}-e{args.epochs}-msl{args.max_seq_length}"
            t = time.perf_counter()
            tuner.fit(parts.fit, out, resume=True)
            tune_seconds = time.perf_counter() - t
            tuned = get_encoder(out, cache_dir=args.cache_dir)
            t = time.perf_counter()
            t_fit, t_val = tuned.encode(parts.fit.prompts), tuned.encode(parts.val.prompts)
            embed_seconds = time.perf_counter() - t

            row: dict[str, object] = {
                "dataset": name, "seed": seed, "n_fit": parts.fit.n_prompts, "n_val": parts.val.n_prompts,
                "n_models": parts.fit.n_models, "encoder": tuned.name,
                "finetune_seconds": tune_seconds, "embed_seconds": embed_seconds,
                "train_prompts_per_second": [h.get("prompts_per_second") for h in tuner.history_],
                "epochs_run": len(tuner.history_), "best_epoch": tuner.best_epoch_,
                "dev_mse_frozen": tuner.baseline_dev_mse_, "dev_mse_tuned": tuner.best_dev_mse_,
            }  # fmt: skip
            for label, e_fit, e_val in (("frozen", parts.e_fit, parts.e_val), ("tuned", t_fit, t_val)):
                t = time.perf_counter()
                encoder = frozen if label == "frozen" else tuned
                router = FineRouter(encoder=encoder, seed=seed).fit(parts.fit, embeddings=e_fit)
                row[f"router_fit_seconds_{label}"] = time.perf_counter() - t
                scored = router.score_embeddings(e_val)
                row[f"finerouter_{label}"] = parts.quality(scored.final)
                row[f"stage2_{label}"] = parts.quality(scored.stage2)
                knn = make_router("knn", seed=seed).fit(parts.fit, e_fit)
                row[f"knn_{label}"] = parts.quality(knn.predict_scores(e_val))
            row["best_single"] = parts.best_single()
            row["oracle"] = float(np.nan_to_num(parts.val.scores, nan=0.0).max(axis=1).mean())
            runs.append(row)
            print(json.dumps(row), flush=True)
            if args.out:  # after every run, so an interrupted bench keeps what it measured
                args.out.parent.mkdir(parents=True, exist_ok=True)
                args.out.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "runs": runs},
                                               indent=1))

    keys = ("finerouter_frozen", "finerouter_tuned", "stage2_frozen", "stage2_tuned", "knn_frozen", "knn_tuned",
            "best_single", "oracle", "dev_mse_frozen", "dev_mse_tuned", "finetune_seconds")
    print(f"\nmeans over seeds {args.seeds}: fit {args.train_size}, validation {args.val_size} prompts, "
          f"{args.epochs} epochs at {args.max_seq_length} tokens, {args.threads} threads")
    print("dataset        " + " ".join(f"{k:>18s}" for k in keys) + "   prompts/s")
    for name in args.datasets.split(","):
        rows = [r for r in runs if r["dataset"] == name]
        speeds = [s for r in rows for s in r["train_prompts_per_second"] if s]
        cells = " ".join(f"{np.mean([r[k] for r in rows]):18.4f}" for k in keys)
        print(f"{name:14s} {cells}   {np.mean(speeds):.1f}")


if __name__ == "__main__":
    main()
