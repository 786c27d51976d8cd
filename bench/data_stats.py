"""What the routing datasets' scores look like: how many are 0/1, how often every model fails, how often models tie.

    .venv/bin/python bench/data_stats.py                      # the three datasets of ../shared/data

Printed per dataset: unique prompts and models; the share of observed scores that are exactly 0 or 1; the share
of prompts on which every scored model gets 0; the share of prompts whose best score is shared by two or more
models (the ranking's top is a tie).
"""

from __future__ import annotations

import argparse

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datasets", default="dcrouter,routerbench_subset,routerdc")
    args = ap.parse_args()

    from finerouter.data.locate import dataset_path
    from finerouter.data.readers import read_routing_data

    for name in (d.strip() for d in args.datasets.split(",") if d.strip()):
        data = read_routing_data(dataset_path(name), name=name)
        s = data.scores
        seen = np.isfinite(s)
        values = s[seen]
        binary = float(np.mean((values == 0) | (values == 1)))
        filled = np.where(seen, s, -np.inf)
        best = filled.max(axis=1)
        all_fail = float(np.mean(best == 0))
        top_tie = float(np.mean((filled == best[:, None]).sum(axis=1) >= 2))
        print(f"{name:20s} {data.n_prompts:6d} prompts x {data.n_models:2d} models: scores exactly 0 or 1 "
              f"{binary:6.2%}; every model 0 on {all_fail:6.2%} of prompts; best score tied on {top_tie:6.2%}")


if __name__ == "__main__":
    main()
