"""The bilinear task-type classifier (paper section 3.1.2).

A prompt embedding ``e_p`` (d,) and a task encoding ``u_t`` (d_t,) are matched by the bilinear score

    s(p, t) = e_p^T W u_t + b_t

with ``W`` a learned ``(d, d_t)`` matrix (10 x identity when ``d == d_t``, 10 x a semi-orthogonal matrix
otherwise, so that the first scores are 10 x the cosine similarity) and ``u_t`` learned task encodings
initialised from the embeddings of the task descriptions. It is trained multi-label with binary
cross-entropy: a prompt of task ``t`` has the one-hot target ``t``; an "Others" prompt (label -1) has the
all-zero target, so it teaches "no task". At prediction time a prompt whose best sigmoid score is below
``threshold`` goes to Others (-1).

By default the prompt encoder is frozen and the classifier trains on cached embeddings (fast on CPU).
Inference is plain numpy: ``W U^T`` is folded into one ``(d, T)`` matrix after ``fit``.
"""

from __future__ import annotations

import copy
import logging
import math
from typing import Any, ClassVar

import numpy as np

from finerouter._training import (
    TRAINING_PARAMETER_CONSTRAINTS,
    EarlyStopping,
    check_labels,
    check_matrix,
    import_torch,
    json_safe,
    resolve_device,
    resolved_seed,
    single_thread_blas,
    stratified_dev_split,
    torch_threads_for,
)
from finerouter._validation import BOOLEAN, Constraint, Interval, check_is_fitted, validate_parameter_constraints
from finerouter.base import Component
from finerouter.errors import ArtifactError, DataError, ParameterError

logger = logging.getLogger(__name__)

_OWNER = "TaskClassifier"
_STATE_FORMAT = "finerouter.TaskClassifier/1"
# W starts as _INIT_SCALE * I: the initial score is then 10 x cosine(prompt, description), which spreads
# the sigmoid over its useful range from the first step (a scalar factor is absorbed by W: same model).
_INIT_SCALE = 10.0
# The smallest decrease of the dev loss that counts as an improvement for early stopping.
_MIN_DEV_IMPROVEMENT = 1e-7
_THRESHOLD_CONSTRAINT = {"threshold": [Interval("float", 0.0, 1.0, closed="both")]}


def _sigmoid(x: np.ndarray) -> np.ndarray:
    """Numerically stable logistic function (no overflow warnings for large |x|)."""
    return (0.5 * (1.0 + np.tanh(0.5 * x))).astype(np.float32, copy=False)


def macro_f1(y_true: Any, y_pred: Any, *, include_others: bool = False) -> float:
    """Macro-averaged F1 of task assignments.

    The classes averaged over are the task ids present in ``y_true`` (-1 excluded unless ``include_others``),
    as in the paper's "macro F1 on a held-out set of cluster assignments". A prompt of task ``t`` predicted as
    Others (-1) or as another task counts as a miss for ``t``; a wrong prediction of ``t`` lowers ``t``'s
    precision. Returns ``nan`` when there is no class to average over.

    Args:
        y_true: (n,) int true task ids, -1 = Others.
        y_pred: (n,) int predicted task ids, -1 = Others.
        include_others: also average over the Others class (-1) as its own class.
    """
    from sklearn.metrics import f1_score

    y_true = np.asarray(y_true, dtype=np.int64)
    y_pred = np.asarray(y_pred, dtype=np.int64)
    if y_true.shape != y_pred.shape or y_true.ndim != 1:
        raise DataError(f"y_true and y_pred must be 1-D arrays of equal length; got {y_true.shape} and {y_pred.shape}.")
    classes = np.unique(y_true)
    if not include_others:
        classes = classes[classes >= 0]
    if classes.size == 0:
        return float("nan")
    return float(f1_score(y_true, y_pred, labels=classes, average="macro", zero_division=0))


