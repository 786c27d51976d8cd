"""`TaskDiscovery`: stage-1 fine-grained task discovery (paper Sect. 3.1.1).

The algorithm, as implemented:

1. **Rankings.** Each prompt's models are ranked by score (:func:`rank_models`; ties by the model's overall
   mean score, then index; NaN last).
2. **Level 1.** The prompt graph (:func:`finerouter.discovery.graph.build_graph`: ``k``-NN on the description
   embeddings, RBO filter ``tau``, weight = geometric mean of min-max-normalised cosine and RBO) is
   partitioned by Leiden (``resolution``, ``seed``).
3. **Levels 2..iterations.** Every community becomes one node: its embedding is the per-dimension median of
   its *prompts'* embeddings, re-L2-normalised, and its ranking the MRR fusion (eq. 4, ``epsilon``) of its
   *prompts'* rankings. The same graph construction runs on these nodes (``k`` capped at nodes - 1) and
   Leiden partitions them. **Members propagate down**: a prompt's label at level ``l`` is the level-``l``
   community of its level-``(l-1)`` community, so summaries at every level are always computed from the
   underlying prompts, never from summaries of summaries. The loop stops early when a level merges nothing.
4. **Tasks.** Final-level communities with at least ``min_task_size`` prompts are the tasks, numbered by
   decreasing size; the other prompts form "Others" (label -1). With coarse ``groups`` (``fit(..., groups=)``,
   e.g. a dataset's benchmark labels), steps 2-3 run inside each group, so every task refines one group, and
   a group's prompts left in small communities are pooled into one community (the group's remainder).
5. **Per task** (:class:`finerouter.discovery.TaskCatalog`): the median-pooled centre, the MRR-fused
   ranking, adaptive candidates (coverage ``delta``), the NaN-aware median score of every model (a model
   never observed on the task's prompts falls back to its median over all prompts), ``n_examples`` central
   prompts (highest cosine to the centre) and a one-line description (the most central member's
   description, else its prompt). Others gets its medians too (all prompts' medians when it is empty).

Steps 2-3 live in :mod:`finerouter.discovery.levels`; this module validates inputs, ranks, builds the catalog
and saves/loads the fitted discovery.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np

from finerouter._validation import (
    Constraint,
    HasMethods,
    Interval,
    NoneValue,
    Options,
    check_is_fitted,
)
from finerouter.base import Component
from finerouter.discovery.candidates import adaptive_candidates
from finerouter.discovery.catalog import OthersGroup, Task, TaskCatalog, one_line
from finerouter.discovery.fusion import (
    fused_order,
    group_index,
    group_median_centres,
    group_mrr,
    group_nanmedian,
    nanmedian_columns,
)
from finerouter.discovery.leiden import canonical_labels
from finerouter.discovery.levels import (
    RoundSettings,
    coarse_group_ids,
    grouped_leiden_rounds,
    leiden_rounds,
    model_mean_scores,
)
from finerouter.discovery.ranking import order_to_ranks, rank_order
from finerouter.discovery.rbo import rbo_floor
from finerouter.errors import DataError

logger = logging.getLogger(__name__)

_OWNER = "TaskDiscovery"


class TaskDiscovery(Component):
    """Discover fine-grained task types from description embeddings and per-prompt model scores.

    Args:
        k: nearest neighbours per node in the graph (paper: 5).
        tau: RBO threshold; candidate edges whose two rankings have ``RBO < tau`` are dropped (paper: 0.4).
        iterations: Leiden rounds in all, the first on prompts, the rest on cluster summaries (paper: 3).
        resolution: Leiden RB-configuration resolution (1.0 = modularity; higher = smaller communities).
        min_task_size: final communities with fewer prompts go to "Others".
        delta: candidate coverage threshold (paper: 0.8).
        epsilon: the MRR rank offset (paper: 60).
        rbo_p: RBO persistence.
        knn: ``"auto"`` (exact up to 20,000 nodes, HNSW above), ``"exact"`` or ``"hnsw"``.
        n_examples: central example prompts kept per task.
        seed: seeds HNSW and Leiden. None: 0; inside FineRouter, the router's seed.
        engine: where the kNN search runs (:class:`finerouter.engines.Engine`, e.g. a RayEngine searching
            database shards in parallel; exact search gives the same neighbours). None: in this process. Not
            saved: a loaded discovery has none. Inside FineRouter, the router's engine when this is None.
        rbo_adjust: ``"chance"`` (default) corrects RBO for chance, ``(rbo - E) / (1 - E)`` clipped at 0 with
            ``E`` the expected RBO of two random rankings, before the ``tau`` filter and the weights (see
            :func:`finerouter.discovery.rbo.chance_corrected_rbo`); ``"none"`` uses raw RBO, whose floor
            (0.48 to 0.86 for pools of 3 to 11 models at ``p = 0.9``) makes ``tau = 0.4`` drop nothing.

    Attributes (after ``fit``):
        labels_: ``(n,)`` int64 task of each prompt, -1 = Others.
        catalog_: the :class:`TaskCatalog`.
        level_labels_: per Leiden round, the ``(n,)`` community of each prompt at that round.
        level_stats_: per round, a dict of nodes, candidate and kept edges, communities, kNN method.
        knn_recall_: recall@k of the approximate level-1 neighbours on a 500-row sample (None when exact).
        timings_: seconds per phase.
    """

    def __init__(
        self,
        k: int = 5,
        tau: float = 0.4,
        iterations: int = 3,
        resolution: float = 1.0,
        min_task_size: int = 5,
        delta: float = 0.8,
        epsilon: float = 60.0,
        rbo_p: float = 0.9,
        knn: str = "auto",
        n_examples: int = 3,
        seed: int | None = None,
        rbo_adjust: str = "chance",
        engine: Any = None,
    ) -> None:
        self.k = k
        self.tau = tau
        self.iterations = iterations
        self.resolution = resolution
        self.min_task_size = min_task_size
        self.delta = delta
        self.epsilon = epsilon
        self.rbo_p = rbo_p
        self.knn = knn
        self.n_examples = n_examples
        self.seed = seed
        self.rbo_adjust = rbo_adjust
        self.engine = engine

    _parameter_constraints: ClassVar[dict[str, list[Constraint]]] = {
        "k": [Interval("int", 2, None)],
        "tau": [Interval("float", 0.0, 1.0)],
        "iterations": [Interval("int", 1, None)],
        "resolution": [Interval("float", 0.0, None, closed="neither")],
        "min_task_size": [Interval("int", 1, None)],
        "delta": [Interval("float", 0.0, 1.0, closed="right")],
        "epsilon": [Interval("float", 0.0, None)],
        "rbo_p": [Interval("float", 0.0, 1.0, closed="neither")],
        "knn": [Options("auto", "exact", "hnsw")],
        "n_examples": [Interval("int", 0, None)],
        "seed": [Interval("int", 0, None), NoneValue()],
        "rbo_adjust": [Options("chance", "none")],
        "engine": [NoneValue(), HasMethods("knn_search", description="an Engine (with knn_search)")],
    }

    @property
    def _seed(self) -> int:
        """The seed in use: ``seed``, or 0 when it is None."""
        return 0 if self.seed is None else int(self.seed)

    # ------------------------------------------------------------------ fit
    def fit(
        self,
        embeddings: np.ndarray,
        scores: np.ndarray,
        *,
        model_names: Sequence[str],
        prompts: Sequence[str] | None = None,
        descriptions: Sequence[str] | None = None,
        groups: Sequence[Any] | None = None,
    ) -> TaskDiscovery:
        """Discover the tasks.

        Args:
            embeddings: ``(n, d)`` float32 L2-normalised embeddings of the prompts' task descriptions.
            scores: ``(n, m)`` quality scores, NaN = not evaluated.
            model_names: the ``m`` model names.
            prompts: optional ``(n,)`` prompt texts (examples and fallback descriptions).
            descriptions: optional ``(n,)`` task descriptions (preferred for the task description).
            groups: optional ``(n,)`` coarse label of each prompt (a dataset's ``task`` column). Given, the
                discovery refines them: the rounds run inside each group, so no task spans two groups, and in each
                group the prompts of communities smaller than ``min_task_size`` are pooled into one community
                (the group's remainder) instead of going to Others one by one.

        Returns:
            self
        """
        self._validate_params()
        t_start = time.perf_counter()
        x, score_matrix, models = self._check_inputs(embeddings, scores, model_names, prompts, descriptions)
        group_ids = None if groups is None else coarse_group_ids(groups, x.shape[0])
        n, m = score_matrix.shape
        timings: dict[str, float] = {}

        t = time.perf_counter()
        tie = model_mean_scores(score_matrix)
        order = rank_order(score_matrix, tie)
        ranks = order_to_ranks(order)
        best = order[:, 0].copy()
        timings["rank"] = time.perf_counter() - t
        floor = rbo_floor(m, self.rbo_p)
        if self.rbo_adjust == "none" and self.tau <= floor:
            logger.info(
                "tau=%.3g is at or below the RBO floor %.3f of %d-model rankings at p=%.3g: the RBO filter "
                "cannot drop an edge; ranking similarity only shapes the edge weights",
                self.tau, floor, m, self.rbo_p,
            )

        settings = self._round_settings()
        if group_ids is None:
            prompt_label, level_labels, level_stats, recall = leiden_rounds(x, ranks, tie, settings, timings)
        else:
            prompt_label, level_labels, level_stats, recall = grouped_leiden_rounds(
                x, ranks, tie, group_ids, settings, timings
            )
        for st in level_stats:
            logger.info(
                "level %d: %d nodes, %d/%d edges kept (RBO >= %.2f), %d communities",
                st["level"], st["nodes"], st["kept_edges"], st["candidate_edges"], self.tau, st["communities"],
            )

        t = time.perf_counter()
        labels = self._final_labels(prompt_label)
        catalog = self._build_catalog(x, score_matrix, ranks, best, tie, labels, models, prompts, descriptions)
        timings["catalog"] = time.perf_counter() - t
        timings["total"] = time.perf_counter() - t_start
        catalog.info = {
            "params": self._saved_params(),
            "levels": level_stats,
            "knn_recall": recall,
            "rbo_floor": floor,
        }
        self.knn_recall_ = recall
        self.labels_ = labels
        self.catalog_ = catalog
        self.level_labels_ = level_labels
        self.level_stats_ = level_stats
        self.timings_ = {name: round(sec, 4) for name, sec in timings.items()}
        logger.info(
            "discovered %d tasks; %.1f%% of %d prompts in a task; %.2f candidates per task of %d models (%.1fs)",
            catalog.n_tasks, 100 * catalog.share_in_tasks, n, catalog.mean_candidates if catalog.tasks else 0.0,
            m, timings["total"],
        )
        return self

    @property
    def n_tasks_(self) -> int:
        check_is_fitted(self, ["catalog_"])
        return self.catalog_.n_tasks

    # ------------------------------------------------------------------ state
    def to_state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """``(config, arrays)`` of a fitted discovery: its parameters, per-round stats and training labels (the
        catalog itself is saved by :meth:`save` into a ``catalog/`` sub-folder)."""
        from finerouter._training import json_safe

        check_is_fitted(self, ["catalog_"])
        config = {
            "params": self._saved_params(),
            "level_stats": self.level_stats_,
            "knn_recall": self.knn_recall_,
            "timings": self.timings_,
            "n_levels": len(self.level_labels_),
        }
        arrays = {"labels": np.asarray(self.labels_, dtype=np.int64)}
        arrays.update({f"level_labels_{i}": np.asarray(a, dtype=np.int64) for i, a in enumerate(self.level_labels_)})
        return json_safe(config), arrays

    @classmethod
    def from_state(cls, config: dict[str, Any], arrays: dict[str, np.ndarray]) -> TaskDiscovery:
        """A fitted discovery from :meth:`to_state` output (without its catalog, which :meth:`load` adds)."""
        from finerouter.errors import ArtifactError

        try:
            obj = cls(**config["params"])
            obj.labels_ = np.asarray(arrays["labels"], dtype=np.int64)
            obj.level_labels_ = [np.asarray(arrays[f"level_labels_{i}"]) for i in range(int(config["n_levels"]))]
            obj.level_stats_ = list(config.get("level_stats") or [])
            obj.knn_recall_ = config.get("knn_recall")
            obj.timings_ = dict(config.get("timings") or {})
        except (KeyError, TypeError, ValueError) as exc:
            raise ArtifactError(f"TaskDiscovery state is malformed: {exc}") from exc
        return obj

    def save(self, path: Any) -> Any:
        """Write the fitted discovery into folder ``path`` (``config.json``, ``arrays.safetensors``, ``catalog/``)."""
        folder = super().save(path)
        self.catalog_.save(folder / "catalog")
        return folder

    @classmethod
    def load(cls, path: Any) -> TaskDiscovery:
        """Read a discovery written by :meth:`save` (ArtifactError naming the file when it cannot)."""
        from pathlib import Path

        obj = super().load(path)
        obj.catalog_ = TaskCatalog.load(Path(path) / "catalog")
        return obj

    # ------------------------------------------------------------------ helpers
    def _saved_params(self) -> dict[str, Any]:
        """The parameters saved with a fitted discovery: all but ``engine`` (where it ran is no part of it)."""
        return {k: v for k, v in self.get_params(deep=False).items() if k != "engine"}

    def _round_settings(self) -> RoundSettings:
        """The parameters the Leiden rounds use (:mod:`finerouter.discovery.levels`)."""
        return RoundSettings(
            k=self.k,
            tau=self.tau,
            iterations=self.iterations,
            resolution=self.resolution,
            min_task_size=self.min_task_size,
            epsilon=self.epsilon,
            rbo_p=self.rbo_p,
            knn=self.knn,
            rbo_adjust=self.rbo_adjust,
            seed=self._seed,
            search=None if self.engine is None else self.engine.knn_search,
        )

    @staticmethod
    def _check_inputs(
        embeddings: np.ndarray,
        scores: np.ndarray,
        model_names: Sequence[str],
        prompts: Sequence[str] | None,
        descriptions: Sequence[str] | None,
    ) -> tuple[np.ndarray, np.ndarray, list[str]]:
        x = np.asarray(embeddings)
        if x.ndim != 2:
            raise DataError(f"TaskDiscovery.fit: embeddings must be (n, d), got shape {x.shape}")
        x = np.ascontiguousarray(x, dtype=np.float32)
        if not np.isfinite(x).all():
            raise DataError(f"TaskDiscovery.fit: embeddings, row {int(np.argwhere(~np.isfinite(x))[0, 0])}: not finite")
        norms = np.linalg.norm(x, axis=1)
        if x.shape[0] and np.abs(norms - 1.0).max() > 1e-3:
            r = int(np.argmax(np.abs(norms - 1.0)))
            raise DataError(
                f"TaskDiscovery.fit: embeddings must be L2-normalised; row {r} has norm {norms[r]:.4f}"
            )
        score_matrix = np.asarray(scores, dtype=np.float64)
        if score_matrix.ndim != 2 or score_matrix.shape[0] != x.shape[0]:
            raise DataError(f"TaskDiscovery.fit: scores have shape {score_matrix.shape}, expected ({x.shape[0]}, m)")
        if np.isinf(score_matrix).any():
            r, c = np.argwhere(np.isinf(score_matrix))[0]
            raise DataError(f"TaskDiscovery.fit: scores, row {r}, column {c}: infinite score")
        models = [str(mn) for mn in model_names]
        if len(models) != score_matrix.shape[1]:
            raise DataError(f"TaskDiscovery.fit: {len(models)} model names for {score_matrix.shape[1]} score columns")
        if len(set(models)) != len(models):
            raise DataError(f"TaskDiscovery.fit: duplicate model names in {models}")
        if score_matrix.shape[1] < 2:
            raise DataError("TaskDiscovery.fit: need at least 2 models")
        if x.shape[0] < 2:
            raise DataError(f"TaskDiscovery.fit: need at least 2 prompts, got {x.shape[0]}")
        for name, texts in (("prompts", prompts), ("descriptions", descriptions)):
            if texts is not None and len(texts) != x.shape[0]:
                raise DataError(f"TaskDiscovery.fit: {len(texts)} {name} for {x.shape[0]} embeddings")
        return x, score_matrix, models

    def _final_labels(self, prompt_label: np.ndarray) -> np.ndarray:
        """Tasks = final communities with >= min_task_size prompts, numbered by size; the rest -1."""
        lab = canonical_labels(prompt_label)  # by decreasing prompt count
        sizes = np.bincount(lab)
        keep = sizes >= self.min_task_size
        new_id = np.where(keep, np.cumsum(keep) - 1, -1)
        return new_id[lab].astype(np.int64)

    def _build_catalog(
        self,
        x: np.ndarray,
        score_matrix: np.ndarray,
        ranks: np.ndarray,
        best: np.ndarray,
        tie: np.ndarray,
        labels: np.ndarray,
        models: list[str],
        prompts: Sequence[str] | None,
        descriptions: Sequence[str] | None,
    ) -> TaskCatalog:
        n, m = score_matrix.shape
        n_tasks = int(labels.max()) + 1 if labels.size and labels.max() >= 0 else 0
        overall = nanmedian_columns(score_matrix)
        tasks: list[Task] = []
        if n_tasks:
            inside = labels >= 0
            lab_in = labels[inside]
            rows_in = np.where(inside)[0]
            centres = group_median_centres(x[inside], lab_in, n_tasks)
            mrr = group_mrr(ranks[inside], lab_in, n_tasks, self.epsilon)
            orders = fused_order(mrr, tie)
            n_cand, coverage = adaptive_candidates(best, labels, orders, self.delta)
            medians = group_nanmedian(score_matrix[inside], lab_in, n_tasks)
            medians = np.where(np.isnan(medians), overall[None, :], medians)
            order, starts = group_index(lab_in, n_tasks)
            for tid in range(n_tasks):
                members = np.sort(rows_in[order[starts[tid] : starts[tid + 1]]])
                sims = x[members] @ centres[tid]
                central = members[np.argsort(-sims, kind="stable")]
                examples = [str(prompts[i]) for i in central[: self.n_examples]] if prompts is not None else []
                source = descriptions if descriptions is not None else prompts
                description = one_line(source[central[0]]) if source is not None else f"Task {tid}"
                ranking = [models[j] for j in orders[tid]]
                tasks.append(
                    Task(
                        id=tid,
                        size=int(members.size),
                        members=members.astype(np.int64),
                        center=centres[tid].astype(np.float32),
                        fused_ranking=ranking,
                        candidates=ranking[: int(n_cand[tid])],
                        median_scores={models[j]: float(medians[tid, j]) for j in range(m)},
                        examples=examples,
                        description=description,
                        coverage=float(coverage[tid]),
                    )
                )
        others_members = np.where(labels < 0)[0].astype(np.int64)
        if others_members.size:
            others_medians = nanmedian_columns(score_matrix[others_members])
            others_medians = np.where(np.isnan(others_medians), overall, others_medians)
        else:
            others_medians = overall
        others = OthersGroup(
            size=int(others_members.size),
            members=others_members,
            median_scores={models[j]: float(others_medians[j]) for j in range(m)},
        )
        return TaskCatalog(models, tasks, others, dim=x.shape[1], n_prompts=n)


__all__ = ["TaskDiscovery"]
