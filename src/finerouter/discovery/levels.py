"""The Leiden rounds of :class:`finerouter.discovery.TaskDiscovery` (steps 2-3 of its algorithm).

:func:`leiden_rounds` partitions prompts, then summaries of their communities, round after round;
:func:`grouped_leiden_rounds` runs the same rounds inside each coarse group. Both are deterministic given
``RoundSettings.seed`` (it seeds the HNSW search and Leiden). Also here: the per-model mean scores that break
ranking ties, and the validation of the coarse ``groups`` given to ``TaskDiscovery.fit``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from finerouter.discovery.fusion import fused_ranks, group_median_centres, group_mrr
from finerouter.discovery.graph import (
    build_graph,
    knn_recall,
    knn_search,
    resolve_knn_method,
)
from finerouter.discovery.leiden import leiden_communities
from finerouter.discovery.ranking import nanmean_columns
from finerouter.errors import DataError

logger = logging.getLogger(__name__)

#: The rounds' result: each prompt's final community, per round the ``(n,)`` labels and a stats dict,
#: and the level-1 kNN recall (None when the search was exact).
RoundsResult = tuple[np.ndarray, list[np.ndarray], list[dict[str, Any]], float | None]


@dataclass(frozen=True)
class RoundSettings:
    """The settings of the rounds, :class:`~finerouter.discovery.TaskDiscovery`'s parameters of the same names
    (``seed`` already resolved: never None); ``search``, when set, replaces
    :func:`~finerouter.discovery.graph.knn_search` (same arguments and result), e.g. an engine's sharded search."""

    k: int
    tau: float
    iterations: int
    resolution: float
    min_task_size: int
    epsilon: float
    rbo_p: float
    knn: str
    rbo_adjust: str
    seed: int
    search: Callable[..., tuple[np.ndarray, np.ndarray]] | None = None


def leiden_rounds(
    x: np.ndarray, ranks: np.ndarray, tie: np.ndarray, settings: RoundSettings, timings: dict[str, float]
) -> RoundsResult:
    """The Leiden rounds on prompts ``x`` (with their ``ranks``): each prompt's final community and per round
    the labels and stats; adds seconds per phase to ``timings``; returns the kNN recall when approximate.

    Args:
        x: ``(n, d)`` L2-normalised prompt embeddings.
        ranks: ``(n, m)`` rank of each model on each prompt.
        tie: ``(m,)`` tie-break score per model (:func:`model_mean_scores`).
        settings: the round settings.
        timings: seconds per phase, added to (phases repeat once per group).
    """
    n = x.shape[0]
    node_x, node_ranks = x, ranks
    prompt_label = np.arange(n, dtype=np.int64)
    level_labels: list[np.ndarray] = []
    level_stats: list[dict[str, Any]] = []
    recall: float | None = None
    for level in range(settings.iterations):
        n_nodes = node_x.shape[0]
        if n_nodes < 2:
            break
        t = time.perf_counter()
        k = min(settings.k, n_nodes - 1)
        method = resolve_knn_method(n_nodes, settings.knn)
        search = settings.search or knn_search
        neighbours = search(node_x, k, method=method, seed=settings.seed)
        _add_elapsed(timings, f"level{level + 1}_knn", t)
        if level == 0 and method == "hnsw":
            t = time.perf_counter()
            recall = knn_recall(node_x, neighbours[0], sample=500, seed=settings.seed)
            _add_elapsed(timings, "knn_recall", t)
        t = time.perf_counter()
        edges = build_graph(
            node_x,
            node_ranks,
            k=k,
            tau=settings.tau,
            rbo_p=settings.rbo_p,
            seed=settings.seed,
            rbo_adjust=settings.rbo_adjust,
            neighbours=neighbours,
        )
        _add_elapsed(timings, f"level{level + 1}_graph", t)
        t = time.perf_counter()
        comm = leiden_communities(edges, resolution=settings.resolution, seed=settings.seed)
        _add_elapsed(timings, f"level{level + 1}_leiden", t)
        n_comm = int(comm.max()) + 1
        prompt_label = comm[prompt_label]
        level_labels.append(prompt_label.copy())
        level_stats.append(
            {
                "level": level + 1,
                "nodes": n_nodes,
                "knn": method,
                "k": k,
                "candidate_edges": edges.n_candidates,
                "kept_edges": edges.n_edges,
                "communities": n_comm,
            }
        )
        logger.debug(
            "level %d: %d nodes, %d/%d edges kept (RBO >= %.2f), %d communities",
            level + 1, n_nodes, edges.n_edges, edges.n_candidates, settings.tau, n_comm,
        )
        if n_comm == n_nodes:
            break  # nothing merged: a further round would see the same nodes and graph again
        if level + 1 < settings.iterations:
            t = time.perf_counter()
            node_x = group_median_centres(x, prompt_label, n_comm)
            node_ranks = fused_ranks(group_mrr(ranks, prompt_label, n_comm, settings.epsilon), tie)
            _add_elapsed(timings, f"level{level + 1}_summaries", t)

    return prompt_label, level_labels, level_stats, recall