def assignment_metrics(y_true: Any, y_pred: Any) -> dict[str, float]:
    """Held-out metrics of task assignments.

    Returns ``{"macro_f1", "macro_f1_with_others", "others_f1", "assigned_share", "accuracy"}``:
    ``macro_f1`` averages over the task classes present in ``y_true`` (Others excluded, see :func:`macro_f1`);
    ``macro_f1_with_others`` also averages the Others class; ``others_f1`` is the binary F1 of "is Others";
    ``assigned_share`` the share of prompts predicted to some task (not -1); ``accuracy`` exact agreement,
    Others included.
    """
    from sklearn.metrics import f1_score

    y_true = np.asarray(y_true, dtype=np.int64)
    y_pred = np.asarray(y_pred, dtype=np.int64)
    n = y_true.shape[0]
    true_o, pred_o = y_true < 0, y_pred < 0
    others_f1 = float(f1_score(true_o, pred_o, zero_division=0)) if true_o.any() or pred_o.any() else float("nan")
    return {
        "macro_f1": macro_f1(y_true, y_pred),
        "macro_f1_with_others": macro_f1(y_true, y_pred, include_others=True),
        "others_f1": others_f1,
        "assigned_share": float(np.mean(~pred_o)) if n else float("nan"),
        "accuracy": float(np.mean(y_true == y_pred)) if n else float("nan"),
    }


