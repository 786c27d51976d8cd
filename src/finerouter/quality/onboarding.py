"""One model added to, or removed from, a fitted :class:`~finerouter.quality.QualityEstimator` with everything
else frozen (the router's ``add_model`` / ``remove_model``; :mod:`finerouter.routing.onboarding`).

Adding a model ``X`` from its scores on a few prompts:

1. **General adapter and model embedding** (:func:`train_new_model`). With a few hundred scores, training a
   ``(d + model_dim) x hidden`` adapter from scratch would overfit, so ``X`` starts as a copy of the existing
   model whose general adapter predicts ``X``'s scores best (after a shift of its output bias to ``X``'s mean),
   and is then fine-tuned (Adam at :data:`FINE_TUNE_LR_FACTOR` of the estimator's learning rate, MSE on the observed
   scores, at least :data:`MIN_EPOCHS` epochs) with early stopping on a dev split of :data:`DEV_FRACTION` of the new
   prompts. The copy itself is epoch 0 of the early stopping, so fine-tuning is kept only when it beats the copy
   on the dev prompts; the kept weights' output bias is then shifted so that their mean prediction over the new
   prompts is the new scores' mean. Every other model's embedding and adapters stay as they are.
2. **Task adapters** (:func:`train_new_task_adapters`): for each task where ``X`` becomes a candidate, an
   adapter starting as ``X``'s general adapter, trained on the new prompts of that task (phase 2 of
   :mod:`finerouter.quality.training`, at least :data:`MIN_EPOCHS` epochs, per-task early stopping: a task without
   dev rows keeps the copy).
3. :func:`rebuild_estimator` splices the new weights into a new estimator: old adapters are reused where the
   (task, model) pair is still a candidate, a model that newly became a candidate of a task gets a copy of its
   general adapter there, and a retired model's adapters are dropped.

With :data:`PAIRED_TARGETS`, steps 1 and 2 learn from :func:`paired_targets` instead of the raw scores; it is off by
default: on dev parts it changed nothing beyond noise (docs/onboarding.md).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from finerouter._training import (
    EarlyStopping,
    import_torch,
    resolve_device,
    resolved_seed,
    stratified_dev_split,
    torch_threads_for,
)
from finerouter.quality.layout import AdapterLayout
from finerouter.quality.training import TrainingSettings, train_task_adapters

logger = logging.getLogger(__name__)

#: The new model's general adapter is fine-tuned at this fraction of the estimator's learning rate: it starts from a
#: trained adapter, and a few hundred scores overfit quickly at the full rate.
#: The share of the new prompts held out to early-stop the new model's fine-tuning (larger than the estimator's own:
#: a tenth of a few hundred prompts is too few to tell a better epoch from noise).
DEV_FRACTION = 0.25
FINE_TUNE_LR_FACTOR = 0.3
#: The fewest epochs the new model's general adapter is fine-tuned for (early stopping may keep an earlier one).
MIN_EPOCHS = 20
#: Train the new model's adapters on :func:`paired_targets` (its scores less the fitted models' shared residual on
#: the same prompts) rather than on its raw scores.
PAIRED_TARGETS = False
_GENERAL_KEYS = ("model_embeddings", "w1_prompt", "w1_model", "b1", "w2", "b2")


@dataclass
class NewModelFit:
    """The trained weights of one new model and how training went.

    Attributes:
        general: the model's general adapter, shaped as one model of the stacked arrays: ``model_embeddings``
            (1, q), ``w1_prompt`` (d, 1, h), ``w1_model`` (1, q, h), ``b1`` (1, h), ``w2`` (1, h), ``b2`` (1,).
        task: per task id where it is a candidate, its task adapter: ``w1`` (d, h), ``b1`` (h,) (model half
            folded), ``w2`` (h,), ``b2`` ().
        warm_start: the index of the existing model it was copied from.
        info: epochs run, dev MSE of the copy and of the kept weights, seconds.
    """

    general: dict[str, np.ndarray]
    task: dict[int, dict[str, np.ndarray]] = field(default_factory=dict)
    warm_start: int = -1
    info: dict[str, Any] = field(default_factory=dict)


def training_settings(estimator: Any, seed: int | None = None) -> TrainingSettings:
    """The estimator's hyper-parameters as the training functions take them (``seed`` overrides its own)."""
    return TrainingSettings(
        model_dim=int(estimator.model_dim), hidden=int(estimator.hidden),
        epochs_general=int(estimator.epochs_general), epochs_task=int(estimator.epochs_task), lr=float(estimator.lr),
        batch_size=int(estimator.batch_size), weight_decay=float(estimator.weight_decay),
        patience=int(estimator.patience), seed=resolved_seed(estimator.seed if seed is None else seed),
        device=resolve_device(estimator.device, "QualityEstimator"),
    )  # fmt: skip


