"""`FineRouter`: the two-stage router (paper Sections 3.1-3.3) behind one fit / route / save / load facade."""

from __future__ import annotations

import hashlib
import json
import logging
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from finerouter._io import atomic_directory, atomic_write_json, load_arrays, save_arrays, sha256_file
from finerouter._training import check_matrix, single_thread_blas
from finerouter._validation import check_choice, check_float, check_int, check_is_fitted
from finerouter._version import __version__
from finerouter.errors import ArtifactError, DataError, ParameterError
from finerouter.routing.costs import CostModel
from finerouter.routing.decision import RoutingDecision
from finerouter.evaluation.metrics import expected_calibration_error
from finerouter.routing.mixing import (
    CANDIDATE_MIXES,
    Calibration,
    MixingChoice,
    choose_weights,
    fold_ids,
    raw_mix,
    shrink_task_means,
)
from finerouter.routing.policy import (
    choose_models,
    choose_models_cost_aware,
    minmax_rows,
    route_to_budget,
    spend_per_1k,
)

logger = logging.getLogger(__name__)

ARTIFACT_FORMAT = "finerouter-router"
#: 2: the manifest carries ``manifest_sha256``, a digest of its own content, so every byte of the artifact is
#: checked at load. 1 (older): the manifest itself was unchecked; such artifacts load with a warning.
ARTIFACT_FORMAT_VERSION = 2
MANIFEST_DIGEST_KEY = "manifest_sha256"
#: Fixed sentences whose embeddings fingerprint the encoder an artifact was trained with.
ENCODER_PROBES = (
    "Solve for x: 2x + 3 = 11.",
    "Write a Python function that reverses a string.",
    "Who wrote the novel Pride and Prejudice?",
    "Summarise the following paragraph in one sentence.",
)
_FINGERPRINT_MIN_COSINE = 0.98


@dataclass
class RouterScores:
    """Every score the router computes for a batch of prompts.

    Attributes:
        stage1: ``(n, m)`` the assigned task's mean (or median) score per model (raw; NaN where never observed).
        stage2: ``(n, m)`` the quality estimator's predictions.
        final: ``(n, m)`` the routing score: the normalised sources mixed (:func:`finerouter.routing.mixing.mix`).
        expected: ``(n, m)`` calibrated expected true score per model, on the score scale (the raw mix of the
            sources, with the best routing mix's weights even when routing fell back to the best single model,
            mapped through the isotonic calibration fitted on out-of-fold data; uncalibrated with
            ``mixing="paper"``). What cost-aware rules trade against cost.
        task: ``(n,)`` assigned task id, -1 for "Others".
        confidence: ``(n,)`` classifier probability of the best task.
    """

    stage1: np.ndarray
    stage2: np.ndarray
    final: np.ndarray
    task: np.ndarray
    confidence: np.ndarray
    expected: np.ndarray | None = None


@dataclass
class _FittedParts:
    """Both stages fitted on one set of rows (the full training data, or one cross-validation fold's rest)."""

    discovery: Any
    classifier: Any
    quality: Any
    stage1: np.ndarray  # (T+1, m)
    global_prior: np.ndarray  # (m,)
    train_tasks: np.ndarray  # (n,)
    candidates: list[list[int]]
    seconds: dict[str, float]


def _encoder_spec(encoder: Any) -> dict[str, Any] | None:
    """A JSON description from which ``get_encoder`` rebuilds ``encoder``, or None if it cannot."""
    inner = getattr(encoder, "encoder", encoder)  # unwrap CachedEncoder
    model = getattr(inner, "model", None)
    if model is None and type(inner).__name__ != "SentenceTransformerEncoder":
        return None
    spec: dict[str, Any] = {"model": model if isinstance(model, str) or model is None else str(model)}
    for key in ("max_seq_length", "batch_size"):
        if hasattr(inner, key):
            spec[key] = getattr(inner, key)
    # The precision the router was fitted with ("auto" resolved on the fitting machine), so that load
    # embeds exactly as fit did, or refuses.
    spec["precision"] = getattr(inner, "resolved_precision", "float32")
    return spec


