"""Why an added model is picked less often than by the refit: each fit of the ensemble, side by side.

For one dataset, seed and held-out model X, on the fits `bench/onboarding.py --routers-dir DIR` saved (the refit
with every model, the router fitted without X; the same split and training cut): X is added to the latter from N
prompts chosen by `suggest_prompts` (as the bench does), and for the refit and the added router it prints, per fit
of the ensemble, the stage-1 prior it routes with, its mixing weights and method, and the share of test prompts on
which each score source alone and the fit's routing score put X first; then each router's test quality and share
routed to X; per fit that routes, the evidence for falling back to X alone, where X is picked on the new prompts
judged in-sample and cross-fitted; and, where both routers route some fit by the label prior (the first such fit of
each), X's column of it per label beside the best other model's, with X's mean paired difference from the other
models per label on the N prompts and on the whole training part.

    .venv/bin/python bench/onboarding_members.py --dataset routerdc --seed 0 \\
        --model HuggingFaceH4/zephyr-7b-beta --routers-dir /work/routers_lp
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np


def main() -> None:
    from onboarding import one_model_arguments, router_key, split_and_cut, with_task_shares  # beside this script

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    one_model_arguments(ap)
    ap.add_argument("--n", type=int, default=300)
    ap.add_argument("--routers-dir", type=Path, required=True)
    args = ap.parse_args()

    from finerouter import FineRouter
    from finerouter.data.locate import dataset_path
    from finerouter.data.readers import read_routing_data
    from finerouter.evaluation.metrics import mean_quality
    from finerouter.routing.ensemble import members_of
    from finerouter.routing.suggestions import suggest_prompts

    name, seed, x = args.dataset, args.seed, args.model
    data = read_routing_data(dataset_path(name), name=name)
    train, test = split_and_cut(data, seed, args.test_size, args.train_size)  # as bench/onboarding.py does
    saved = [args.routers_dir / router_key(name, seed, train.n_prompts, held) for held in (None, x)]
    refit, without = (with_task_shares(FineRouter.load(path, cache_dir=args.cache_dir), train) for path in saved)
    sample = train.subset(np.sort(suggest_prompts(without, args.n, train.prompts, seed=seed)))
    added = without.add_model(x, sample)
    emb = refit.encoder_.encode(test.prompts)
    print(f"{name}, seed {seed}, X = {x}, added from {sample.n_prompts} suggested prompts; {test.n_prompts} test prompts")
    for label, router in (("refit", refit), ("added", added)):
        j = router.models_.index(x)
        for k, fit in enumerate([router, *members_of(router)]):
            s = fit.score_embeddings(emb)
            first = [float(np.mean(np.argmax(np.nan_to_num(v, nan=-np.inf), axis=1) == j)) for v in (s.stage1, s.stage2, s.final)]
            m = fit.mixing_
            best_mix = {a: round(b, 2) for a, b in (m.estimate_weights or m.weights).items() if b}
            print(f"  {label} fit {k}: prior {m.assignment}, {m.method}, weights "
                  f"{ {a: round(b, 2) for a, b in m.weights.items() if b} } (best routing mix {best_mix}), "
                  f"gain {m.gain or 0:+.4f} ± {m.gain_se or 0:.4f}; "
                  f"X first by stage 1 {first[0]:.2f}, stage 2 {first[1]:.2f}, routing score {first[2]:.2f}")  # fmt: skip
        picks = np.array([data.models.index(d.model) for d in router.route(test.prompts)])
        print(f"  {label}: test quality {mean_quality(test.scores, picks):.4f}, routed to X {np.mean(picks == data.models.index(x)):.2f}")
    fallback_evidence(without, added, sample, x)
    # the first fit of each ensemble that routes by a label prior (each fit keeps the prior it chose)
    with_label = [next((f for f in [r, *members_of(r)] if f.label_prior_ is not None), None) for r in (refit, added)]
    if with_label[0] is not None and with_label[1] is not None:
        refit, added = with_label
        lr, la = refit.label_prior_, added.label_prior_
        rest_r = [refit.models_.index(m) for m in refit.models_ if m != x]
        rest_a = [added.models_.index(m) for m in added.models_ if m != x]
        jx_train, jx_sample = train.models.index(x), sample.models.index(x)

        def paired(ds, jx, label):
            rows = np.array(ds.tasks) == label
            diff = ds.scores[rows, jx] - np.nanmean(np.delete(ds.scores[rows], jx, axis=1), axis=1)
            return int(rows.sum()), float(np.nanmean(diff)) if rows.any() else float("nan")

        print("  label prior: label | X's column, refit / added | best other model's | X − others on the N prompts "
              "(prompts) | on the training part")
        for i, label in enumerate(lr.labels):
            n_s, d_s = paired(sample, jx_sample, label)
            _, d_t = paired(train, jx_train, label)
            print(f"    {label:<22} {lr.means[i, refit.models_.index(x)]:.3f} / {la.means[i, -1]:.3f} | "
                  f"{lr.means[i, rest_r].max():.3f} / {la.means[i, rest_a].max():.3f} | {d_s:+.3f} ({n_s}) | {d_t:+.3f}")


def fallback_evidence(without, added, sample, x) -> None:
    """Per fit that routes, the evidence for falling back to X alone (`onboarding_mixing.mixing_after_adding`): X's
    lead over the best fitted model, with the new prompts where routing would choose X counted at the routing gain,
    those prompts judged in-sample (X's columns learned from every new prompt, the rule before 2026-12-05, session
    25) and cross-fitted (`onboarding_mixing.cross_fitted_choices`, today's rule)."""
    from finerouter.routing.ensemble import members_of
    from finerouter.routing.onboarding import assign_tasks
    from finerouter.routing.onboarding_data import new_model_scores
    from finerouter.routing.onboarding_mixing import (cross_fitted_choices, in_sample_picks, lead_beyond_gain,
                                                     lead_over_best)

    print("  fallback to X alone, per routing fit: where X is picked on the new prompts | lead over the best fitted "
          "model − routing gain vs the margin (FALLBACK_SE standard errors)")
    for k, (fit, fit_added) in enumerate(zip([without, *members_of(without)], [added, *members_of(added)])):
        m = fit.mixing_
        if m is None or m.method != "cv":
            print(f"    fit {k}: {m.method if m is not None else 'no mixing'}, no fallback to weigh")
            continue
        new = new_model_scores(sample, x, fit.models_)
        emb = np.ascontiguousarray(fit.encoder_.encode(new.prompts), dtype=np.float32)
        tasks = assign_tasks(fit, emb)
        in_sample = in_sample_picks(fit, fit_added, m, emb)
        crossed, _ = cross_fitted_choices(fit, fit_added, new, emb, tasks, fit.seed, m, np.arange(new.scores.size))
        for how, picked in (("in-sample", in_sample), ("cross-fitted", crossed)):
            lead, se = lead_over_best(fit, new, tasks, picked)
            beyond, margin = lead_beyond_gain((lead, se), m)
            print(f"    fit {k} {how:<12} picked {picked.mean():.3f}: lead {lead:+.4f} ± {se:.4f}, gain {m.gain:+.4f} "
                  f"± {m.gain_se or 0:.4f}, lead − gain {beyond:+.4f} vs margin {margin:.4f}: "
                  f"{'falls back' if beyond > margin else 'keeps routing'}")  # fmt: skip


if __name__ == "__main__":
    main()
