"""The mixture-of-experts quality estimator (paper section 3.2): its parameters, fit and saved state.

Architecture. A prompt embedding ``e_p`` (d,) from the frozen encoder and a learned model embedding ``v_M``
(model_dim,) are concatenated and fed to a 2-layer MLP adapter ``Linear(d + model_dim -> hidden), ReLU,
Linear(hidden -> 1)`` that predicts the quality of model ``M`` on prompt ``p``. There is one *general* adapter
per model and one *task* adapter per (task, candidate model) pair. A prompt assigned to task ``t`` is scored
by ``t``'s task adapters for ``t``'s candidates and by the general adapters for every other model; an Others
prompt (-1) uses only general adapters.

Training (:mod:`finerouter.quality.training`) has two phases, MSE on observed scores only: (1) model embeddings
and general adapters on all training rows; (2) task adapters only, each on the rows of its task, starting as
copies of the general adapters. Both early-stop on a dev split carved from the training rows (stratified by
task) and restore the best weights; phase 2 per task.

Why the model half of a task adapter's first layer is folded. Splitting the first layer as
``W1 = [W1_p; W1_m]`` gives ``W1^T [e_p; v_M] + b1 = W1_p^T e_p + (W1_m^T v_M + b1)``. The model embedding is
frozen in phase 2, so for a task adapter the second term is a constant vector per adapter: we store and train
it as one ``(hidden,)`` bias (the same set of functions as training ``W1_m`` and ``b1``, with ``A * hidden``
instead of ``A * (model_dim + 1) * hidden`` parameters). General adapters keep the full ``W1_m`` because
``v_M`` is learned in phase 1.

Inference (:mod:`finerouter.quality.inference`) is plain numpy over stacked weights, with no Python loop over
tasks.
"""

from __future__ import annotations

import copy
import logging
import time
from typing import Any, ClassVar

import numpy as np

from finerouter._training import (
    TRAINING_PARAMETER_CONSTRAINTS,
    check_labels,
    check_matrix,
    json_safe,
    resolve_device,
    resolved_seed,
    single_thread_blas,
    stratified_dev_split,
    torch_threads_for,
)
from finerouter._validation import Constraint, Interval, NoneValue, Options, check_is_fitted
from finerouter.base import Component
from finerouter.discovery.ranking import nanmean_columns
from finerouter.errors import ArtifactError, DataError
from finerouter.quality.inference import StackedAdapters
from finerouter.quality.layout import AdapterLayout
from finerouter.quality.pruning import models_to_prune
from finerouter.quality.training import TrainingSettings, train_general_adapters, train_task_adapters

logger = logging.getLogger(__name__)

_OWNER = "QualityEstimator"
_STATE_FORMAT = "finerouter.QualityEstimator/1"
_STATE_ARRAYS = (
    "model_embeddings",
    "general_w1_prompt",
    "general_w1_model",
    "general_b1",
    "general_w2",
    "general_b2",
    "task_w1_prompt",
    "task_b1",
    "task_w2",
    "task_b2",
)