class FineRouter:
    """Route prompts to the best model in a pool, trading quality against cost.

    Stage 1 discovers fine-grained tasks in the training data (kNN graph on description embeddings, RBO-filtered
    edges, iterated Leiden), picks adaptive candidate models per task, and trains a bilinear task classifier.
    Stage 2 trains a mixture-of-experts quality estimator (general adapters per model, task adapters per task
    candidate). A prompt's final score per model is ``alpha * norm(stage 2) + (1 - alpha) * norm(task prior)``, the
    prior being the assigned task's mean (or, as in the paper, median) score per model.

    Args:
        encoder: None (the packaged all-MiniLM-L6-v2), a sentence-transformers model name or path, or any object
            implementing :class:`finerouter.encoders.Encoder`.
        describer: None (the prompt is its own task description, offline) or a description writer such as
            :class:`finerouter.describe.OpenAIDescriber`; when it has ``summarize``, it also names the tasks.
        alpha: weight of stage 2 in the final score, in [0, 1], with ``mixing="paper"``.
        stage1_statistic: the per-task score summary of the stage-1 term: ``"median"`` (the paper) or
            ``"mean"`` (default). On binary (pass/fail) scores a median is 0 or 1 and ties most models; the mean
            keeps the task's success rates (docs/models.md has the measurements).
        refine_task_labels: whether discovery refines the training data's coarse ``task`` labels (its source
            benchmarks, say). Refining, the graph only links prompts with the same label, so every task is a
            sub-task of one label, and a label's prompts outside its sub-tasks form one task of their own; the
            label is read at fit time only, routing never needs it. ``False`` (or data without labels): the
            paper's label-free discovery. ``"auto"`` (default): fit both on 80% of the training data and refine
            only if the stage-1 prior then routes the other 20% better (``fit_summary_["task_label_choice"]``).
            Measured (docs/models.md): refining helps on 0/1-scored dcrouter (test 0.643 -> 0.656), not on routerdc.
        mixing: how the final score mixes its sources, ``w2 * norm(stage2) + w1 * norm(stage1) + wg *
            norm(global)`` (``global``: each model's mean training score). ``"paper"``: the paper's Eq. 5,
            ``(alpha, 1 - alpha, 0)``. ``"cv"`` (default): internal cross-validation on the training data
            (``cv_folds`` folds by unique prompt) keeps Eq. 5 unless a mix leaning on the global prior routes the
            held-out folds better by a standard error, and falls back to the best single model (``wg = 1``) unless
            the cross-fitted gain over it is positive (:mod:`finerouter.routing.mixing`;
            ``fit_summary_["mixing"]``).
        cv_folds: folds of the internal cross-validation for ``mixing="cv"`` (each fold refits both stages).
        stage1_shrinkage: shrink each task's mean score per model toward the model's overall mean in proportion
            to how little the task's data says (empirical Bayes; only with ``stage1_statistic="mean"``).
        discovery: keyword arguments for :class:`finerouter.discovery.TaskDiscovery`.
        classifier: keyword arguments for :class:`finerouter.classify.TaskClassifier`. The router's default
            ``threshold`` is 0: every prompt goes to its most likely task. The multi-label sigmoid outputs are
            low for many prompts, so a 0.5 threshold sent 7-26% of dcrouter's validation prompts to "Others" (whose
            prior is the global one) and lost routing quality (docs/models.md); pass ``{"threshold": 0.5}`` to keep
            "Others" at inference.
        quality: keyword arguments for :class:`finerouter.quality.QualityEstimator`.
        prices: a prices CSV path or :class:`finerouter.data.prices.Prices`, used to estimate per-prompt cost.
            Without it, costs observed in the training data (if any) are fitted per model against prompt length.
        cache_dir: where embeddings are cached (None: no cache).
        seed: seed for every random step.
    """

    def __init__(
        self,
        encoder: Any = None,
        describer: Any = None,
        alpha: float = 0.5,
        stage1_statistic: str = "mean",
        refine_task_labels: bool | str = "auto",
        mixing: str = "cv",
        cv_folds: int = 3,
        stage1_shrinkage: bool = True,
        discovery: dict[str, Any] | None = None,
        classifier: dict[str, Any] | None = None,
        quality: dict[str, Any] | None = None,
        prices: Any = None,
        cache_dir: str | Path | None = None,
        seed: int = 0,
    ) -> None:
        self.encoder = encoder
        self.describer = describer
        self.alpha = alpha
        self.stage1_statistic = stage1_statistic
        self.refine_task_labels = refine_task_labels
        self.mixing = mixing
        self.cv_folds = cv_folds
        self.stage1_shrinkage = stage1_shrinkage
        self.discovery = discovery
        self.classifier = classifier
        self.quality = quality
        self.prices = prices
        self.cache_dir = cache_dir
        self.seed = seed

    def __repr__(self) -> str:
        enc = self.encoder if isinstance(self.encoder, (str, type(None))) else type(self.encoder).__name__
        return f"FineRouter(encoder={enc!r}, alpha={self.alpha}, seed={self.seed})"

    # ------------------------------------------------------------------ helpers
    def _validate_params(self) -> None:
        owner = "FineRouter"
        check_float(self.alpha, "alpha", owner, low=0.0, high=1.0)
        check_choice(self.stage1_statistic, "stage1_statistic", owner, ("median", "mean"))
        check_int(self.seed, "seed", owner, low=0)
        check_choice(self.mixing, "mixing", owner, ("cv", "paper"))
        check_int(self.cv_folds, "cv_folds", owner, low=2)
        if not isinstance(self.stage1_shrinkage, bool):
            raise ParameterError(
                f"The 'stage1_shrinkage' parameter of {owner} must be a bool. Got {self.stage1_shrinkage!r}."
            )
        if not (isinstance(self.refine_task_labels, bool) or self.refine_task_labels == "auto"):
            raise ParameterError(
                f"The 'refine_task_labels' parameter of {owner} must be True, False or 'auto'. "
                f"Got {self.refine_task_labels!r}."
            )
        for name in ("discovery", "classifier", "quality"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, dict):
                raise ParameterError(f"The '{name}' parameter of {owner} must be a dict or None. Got {value!r}.")

    def _resolve_encoder(self) -> Any:
        from finerouter.encoders import CachedEncoder, get_encoder

        enc = self.encoder
        if enc is None or isinstance(enc, str):
            return get_encoder(enc, cache_dir=self.cache_dir)
        if not (hasattr(enc, "encode") and hasattr(enc, "name") and hasattr(enc, "dim")):
            raise ParameterError(
                "The 'encoder' parameter of FineRouter must be None, a sentence-transformers model name or path, "
                f"or an Encoder (with name, dim, encode). Got {enc!r}."
            )
        if self.cache_dir is not None and not isinstance(enc, CachedEncoder):
            return CachedEncoder(enc, self.cache_dir)
        return enc

    def _resolve_prices(self) -> Any:
        if self.prices is None or not isinstance(self.prices, (str, Path)):
            return self.prices
        from finerouter.data.prices import Prices

        return Prices.read(self.prices)

    # ------------------------------------------------------------------ fit
    def fit(
        self,
        dataset: Any,
        embeddings: np.ndarray | None = None,
        description_embeddings: np.ndarray | None = None,
    ) -> FineRouter:
        """Run Stage 1 (discovery + classifier) and Stage 2 (quality estimator) on ``dataset``.

        Args:
            dataset: a :class:`finerouter.RoutingDataset`.
            embeddings: optional precomputed ``(n, d)`` prompt embeddings from this router's encoder.
            description_embeddings: optional ``(n, d)`` embeddings of the task descriptions (default: from the
                describer, or the prompt embeddings when the prompt is its own description).
        """
        from finerouter.data.dataset import RoutingDataset
        from finerouter.quality import QualityEstimator

        self._validate_params()
        if not isinstance(dataset, RoutingDataset):
            raise ParameterError(f"FineRouter.fit expects a RoutingDataset. Got {type(dataset).__name__}.")
        if dataset.n_prompts < 10:
            raise DataError(f"{dataset.source}: FineRouter needs at least 10 prompts to fit, got {dataset.n_prompts}")
        t0 = time.perf_counter()
        timings: dict[str, float] = {}
        encoder = self._resolve_encoder()
        prompts = dataset.prompts
        if embeddings is None:
            logger.info("embedding %d prompts with %s", len(prompts), encoder.name)
            embeddings = encoder.encode(prompts)
        embeddings = np.asarray(embeddings, dtype=np.float32)
        if embeddings.shape[0] != dataset.n_prompts:
            raise ParameterError(
                f"embeddings have {embeddings.shape[0]} rows for {dataset.n_prompts} prompts in FineRouter.fit"
            )
        timings["embed"] = time.perf_counter() - t0

        descriptions = list(prompts)
        if self.describer is not None:
            descriptions = list(self.describer.describe(prompts))
            if description_embeddings is None:
                description_embeddings = encoder.encode(descriptions)
        if description_embeddings is None:
            description_embeddings = embeddings
        desc_emb = np.asarray(description_embeddings, dtype=np.float32)
        label_choice: dict[str, Any] = {"mode": self.refine_task_labels}
        t = time.perf_counter()
        if dataset.tasks is None or self.refine_task_labels is False:
            refine = False
        elif self.refine_task_labels is True:
            refine = True
        else:
            refine, dev_quality = self._choose_refinement(dataset, encoder, embeddings, desc_emb, descriptions)
            label_choice["dev_quality"] = dev_quality
        timings["label_choice"] = time.perf_counter() - t
        groups = dataset.tasks if refine else None

        t = time.perf_counter()
        parts = self._fit_parts(encoder, embeddings, desc_emb, dataset.scores, dataset.models, prompts,
                                descriptions, groups, summarize=True)
        discovery, catalog, classifier = parts.discovery, parts.discovery.catalog_, parts.classifier
        train_tasks, candidates = parts.train_tasks, parts.candidates
        timings.update(parts.seconds)
        n_tasks = catalog.n_tasks
        logger.info("discovered %d tasks (%.1fs)", n_tasks, timings["discovery"])

        t = time.perf_counter()
        if self.mixing == "cv":
            mixing, calibration = self._cross_validate_mixing(
                dataset, encoder, embeddings, desc_emb, descriptions, groups
            )
        else:
            mixing, calibration = MixingChoice.fixed(self.alpha, 1.0 - self.alpha, 0.0), Calibration.identity()
        timings["mixing_cv"] = time.perf_counter() - t

        self.encoder_ = encoder
        self.models_ = list(dataset.models)
        self.catalog_ = catalog
        self.classifier_ = classifier
        self.quality_ = parts.quality
        self.stage1_ = parts.stage1
        self.global_prior_ = parts.global_prior
        self.mixing_ = mixing
        self.calibration_ = calibration
        self.cost_model_ = CostModel.fit(dataset.models, prompts, dataset.costs, self._resolve_prices())
        self.n_features_ = int(embeddings.shape[1])
        self.discovery_labels_ = discovery.labels_
        timings["total"] = time.perf_counter() - t0
        self.fit_summary_ = {
            "n_prompts": dataset.n_prompts,
            "n_models": dataset.n_models,
            "n_tasks": n_tasks,
            "refined_task_labels": groups is not None,
            "task_label_choice": label_choice,
            "share_in_tasks": float(np.mean(discovery.labels_ >= 0)),
            "mean_candidates": float(np.mean([len(c) for c in candidates])) if candidates else 0.0,
            "share_assigned_by_classifier": float(np.mean(train_tasks >= 0)),
            "mixing": mixing.to_dict(),
            "seconds": {k: round(v, 3) for k, v in timings.items()},
        }
        logger.info("fit done: %s", self.fit_summary_)
        return self

    # ------------------------------------------------------------------ scoring
    def _stage1_prior(self, catalog: Any, scores: np.ndarray, labels: np.ndarray) -> np.ndarray:
        """``(T+1, m)`` the stage-1 prior of ``catalog`` (shrunk task means by default; see ``stage1_shrinkage``)."""
        if self.stage1_statistic == "mean" and self.stage1_shrinkage:
            # a model unscored in a task already takes its overall mean there (NaN only if never scored)
            return shrink_task_means(scores, labels, catalog.n_tasks)
        return _stage1_matrix(catalog, scores, labels, self.stage1_statistic)

    def _fit_parts(
        self, encoder: Any, embeddings: np.ndarray, desc_emb: np.ndarray, scores: np.ndarray, models: list[str],
        prompts: list[str], descriptions: list[str], groups: list[str] | None, *, summarize: bool = False,
    ) -> _FittedParts:
        """Discovery, the task classifier, the quality estimator and the priors, fitted on these rows."""
        from finerouter.discovery.ranking import nanmean_columns
        from finerouter.quality import QualityEstimator

        seconds: dict[str, float] = {}
        t = time.perf_counter()
        discovery = self._discover(desc_emb, scores, models, prompts, descriptions, groups)
        catalog = discovery.catalog_
        if summarize and self.describer is not None and hasattr(self.describer, "summarize"):
            for task in catalog.tasks:
                task.description = self.describer.summarize(task.examples)
        seconds["discovery"] = time.perf_counter() - t
        t = time.perf_counter()
        classifier = self._fit_classifier(encoder, embeddings, discovery)
        if classifier is not None:
            train_tasks, _ = classifier.predict(embeddings)
        else:
            train_tasks = np.full(len(prompts), -1, dtype=np.int64)
        seconds["classifier"] = time.perf_counter() - t
        t = time.perf_counter()
        index = {name: j for j, name in enumerate(models)}
        candidates = [[index[c] for c in task.candidates] for task in catalog.tasks]
        q_params = {"seed": self.seed, **(self.quality or {})}
        quality = QualityEstimator(**q_params).fit(embeddings, scores, train_tasks, candidates)
        seconds["quality"] = time.perf_counter() - t
        stage1 = self._stage1_prior(catalog, scores, discovery.labels_)
        global_prior = nanmean_columns(np.asarray(scores, dtype=np.float64))
        return _FittedParts(discovery, classifier, quality, stage1, global_prior, train_tasks, candidates, seconds)

    def _cross_validate_mixing(
        self, dataset: Any, encoder: Any, embeddings: np.ndarray, desc_emb: np.ndarray, descriptions: list[str],
        groups: list[str] | None,
    ) -> Any:
        """``mixing="cv"``: out-of-fold stage-1, stage-2 and global scores on the training data, then the weights.

        Each of ``cv_folds`` folds (by unique prompt, stratified by the data's task labels when present) is held
        out in turn; both stages are refitted on the other folds (with the same label decision, the catalogs' own
        task texts) and score the held-out prompts. :func:`finerouter.routing.mixing.choose_weights` picks the
        weights from these scores.
        """
        scores = np.asarray(dataset.scores, dtype=np.float64)
        n, m = scores.shape
        fold = fold_ids(dataset.prompts, dataset.tasks, self.cv_folds, self.seed + 104729)
        stage1 = np.full((n, m), np.nan)
        stage2 = np.full((n, m), np.nan)
        global_prior = np.full((n, m), np.nan)
        for f in range(self.cv_folds):
            held = np.flatnonzero(fold == f)
            rest = np.flatnonzero(fold != f)
            if held.size == 0 or rest.size < 10:
                continue
            logger.info("mixing cross-validation: fold %d/%d (%d held out)", f + 1, self.cv_folds, held.size)
            parts = self._fit_parts(
                encoder, embeddings[rest], desc_emb[rest], scores[rest], dataset.models,
                [dataset.prompts[i] for i in rest], [descriptions[i] for i in rest],
                None if groups is None else [groups[i] for i in rest],
            )
            emb = embeddings[held]
            if parts.classifier is not None:
                task, _ = parts.classifier._predict_checked(emb)
            else:
                task = np.full(held.size, -1, dtype=np.int64)
            rows = np.where(task >= 0, task, parts.discovery.catalog_.n_tasks)
            stage1[held] = parts.stage1[rows]
            stage2[held] = parts.quality._predict(emb, task)
            global_prior[held] = parts.global_prior[None, :]
        done = np.isfinite(global_prior).any(axis=1)
        if not done.any():  # no fold could be fitted: no evidence that routing helps
            logger.info("mixing: too few prompts for cross-validation; routing like the best single model")
            return MixingChoice({"stage2": 0.0, "stage1": 0.0, "global": 1.0}, "fallback"), Calibration.identity()
        alpha = float(self.alpha)
        candidates = ((alpha, 1.0 - alpha, 0.0),) + tuple(c for c in CANDIDATE_MIXES[1:] if c != (alpha, 1 - alpha, 0))
        choice = choose_weights(
            stage2[done], stage1[done], global_prior[done], scores[done], fold[done], candidates=candidates
        )
        raw = raw_mix(choice.estimate_vector(), stage2[done], stage1[done], global_prior[done])
        calibration = Calibration.fit(raw, scores[done])
        choice.calibration_error = {
            "raw": expected_calibration_error(raw, scores[done]),
            "calibrated": expected_calibration_error(calibration(raw), scores[done]),
        }
        return choice, calibration

    def _discover(
        self, desc_emb: np.ndarray, scores: np.ndarray, models: list[str], prompts: list[str],
        descriptions: list[str], groups: list[str] | None,
    ) -> Any:
        from finerouter.discovery import TaskDiscovery

        params = {"seed": self.seed, **(self.discovery or {})}
        return TaskDiscovery(**params).fit(
            desc_emb, scores, model_names=models, prompts=prompts, descriptions=descriptions, groups=groups
        )

    def _fit_classifier(self, encoder: Any, embeddings: np.ndarray, discovery: Any) -> Any:
        """The task classifier for ``discovery``'s tasks (None without tasks); task texts embedded by ``encoder``."""
        from finerouter.classify import TaskClassifier

        catalog = discovery.catalog_
        if catalog.n_tasks == 0:
            return None
        task_embeddings = encoder.encode([task.description for task in catalog.tasks])
        params = {"seed": self.seed, "threshold": 0.0, **(self.classifier or {})}
        return TaskClassifier(**params).fit(embeddings, discovery.labels_, task_embeddings)

    def _choose_refinement(
        self, dataset: Any, encoder: Any, embeddings: np.ndarray, desc_emb: np.ndarray, descriptions: list[str]
    ) -> tuple[bool, dict[str, float]]:
        """``refine_task_labels="auto"``: refine the labels only if that routes a dev part better.

        The training rows are split 80/20 by unique prompt, stratified by label (seeded). On the 80% part, the
        label-free and the refined discovery are each fitted with their task classifier; each routes the dev
        prompts by its stage-1 prior alone (the assigned task's statistic per model; the better model overall
        on exact ties), and the mean true score of the picked model (a missing score counts 0) is compared.
        Refining must do strictly better; ties keep the paper's label-free discovery. With too few rows to carve
        a dev part (no dev row, or under 10 fit rows) nothing is measured and the labels are refined. Stage 2 is
        not fitted here,
        and the classifiers see the catalogs' own task texts (no describer summaries, which would call an LLM).
        """
        from finerouter.data.dataset import split_indices
        from finerouter.discovery.ranking import nanmean_columns
        from finerouter.evaluation.metrics import mean_quality

        fit_i, dev_i = split_indices(dataset.prompts, dataset.tasks, 0.2, self.seed + 7919)
        if dev_i.size == 0 or fit_i.size < 10:
            return True, {}
        scores = np.asarray(dataset.scores, dtype=np.float64)
        tie = 1e-9 * np.nan_to_num(nanmean_columns(scores[fit_i]), nan=-1.0)
        prompts = [dataset.prompts[i] for i in fit_i]
        desc = [descriptions[i] for i in fit_i]
        quality: dict[str, float] = {}
        for name, groups in (("label_free", None), ("refined", [dataset.tasks[i] for i in fit_i])):
            disc = self._discover(desc_emb[fit_i], scores[fit_i], dataset.models, prompts, desc, groups)
            clf = self._fit_classifier(encoder, embeddings[fit_i], disc)
            prior = self._stage1_prior(disc.catalog_, scores[fit_i], disc.labels_)
            n_tasks = disc.catalog_.n_tasks
            task = clf.predict(embeddings[dev_i])[0] if clf is not None else np.full(dev_i.size, -1)
            rows = np.where(task >= 0, task, n_tasks)
            pick = np.argmax(np.nan_to_num(prior[rows], nan=-1.0) + tie, axis=1)
            quality[name] = mean_quality(scores[dev_i], pick)
        refine = quality["refined"] > quality["label_free"]
        logger.info(
            "task labels: stage-1 routing quality on a dev part of the training data, label-free %.4f, refined "
            "%.4f -> %s", quality["label_free"], quality["refined"], "refine" if refine else "label-free",
        )
        return refine, quality

    def _check_fitted(self) -> None:
        check_is_fitted(self, ["models_", "quality_", "catalog_"])

    def score_embeddings(self, embeddings: np.ndarray) -> RouterScores:
        """Stage-1, stage-2 and final scores for ``(n, d)`` prompt embeddings."""
        self._check_fitted()
        emb = self._check_embeddings(embeddings)
        with single_thread_blas(emb.shape[0], force=True):
            return self._score(emb)

    def _check_embeddings(self, embeddings: Any) -> np.ndarray:
        emb = np.asarray(embeddings, dtype=np.float32)
        if emb.ndim != 2 or emb.shape[1] != self.n_features_:
            raise ParameterError(f"embeddings must have shape (n, {self.n_features_}); got {emb.shape}")
        return check_matrix(emb, "embeddings")

    def _stage1_normalised(self) -> np.ndarray:
        """``minmax_rows(stage1_)``, cached: normalising a task's row once equals normalising it per prompt."""
        cached = getattr(self, "_stage1_norm", None)
        if cached is None or cached[0] is not self.stage1_:
            cached = (self.stage1_, minmax_rows(self.stage1_))
            self._stage1_norm = cached
        return cached[1]

    def _global_normalised(self) -> np.ndarray:
        """``(m,)`` ``minmax_rows`` of the global prior (cached)."""
        cached = getattr(self, "_global_norm", None)
        if cached is None or cached[0] is not self.global_prior_:
            cached = (self.global_prior_, minmax_rows(self.global_prior_.reshape(1, -1))[0])
            self._global_norm = cached
        return cached[1]

    def _score(self, emb: np.ndarray) -> RouterScores:
        # ``emb``: checked (n, d) float32. The hot path of routing: components are called past their own checks.
        n = emb.shape[0]
        if self.classifier_ is not None:
            task, confidence = self.classifier_._predict_checked(emb)
        else:
            task = np.full(n, -1, dtype=np.int64)
            confidence = np.zeros(n, dtype=np.float32)
        stage2 = self.quality_._predict(emb, task).astype(np.float64)
        rows = np.where(task >= 0, task, self.catalog_.n_tasks)
        stage1 = self.stage1_[rows]
        w2, w1, wg = self.mixing_.vector()
        final = w2 * minmax_rows(stage2) + w1 * self._stage1_normalised()[rows]
        if wg:
            final += wg * self._global_normalised()
        expected = self.calibration_(raw_mix(self.mixing_.estimate_vector(), stage2, stage1, self.global_prior_))
        return RouterScores(stage1, stage2, final, task, confidence.astype(np.float64), expected)

    def estimate_costs(self, prompts: Sequence[str]) -> np.ndarray | None:
        """``(n, m)`` estimated USD cost per prompt and model, or None when costs are unknown."""
        self._check_fitted()
        return self.cost_model_.estimate(prompts)

    # ------------------------------------------------------------------ routing
    def _allowed_mask(self, allowed_models: Sequence[str] | None) -> np.ndarray | None:
        if allowed_models is None:
            return None
        if isinstance(allowed_models, str):
            allowed_models = [allowed_models]
        unknown = [m for m in allowed_models if m not in self.models_]
        if unknown:
            raise ParameterError(f"allowed_models names unknown model(s) {unknown}; known: {self.models_}")
        if not allowed_models:
            raise ParameterError("allowed_models is empty: name at least one model")
        mask = np.zeros(len(self.models_), dtype=bool)
        mask[[self.models_.index(m) for m in allowed_models]] = True
        return mask

    def route(
        self,
        prompts: str | Sequence[str],
        tolerance: float = 0.0,
        allowed_models: Sequence[str] | None = None,
        max_cost: float | None = None,
        cost_weight: float | None = None,
        budget_per_1k: float | None = None,
    ) -> RoutingDecision | list[RoutingDecision]:
        """Route one prompt (returns a decision) or a list of prompts (returns a list, in order).

        Args:
            tolerance: in [0, 1]; among models whose final score is within ``tolerance`` of the best, the
                cheapest is chosen. 0 = best quality. With ``cost_weight`` or ``budget_per_1k``: the same on the
                cost-aware utility, in score units.
            allowed_models: route only among these models.
            max_cost: skip models whose estimated cost exceeds this (USD); if none fits, the cheapest is used.
            cost_weight: lambda >= 0 in quality points per USD: choose ``argmax_m expected_m - lambda * cost_m``
                on the calibrated expected scores (:attr:`RouterScores.expected`) and estimated USD costs
                (:func:`finerouter.routing.policy.choose_models_cost_aware`).
            budget_per_1k: USD per 1,000 prompts: solve lambda so that the batch's expected spend meets it as
                closely as possible without exceeding it (:func:`finerouter.routing.policy.route_to_budget`;
                the budget applies to the prompts of this call together). Exclusive with ``cost_weight``; both
                need cost estimates.
        """
        self._check_fitted()
        single = isinstance(prompts, str)
        texts = [prompts] if single else list(prompts)
        for i, text in enumerate(texts):
            if not isinstance(text, str) or not text.strip():
                raise ParameterError(f"prompt {i} is empty or not a string: {text!r}")
        if not texts:
            return []
        emb = self.encoder_.encode(texts)
        decisions = self.route_embeddings(emb, texts, tolerance, allowed_models, max_cost, cost_weight, budget_per_1k)
        return decisions[0] if single else decisions

    def route_embeddings(
        self,
        embeddings: np.ndarray,
        prompts: Sequence[str],
        tolerance: float = 0.0,
        allowed_models: Sequence[str] | None = None,
        max_cost: float | None = None,
        cost_weight: float | None = None,
        budget_per_1k: float | None = None,
    ) -> list[RoutingDecision]:
        """Route prompts whose embeddings are already computed (the encoder is not called); arguments as
        :meth:`route`."""
        self._check_fitted()
        # A few prompts: numpy's BLAS on one thread for the whole decision (one switch, see single_thread_blas).
        with single_thread_blas(len(prompts), force=True):
            return self._route_embeddings(
                embeddings, prompts, tolerance, allowed_models, max_cost, cost_weight, budget_per_1k
            )

    def _route_embeddings(
        self,
        embeddings: np.ndarray,
        prompts: Sequence[str],
        tolerance: float,
        allowed_models: Sequence[str] | None,
        max_cost: float | None,
        cost_weight: float | None = None,
        budget_per_1k: float | None = None,
    ) -> list[RoutingDecision]:
        tolerance = check_float(tolerance, "tolerance", "FineRouter.route", low=0.0, high=1.0)
        if max_cost is not None:
            max_cost = check_float(max_cost, "max_cost", "FineRouter.route", low=0.0)
        if cost_weight is not None and budget_per_1k is not None:
            raise ParameterError(
                "The 'cost_weight' and 'budget_per_1k' parameters of FineRouter.route are mutually exclusive: "
                f"give one. Got cost_weight={cost_weight!r}, budget_per_1k={budget_per_1k!r}."
            )
        if cost_weight is not None:
            cost_weight = check_float(cost_weight, "cost_weight", "FineRouter.route", low=0.0)
        if budget_per_1k is not None:
            budget_per_1k = check_float(budget_per_1k, "budget_per_1k", "FineRouter.route", low=0.0)
        allowed = self._allowed_mask(allowed_models)
        scores = self._score(self._check_embeddings(embeddings))
        costs = self.cost_model_.estimate(prompts)
        cost_aware = cost_weight is not None or budget_per_1k is not None
        batch_note = None
        if cost_aware:
            name = "cost_weight" if cost_weight is not None else "budget_per_1k"
            if costs is None:
                raise ParameterError(
                    f"FineRouter.route: '{name}' needs cost estimates, and this router has none (fit it with "
                    "prices=..., or on data with per-prompt costs)"
                )
            if scores.expected is None:
                raise ParameterError(f"FineRouter.route: '{name}' needs the router's expected scores; refit it")
            if budget_per_1k is not None:
                choice, over_budget, cost_weight = route_to_budget(
                    scores.expected, costs, budget_per_1k, allowed, max_cost, tolerance
                )
                spend = spend_per_1k(costs, choice)
                batch_note = (
                    f"budget_per_1k={budget_per_1k:g}: lambda={cost_weight:.6g}, batch spend {spend:.6g} USD per 1k"
                )
                if spend > budget_per_1k * (1 + 1e-9):
                    batch_note += " (over budget: the cheapest allowed models already cost more)"
            else:
                choice, over_budget = choose_models_cost_aware(
                    scores.expected, costs, cost_weight, allowed, max_cost, tolerance
                )
            rank_by = scores.expected - cost_weight * costs
        else:
            choice, over_budget = choose_models(scores.final, costs, tolerance, allowed, max_cost)
            rank_by = scores.final
        models = self.models_
        tasks = self.catalog_.tasks
        eligible = [True] * len(models) if allowed is None else allowed.tolist()
        # Plain Python values once for the batch: per-prompt numpy scalar indexing costs more than the maths.
        orders = np.argsort(-rank_by, axis=1, kind="stable").tolist()
        expected_rows = [None] * len(prompts) if scores.expected is None else scores.expected.tolist()
        chosen, task_ids, budget = choice.tolist(), scores.task.tolist(), over_budget.tolist()
        stage1, stage2, final = scores.stage1.tolist(), scores.stage2.tolist(), scores.final.tolist()
        confidence = scores.confidence.tolist()
        cost_rows = [[None] * len(models)] * len(prompts) if costs is None else costs.tolist()
        allowed_names = None if allowed is None else [models[j] for j in np.flatnonzero(allowed)]
        out = []
        for i, prompt in enumerate(prompts):
            c = chosen[i]
            order = [j for j in orders[i] if eligible[j] and j != c]
            t = task_ids[i]
            task = tasks[t] if t >= 0 else None
            notes = []
            if budget[i]:
                notes.append(f"no allowed model fits max_cost={max_cost}; chose the cheapest")
            if batch_note is not None:
                notes.append(batch_note)
            out.append(
                RoutingDecision(
                    prompt=prompt,
                    model=models[c],
                    ranking=[models[c]] + [models[j] for j in order],
                    models=list(models),
                    stage1_scores=stage1[i],
                    stage2_scores=stage2[i],
                    final_scores=final[i],
                    costs=list(cost_rows[i]),
                    task_id=t if t >= 0 else None,
                    task_description=task.description if task is not None else "Others",
                    task_candidates=list(task.candidates) if task is not None else [],
                    classifier_confidence=confidence[i],
                    tolerance=tolerance,
                    alpha=float(self.alpha),
                    allowed_models=None if allowed_names is None else list(allowed_names),
                    max_cost=max_cost,
                    notes=notes,
                    expected_scores=expected_rows[i],
                    cost_weight=cost_weight,
                    budget_per_1k=budget_per_1k,
                )
            )
        return out

    # ------------------------------------------------------------------ artifact
    def save(self, path: str | Path, *, force: bool = False) -> Path:
        """Write the fitted router to directory ``path`` atomically (JSON manifest + safetensors; no pickle).

        ``path`` may be absent, an empty folder or a previous router artifact, which is replaced; anything else
        (a file, a folder of other files, an artifact folder with files added) raises ArtifactError and is left
        untouched, unless ``force`` (see :func:`check_save_destination`). The manifest lists every file's
        SHA-256 and a digest of its own content, so :meth:`load` notices any change to any file.
        """
        self._check_fitted()
        path = check_save_destination(path, force=force)
        with atomic_directory(path) as tmp:
            self.catalog_.save(tmp / "catalog")
            if self.classifier_ is not None:
                config, arrays = self.classifier_.to_state()
                atomic_write_json(tmp / "classifier.json", config)
                save_arrays(tmp / "classifier.safetensors", arrays)
            config, arrays = self.quality_.to_state()
            atomic_write_json(tmp / "quality.json", config)
            save_arrays(tmp / "quality.safetensors", arrays)
            probe = np.asarray(self.encoder_.encode(list(ENCODER_PROBES)), dtype=np.float32)
            save_arrays(
                tmp / "router.safetensors",
                {
                    "stage1": self.stage1_, "global_prior": self.global_prior_, "encoder_probe": probe,
                    "calibration_x": self.calibration_.x, "calibration_y": self.calibration_.y,
                },
            )
            files = {
                str(p.relative_to(tmp)): sha256_file(p) for p in sorted(tmp.rglob("*")) if p.is_file()
            }
            manifest = {
                "format": ARTIFACT_FORMAT,
                "format_version": ARTIFACT_FORMAT_VERSION,
                "library_version": __version__,
                "created_unix": int(time.time()),
                "config": {
                    "alpha": float(self.alpha),
                    "stage1_statistic": self.stage1_statistic,
                    "refine_task_labels": self.refine_task_labels,
                    "mixing": self.mixing,
                    "cv_folds": int(self.cv_folds),
                    "stage1_shrinkage": bool(self.stage1_shrinkage),
                    "seed": int(self.seed),
                    "discovery": self.discovery or {},
                    "classifier": self.classifier or {},
                    "quality": self.quality or {},
                },
                "models": self.models_,
                "mixing_weights": self.mixing_.to_dict(),
                "n_features": self.n_features_,
                "n_tasks": self.catalog_.n_tasks,
                "costs": self.cost_model_.to_dict(),
                "encoder": {
                    "name": self.encoder_.name,
                    "dim": int(self.encoder_.dim),
                    "spec": _encoder_spec(self.encoder_),
                    "fingerprint": _probe_digest(probe),
                },
                "fit_summary": getattr(self, "fit_summary_", {}),
                "files": files,
            }
            manifest[MANIFEST_DIGEST_KEY] = _manifest_digest(manifest)
            atomic_write_json(tmp / "manifest.json", manifest)
        return path

    @classmethod
    def load(
        cls,
        path: str | Path,
        *,
        encoder: Any = None,
        cache_dir: str | Path | None = None,
        check_encoder: bool = True,
    ) -> FineRouter:
        """Load a router saved by :meth:`save`, verifying versions, the encoder fingerprint and the integrity of
        every file: the manifest's own digest, each listed file's SHA-256, no file missing and none added (any
        difference is an ArtifactError naming the file). Artifacts of format 1 (before the manifest carried a
        digest of itself) load with a warning: their manifest cannot be checked; save them again to add it.

        Args:
            encoder: the encoder to use; default: rebuilt from the manifest (needed for custom encoders).
            check_encoder: compare the encoder's embeddings of fixed probe sentences with the saved ones and refuse
                a different encoder.
        """
        from finerouter.classify import TaskClassifier
        from finerouter.discovery import TaskCatalog
        from finerouter.quality import QualityEstimator

        path = Path(path)
        manifest_path = path / "manifest.json"
        if not manifest_path.is_file():
            raise ArtifactError(f"{path}: not a FineRouter artifact (no manifest.json)")
        try:
            manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise ArtifactError(f"{manifest_path}: unreadable manifest ({exc})") from exc
        if not isinstance(manifest, dict):
            raise ArtifactError(f"{manifest_path}: not a FineRouter artifact manifest (not a JSON object)")
        if manifest.get("format") != ARTIFACT_FORMAT:
            raise ArtifactError(f"{manifest_path}: format {manifest.get('format')!r} is not {ARTIFACT_FORMAT!r}")
        if manifest.get("format_version") not in (1, ARTIFACT_FORMAT_VERSION):
            raise ArtifactError(
                f"{manifest_path}: artifact format version {manifest.get('format_version')} is not supported "
                f"(this library reads versions 1 to {ARTIFACT_FORMAT_VERSION})"
            )
        saved_version = str(manifest.get("library_version", "?"))
        if saved_version.split(".")[0] != __version__.split(".")[0]:
            raise ArtifactError(f"{path}: saved by finerouter {saved_version}, incompatible with {__version__}")
        if saved_version != __version__:
            warnings.warn(
                f"{path}: saved by finerouter {saved_version}, loading with {__version__}", stacklevel=2
            )
        _check_integrity(path, manifest)
        cfg = manifest["config"]
        router = cls(
            encoder=encoder,
            alpha=cfg["alpha"],
            stage1_statistic=cfg.get("stage1_statistic", "median"),
            refine_task_labels=cfg.get("refine_task_labels", False),
            mixing=cfg.get("mixing", "paper"),
            cv_folds=cfg.get("cv_folds", 3),
            stage1_shrinkage=cfg.get("stage1_shrinkage", False),
            discovery=cfg.get("discovery") or None,
            classifier=cfg.get("classifier") or None,
            quality=cfg.get("quality") or None,
            cache_dir=cache_dir,
            seed=cfg.get("seed", 0),
        )
        try:
            router.catalog_ = TaskCatalog.load(path / "catalog")
            router.classifier_ = None
            if (path / "classifier.json").is_file():
                router.classifier_ = TaskClassifier.from_state(
                    json.loads((path / "classifier.json").read_text()), load_arrays(path / "classifier.safetensors")
                )
            router.quality_ = QualityEstimator.from_state(
                json.loads((path / "quality.json").read_text()), load_arrays(path / "quality.safetensors")
            )
            arrays = load_arrays(path / "router.safetensors")
        except ArtifactError:
            raise
        except Exception as exc:  # a corrupt but hash-consistent file, or a missing unlisted file
            raise ArtifactError(f"{path}: could not load the artifact ({type(exc).__name__}: {exc})") from exc
        router.stage1_ = arrays["stage1"].astype(np.float64)
        if "global_prior" in arrays:
            router.global_prior_ = arrays["global_prior"].astype(np.float64)
        else:  # saved before the learned mixing: Eq. 5 only, which reads no global prior
            router.global_prior_ = np.zeros(router.stage1_.shape[1])
        if "calibration_x" in arrays:
            router.calibration_ = Calibration(
                arrays["calibration_x"].astype(np.float64), arrays["calibration_y"].astype(np.float64)
            )
        else:
            router.calibration_ = Calibration.identity()
        if "mixing_weights" in manifest:
            router.mixing_ = MixingChoice.from_dict(manifest["mixing_weights"])
        else:
            router.mixing_ = MixingChoice.fixed(router.alpha, 1.0 - router.alpha, 0.0)
        router.models_ = list(manifest["models"])
        router.n_features_ = int(manifest["n_features"])
        router.cost_model_ = CostModel.from_dict(manifest["costs"])
        router.fit_summary_ = manifest.get("fit_summary", {})
        router.encoder_ = _load_encoder(manifest["encoder"], encoder, cache_dir, path)
        if check_encoder:
            _check_fingerprint(router.encoder_, arrays["encoder_probe"], manifest["encoder"], path)
        return router


