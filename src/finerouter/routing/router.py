"""`FineRouter`: the two-stage router (paper Sections 3.1-3.3) behind one fit / route / save / load facade.

Fitting its parts lives in :mod:`finerouter.routing.fitting`, the decisions in :mod:`finerouter.routing.decisions`,
the artifact on disk in :mod:`finerouter.routing.artifact`.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from finerouter._training import check_matrix, single_thread_blas
from finerouter._validation import BOOLEAN, Constraint, HasMethods, InstanceOf, Interval, NoneValue, Options
from finerouter._validation import check_is_fitted
from finerouter.base import Component
from finerouter.engines.embedding import embed_texts
from finerouter.errors import DataError, ParameterError
from finerouter.routing import assignment, ensemble, fitting, regime
from finerouter.routing.components import COMPONENTS, build_component
from finerouter.routing.artifact import check_save_destination
from finerouter.routing.costs import CostModel, costs_to_learn, token_counter_for
from finerouter.routing.decision import RoutingDecision
from finerouter.routing.decisions import RoutingRequest, build_decisions, choose
from finerouter.routing.scoring import RouterScores, score

logger = logging.getLogger(__name__)

_COMPONENT_VALUE = [NoneValue(), InstanceOf(dict, description="a dict of its parameters"),
                    InstanceOf(Component, description="a component instance")]


class FineRouter(Component):
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
            docs/models.md has the measurements.
        mixing: how the final score mixes its sources, ``w2 * norm(stage2) + w1 * norm(stage1) + wg *
            norm(global)`` (``global``: each model's mean training score). ``"paper"``: the paper's Eq. 5,
            ``(alpha, 1 - alpha, 0)``. ``"cv"`` (default): internal cross-validation on the training data
            (``cv_folds`` folds by unique prompt) keeps Eq. 5 unless a mix leaning on the global prior routes the
            held-out folds better by a standard error, and falls back to the best single model (``wg = 1``) unless
            the cross-fitted gain over it is positive (:mod:`finerouter.routing.mixing`;
            ``fit_summary_["mixing"]``).
        cv_folds: folds of the internal cross-validation for ``mixing="cv"`` (each fold refits both stages);
            ``"auto"``: 5 on small data, 3 above (:mod:`finerouter.routing.regime`).
        stage1_shrinkage: shrink each task's mean score per model toward the model's overall mean in proportion
            to how little the task's data says (empirical Bayes; only with ``stage1_statistic="mean"``).
        neighbours: with ``mixing="cv"``, also offer the cross-validation mixes that weigh a non-parametric
            source: each model's mean score on the prompt's nearest training prompts
            (:mod:`finerouter.routing.neighbours`). Chosen only if the held-out folds route better with it; then
            the router keeps its training embeddings and scores (``neighbour_embeddings_``) to compute it. ``"auto"``:
            offered where discovery left most prompts in Others, and there as the mixing's default (Eq. 5 must beat
            it; :func:`finerouter.routing.regime.weak_tasks`, ``mixing_.default``).
        stacking: with ``mixing="cv"``, make the stacked shrinkage mix the default candidate: each source's deviation
            from the global prior weighted on the score scale by non-negative least squares on the out-of-fold
            scores (:mod:`finerouter.routing.stacking`); the normalised mixes replace it only if they route the
            held-out folds better by a standard error, and the fallback to the best single model still applies.
            Off by default: on the shared data it helped only in pools of dozens of models (docs/models.md).
        ensemble_size: fit the router this many times with seeds ``seed, seed + 1, ...`` on the same data and
            route by the mean of the fits' scores (:mod:`finerouter.routing.ensemble`); fitting costs as many fits.
            ``"auto"`` (default): 3 on small data (at most 2,000 unique prompts), else 1
            (:mod:`finerouter.routing.regime`; the values used are ``settings_``).
        stage1_assignment: ``"hard"`` (the paper): a prompt's stage-1 prior is its assigned task's; ``"soft"``:
            the task priors weighted by the classifier's probabilities; ``"cv"``: the one that routes the mixing
            cross-validation's held-out folds better (:mod:`finerouter.routing.assignment`; the one used is
            ``mixing_.assignment``). ``"auto"`` (default): cv on small data, else hard.
        label_prior: with ``mixing="cv"``, ``stage1_assignment`` ``"auto"`` or ``"cv"`` and coarse ``task`` labels
            in the data, also offer the label prior (a classifier of the label from the prompt, times each label's
            shrunk mean scores) as a stage-1 candidate, kept if it routes the held-out folds better than the task
            priors (:mod:`finerouter.routing.label_prior`; ``mixing_.assignment == "label"``, ``label_prior_``).
        discovery: a :class:`finerouter.discovery.TaskDiscovery` (its parameters are used; it is cloned, never
            fitted in place), or a dict of its parameters as a shorthand (a misspelt key is a ParameterError).
        classifier: a :class:`finerouter.classify.TaskClassifier`, or a dict of its parameters. With None or a
            dict, the router's default ``threshold`` is 0: every prompt goes to its most likely task (sigmoid
            outputs are low for many prompts, and Others loses routing quality: docs/models.md); an instance is
            used as given.
        quality: a :class:`finerouter.quality.QualityEstimator`, or a dict of its parameters.
        prices: a prices CSV path or :class:`finerouter.data.prices.Prices`, used to estimate per-prompt cost.
            Without it, costs observed in the training data (if any) are fitted per model against prompt length.
        cache_dir: where embeddings are cached (None: no cache).
        seed: seed for every random step; a component whose own ``seed`` is None takes it, one given a seed keeps
            its own.
        engine: where embedding and discovery's kNN run: None (here), a :class:`finerouter.engines.Engine` or a Ray
            address (``"local"``, ``"auto"``; docs/scale.md). Never saved: a loaded router runs locally.
    """

    _parameter_constraints: ClassVar[dict[str, list[Constraint]]] = {
        "encoder": [NoneValue(), InstanceOf(str, os.PathLike, description="a model name or path"),
                    HasMethods("encode", "name", "dim", description="an Encoder (with name, dim, encode)")],
        "describer": [NoneValue(), HasMethods("describe", description="a describer (with describe)")],
        "alpha": [Interval("float", 0.0, 1.0)],
        "stage1_statistic": [Options("median", "mean")],
        "refine_task_labels": [BOOLEAN, Options("auto")],
        "mixing": [Options("cv", "paper")],
        "cv_folds": [Interval("int", 2, None), Options("auto")],
        "stage1_shrinkage": [BOOLEAN],
        "neighbours": [BOOLEAN, Options("auto")],
        "stacking": [BOOLEAN],
        "ensemble_size": [Interval("int", 1, None), Options("auto")],
        "stage1_assignment": [Options(*assignment.ASSIGNMENTS, "auto")],
        "label_prior": [BOOLEAN],
        "discovery": _COMPONENT_VALUE,
        "classifier": _COMPONENT_VALUE,
        "quality": _COMPONENT_VALUE,
        "cache_dir": [NoneValue(), InstanceOf(str, os.PathLike, description="a folder path")],
        "seed": [Interval("int", 0, None)],
        "engine": [NoneValue(), InstanceOf(str), HasMethods("knn_search", description="an Engine")],
    }

    def __init__(
        self,
        encoder: Any = None,
        describer: Any = None,
        alpha: float = 0.5,
        stage1_statistic: str = "mean",
        refine_task_labels: bool | str = "auto",
        mixing: str = "cv",
        cv_folds: int | str = 3,
        stage1_shrinkage: bool = True,
        neighbours: bool | str = "auto",
        stacking: bool = False,
        ensemble_size: int | str = "auto",
        stage1_assignment: str = "auto",
        label_prior: bool = True,
        discovery: Any = None,
        classifier: Any = None,
        quality: Any = None,
        prices: Any = None,
        cache_dir: str | Path | None = None,
        seed: int = 0,
        engine: Any = None,
    ) -> None:
        self.encoder = encoder
        self.describer = describer
        self.alpha = alpha
        self.stage1_statistic = stage1_statistic
        self.refine_task_labels = refine_task_labels
        self.mixing = mixing
        self.cv_folds = cv_folds
        self.stage1_shrinkage = stage1_shrinkage
        self.neighbours = neighbours
        self.stacking = stacking
        self.ensemble_size = ensemble_size
        self.stage1_assignment = stage1_assignment
        self.label_prior = label_prior
        self.discovery = discovery
        self.classifier = classifier
        self.quality = quality
        self.prices = prices
        self.cache_dir = cache_dir
        self.seed = seed
        self.engine = engine

    def __repr__(self) -> str:
        enc = self.encoder if isinstance(self.encoder, (str, type(None))) else type(self.encoder).__name__
        return f"FineRouter(encoder={enc!r}, alpha={self.alpha}, seed={self.seed})"

    # ------------------------------------------------------------------ components
    def make_component(self, name: str) -> Component:
        """A fresh, unfitted ``discovery``, ``classifier`` or ``quality`` component with this router's settings
        (:func:`finerouter.routing.components.build_component`)."""
        return build_component(name, getattr(self, name), self.seed, engine=self.engine)

    def set_params(self, **params: Any) -> FineRouter:
        """Set parameters; ``"classifier__threshold"`` reaches a component given as None or a dict too (it is
        replaced by the component it stands for, with the parameter set)."""
        for key in params:
            name, sep, _ = key.partition("__")
            if sep and name in COMPONENTS and not isinstance(getattr(self, name, None), Component):
                setattr(self, name, build_component(name, getattr(self, name), None))
        super().set_params(**params)
        return self

    def _validate_params(self) -> None:
        super()._validate_params()
        for name in COMPONENTS:  # a misspelt key of a dict shorthand, or a wrong component class, fails here
            self.make_component(name)._validate_params()

    def _resolve_encoder(self) -> Any:
        from finerouter.encoders import CachedEncoder, get_encoder

        enc = self.encoder
        if enc is None or isinstance(enc, (str, os.PathLike)):
            return get_encoder(enc, cache_dir=self.cache_dir)
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

        self._validate_params()
        if not isinstance(dataset, RoutingDataset):
            raise ParameterError(f"FineRouter.fit expects a RoutingDataset. Got {type(dataset).__name__}.")
        if dataset.n_prompts < 10:
            raise DataError(f"{dataset.source}: FineRouter needs at least 10 prompts to fit, got {dataset.n_prompts}")
        t0 = time.perf_counter()
        timings: dict[str, float] = {}
        self.settings_ = regime.resolve_settings(self, len(set(dataset.prompts)))  # what each "auto" is here
        encoder = self._resolve_encoder()
        prompts = dataset.prompts
        if embeddings is None:
            from finerouter.encoders import for_corpus

            encoder = for_corpus(encoder, prompts)  # truncation "auto": how long prompts like these are read
            logger.info("embedding %d prompts with %s", len(prompts), encoder.name)
            embeddings = embed_texts(encoder, prompts, self.engine)
        embeddings = np.asarray(embeddings, dtype=np.float32)
        if embeddings.shape[0] != dataset.n_prompts:
            raise DataError(
                f"embeddings have {embeddings.shape[0]} rows for {dataset.n_prompts} prompts in FineRouter.fit"
            )
        timings["embed"] = time.perf_counter() - t0

        descriptions = list(prompts)
        if self.describer is not None:
            descriptions = list(self.describer.describe(prompts))
            if description_embeddings is None:
                description_embeddings = embed_texts(encoder, descriptions, self.engine)
        if description_embeddings is None:
            description_embeddings = embeddings
        desc_emb = np.asarray(description_embeddings, dtype=np.float32)
        t = time.perf_counter()
        groups, label_choice = fitting.task_label_groups(self, dataset, encoder, embeddings, desc_emb, descriptions)
        timings["label_choice"] = time.perf_counter() - t

        parts = fitting.fit_parts(self, encoder, embeddings, desc_emb, dataset.scores, dataset.models, prompts,
                                  descriptions, groups, summarize=True)
        discovery, catalog = parts.discovery, parts.discovery.catalog_
        others = 1.0 - catalog.share_in_tasks  # no task structure (weak_tasks): the neighbour source is offered, first
        self.settings_["neighbours"] = regime.resolve_neighbours(self.neighbours, others)
        timings.update(parts.seconds)
        logger.info("discovered %d tasks (%.1fs)", catalog.n_tasks, timings["discovery"])

        t = time.perf_counter()
        self.out_of_fold_ = None  # the cross-validation's out-of-fold scores (fitting.OutOfFold; not saved)
        if self.mixing == "cv":
            mixing, calibration = fitting.cross_validate_mixing(
                self, dataset, encoder, embeddings, desc_emb, descriptions, groups,
                neighbours_first=regime.weak_tasks(others),
            )
        else:
            mixing, calibration = fitting.fixed_mixing(self)
        timings["mixing_cv"] = time.perf_counter() - t

        self.encoder_ = encoder
        self.models_ = list(dataset.models)
        self.discovery_ = discovery
        self.catalog_ = catalog
        self.classifier_ = parts.classifier
        self.quality_, self.stage1_, self.global_prior_ = parts.quality, parts.stage1, parts.global_prior
        self.mixing_, self.calibration_ = mixing, calibration
        self.label_prior_ = fitting.final_label_prior(self, dataset, embeddings, mixing)  # when the CV chose it
        # the training prompts and their scores, kept only when the chosen mix reads the neighbour source
        self.neighbour_embeddings_ = embeddings if mixing.uses_neighbours else None
        self.neighbour_scores_ = np.asarray(dataset.scores, dtype=np.float32) if mixing.uses_neighbours else None
        prices = self._resolve_prices()
        self.cost_model_ = CostModel.fit(dataset.models, prompts, costs_to_learn(dataset, prices), prices,
                                         embeddings=embeddings, token_counter=token_counter_for(encoder))
        self.n_features_ = int(embeddings.shape[1])
        self.discovery_labels_ = discovery.labels_
        t = time.perf_counter()
        self.members_ = ensemble.fit_members(self, dataset, embeddings, desc_emb)
        timings["ensemble"] = time.perf_counter() - t
        timings["total"] = time.perf_counter() - t0
        self.fit_summary_ = fitting.fit_summary(dataset, parts, groups is not None, label_choice, mixing, timings)
        self.fit_summary_["ensemble"] = ensemble.summary(self)
        self.fit_summary_.update(settings=dict(self.settings_), encoder=encoder.name)  # the cut it chose, too
        logger.info("fit done: %s", self.fit_summary_)
        return self

    # ------------------------------------------------------------------ scoring
    def _check_fitted(self) -> None:
        check_is_fitted(self, ["models_", "quality_", "catalog_"])

    def score_embeddings(self, embeddings: np.ndarray) -> RouterScores:
        """Stage-1, stage-2 and final scores for ``(n, d)`` prompt embeddings."""
        self._check_fitted()
        emb = self._check_embeddings(embeddings)
        with single_thread_blas(emb.shape[0], force=True):
            return score(self, emb)  # the hot path of routing (finerouter.routing.scoring.score)

    def _check_embeddings(self, embeddings: Any) -> np.ndarray:
        emb = np.asarray(embeddings, dtype=np.float32)
        if emb.ndim != 2 or emb.shape[1] != self.n_features_:
            raise DataError(f"embeddings must have shape (n, {self.n_features_}); got {emb.shape}")
        return check_matrix(emb, "embeddings")

    def estimate_costs(self, prompts: Sequence[str]) -> np.ndarray | None:
        """``(n, m)`` estimated USD cost per prompt and model (embedding the prompts where the cost model needs
        them), or None when costs are unknown."""
        self._check_fitted()
        emb = self.encoder_.encode(list(prompts)) if self.cost_model_.groups is not None else None
        return self.cost_model_.estimate(prompts, emb)

    # ------------------------------------------------------------------ routing
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
            return self._route_embeddings(embeddings, prompts, tolerance, allowed_models, max_cost, cost_weight,
                                          budget_per_1k)  # fmt: skip

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
        request = RoutingRequest.checked(tolerance, allowed_models, max_cost, cost_weight, budget_per_1k, self.models_)
        allowed = request.allowed_mask(self.models_)
        scores = score(self, self._check_embeddings(embeddings))
        costs = self.cost_model_.estimate(prompts, embeddings)
        choice = choose(scores, costs, request, allowed)
        return build_decisions(
            prompts, self.models_, self.catalog_.tasks, scores, costs, choice, request, allowed, float(self.alpha)
        )

    # ------------------------------------------------------------------ artifact
    def _fitted_components(self) -> dict[str, Component]:
        """The fitted components, each saved into the artifact folder of its name."""
        parts = {"discovery": self.discovery_, "classifier": self.classifier_, "quality": self.quality_}
        return {name: part for name, part in parts.items() if part is not None}

    def save(self, path: str | Path, *, force: bool = False) -> Path:
        """Write the fitted router to directory ``path`` atomically (JSON manifest + safetensors; no pickle).

        Each fitted component saves itself into a sub-folder of its own name; ``router.safetensors`` holds the
        priors, the calibration and the encoder's probe embeddings. ``path`` may be absent, an empty folder or a
        previous router artifact, which is replaced; anything else (a file, a folder of other files, an artifact
        folder with files added) raises ArtifactError and is left untouched, unless ``force`` (see
        :func:`~finerouter.routing.artifact.check_save_destination`). The manifest lists every file's SHA-256 and
        a digest of its own content, so :meth:`load` notices any change to any file.
        """
        from finerouter.routing.saving import save_router

        return save_router(self, path, force=force)

    @classmethod
    def load(
        cls,
        path: str | Path,
        *,
        encoder: Any = None,
        cache_dir: str | Path | None = None,
        check_encoder: bool = True,
    ) -> FineRouter:
        """Load a router saved by :meth:`save`, verifying versions, the encoder and the integrity of every file:
        the manifest's own digest, each listed file's SHA-256, no file missing and none added (any difference is
        an ArtifactError naming the file). Artifacts of format 1 (before the manifest carried a digest of itself)
        load with a warning: their manifest cannot be checked; save them again to add it.

        Args:
            encoder: the encoder to use; default: rebuilt from the manifest (its class's ``from_config``).
            check_encoder: compare the encoder's embeddings of the probe sentences
                (:mod:`finerouter.encoders.probes`) with the saved ones and refuse a different encoder.
        """
        from finerouter.routing.saving import load_router

        return load_router(cls, path, encoder=encoder, cache_dir=cache_dir, check_encoder=check_encoder)

    # ------------------------------------------------------------------ the pool of models
    def add_model(self, name: str, data: Any, cost: Any = None, *, seed: int | None = None) -> FineRouter:
        """A new router with model ``name`` added from its scores on a few prompts in ``data`` (a RoutingDataset
        or a table path), without refitting: its embedding and adapters are trained with everything else frozen,
        and every task's prior and candidates updated (:func:`finerouter.routing.onboarding.add_model`). This
        router is not modified. ``cost``: a prices CSV or Prices with its row, or USD per prompt."""
        from finerouter.routing.onboarding import add_model

        return add_model(self, name, data, cost, seed=seed)

    def remove_model(self, name: str) -> FineRouter:
        """A new router without model ``name`` (priors, candidates, adapters, costs), which it never routes to;
        this router is not modified (:func:`finerouter.routing.onboarding.remove_model`)."""
        from finerouter.routing.onboarding import remove_model

        return remove_model(self, name)

__all__ = ["COMPONENTS", "FineRouter", "RouterScores", "check_save_destination"]