class QualityEstimator(Component):
    """Predicts each model's quality score on a prompt with general and task-specific MLP adapters.

    Args:
        model_dim: width of the learned model embeddings (the paper uses 512).
        hidden: hidden width of every adapter (the paper uses 512).
        epochs_general: maximum epochs of phase 1 (model embeddings + general adapters).
        epochs_task: maximum epochs of phase 2 (task adapters); 0 leaves them as copies of the general ones.
        lr: Adam learning rate (both phases).
        batch_size: phase 1: prompts per step (each with its m models); phase 2: an adapter steps on chunks
            of ``batch_size // 2`` rows (8 to 128) of its task.
        weight_decay: L2 penalty (both phases).
        patience: epochs without dev improvement before a phase stops (per task in phase 2).
        dev_fraction: share of training rows, stratified by task, held out for early stopping; 0 = none.
        stop_on: what both phases early-stop on: ``"mse"`` (the dev MSE, the paper's loss) or ``"routing"`` (the
            dev routing quality: the mean true score of the model the predictions rank first; in phase 1 it must
            beat the per-model mean predictor, which routes like the best single model; in phase 2, per task,
            the general copy's routing of the task's dev prompts).
        seed: seeds initialisation, the dev split and batch order. None: 0; inside FineRouter, the router's seed.
        device: torch device used for training ("cpu", "cuda"...); inference is numpy.
        prune_coverage: None (every model in Stage 2, the paper's) or a share ``δ`` in (0, 1]: models outside every
            training group's coverage set at ``δ`` (:mod:`finerouter.quality.pruning`) are left out of training and
            predicted at their mean training score.

    Attributes (after ``fit``):
        n_models_: m; n_features_in_: d; n_tasks_: T; n_slots_: A (task adapters).
        candidates_: per task, its candidate model indices (the order of its adapters).
        slot_table_: (T, m) int64, the task adapter slot of (task, model), -1 = general adapter.
        n_epochs_general_, n_epochs_task_: epochs run; history_general_, history_task_: per-epoch losses.
        dev_mse_general_: best phase-1 dev MSE over observed scores (NaN without a dev set).
        fit_seconds_: ``{"general": s, "task": s}`` wall time of each training phase.
        tasks_specialised_: how many tasks kept trained task adapters (beat the general copy on dev rows).
        pruned_: ``{model index: its mean training score}`` for the models pruned (empty without pruning).
    """

    _parameter_constraints: ClassVar[dict[str, list[Constraint]]] = {
        "model_dim": [Interval("int", 1, None)],
        "hidden": [Interval("int", 1, None)],
        "epochs_general": [Interval("int", 0, None)],
        "epochs_task": [Interval("int", 0, None)],
        **TRAINING_PARAMETER_CONSTRAINTS,
        "stop_on": [Options("mse", "routing")],
        "prune_coverage": [Interval("float", 0.0, 1.0, closed="right"), NoneValue()],
    }

    def __init__(
        self,
        model_dim: int = 512,
        hidden: int = 512,
        epochs_general: int = 30,
        epochs_task: int = 20,
        lr: float = 1e-3,
        batch_size: int = 256,
        weight_decay: float = 1e-5,
        patience: int = 4,
        dev_fraction: float = 0.1,
        seed: int | None = None,
        device: str = "cpu",
        stop_on: str = "mse",
        prune_coverage: float | None = None,
    ) -> None:
        self.model_dim = model_dim
        self.hidden = hidden
        self.epochs_general = epochs_general
        self.epochs_task = epochs_task
        self.lr = lr
        self.batch_size = batch_size
        self.weight_decay = weight_decay
        self.patience = patience
        self.dev_fraction = dev_fraction
        self.seed = seed
        self.device = device
        self.stop_on = stop_on
        self.prune_coverage = prune_coverage

    @staticmethod
    def _check_candidates(candidates: Any, n_models: int) -> list[list[int]]:
        """``candidates`` as T lists of distinct model indices in ``[0, n_models)``; DataError otherwise."""
        if candidates is None:
            return []
        if isinstance(candidates, (str, bytes)) or not hasattr(candidates, "__iter__"):
            raise DataError("'candidates' must be a list (one entry per task) of lists of model indices.")
        out: list[list[int]] = []
        for t, task_candidates in enumerate(candidates):
            if isinstance(task_candidates, (str, bytes)) or not hasattr(task_candidates, "__iter__"):
                raise DataError(f"'candidates[{t}]' must be a list of model indices; got {task_candidates!r}.")
            row: list[int] = []
            for c in task_candidates:
                if isinstance(c, bool) or not isinstance(c, (int, np.integer)) or not 0 <= int(c) < n_models:
                    raise DataError(
                        f"'candidates[{t}]' holds {c!r}; model indices must be ints in [0, {n_models - 1}]."
                    )
                if int(c) in row:
                    raise DataError(f"'candidates[{t}]' lists model {int(c)} twice.")
                row.append(int(c))
            out.append(row)
        return out

    # ------------------------------------------------------------------ fit
    def fit(
        self,
        embeddings: Any,
        scores: Any,
        task_labels: Any = None,
        candidates: Any = None,
    ) -> QualityEstimator:
        """Train the general adapters, then the task adapters.

        Args:
            embeddings: (n, d) float32 prompt embeddings (frozen encoder, L2-normalised).
            scores: (n, m) observed quality scores; NaN = not evaluated (masked out of the loss).
            task_labels: (n,) int64 task of each training prompt in [-1, T-1], -1 = Others (in the paper:
                the training set re-labelled by the task classifier). None = all Others.
            candidates: T lists of candidate model indices, one per task (its task adapters). None = no tasks.

        Returns:
            self
        """
        self._validate_params()
        emb = check_matrix(embeddings, "embeddings")
        n, d = emb.shape
        if n == 0 or d == 0:
            raise DataError(f"'embeddings' must be a non-empty (n, d) array; got shape {emb.shape}.")
        y = check_matrix(scores, "scores", rows=n, allow_nan=True)
        m = y.shape[1]
        if m == 0:
            raise DataError("'scores' has no model column.")
        cands = self._check_candidates(candidates, m)
        n_tasks = len(cands)
        labels = (
            np.full(n, -1, dtype=np.int64)
            if task_labels is None
            else check_labels(task_labels, n, n_tasks, "task_labels")
        )
        observed = ~np.isnan(y)
        if not observed.any():
            raise DataError("'scores' has no observed value: every entry is NaN.")
        self.pruned_: dict[int, float] = {}
        if self.prune_coverage is not None:  # left out of training; predicted at their mean (quality/pruning.py)
            means = nanmean_columns(y)  # finite for every pruned model: only scored models are pruned
            self.pruned_ = {j: float(means[j]) for j in models_to_prune(y, labels, float(self.prune_coverage))}
            observed = observed.copy()
            observed[:, list(self.pruned_)] = False
        settings = TrainingSettings(
            model_dim=int(self.model_dim),
            hidden=int(self.hidden),
            epochs_general=int(self.epochs_general),
            epochs_task=int(self.epochs_task),
            lr=float(self.lr),
            batch_size=int(self.batch_size),
            weight_decay=float(self.weight_decay),
            patience=int(self.patience),
            seed=resolved_seed(self.seed),
            device=resolve_device(self.device, _OWNER),
            stop_on=str(self.stop_on),
        )

        self.n_features_in_ = d
        self.n_models_ = m
        self.n_tasks_ = n_tasks
        self.candidates_ = cands
        layout = self._set_layout(cands, m)
        train_idx, dev_idx = stratified_dev_split(labels, float(self.dev_fraction), settings.seed)
        step_macs = min(settings.batch_size, n) * m * d * settings.hidden
        with torch_threads_for(step_macs):
            t0 = time.perf_counter()
            general = train_general_adapters(emb, y, observed, train_idx, dev_idx, settings)
            t1 = time.perf_counter()
            task = train_task_adapters(emb, y, observed, labels, train_idx, dev_idx, general.weights, layout, settings)
            t2 = time.perf_counter()
        self.fit_seconds_ = {"general": t1 - t0, "task": t2 - t1}
        self.history_general_: list[dict[str, float]] = general.history
        self.history_task_: list[dict[str, float]] = task.history
        self.n_epochs_general_ = general.n_epochs
        self.n_epochs_task_ = task.n_epochs
        self.dev_mse_general_ = general.dev_mse
        self.tasks_specialised_ = task.tasks_specialised
        self._adapters = StackedAdapters(general.weights, task.weights, layout)
        return self

    def _set_layout(self, cands: list[list[int]], n_models: int) -> AdapterLayout:
        """Lay the task adapters out (task t owns a contiguous block of slots) and expose the public attributes."""
        layout = AdapterLayout.build(cands, n_models)
        self.slot_table_ = layout.slot_table
        self.n_slots_ = layout.n_slots
        return layout

    # ------------------------------------------------------------------ predict
    def _check_embeddings(self, embeddings: Any) -> np.ndarray:
        check_is_fitted(self, ["_adapters"])
        return check_matrix(embeddings, "embeddings", cols=self.n_features_in_)

    def predict_general(self, embeddings: Any) -> np.ndarray:
        """General adapters only: (n, d) embeddings -> (n, m) float32 predicted quality scores."""
        emb = self._check_embeddings(embeddings)
        with single_thread_blas(emb.shape[0]):
            return self._at_means(self._adapters.predict_general(emb))

    def predict(self, embeddings: Any, task_labels: Any = None) -> np.ndarray:
        """Predicted quality of every model: task adapters for the task's candidates, general ones elsewhere.

        Args:
            embeddings: (n, d) prompt embeddings.
            task_labels: (n,) int64 task ids in [-1, T-1] (-1 = Others, general adapters only); None = all Others.

        Returns:
            (n, m) float32 predicted scores.
        """
        emb = self._check_embeddings(embeddings)
        labels = None if task_labels is None else check_labels(task_labels, emb.shape[0], self.n_tasks_, "task_labels")
        with single_thread_blas(emb.shape[0]):
            return self._predict(emb, labels)

    def _predict(self, emb: np.ndarray, labels: np.ndarray | None) -> np.ndarray:
        """:meth:`predict` for inputs the caller already checked (the router calls it directly): ``emb`` a
        C-contiguous (n, d) float32 array, ``labels`` (n,) int64 task ids or None."""
        return self._at_means(self._adapters.predict(emb, labels))

    def _at_means(self, predicted: np.ndarray) -> np.ndarray:
        """``predicted`` ``(n, m)`` with every pruned model's column at its mean training score."""
        pruned = getattr(self, "pruned_", None)
        if pruned:
            cols = list(pruned)
            predicted[:, cols] = np.asarray([pruned[j] for j in cols], dtype=predicted.dtype)[None, :]
        return predicted

    # ------------------------------------------------------------------ state
    def to_state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """``(config, arrays)``: a JSON-able dict and the weights (numpy), for JSON + safetensors artifacts."""
        check_is_fitted(self, ["_adapters"])
        adapters = self._adapters
        general = adapters.general
        config = {
            "format": _STATE_FORMAT,
            "params": self.get_params(deep=False),
            "n_features_in": int(self.n_features_in_),
            "n_models": int(self.n_models_),
            "candidates": [list(map(int, c)) for c in self.candidates_],
            "n_epochs_general": int(self.n_epochs_general_),
            "n_epochs_task": int(self.n_epochs_task_),
            "dev_mse_general": self.dev_mse_general_,
            "tasks_specialised": int(self.tasks_specialised_),
            "pruned": {str(j): float(v) for j, v in sorted(getattr(self, "pruned_", {}).items())},
            "fit_seconds": dict(getattr(self, "fit_seconds_", {})),
            "history_general": copy.deepcopy(self.history_general_),
            "history_task": copy.deepcopy(self.history_task_),
        }
        arrays = {
            "model_embeddings": general["model_embeddings"].copy(),
            "general_w1_prompt": np.ascontiguousarray(general["w1_prompt"].transpose(1, 0, 2)),  # (m, d, h)
            "general_w1_model": general["w1_model"].copy(),  # (m, model_dim, h)
            "general_b1": general["b1"].copy(),
            "general_w2": general["w2"].copy(),
            "general_b2": general["b2"].copy(),
            "task_w1_prompt": np.ascontiguousarray(adapters.task_w1.transpose(1, 0, 2)),  # (A, d, h)
            "task_b1": adapters.task_b1.copy(),  # (A, h): v_M W1_m + b1, folded
            "task_w2": adapters.task_w2.copy(),
            "task_b2": adapters.task_b2.copy(),
        }
        return json_safe(config), arrays

    @classmethod
    def from_state(cls, config: dict[str, Any], arrays: dict[str, np.ndarray]) -> QualityEstimator:
        """Rebuild a fitted estimator from :meth:`to_state` output; predictions are bit-identical."""
        if not isinstance(config, dict) or config.get("format") != _STATE_FORMAT:
            raise ArtifactError(
                f"Not a QualityEstimator state: expected format {_STATE_FORMAT!r}, got "
                f"{config.get('format') if isinstance(config, dict) else type(config).__name__!r}."
            )
        missing = [k for k in _STATE_ARRAYS if k not in arrays]
        if missing:
            raise ArtifactError(f"QualityEstimator state is missing arrays: {', '.join(missing)}.")
        try:
            obj = cls(**config["params"])
            d, m = int(config["n_features_in"]), int(config["n_models"])
            cands = cls._check_candidates(config["candidates"], m)
            loaded = {k: np.asarray(arrays[k], dtype=np.float32) for k in _STATE_ARRAYS}
        except (KeyError, TypeError, ValueError) as exc:
            raise ArtifactError(f"QualityEstimator state is malformed: {exc}") from exc
        n_slots = sum(len(c) for c in cands)
        h = loaded["general_w2"].shape[-1] if loaded["general_w2"].ndim == 2 else -1
        expect = {
            "general_w1_prompt": (m, d, h),
            "general_b1": (m, h),
            "general_w2": (m, h),
            "general_b2": (m,),
            "task_w1_prompt": (n_slots, d, h),
            "task_b1": (n_slots, h),
            "task_w2": (n_slots, h),
            "task_b2": (n_slots,),
        }
        bad = [f"{k} {loaded[k].shape} (expected {v})" for k, v in expect.items() if loaded[k].shape != v]
        if loaded["model_embeddings"].ndim != 2 or loaded["model_embeddings"].shape[0] != m:
            bad.append(f"model_embeddings {loaded['model_embeddings'].shape}")
        elif loaded["general_w1_model"].shape != (m, loaded["model_embeddings"].shape[1], h):
            bad.append(f"general_w1_model {loaded['general_w1_model'].shape}")
        if bad:
            raise ArtifactError("QualityEstimator state arrays disagree with its config: " + "; ".join(bad) + ".")
        obj.n_features_in_ = d
        obj.n_models_ = m
        obj.n_tasks_ = len(cands)
        obj.candidates_ = cands
        layout = obj._set_layout(cands, m)
        obj.n_epochs_general_ = int(config.get("n_epochs_general", 0))
        obj.n_epochs_task_ = int(config.get("n_epochs_task", 0))
        dev_mse = config.get("dev_mse_general")
        obj.dev_mse_general_ = float("nan") if dev_mse is None else float(dev_mse)
        obj.tasks_specialised_ = int(config.get("tasks_specialised", 0))
        try:  # a state saved before pruning has none
            obj.pruned_ = {int(j): float(v) for j, v in (config.get("pruned") or {}).items()}
        except (TypeError, ValueError, AttributeError) as exc:
            raise ArtifactError(f"QualityEstimator state's 'pruned' is malformed: {exc}") from exc
        if any(not 0 <= j < m for j in obj.pruned_):
            raise ArtifactError(f"QualityEstimator state prunes models outside [0, {m - 1}]: {sorted(obj.pruned_)}.")
        obj.fit_seconds_ = dict(config.get("fit_seconds") or {})
        obj.history_general_ = list(config.get("history_general") or [])
        obj.history_task_ = list(config.get("history_task") or [])
        general = {
            "model_embeddings": loaded["model_embeddings"],
            "w1_prompt": loaded["general_w1_prompt"].transpose(1, 0, 2),
            "w1_model": loaded["general_w1_model"],
            "b1": loaded["general_b1"],
            "w2": loaded["general_w2"],
            "b2": loaded["general_b2"],
        }
        task = {
            "w1": loaded["task_w1_prompt"], "b1": loaded["task_b1"], "w2": loaded["task_w2"], "b2": loaded["task_b2"]
        }  # fmt: skip
        obj._adapters = StackedAdapters(general, task, layout)
        return obj