def _stage1_matrix(catalog: Any, scores: np.ndarray, labels: np.ndarray, statistic: str) -> np.ndarray:
    """``(T+1, m)`` stage-1 prior: each task's median (or mean) score per model; row ``T`` is Others.

    Others (prompts in no task) uses its own prompts, or every prompt when it is empty. A model with no score in a
    group falls back to its statistic over all prompts (as the catalog's medians do); NaN only for a model never
    scored at all (normalised to 0 at routing).
    """
    if statistic == "median":
        return np.asarray(catalog.median_matrix(), dtype=np.float64)
    scores = np.asarray(scores, dtype=np.float64)
    n_tasks = catalog.n_tasks
    others = labels < 0
    groups = [labels == t for t in range(n_tasks)] + [others if others.any() else np.ones_like(others)]
    from finerouter.discovery.ranking import nanmean_columns

    out = np.full((n_tasks + 1, scores.shape[1]), np.nan)
    overall = nanmean_columns(scores)
    for row, members in enumerate(groups):
        out[row] = nanmean_columns(scores[members])
    return np.where(np.isnan(out), overall[None, :], out)


def _manifest_digest(manifest: dict[str, Any]) -> str:
    """SHA-256 of the manifest's content without its digest field: canonical JSON (sorted keys, compact, ASCII)
    of the manifest as it reads back from disk, so the digest does not depend on the file's formatting."""
    content = {k: v for k, v in manifest.items() if k != MANIFEST_DIGEST_KEY}
    content = json.loads(json.dumps(content, ensure_ascii=False, allow_nan=False))  # as it will read back
    canonical = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)
    return hashlib.sha256(canonical.encode("ascii")).hexdigest()


