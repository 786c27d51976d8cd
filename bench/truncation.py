"""Which part of a long prompt the encoder reads, and what it changes.

    .venv/bin/python bench/truncation.py                                   # the three datasets of ../shared/data
    .venv/bin/python bench/truncation.py --datasets routerbench_subset --strip-routers knn,mlp_regressor,finerouter

Printed per dataset: unique prompts, the share longer than the encoder's window, the share whose first half-window
of tokens is also another prompt's start (``finerouter.encoders.windows.shared_head_share``), and what
``truncation="auto"`` resolves to there; then, per task label, the mean cosine similarity of the embeddings of 50
of its prompts under each cut (``head``, ``tail``, ``head_tail``): 1.000 means the encoder sees one text.

``--strip-routers R``: a diagnostic of the ceiling, not a router: every prompt is embedded without the longest
start it shares with all prompts of its task label (cut back to a blank line; computed on the whole data, test
prompts included, which no router may do) and the harness (5 seeds, the splits of ``bench/quality.py``) routes
with those embeddings: what the routers could reach if they saw each question alone.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np


def _stats(name: str, data, sample: int) -> None:
    from finerouter.encoders import SentenceTransformerEncoder, for_corpus
    from finerouter.encoders.windows import shared_head_share, window_budget

    auto = SentenceTransformerEncoder(precision="float32")
    unique = list(dict.fromkeys(data.prompts))
    with auto._lock:
        tokenizer = auto._counting_tokenizer()
    budget = window_budget(tokenizer, auto.max_seq_length)
    longer = np.mean([n > budget for n in auto.count_tokens(unique)])
    share = shared_head_share(tokenizer, unique, auto.max_seq_length, auto.max_chars)
    t0 = time.perf_counter()
    chosen = for_corpus(auto, data.prompts)  # what a fit does before it embeds
    seconds = time.perf_counter() - t0
    print(f"{name}: {len(unique)} unique prompts, {longer:.1%} longer than the window, {share:.1%} share the first "
          f"half of their window with another; truncation='auto' reads {chosen.truncation.replace('auto', 'head')} "
          f"(chosen in {seconds:.1f} s)")
    if data.tasks is None:
        return
    encoders = {cut: SentenceTransformerEncoder(truncation=cut, precision="float32")
                for cut in ("head", "tail", "head_tail")}
    print(f"  {'task':24s} {'prompts':>8s} {'long':>6s} " + " ".join(f"{c:>9s}" for c in encoders))
    by_task: dict[str, list[str]] = {}
    for p, t in zip(data.prompts, data.tasks):
        by_task.setdefault(t, [])
        if p not in by_task[t]:
            by_task[t].append(p)
    for task, prompts in sorted(by_task.items()):
        texts = prompts[:sample]
        long = np.mean([n > budget for n in auto.count_tokens(prompts)])
        if long < 0.5:
            continue  # the cut matters only where most prompts are longer than the window
        sims = []
        for enc in encoders.values():
            e = enc.encode(texts)
            s = e @ e.T
            sims.append(float(s[np.triu_indices(len(texts), 1)].mean()))
        print(f"  {task:24s} {len(prompts):8d} {long:6.0%} " + " ".join(f"{v:9.3f}" for v in sims))


def _strip(name: str, data, routers: list[str], seeds: int) -> None:
    from finerouter.encoders import get_encoder
    from finerouter.evaluation.runner import run_evaluation

    if data.tasks is None:
        print(f"{name}: no task labels, nothing to strip")
        return
    groups: dict[str, list[str]] = {}
    for p, t in zip(data.prompts, data.tasks):
        groups.setdefault(t, []).append(p)
    starts = {}
    for t, g in groups.items():
        common = os.path.commonprefix(g)
        starts[t] = common[: common.rfind("\n\n") + 2] if len(common) > 200 and "\n\n" in common else ""
    print(f"{name}: shared starts removed, characters per task: "
          + ", ".join(f"{t} {len(s)}" for t, s in starts.items()))
    texts = [p[len(starts[t]):] for p, t in zip(data.prompts, data.tasks)]
    encoder = get_encoder(None, cache_dir=".finerouter_cache", truncation="head")
    unique = list(dict.fromkeys(texts))
    row = {p: i for i, p in enumerate(unique)}
    emb = np.asarray(encoder.encode(unique), dtype=np.float32)[[row[p] for p in texts]]
    t0 = time.perf_counter()
    res = run_evaluation(data, emb, routers=routers, seeds=seeds, test_size=0.2, encoder=encoder)
    print(f"  routed with the questions' own embeddings ({seeds} seeds, {time.perf_counter() - t0:.0f} s):")
    for r, rec in res["routers"].items():
        head = rec["headroom_mean"]
        print(f"  {r:22s} {rec['quality_mean']:.4f} ± {rec['quality_std'] or 0:.4f}  headroom "
              f"{'–' if head is None else f'{head:+.3f}'}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datasets", default="routerbench_subset,dcrouter,routerdc")
    ap.add_argument("--sample", type=int, default=50, help="prompts per task for the cosine similarities")
    ap.add_argument("--strip-routers", default="", help="routers to run on the embeddings of the stripped prompts")
    ap.add_argument("--seeds", type=int, default=5)
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    from finerouter.data.locate import dataset_path
    from finerouter.data.readers import read_routing_data

    for name in (d.strip() for d in args.datasets.split(",") if d.strip()):
        data = read_routing_data(dataset_path(name), name=name)
        _stats(name, data, args.sample)
        routers = [r.strip() for r in args.strip_routers.split(",") if r.strip()]
        if routers:
            _strip(name, data, routers, args.seeds)


if __name__ == "__main__":
    main()
