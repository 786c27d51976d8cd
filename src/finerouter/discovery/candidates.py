"""Adaptive candidate models per task (paper Sect. 3.1.1, "Candidate Model Selection").

Walk a task's fused ranking from the top, growing the candidate set one model at a time, and stop at the
first size where the *coverage* -- the share of the task's prompts whose own rank-1 model (under the tie
rule of :mod:`finerouter.discovery.ranking`) is in the set -- reaches ``delta``. Vectorised over tasks.
"""

from __future__ import annotations

import numpy as np


def adaptive_candidates(
    best: np.ndarray, labels: np.ndarray, fused_order: np.ndarray, delta: float = 0.8
) -> tuple[np.ndarray, np.ndarray]:
    """Number of candidates per task and the coverage they reach.

    Args:
        best: ``(n,)`` int rank-1 model of each prompt.
        labels: ``(n,)`` int task of each prompt, ``0..T-1``; rows with ``-1`` (Others) are ignored.
        fused_order: ``(T, m)`` models of each task, best fused first.
        delta: coverage threshold in ``(0, 1]``.

    Returns:
        ``(n_candidates (T,) int64 in 1..m, coverage (T,) float64)``; task ``t``'s candidates are
        ``fused_order[t, :n_candidates[t]]``.
    """
    best = np.asarray(best, dtype=np.int64)
    labels = np.asarray(labels, dtype=np.int64)
    fused_order = np.asarray(fused_order, dtype=np.int64)
    t, m = fused_order.shape
    if t == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float64)
    inside = labels >= 0
    wins = np.bincount(labels[inside] * m + best[inside], minlength=t * m).reshape(t, m).astype(np.float64)
    size = wins.sum(axis=1, keepdims=True)
    share = np.cumsum(np.take_along_axis(wins, fused_order, axis=1), axis=1) / np.maximum(size, 1.0)
    reached = share >= delta - 1e-12
    reached[:, -1] = True  # all m models always cover every prompt
    n_cand = reached.argmax(axis=1).astype(np.int64) + 1
    coverage = share[np.arange(t), n_cand - 1]
    return n_cand, coverage