def _artifact_files(path: Path) -> list[str]:
    """Every file under ``path`` but the manifest, as POSIX paths relative to ``path``."""
    return sorted(p.relative_to(path).as_posix() for p in path.rglob("*") if p.is_file() or p.is_symlink())


def _check_integrity(path: Path, manifest: dict[str, Any]) -> None:
    """Raise ArtifactError naming the file unless the artifact at ``path`` is exactly what its manifest says."""
    manifest_path = path / "manifest.json"
    if manifest.get("format_version") == 1:
        warnings.warn(
            f"{path}: artifact format 1: its manifest.json is not covered by the integrity check; load it and "
            "save it again (FineRouter.save) to add the check.",
            stacklevel=3,
        )
    elif manifest.get(MANIFEST_DIGEST_KEY) != _manifest_digest(manifest):
        raise ArtifactError(
            f"{manifest_path}: manifest.json was altered (its content does not match its {MANIFEST_DIGEST_KEY})"
        )
    files = manifest.get("files")
    if not isinstance(files, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in files.items()):
        raise ArtifactError(f"{manifest_path}: 'files' must map each file of the artifact to its SHA-256")
    present = set(_artifact_files(path)) - {"manifest.json"}
    for rel, digest in files.items():
        f = path / rel
        if rel not in present or not f.is_file():
            raise ArtifactError(f"{path}: file {rel} listed in the manifest is missing")
        if sha256_file(f) != digest:
            raise ArtifactError(f"{path}: file {rel} was altered (SHA-256 does not match the manifest)")
    extra = sorted(present - set(files))
    if extra:
        raise ArtifactError(f"{path}: file {extra[0]} is not part of the artifact (not listed in the manifest)")