class TaskClassifier(Component):
    """Bilinear prompt-to-task matcher trained with multi-label BCE; low-confidence prompts go to Others.

    Args:
        threshold: a prompt whose best task probability is below it is assigned to Others (-1).
        epochs: maximum training epochs.
        lr: Adam learning rate.
        batch_size: prompts per optimisation step.
        weight_decay: Adam L2 penalty.
        dev_fraction: share of the training rows (stratified by task) held out for early stopping; 0 trains
            for ``epochs`` epochs without a dev set.
        patience: epochs without a dev-loss improvement before stopping; the best weights are restored.
        seed: seeds the initialisation, the dev split and the batch order. None: 0; inside FineRouter, the
            router's seed.
        device: torch device used for training ("cpu", "cuda"...); inference is numpy.
        fine_tune_encoder: also fine-tune the prompt encoder (the paper's setting). Needs the prompts, a
            sentence-transformers module and, realistically, a GPU. Not supported in this version: ``fit``
            raises ``ParameterError``; the default trains the bilinear head on frozen, cached embeddings.

    Attributes (after ``fit``):
        weight_: (d, d_t) float32 bilinear matrix ``W``.
        task_encodings_: (T, d_t) float32 learned task encodings ``u_t``.
        bias_: (T,) float32 per-task bias ``b_t``.
        n_tasks_: T.
        n_features_in_: d.
        n_epochs_: epochs run; best_epoch_: the epoch whose weights were kept (1-based, 0 = initial; without a
            dev set, the last epoch).
        history_: per-epoch ``{"epoch", "train_loss", "dev_loss"}``.
        dev_metrics_: :func:`assignment_metrics` on the dev split (``None`` without one).
    """

    _parameter_constraints: ClassVar[dict[str, list[Constraint]]] = {
        **_THRESHOLD_CONSTRAINT,
        "epochs": [Interval("int", 0, None)],
        **TRAINING_PARAMETER_CONSTRAINTS,
        "fine_tune_encoder": [BOOLEAN],
    }

    def __init__(
        self,
        threshold: float = 0.5,
        epochs: int = 40,
        lr: float = 1e-3,
        batch_size: int = 256,
        weight_decay: float = 1e-4,
        dev_fraction: float = 0.1,
        patience: int = 5,
        seed: int | None = None,
        device: str = "cpu",
        fine_tune_encoder: bool = False,
    ) -> None:
        self.threshold = threshold
        self.epochs = epochs
        self.lr = lr
        self.batch_size = batch_size
        self.weight_decay = weight_decay
        self.dev_fraction = dev_fraction
        self.patience = patience
        self.seed = seed
        self.device = device
        self.fine_tune_encoder = fine_tune_encoder

    # ------------------------------------------------------------------ parameters
    def _validate_params(self) -> None:
        """The declared constraints, then the one value they cannot express: ``fine_tune_encoder=True``."""
        super()._validate_params()
        if self.fine_tune_encoder:
            raise ParameterError(
                "The 'fine_tune_encoder' parameter of TaskClassifier is True, which is not supported in this "
                "version: fine-tuning the prompt encoder needs the prompts, a sentence-transformers module and "
                "a GPU, and would tie the classifier to its own encoder. Use fine_tune_encoder=False (the "
                "bilinear head is trained on the frozen, cached embeddings)."
            )

    # ------------------------------------------------------------------ fit
    def fit(self, embeddings: Any, labels: Any, task_embeddings: Any) -> TaskClassifier:
        """Learn the bilinear matcher.

        Args:
            embeddings: (n, d) float32 prompt embeddings (L2-normalised, from the frozen encoder).
            labels: (n,) int64 task ids in [-1, T-1]; -1 = Others (all-zero BCE target).
            task_embeddings: (T, d_t) float32 embeddings of the task descriptions; T may be 0, in which case
                every prompt is predicted as Others.

        Returns:
            self
        """
        self._validate_params()
        emb = check_matrix(embeddings, "embeddings")
        n, d = emb.shape
        if n == 0:
            raise DataError("'embeddings' is empty: TaskClassifier needs at least one training prompt.")
        task_emb = check_matrix(task_embeddings, "task_embeddings")
        n_tasks, d_t = task_emb.shape
        if d_t == 0 or d == 0:
            raise DataError("'embeddings' and 'task_embeddings' must have at least one column.")
        y = check_labels(labels, n, n_tasks)

        self.n_features_in_ = d
        self.n_tasks_ = n_tasks
        self.history_: list[dict[str, float]] = []
        self.n_epochs_ = 0
        self.best_epoch_ = 0
        self.dev_metrics_: dict[str, float] | None = None

        weight = self._init_weight(d, d_t)
        norms = np.linalg.norm(task_emb, axis=1, keepdims=True)
        norms[norms == 0] = 1.0
        task_encodings = (task_emb / norms).astype(np.float32)
        counts = np.bincount(y[y >= 0], minlength=n_tasks).astype(np.float64) if n_tasks else np.zeros(0)
        prior = np.clip(counts / n, 1e-4, 0.5)
        bias = np.log(prior / (1.0 - prior)).astype(np.float32)

        if n_tasks == 0:
            logger.info("TaskClassifier.fit: no tasks, every prompt will be predicted as Others")
            self._set_weights(weight, task_encodings, bias)
            return self

        train_idx, dev_idx = stratified_dev_split(y, float(self.dev_fraction), resolved_seed(self.seed))
        step_macs = d * d_t * n_tasks + min(int(self.batch_size), n) * d * n_tasks  # W U^T, then the batch
        with torch_threads_for(step_macs):
            weight, task_encodings, bias = self._train(emb, y, train_idx, dev_idx, weight, task_encodings, bias)
        self._set_weights(weight, task_encodings, bias)
        if dev_idx.size:
            pred, _ = self.predict(emb[dev_idx])
            self.dev_metrics_ = assignment_metrics(y[dev_idx], pred)
            logger.info("TaskClassifier dev metrics: %s", self.dev_metrics_)
        return self

    def _init_weight(self, d: int, d_t: int) -> np.ndarray:
        if d == d_t:
            return (_INIT_SCALE * np.eye(d)).astype(np.float32)
        # Semi-orthogonal (d, d_t) so that e^T W u keeps the scale of a cosine similarity.
        rng = np.random.default_rng(resolved_seed(self.seed))
        gaussian = rng.standard_normal((max(d, d_t), min(d, d_t)))
        orthonormal, _ = np.linalg.qr(gaussian)
        weight = orthonormal if d >= d_t else orthonormal.T
        return np.ascontiguousarray(_INIT_SCALE * weight, dtype=np.float32)

    def _train(
        self,
        emb: np.ndarray,
        y: np.ndarray,
        train_idx: np.ndarray,
        dev_idx: np.ndarray,
        weight: np.ndarray,
        task_encodings: np.ndarray,
        bias: np.ndarray,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Adam on the BCE loss over shuffled mini-batches of ``train_idx``, early-stopped on the dev loss.

        Returns the ``(weight, task_encodings, bias)`` of the best dev epoch (the last epoch without a dev set).
        """
        torch = import_torch()
        device = resolve_device(self.device, _OWNER)
        rng = np.random.default_rng(resolved_seed(self.seed))
        n_tasks = task_encodings.shape[0]

        embeddings_t = torch.from_numpy(emb).to(device)
        labels_t = torch.from_numpy(y).to(device)
        params = {
            "weight": torch.tensor(weight, device=device, requires_grad=True),
            "task_encodings": torch.tensor(task_encodings, device=device, requires_grad=True),
            "bias": torch.tensor(bias, device=device, requires_grad=True),
        }
        optimizer = torch.optim.Adam(list(params.values()), lr=float(self.lr), weight_decay=float(self.weight_decay))
        bce = torch.nn.functional.binary_cross_entropy_with_logits

        def logits_of(rows: Any) -> Any:
            folded = params["weight"] @ params["task_encodings"].T  # (d, T)
            return embeddings_t[rows] @ folded + params["bias"]

        def targets_of(rows: Any) -> Any:
            labels = labels_t[rows]
            targets = torch.zeros((labels.shape[0], n_tasks), device=device)
            has_task = labels >= 0
            targets[has_task.nonzero(as_tuple=True)[0], labels[has_task]] = 1.0
            return targets

        def dev_loss() -> float | None:
            """Mean BCE over the dev rows and tasks; None without a dev set (nothing to early-stop on)."""
            if dev_idx.size == 0:
                return None
            with torch.no_grad():
                total = 0.0
                for start in range(0, dev_idx.size, 8192):
                    rows = torch.from_numpy(dev_idx[start : start + 8192]).to(device)
                    total += float(bce(logits_of(rows), targets_of(rows), reduction="sum"))
            return total / (dev_idx.size * n_tasks)

        def snapshot() -> dict[str, Any]:
            return {k: v.detach().clone() for k, v in params.items()}

        stopper = EarlyStopping(int(self.patience), monitor="dev_loss", min_delta=_MIN_DEV_IMPROVEMENT)
        stopper.start(dev_loss(), snapshot)
        batch_size = int(self.batch_size)
        for epoch in range(1, int(self.epochs) + 1):
            perm = rng.permutation(train_idx)
            total, count = 0.0, 0
            for start in range(0, perm.size, batch_size):
                rows = torch.from_numpy(perm[start : start + batch_size]).to(device)
                loss = bce(logits_of(rows), targets_of(rows))
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                total += float(loss.detach()) * rows.shape[0]
                count += rows.shape[0]
            epoch_dev_loss = dev_loss()
            self.history_.append(
                {
                    "epoch": epoch,
                    "train_loss": total / max(count, 1),
                    "dev_loss": float("nan") if epoch_dev_loss is None else epoch_dev_loss,
                }
            )
            self.n_epochs_ = epoch
            logger.debug("TaskClassifier epoch %d train %.5f dev %s", epoch, total / max(count, 1), epoch_dev_loss)
            if stopper.update(epoch, epoch_dev_loss, snapshot):
                break
        self.best_epoch_ = int(stopper.best_epoch)
        logger.info(
            "TaskClassifier trained %d epochs (best %d) on %d prompts, %d tasks",
            self.n_epochs_,
            self.best_epoch_,
            train_idx.size,
            n_tasks,
        )
        best = stopper.best_state
        weight, task_encodings, bias = (
            best[k].cpu().numpy().astype(np.float32) for k in ("weight", "task_encodings", "bias")
        )
        return weight, task_encodings, bias

    def _set_weights(self, weight: np.ndarray, task_encodings: np.ndarray, bias: np.ndarray) -> None:
        self.weight_ = np.ascontiguousarray(weight, dtype=np.float32)
        self.task_encodings_ = np.ascontiguousarray(task_encodings, dtype=np.float32)
        self.bias_ = np.ascontiguousarray(bias, dtype=np.float32)
        # Fold W U^T once: scoring a prompt is then one (d,) x (d, T) product.
        self._folded_weight = np.ascontiguousarray(self.weight_ @ self.task_encodings_.T, dtype=np.float32)

    # ------------------------------------------------------------------ predict
    def _check_input(self, embeddings: Any) -> np.ndarray:
        check_is_fitted(self, ["weight_"])
        return check_matrix(embeddings, "embeddings", cols=self.n_features_in_)

    def decision_function(self, embeddings: Any) -> np.ndarray:
        """Raw matching scores ``e^T W u_t + b_t``: (n, T) float32."""
        emb = self._check_input(embeddings)
        with single_thread_blas(emb.shape[0]):
            return self._raw_scores(emb)

    def _raw_scores(self, emb: np.ndarray) -> np.ndarray:
        """:meth:`decision_function` of checked (n, d) float32 embeddings."""
        return (emb @ self._folded_weight + self.bias_).astype(np.float32, copy=False)

    def predict_proba(self, embeddings: Any) -> np.ndarray:
        """Independent (multi-label) task probabilities: (n, d) embeddings -> (n, T) float32."""
        return _sigmoid(self.decision_function(embeddings))

    def predict(self, embeddings: Any) -> tuple[np.ndarray, np.ndarray]:
        """Assign each prompt to its best task, or to Others (-1) when that task's probability < threshold.

        Returns:
            labels: (n,) int64 task ids, -1 = Others.
            confidence: (n,) float32 best task probability (0 when there are no tasks).
        """
        validate_parameter_constraints(_THRESHOLD_CONSTRAINT, {"threshold": self.threshold}, _OWNER)
        emb = self._check_input(embeddings)
        with single_thread_blas(emb.shape[0]):
            return self._predict_checked(emb)

    def _predict_checked(self, emb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`predict` for embeddings already checked by the caller (the router calls it directly).

        The sigmoid is monotone, so the best task is the best raw score and only its probability is computed.
        """
        return self._assign(self._raw_scores(emb))

    def _assign(self, logits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Labels and confidences from :meth:`_raw_scores` output (a caller that also needs the logits, such as the
        router's soft prior, computes them once)."""
        n = logits.shape[0]
        if logits.shape[1] == 0:
            return np.full(n, -1, dtype=np.int64), np.zeros(n, dtype=np.float32)
        if n == 1:  # one prompt: scalar maths, no array temporaries
            best_task = int(logits[0].argmax())
            probability = 0.5 * (1.0 + math.tanh(0.5 * float(logits[0, best_task])))  # the same formula as _sigmoid
            label = best_task if probability >= self.threshold else -1
            return np.array([label], dtype=np.int64), np.array([probability], dtype=np.float32)
        best = logits.argmax(axis=1)
        conf = _sigmoid(logits[np.arange(n), best])
        return np.where(conf >= self.threshold, best, -1).astype(np.int64), conf

    def evaluate(self, embeddings: Any, labels: Any) -> dict[str, float]:
        """Held-out metrics against true task ids (see :func:`assignment_metrics`).

        Args:
            embeddings: (n, d) prompt embeddings.
            labels: (n,) int true task ids, -1 = Others.

        Returns:
            ``{"macro_f1", "macro_f1_with_others", "others_f1", "assigned_share", "accuracy"}``.
        """
        emb = self._check_input(embeddings)
        y = check_labels(labels, emb.shape[0], self.n_tasks_)
        pred, _ = self.predict(emb)
        return assignment_metrics(y, pred)

    # ------------------------------------------------------------------ state
    def to_state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """``(config, arrays)``: a JSON-able dict and the float32 weights, for JSON + safetensors artifacts."""
        check_is_fitted(self, ["weight_"])
        config = {
            "format": _STATE_FORMAT,
            "params": self.get_params(deep=False),
            "n_features_in": int(self.n_features_in_),
            "n_tasks": int(self.n_tasks_),
            "n_epochs": int(self.n_epochs_),
            "best_epoch": int(self.best_epoch_),
            "history": copy.deepcopy(self.history_),
            "dev_metrics": copy.deepcopy(self.dev_metrics_),
        }
        arrays = {
            "weight": self.weight_.copy(),
            "task_encodings": self.task_encodings_.copy(),
            "bias": self.bias_.copy(),
        }
        return json_safe(config), arrays

    @classmethod
    def from_state(cls, config: dict[str, Any], arrays: dict[str, np.ndarray]) -> TaskClassifier:
        """Rebuild a fitted classifier from :meth:`to_state` output; predictions are bit-identical."""
        if not isinstance(config, dict) or config.get("format") != _STATE_FORMAT:
            raise ArtifactError(
                f"Not a TaskClassifier state: expected format {_STATE_FORMAT!r}, got "
                f"{config.get('format') if isinstance(config, dict) else type(config).__name__!r}."
            )
        missing = [k for k in ("weight", "task_encodings", "bias") if k not in arrays]
        if missing:
            raise ArtifactError(f"TaskClassifier state is missing arrays: {', '.join(missing)}.")
        try:
            obj = cls(**config["params"])
            weight = np.asarray(arrays["weight"], dtype=np.float32)
            task_encodings = np.asarray(arrays["task_encodings"], dtype=np.float32)
            bias = np.asarray(arrays["bias"], dtype=np.float32)
            d, n_tasks = int(config["n_features_in"]), int(config["n_tasks"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ArtifactError(f"TaskClassifier state is malformed: {exc}") from exc
        if (
            weight.ndim != 2
            or weight.shape[0] != d
            or task_encodings.shape != (n_tasks, weight.shape[1])
            or bias.shape != (n_tasks,)
        ):
            raise ArtifactError(
                f"TaskClassifier state arrays disagree with its config: weight {weight.shape}, task_encodings "
                f"{task_encodings.shape}, bias {bias.shape}, n_features_in={d}, n_tasks={n_tasks}."
            )
        obj.n_features_in_ = d
        obj.n_tasks_ = n_tasks
        obj.n_epochs_ = int(config.get("n_epochs", 0))
        obj.best_epoch_ = int(config.get("best_epoch", 0))
        obj.history_ = list(config.get("history") or [])
        obj.dev_metrics_ = config.get("dev_metrics")
        obj._set_weights(weight, task_encodings, bias)
        return obj