def grouped_leiden_rounds(
    x: np.ndarray,
    ranks: np.ndarray,
    tie: np.ndarray,
    group_ids: np.ndarray,
    settings: RoundSettings,
    timings: dict[str, float],
) -> RoundsResult:
    """:func:`leiden_rounds` inside each group (``group_ids``: ``(n,)`` from :func:`coarse_group_ids`);
    communities are numbered group after group, per round.

    A group's small communities (under ``min_task_size`` prompts) are pooled into one remainder community at
    the final round. Round statistics are summed over the groups that reached the round (``"groups"``;
    ``"knn"`` lists the search methods used, ``"exact+hnsw"`` when they differ); a
    group that stopped early keeps its last labels in later rounds. The kNN recall is the lowest of the
    groups searched approximately.
    """
    n = x.shape[0]
    n_rounds = settings.iterations
    final = np.empty(n, dtype=np.int64)
    rounds = [np.empty(n, dtype=np.int64) for _ in range(n_rounds)]
    offsets = [0] * n_rounds
    offset = 0
    stats: list[dict[str, Any]] = []
    recalls: list[float] = []
    for g in range(int(group_ids.max()) + 1):
        rows = np.flatnonzero(group_ids == g)
        if rows.size >= 2:
            lab, lvl_labels, lvl_stats, recall = leiden_rounds(x[rows], ranks[rows], tie, settings, timings)
        else:
            lab, lvl_labels, lvl_stats, recall = np.zeros(rows.size, dtype=np.int64), [], [], None
        if recall is not None:
            recalls.append(recall)
        for r in range(n_rounds):
            here = lvl_labels[min(r, len(lvl_labels) - 1)] if lvl_labels else np.zeros(rows.size, np.int64)
            rounds[r][rows] = here + offsets[r]
            offsets[r] += int(here.max()) + 1 if here.size else 0
        for r, st in enumerate(lvl_stats):
            if r == len(stats):
                stats.append({**st, "groups": 0, "nodes": 0, "candidate_edges": 0, "kept_edges": 0,
                              "communities": 0, "k": settings.k})
            for key in ("nodes", "candidate_edges", "kept_edges", "communities"):
                stats[r][key] += st[key]
            stats[r]["groups"] += 1
            if st["knn"] not in stats[r]["knn"].split("+"):
                stats[r]["knn"] += "+" + st["knn"]
        sizes = np.bincount(lab)
        lab = np.where(sizes[lab] < settings.min_task_size, sizes.size, lab)  # pool the small communities
        _, lab = np.unique(lab, return_inverse=True)
        final[rows] = lab + offset
        offset += int(lab.max()) + 1 if lab.size else 0
    n_levels = len(stats)
    return final, rounds[:n_levels], stats, (min(recalls) if recalls else None)


def coarse_group_ids(groups: Sequence[Any], n: int) -> np.ndarray:
    """``(n,)`` int64 group index of each prompt (groups numbered by first appearance); clear errors."""
    if isinstance(groups, (str, bytes)) or not hasattr(groups, "__len__"):
        raise DataError(f"TaskDiscovery.fit: groups must be a sequence of {n} labels, got {type(groups).__name__}")
    if len(groups) != n:
        raise DataError(f"TaskDiscovery.fit: {len(groups)} group labels for {n} prompts")
    index: dict[str, int] = {}
    out = np.empty(n, dtype=np.int64)
    for row, g in enumerate(groups):
        if g is None or (isinstance(g, float) and np.isnan(g)) or str(g).strip() == "":
            raise DataError(f"TaskDiscovery.fit: groups, row {row}: missing group label")
        out[row] = index.setdefault(str(g), len(index))
    return out


def model_mean_scores(scores: np.ndarray) -> np.ndarray:
    """``(m,)`` NaN-aware mean of ``scores: (n, m)`` per model (``-inf`` for a model never observed)."""
    means = nanmean_columns(scores)
    return np.where(np.isnan(means), -np.inf, means)


def _add_elapsed(timings: dict[str, float], phase: str, since: float) -> None:
    """Add the seconds since ``since`` to ``timings[phase]`` (phases repeat once per group)."""
    timings[phase] = timings.get(phase, 0.0) + time.perf_counter() - since


__all__ = [
    "RoundSettings",
    "RoundsResult",
    "coarse_group_ids",
    "grouped_leiden_rounds",
    "leiden_rounds",
    "model_mean_scores",
]