def _replace_problem(path: Path) -> str | None:
    """Why replacing ``path`` would lose something other than a previous router artifact (None: it would not)."""
    if not path.exists() and not path.is_symlink():
        return None
    if path.is_symlink() or not path.is_dir():
        return "it is a file, not a router artifact"
    if not any(path.iterdir()):
        return None
    try:
        manifest = json.loads((path / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        manifest = None
    if not isinstance(manifest, dict) or manifest.get("format") != ARTIFACT_FORMAT:
        return "it is a folder that is not a router artifact (no router manifest.json)"
    listed = manifest.get("files") if isinstance(manifest.get("files"), dict) else {}
    extra = [f for f in _artifact_files(path) if f != "manifest.json" and f not in listed]
    if extra:
        return f"it holds {extra[0]!r}, which is not part of the router artifact"
    return None


def check_save_destination(path: str | Path, *, force: bool = False) -> Path:
    """Check that saving a router to ``path`` would replace nothing but a previous router artifact.

    ``path`` may be absent, an empty folder, or a router artifact written by :meth:`FineRouter.save` (recognised
    by its manifest, every file in it listed there). Anything else (a file, a folder of other files, an artifact
    folder with files added) raises ArtifactError, one line naming ``path``, unless ``force``: then it is
    replaced, whatever it holds. ``finerouter fit`` calls this before fitting, so a refusal costs no fit.

    Returns:
        ``path`` as a Path.
    """
    path = Path(path)
    problem = _replace_problem(path)
    if problem is None:
        return path
    if force:
        logger.warning("replacing %s (%s): forced", path, problem)
        return path
    raise ArtifactError(
        f"{path}: not replaced, {problem}; choose another path, or force it "
        "(CLI: --force; FineRouter.save(path, force=True)), which deletes what it holds"
    )


def _probe_digest(probe: np.ndarray) -> str:
    return hashlib.sha256(np.round(probe, 3).astype(np.float32).tobytes()).hexdigest()[:16]


def _load_encoder(info: dict[str, Any], encoder: Any, cache_dir: Any, path: Path) -> Any:
    from finerouter.encoders import CachedEncoder, get_encoder

    if encoder is not None and not isinstance(encoder, str):
        return CachedEncoder(encoder, cache_dir) if cache_dir is not None else encoder
    if isinstance(encoder, str):
        return get_encoder(encoder, cache_dir=cache_dir)
    spec = info.get("spec")
    if spec is None:
        raise ArtifactError(
            f"{path}: the router was trained with a custom encoder {info.get('name')!r}; pass it as "
            "FineRouter.load(path, encoder=...)"
        )
    spec = dict(spec)
    if "precision" not in spec:  # saved before the precision was recorded: the name says whether it was bf16
        spec["precision"] = "bfloat16" if "|bf16" in str(info.get("name", "")) else "float32"
    if spec["precision"] == "bfloat16":
        from finerouter.encoders import sentence_transformer

        if not sentence_transformer.cpu_supports_bf16():
            raise ArtifactError(
                f"{path}: the router was fitted with its encoder in bfloat16 ({info.get('name')!r}), and this CPU "
                "has no native bfloat16 (AVX512-BF16 or AMX), so it cannot embed prompts as the router was "
                "fitted to. Refit it in float32 (the default), or pass the encoder explicitly, e.g. "
                "FineRouter.load(path, encoder=SentenceTransformerEncoder(precision='bfloat16')), to accept "
                "slow, emulated bfloat16."
            )
    return get_encoder(spec.pop("model", None), cache_dir=cache_dir, **spec)


def _check_fingerprint(encoder: Any, saved: np.ndarray, info: dict[str, Any], path: Path) -> None:
    probe = np.asarray(encoder.encode(list(ENCODER_PROBES)), dtype=np.float32)
    if probe.shape != saved.shape:
        raise ArtifactError(
            f"{path}: encoder mismatch: the router was trained with {info.get('name')!r} (dim {saved.shape[1]}), "
            f"but {encoder.name!r} gives dim {probe.shape[1]}"
        )
    cos = float(np.min(np.sum(probe * saved, axis=1)))
    if cos < _FINGERPRINT_MIN_COSINE:
        raise ArtifactError(
            f"{path}: encoder mismatch: {encoder.name!r} embeds the probe sentences differently from the encoder "
            f"the router was trained with ({info.get('name')!r}; min cosine {cos:.3f} < {_FINGERPRINT_MIN_COSINE})"
        )