def general_arrays(estimator: Any) -> dict[str, np.ndarray]:
    """The stacked general adapters of a fitted estimator (keys of :data:`_GENERAL_KEYS`, ``w1_prompt`` (d, m, h))."""
    return {k: np.asarray(v, dtype=np.float32) for k, v in estimator._adapters.general.items()}


def nearest_model(estimator: Any, emb: np.ndarray, y: np.ndarray) -> tuple[int, float]:
    """The existing model whose general adapter, shifted by a constant, best predicts ``y`` (n,) on ``emb``
    (n, d): ``(index, its MSE after the shift)``."""
    pred = estimator.predict_general(emb).astype(np.float64)  # (n, m)
    resid = y[:, None] - pred
    mse = np.mean((resid - resid.mean(axis=0, keepdims=True)) ** 2, axis=0)
    j = int(np.argmin(mse))
    return j, float(mse[j])


def paired_targets(estimator: Any, emb: np.ndarray, y: np.ndarray, others: np.ndarray) -> np.ndarray:
    """``(n,)`` the new model's training targets: its scores ``y`` less, per prompt, the mean residual of the
    fitted models scored there (``others`` ``(n, m)``, NaN: not scored) from their general adapters' predictions on
    ``emb``; ``y`` itself where no other model was scored, or with :data:`PAIRED_TARGETS` off.

    A control variate: what makes a prompt harder or easier than its embedding says is largely shared by every
    model (a hard question is hard for all), and the other models' scores on the same prompt measure it. Taken out,
    the new model's few hundred scores say more about where it differs from the others, which is what routing
    reads; the expected target is unchanged where the fitted models' predictions are unbiased."""
    if not PAIRED_TARGETS or np.size(others) == 0:
        return y  # as given: with the option off, add_model trains exactly as before it existed
    y = np.asarray(y, dtype=np.float64)
    others = np.asarray(others, dtype=np.float64)
    seen = np.isfinite(others)
    resid = np.where(seen, others - estimator.predict_general(emb).astype(np.float64), 0.0)
    count = seen.sum(axis=1)
    return y - np.where(count > 0, resid.sum(axis=1) / np.maximum(count, 1), 0.0)


