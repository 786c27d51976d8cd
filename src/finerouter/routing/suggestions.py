"""Which prompts to score a new model on before :func:`finerouter.routing.onboarding.add_model`: as few as possible,
covering the router's discovered tasks (the ``finerouter suggest-prompts`` command)."""

from __future__ import annotations

from typing import Any

import numpy as np

from finerouter.errors import ParameterError
from finerouter.routing.onboarding import assign_tasks, task_weights


def task_closeness(router: Any) -> np.ndarray:
    """``(T+1,)`` in (0, 1]: how close the call between a task's two best models is by its stage-1 prior
    (``1 / (1 + gap / median gap)``; 1 = a tie)."""
    top = -np.sort(-np.nan_to_num(router.stage1_, nan=-np.inf), axis=1)
    gap = np.where(np.isfinite(top[:, 1]), top[:, 0] - top[:, 1], 0.0)
    scale = max(float(np.median(gap)), 1e-6)
    return 1.0 / (1.0 + gap / scale)


def suggest_prompts(router: Any, n: int, prompts: Any, *, seed: int = 0) -> np.ndarray:
    """Which of ``prompts`` (e.g. the training prompts) to score a new model on: ``(k,)`` indices, ``k = min(n,
    unique prompts)``, most useful first.

    Prompts are assigned tasks by the router's classifier (as routing does) and drawn at random (seeded) inside each
    task. Every task with prompts gets one before any gets two while ``n`` allows; then each task's quota grows with
    its share of the router's traffic (:func:`~finerouter.routing.onboarding_mixing.task_weights`) times
    ``1 + closeness`` (:func:`task_closeness`): larger tasks and tasks whose best two models are close get more. The
    list interleaves the tasks, larger weights first, so any prefix of it is itself a stratified choice.
    """
    router._check_fitted()
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ParameterError(f"The 'n' parameter of suggest_prompts must be an int in [1, inf). Got {n!r}.")
    texts = [prompts] if isinstance(prompts, str) else list(prompts)
    if not texts:
        raise ParameterError("suggest_prompts needs candidate prompts (e.g. the training table's); got none")
    first: dict[str, int] = {}
    for i, p in enumerate(texts):
        if not isinstance(p, str) or not p.strip():
            raise ParameterError(f"prompt {i} is empty or not a string: {p!r}")
        first.setdefault(p, i)
    unique = np.fromiter(first.values(), dtype=np.int64)
    emb = np.ascontiguousarray(router.encoder_.encode([texts[i] for i in unique]), dtype=np.float32)
    tasks = assign_tasks(router, emb)
    n_tasks = router.catalog_.n_tasks
    group = np.where(tasks >= 0, tasks, n_tasks)
    weight = task_weights(router) * (1.0 + task_closeness(router))
    rng = np.random.default_rng(seed)
    members = {g: list(rng.permutation(unique[group == g])) for g in np.unique(group)}
    order = sorted(members, key=lambda g: (-weight[g], g))
    quota = {g: 0 for g in order}
    left = min(int(n), unique.size)
    for g in order:  # one per task first
        if left and members[g]:
            quota[g], left = 1, left - 1
    while left:
        open_ = [g for g in order if quota[g] < len(members[g])]
        share = np.array([weight[g] for g in open_])
        share = share / share.sum() if share.sum() > 0 else np.full(len(open_), 1.0 / len(open_))
        target = {g: quota[g] + s * left for g, s in zip(open_, share)}
        taken = 0
        for g in sorted(open_, key=lambda g: -(target[g] - int(target[g]))):
            add = min(len(members[g]) - quota[g], max(int(target[g]) - quota[g], 0))
            quota[g] += add
            taken += add
        if taken == 0:  # remainders only: one more each to the largest remainders
            for g in sorted(open_, key=lambda g: -(target[g] - quota[g]))[:left - taken]:
                quota[g] += 1
                taken += 1
        left -= taken
    picked: list[int] = []
    for r in range(max(quota.values(), default=0)):
        picked += [int(members[g][r]) for g in order if r < quota[g]]
    return np.asarray(picked, dtype=np.int64)


__all__ = ["suggest_prompts", "task_closeness"]
