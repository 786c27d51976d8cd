"""How far discovery's task sizes are from the tasks' shares of a router's traffic, and what that did to an added
model's lead (`onboarding_mixing.task_weights`, session 26).

For one dataset, seed and held-out model X, on the router fitted without X (`bench/onboarding.py`'s split and
training cut; loaded from `--routers-dir` when an earlier run saved it there, else fitted): per fit of the ensemble,
the total variation between discovery's task sizes and the share of the training prompts its classifier routes to
each task (and to Others); then X's lead over the best fitted model (`lead_over_best`) over *every* training
prompt, weighted by each (the weights the added router used before session 26, and now), beside the plain mean
difference: on the training prompts themselves a weighting that represents the traffic gives the plain mean.

    .venv/bin/python bench/task_shares.py --dataset routerdc --seed 0 \\
        --model cognitivecomputations/dolphin-2.9-llama3-8b --routers-dir DIR
"""

from __future__ import annotations

import argparse
import copy
import warnings
from pathlib import Path

import numpy as np


def main() -> None:
    from onboarding import fitted, one_model_arguments, router_key, split_and_cut  # bench/onboarding.py, beside this

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    one_model_arguments(ap)
    ap.add_argument("--routers-dir", type=Path, default=None)
    args = ap.parse_args()

    from finerouter.data.locate import dataset_path
    from finerouter.data.readers import read_routing_data
    from finerouter.routing.ensemble import members_of
    from finerouter.routing.onboarding import assign_tasks
    from finerouter.routing.onboarding_data import new_model_scores
    from finerouter.routing.onboarding_mixing import lead_over_best, task_weights

    data = read_routing_data(dataset_path(args.dataset), name=args.dataset)
    train, _ = split_and_cut(data, args.seed, args.test_size, args.train_size)
    x = args.model
    rest = [m for m in data.models if m != x]
    key = router_key(args.dataset, args.seed, train.n_prompts, x)
    without, _ = fitted(args, key, train.select_models(rest), args.seed)  # records the shares if saved without them
    new = new_model_scores(train, x, without.models_)
    emb = np.ascontiguousarray(without.encoder_.encode(new.prompts), dtype=np.float32)
    best = int(np.nanargmax(without.global_prior_))
    plain = float(np.mean(new.scores - new.others[:, best]))
    print(f"{args.dataset}, seed {args.seed}, X = {x}; {train.n_prompts} training prompts; best fitted model by "
          f"global prior {without.models_[best]}; X's plain mean difference from it {plain:+.4f}")  # fmt: skip
    for k, fit in enumerate([without, *members_of(without)]):
        shares = task_weights(fit)
        by_sizes = copy.copy(fit)
        by_sizes.fit_summary_ = {k2: v for k2, v in fit.fit_summary_.items() if k2 != "task_shares"}  # the old weights
        tasks = assign_tasks(fit, emb)
        now, _ = lead_over_best(fit, new, tasks)
        with warnings.catch_warnings():  # discovery's sizes on purpose (task_weights warns that it falls back to them)
            warnings.simplefilter("ignore", UserWarning)
            sizes = task_weights(by_sizes)
            before, _ = lead_over_best(by_sizes, new, tasks)
        n_tasks = fit.catalog_.n_tasks
        print(f"  fit {k}: {n_tasks} tasks; Others: {sizes[-1]:.3f} of discovery's prompts, {shares[-1]:.3f} "
              f"routed; total variation {0.5 * np.abs(sizes - shares).sum():.3f}; X's lead over every training "
              f"prompt weighted by discovery's sizes {before:+.4f}, by the routed shares {now:+.4f}")  # fmt: skip


if __name__ == "__main__":
    main()