def train_new_model(
    estimator: Any, emb: np.ndarray, y: np.ndarray, labels: np.ndarray, seed: int | None = None
) -> NewModelFit:
    """A new model's embedding and general adapter, fitted on its scores ``y`` (n,) for prompts ``emb`` (n, d)
    with every existing weight frozen (see the module docstring). ``labels`` (n,) are the prompts' tasks, used to
    stratify the dev split."""
    torch = import_torch()
    settings = training_settings(estimator, seed)
    t0 = time.perf_counter()
    general = general_arrays(estimator)
    j, copy_mse = nearest_model(estimator, emb, y)
    init = {k: (v[:, j : j + 1] if k == "w1_prompt" else v[j : j + 1]).copy() for k, v in general.items()}
    init["b2"] = init["b2"] + np.float32(np.mean(y - estimator.predict_general(emb)[:, j]))
    train_idx, dev_idx = stratified_dev_split(labels, DEV_FRACTION, settings.seed)
    fit = NewModelFit(general=init, warm_start=j)
    fit.info = {"warm_start_mse": copy_mse, "epochs": 0, "n_train": int(train_idx.size), "n_dev": int(dev_idx.size)}
    if settings.epochs_general == 0 or train_idx.size == 0:
        fit.info["seconds"] = time.perf_counter() - t0
        return fit
    device = settings.device
    x_all = torch.from_numpy(np.ascontiguousarray(emb, dtype=np.float32)).to(device)
    y_all = torch.from_numpy(np.asarray(y, dtype=np.float32)).to(device)
    params = {k: torch.tensor(v, device=device, requires_grad=True) for k, v in init.items()}
    try:  # torch's fused kernel: several times faster than the per-tensor loop for these few large tensors
        optimizer = torch.optim.Adam(list(params.values()), lr=settings.lr * FINE_TUNE_LR_FACTOR,
                                     weight_decay=settings.weight_decay, fused=True)  # fmt: skip
    except (RuntimeError, TypeError):
        optimizer = torch.optim.Adam(list(params.values()), lr=settings.lr * FINE_TUNE_LR_FACTOR,
                                     weight_decay=settings.weight_decay)

    def predict(rows: np.ndarray) -> Any:
        x = x_all[torch.from_numpy(rows).to(device)]
        bias = params["model_embeddings"][0] @ params["w1_model"][0] + params["b1"][0]  # (h,)
        hidden = torch.relu(x @ params["w1_prompt"][:, 0, :] + bias)
        return hidden @ params["w2"][0] + params["b2"][0]

    def mse(rows: np.ndarray) -> Any:
        err = predict(rows) - y_all[torch.from_numpy(rows).to(device)]
        return (err * err).mean()

    def dev_mse() -> float | None:
        if dev_idx.size == 0:
            return None
        with torch.no_grad():
            return float(mse(dev_idx))

    def snapshot() -> dict[str, np.ndarray]:
        return {k: v.detach().cpu().numpy().copy() for k, v in params.items()}

    # A few hundred rows make an epoch of a few steps: smaller batches and at least MIN_EPOCHS epochs (early stopping
    # on the dev rows still decides what is kept).
    batch_size = int(min(settings.batch_size, max(16, train_idx.size // 8)))
    rng = np.random.default_rng([settings.seed, 11])
    stopper = EarlyStopping(settings.patience, monitor="dev_mse (new model)")
    stopper.start(dev_mse(), snapshot)
    with torch_threads_for(min(settings.batch_size, train_idx.size) * emb.shape[1] * settings.hidden):
        for epoch in range(1, max(settings.epochs_general, MIN_EPOCHS) + 1):
            perm = rng.permutation(train_idx)
            for start in range(0, perm.size, batch_size):
                loss = mse(perm[start : start + batch_size])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
            fit.info["epochs"] = epoch
            if stopper.update(epoch, dev_mse(), snapshot):
                break
    fit.general = stopper.best_state
    # A few dev rows can prefer an epoch whose predictions drifted off the new scores' mean: shift the output bias so
    # that the mean prediction over every new prompt is their mean again, as the copy's was.
    with torch.no_grad():
        for k, v in fit.general.items():
            params[k].copy_(torch.from_numpy(v))
        drift = float(np.mean(y) - predict(np.arange(len(y))).mean().item())
    fit.general["b2"] = fit.general["b2"] + np.float32(drift)
    fit.info["bias_shift"] = drift
    fit.info.update(best_epoch=int(stopper.best_epoch), seconds=time.perf_counter() - t0)
    if dev_idx.size:
        fit.info["dev_mse"] = float(stopper.best_value)
    logger.info("new model: warm start from model %d, kept epoch %d of %d", j, fit.info["best_epoch"], fit.info["epochs"])
    return fit


def train_new_task_adapters(
    estimator: Any, fit: NewModelFit, emb: np.ndarray, y: np.ndarray, labels: np.ndarray, tasks: list[int],
    seed: int | None = None,
) -> None:
    """Task adapters of the new model for each task id in ``tasks`` (where it is a candidate), each trained on the
    new prompts labelled with that task (``labels`` (n,)); stored in ``fit.task``."""
    if not tasks:
        return
    # As for the general adapter: a task's few new prompts make an epoch of a step or two.
    settings = dataclasses.replace(training_settings(estimator, seed), epochs_task=max(int(estimator.epochs_task), MIN_EPOCHS))
    n_tasks = int(estimator.n_tasks_)
    wanted = set(tasks)
    layout = AdapterLayout.build([[0] if t in wanted else [] for t in range(n_tasks)], 1)
    y2 = np.asarray(y, dtype=np.float64)[:, None]
    observed = np.isfinite(y2)
    train_idx, dev_idx = stratified_dev_split(labels, float(estimator.dev_fraction), settings.seed)
    with torch_threads_for(min(settings.batch_size, emb.shape[0]) * emb.shape[1] * settings.hidden):
        result = train_task_adapters(
            np.ascontiguousarray(emb, dtype=np.float32), y2, observed, labels, train_idx, dev_idx, fit.general, layout,
            settings,
        )  # fmt: skip
    for slot, task in enumerate(layout.slot_task):
        fit.task[int(task)] = {k: result.weights[k][slot] for k in ("w1", "b1", "w2", "b2")}
    fit.info["tasks_specialised"] = int(result.tasks_specialised)


def rebuild_estimator(
    estimator: Any, keep: list[int], candidates: list[list[int]], new: NewModelFit | None = None
) -> Any:
    """A new fitted estimator over the models ``keep`` (old indices, in order), plus ``new`` appended last.

    Args:
        keep: the old models kept, in their new order.
        candidates: per task, its candidate models in the *new* index space (``len(keep)`` is the new model).
        new: the new model's weights (None: only removal).
    """
    from finerouter.quality.estimator import QualityEstimator

    config, arrays = estimator.to_state()
    general = general_arrays(estimator)
    keep_idx = np.asarray(keep, dtype=np.int64)
    stacked = {
        "model_embeddings": general["model_embeddings"][keep_idx],
        "general_w1_prompt": general["w1_prompt"].transpose(1, 0, 2)[keep_idx],  # (m, d, h)
        "general_w1_model": general["w1_model"][keep_idx],
        "general_b1": general["b1"][keep_idx],
        "general_w2": general["w2"][keep_idx],
        "general_b2": general["b2"][keep_idx],
    }
    if new is not None:
        g = new.general
        parts = {
            "model_embeddings": g["model_embeddings"], "general_w1_prompt": g["w1_prompt"].transpose(1, 0, 2),
            "general_w1_model": g["w1_model"], "general_b1": g["b1"], "general_w2": g["w2"], "general_b2": g["b2"],
        }  # fmt: skip
        stacked = {k: np.concatenate([v, np.asarray(parts[k], dtype=np.float32)]) for k, v in stacked.items()}
    folded_b1 = np.einsum("mq,mqh->mh", stacked["model_embeddings"], stacked["general_w1_model"]) + stacked["general_b1"]
    old_of_new = {new_j: int(old_j) for new_j, old_j in enumerate(keep)}
    old_slot = estimator.slot_table_
    slots: dict[str, list[np.ndarray]] = {"w1": [], "b1": [], "w2": [], "b2": []}
    for t, row in enumerate(candidates):
        for j in row:
            old_j = old_of_new.get(j)
            s = int(old_slot[t, old_j]) if old_j is not None and t < old_slot.shape[0] else -1
            if s >= 0:
                adapter = {"w1": arrays["task_w1_prompt"][s], "b1": arrays["task_b1"][s],
                           "w2": arrays["task_w2"][s], "b2": arrays["task_b2"][s]}  # fmt: skip
            elif new is not None and j == len(keep) and t in new.task:
                adapter = new.task[t]
            else:  # a model that became a candidate here: its general adapter, as phase 2 starts
                adapter = {"w1": stacked["general_w1_prompt"][j], "b1": folded_b1[j],
                           "w2": stacked["general_w2"][j], "b2": stacked["general_b2"][j]}  # fmt: skip
            for k in slots:
                slots[k].append(np.asarray(adapter[k], dtype=np.float32))
    d, h = stacked["general_w1_prompt"].shape[1], stacked["general_w2"].shape[1]
    task_arrays = {
        "task_w1_prompt": np.stack(slots["w1"]) if slots["w1"] else np.zeros((0, d, h), np.float32),
        "task_b1": np.stack(slots["b1"]) if slots["b1"] else np.zeros((0, h), np.float32),
        "task_w2": np.stack(slots["w2"]) if slots["w2"] else np.zeros((0, h), np.float32),
        "task_b2": np.stack(slots["b2"]) if slots["b2"] else np.zeros(0, np.float32),
    }
    pruned = {str(keep.index(int(j))): v for j, v in (config.get("pruned") or {}).items() if int(j) in keep}
    config = dict(config, n_models=int(stacked["general_b2"].shape[0]), candidates=[list(map(int, c)) for c in candidates],
                  pruned=pruned)  # a pruned model keeps its mean where it stays; an added model is never pruned
    return QualityEstimator.from_state(config, {**stacked, **task_arrays})


__all__ = [
    "NewModelFit", "general_arrays", "nearest_model", "paired_targets", "rebuild_estimator", "train_new_model",
    "train_new_task_adapters", "training_settings",
]  # fmt: skip
