"""How much the label prior could gain from a better label classifier: its ceiling and two alternatives.

The label prior (`finerouter.routing.label_prior`) routes by ``sum_l p(l | x) * prior_l``: a multinomial logistic
regression on the prompt's sentence embedding, times each label's shrunk mean scores. Per shared dataset with task
labels and seed: the harness's 80/20 split by unique prompt, the prior's means fitted on the training part, and the
test part routed by the label prior alone (tolerance 0) with ``p(l | x)`` from

* ``embedding``: the library's classifier (MiniLM embedding, ``C = LABEL_C``), as the router uses it;
* ``tfidf``: a logistic regression on character 2–4-gram TF-IDF of the prompt text (``C = LABEL_C``);
* ``both``: the same on the TF-IDF features and the embedding side by side;
* ``true_label``: the test prompt's own label (one-hot): the ceiling of any label classifier, not available at
  routing time.

Prints label accuracy and routing quality per (dataset, seed), then means, and writes ``--out`` JSON.

    .venv/bin/python bench/label_classifier.py --datasets dcrouter,routerdc --seeds 0,1,2,3,4
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent
VARIANTS = ("embedding", "tfidf", "both", "true_label")


def run_seed(data: Any, emb: np.ndarray, seed: int) -> dict[str, Any]:
    from scipy.sparse import csr_matrix, hstack
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    from finerouter.evaluation.metrics import mean_quality
    from finerouter.routing.label_prior import LABEL_C, LabelPrior

    train, test = data.split(0.2, seed=seed)
    row = {p: i for i, p in enumerate(data.prompts)}
    e_train, e_test = emb[[row[p] for p in train.prompts]], emb[[row[p] for p in test.prompts]]
    prior = LabelPrior.fit(e_train, train.tasks, train.scores, seed)
    index = {label: i for i, label in enumerate(prior.labels)}
    y_train = np.array([index.get(str(t), -1) for t in train.tasks])
    y_test = np.array([index.get(str(t), -1) for t in test.tasks])
    keep = y_train >= 0
    probs: dict[str, np.ndarray] = {"embedding": prior.weights(e_test)}
    t = time.perf_counter()
    tfidf = TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 4), min_df=2, sublinear_tf=True, max_features=100_000)
    x_train, x_test = tfidf.fit_transform(train.prompts), tfidf.transform(test.prompts)
    for name, a, b in (("tfidf", x_train, x_test),
                       ("both", hstack([x_train, csr_matrix(e_train)]).tocsr(), hstack([x_test, csr_matrix(e_test)]).tocsr())):  # fmt: skip
        clf = LogisticRegression(C=LABEL_C, max_iter=2000, random_state=seed).fit(a[keep], y_train[keep])
        p = np.zeros((x_test.shape[0], len(prior.labels)))
        p[:, clf.classes_] = clf.predict_proba(b)
        probs[name] = p
    seconds = time.perf_counter() - t
    one_hot = probs["embedding"].copy()  # a test label the prior does not know keeps the classifier's beliefs
    known = y_test >= 0
    one_hot[known] = np.eye(len(prior.labels))[y_test[known]]
    probs["true_label"] = one_hot
    out: dict[str, Any] = {"seed": seed, "train": train.n_prompts, "test": test.n_prompts,
                           "best_single": float(mean_quality(test.scores, np.full(test.n_prompts, int(np.nanargmax(
                               np.nanmean(train.scores, axis=0)))))),  # the model best on the training part
                           "oracle": float(np.nanmean(np.nanmax(test.scores, axis=1))), "tfidf_seconds": seconds}  # fmt: skip
    for name in VARIANTS:
        picks = np.argmax(probs[name] @ prior.means, axis=1)
        out[name] = {"quality": float(mean_quality(test.scores, picks)),
                     "accuracy": float(np.mean(np.argmax(probs[name][known], axis=1) == y_test[known]))}  # fmt: skip
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datasets", default="dcrouter,routerdc")
    ap.add_argument("--seeds", default="0,1,2,3,4")
    ap.add_argument("--cache-dir", type=Path, default=Path(".finerouter_cache"))
    ap.add_argument("--out", type=Path, default=ROOT / "results" / "label_classifier" / "results.json")
    args = ap.parse_args()

    from finerouter.data.locate import dataset_path
    from finerouter.data.readers import read_routing_data
    from finerouter.encoders import get_encoder

    encoder = get_encoder(None, cache_dir=args.cache_dir)
    results = []
    for name in args.datasets.split(","):
        data = read_routing_data(dataset_path(name), name=name)
        emb = np.asarray(encoder.encode(data.prompts), dtype=np.float32)
        for seed in (int(s) for s in args.seeds.split(",")):
            r = {"dataset": name, **run_seed(data, emb, seed)}
            results.append(r)
            print(f"{name} seed {seed}: " + ", ".join(
                f"{v} {r[v]['quality']:.4f} (acc {r[v]['accuracy']:.3f})" for v in VARIANTS)
                + f"; best single {r['best_single']:.4f}, oracle {r['oracle']:.4f}", flush=True)  # fmt: skip
    print("\n| dataset | seeds | " + " | ".join(f"{v}: quality (accuracy)" for v in VARIANTS)
          + " | best single | oracle | headroom captured, embedding → true label |")  # fmt: skip
    print("|---|---:|" + "---:|" * (len(VARIANTS) + 3))
    for name in args.datasets.split(","):
        rs = [r for r in results if r["dataset"] == name]
        mean = {v: (np.mean([r[v]["quality"] for r in rs]), np.mean([r[v]["accuracy"] for r in rs])) for v in VARIANTS}
        best, oracle = np.mean([r["best_single"] for r in rs]), np.mean([r["oracle"] for r in rs])
        head = [(mean[v][0] - best) / (oracle - best) for v in ("embedding", "true_label")]
        print(f"| {name} | {len(rs)} | " + " | ".join(f"{mean[v][0]:.4f} ({mean[v][1]:.3f})" for v in VARIANTS)
              + f" | {best:.4f} | {oracle:.4f} | {head[0]:.3f} → {head[1]:.3f} |")  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"settings": {k: str(v) for k, v in vars(args).items()}, "results": results},
                                   indent=1) + "\n")  # fmt: skip


if __name__ == "__main__":
    main()
