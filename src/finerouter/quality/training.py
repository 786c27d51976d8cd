"""Training of the quality estimator's adapters (torch): the two phases and the row-wise lazy Adam.

Both phases minimise the MSE over observed scores only (NaN = unobserved contributes neither loss nor gradient)
and early-stop on the dev rows (:class:`~finerouter._training.EarlyStopping`), on their MSE or, with
``stop_on="routing"``, on how well the predictions route them (the true score of the model ranked first):

1. :func:`train_general_adapters`: model embeddings + general adapters, on all training rows;
2. :func:`train_task_adapters`: task adapters only, each on the rows labelled with its task, every adapter
   starting as a copy of its model's general adapter; the shared parts are constants. Early stopping is per
   task: a task keeps its adapters from its best dev epoch, or the general copy if they never beat it.

Phase 2 trains every task adapter at once from stacked ``(A, ...)`` tensors with
:class:`~finerouter.quality.lazy_adam.LazyRowAdam`, which updates only the adapters a step used: there is no
Python loop over tasks.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from finerouter._training import EarlyStopping, import_torch
from finerouter.quality.inference import StackedAdapters
from finerouter.quality.lazy_adam import LazyRowAdam
from finerouter.quality.layout import AdapterLayout

logger = logging.getLogger(__name__)

_STEP_WEIGHT_BYTES = 32 << 20  # phase 2: gathered first-layer weights per step
_DEV_BLOCK_BYTES = 64 << 20  # phase 2: gathered first-layer weights per block of dev units
_DEV_BLOCK_ROWS = 4096  # phase 1: dev rows per forward pass
# The smallest decrease of a dev MSE that counts as an improvement for early stopping.
_MIN_DEV_IMPROVEMENT = 1e-9


@dataclass(frozen=True)
class TrainingSettings:
    """The estimator's hyper-parameters, as the training phases use them (seed resolved, device a torch device)."""

    model_dim: int
    hidden: int
    epochs_general: int
    epochs_task: int
    lr: float
    batch_size: int
    weight_decay: float
    patience: int
    seed: int
    device: Any
    stop_on: str = "mse"  # both phases' early stopping: "mse" (dev MSE) or "routing" (dev routing quality)


@dataclass
class PhaseResult:
    """What a training phase returns: the weights (numpy) and how the phase went."""

    weights: dict[str, np.ndarray]
    history: list[dict[str, float]] = field(default_factory=list)
    n_epochs: int = 0
    dev_mse: float = float("nan")  # phase 1: best dev MSE (NaN without a dev set)
    tasks_specialised: int = 0  # phase 2: tasks that kept trained adapters


def round_robin_order(slots: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """An order of the units ``slots`` (U,) in rounds: every slot's 1st unit, then every slot's 2nd unit...

    Units are shuffled inside each slot and inside each round, so consecutive units rarely share a slot and a
    step's units can be gathered once each. In phase 2 every adapter learns only from its own units, so how
    units of different slots are grouped into steps does not change what an adapter sees: a random sequence of
    its own chunks.
    """
    perm = rng.permutation(slots.size)
    shuffled = slots[perm]
    by_slot = np.argsort(shuffled, kind="stable")
    sorted_slots = shuffled[by_slot]
    starts = np.flatnonzero(np.r_[True, sorted_slots[1:] != sorted_slots[:-1]])
    sizes = np.diff(np.r_[starts, sorted_slots.size])
    rank = np.empty(slots.size, dtype=np.int64)
    rank[by_slot] = np.arange(slots.size) - np.repeat(starts, sizes)
    return perm[np.lexsort((rng.random(slots.size), rank))]


def init_general_weights(
    d: int, y: np.ndarray, observed: np.ndarray, settings: TrainingSettings
) -> dict[str, np.ndarray]:
    """The general adapters before training: PyTorch's default uniform ranges, Gaussian model embeddings, and
    each model's output bias at its mean observed training score (the estimator starts as the mean predictor
    and learns residuals).

    Args:
        d: prompt embedding width.
        y: (n, m) training scores; observed: (n, m) bool, False where ``y`` is NaN.
    """
    m = y.shape[1]
    rng = np.random.default_rng(settings.seed)
    q, h = settings.model_dim, settings.hidden
    bound1 = 1.0 / math.sqrt(d + q)
    bound2 = 1.0 / math.sqrt(h)
    counts = observed.sum(axis=0)
    global_mean = float(y[observed].mean()) if observed.any() else 0.0
    column_sums = np.where(observed, y, 0.0).sum(axis=0)
    means = np.where(counts > 0, column_sums / np.maximum(counts, 1), global_mean)
    f32 = np.float32
    return {
        "model_embeddings": (rng.standard_normal((m, q)) / math.sqrt(q)).astype(f32),
        "w1_prompt": rng.uniform(-bound1, bound1, (d, m, h)).astype(f32),  # (d, m, h): one matmul for all m
        "w1_model": rng.uniform(-bound1, bound1, (m, q, h)).astype(f32),
        "b1": rng.uniform(-bound1, bound1, (m, h)).astype(f32),
        "w2": rng.uniform(-bound2, bound2, (m, h)).astype(f32),
        "b2": means.astype(f32),
    }


def train_general_adapters(
    emb: np.ndarray,
    y: np.ndarray,
    observed: np.ndarray,
    train_idx: np.ndarray,
    dev_idx: np.ndarray,
    settings: TrainingSettings,
) -> PhaseResult:
    """Phase 1: model embeddings and general adapters, Adam on mini-batches of prompts (each with its m models).

    Args:
        emb: (n, d) float32 embeddings; y: (n, m) scores (NaN = unobserved); observed: (n, m) bool.
        train_idx, dev_idx: row indices; without dev rows, every epoch runs and the last one is kept.

    The best epoch is the one with the lowest dev MSE (``settings.stop_on == "mse"``) or the highest dev routing
    quality (``"routing"``: the mean true score of the model each dev prompt's predictions rank first, among its
    observed models; epoch 0, the per-model mean predictor, routes like the best single model, and a later epoch
    must route the dev rows strictly better to replace it).

    Returns:
        the weights of the best dev epoch (keys as :func:`init_general_weights`), the per-epoch history.
    """
    torch = import_torch()
    device = settings.device
    d = emb.shape[1]
    m = y.shape[1]
    init = init_general_weights(d, y[train_idx], observed[train_idx], settings)
    result = PhaseResult(weights=init)
    if settings.epochs_general == 0:
        return result
    rng = np.random.default_rng([settings.seed, 1])
    embeddings_t = torch.from_numpy(emb).to(device)
    scores_t = torch.from_numpy(np.where(observed, y, 0.0).astype(np.float32)).to(device)
    observed_t = torch.from_numpy(observed.astype(np.float32)).to(device)
    params = {k: torch.tensor(v, device=device, requires_grad=True) for k, v in init.items()}
    optimizer = torch.optim.Adam(list(params.values()), lr=settings.lr, weight_decay=settings.weight_decay)
    h = settings.hidden

    def forward(rows: Any) -> Any:
        x = embeddings_t[rows]
        hidden = (x @ params["w1_prompt"].reshape(d, m * h)).reshape(-1, m, h)
        model_part = torch.einsum("mq,mqh->mh", params["model_embeddings"], params["w1_model"]) + params["b1"]
        hidden = torch.relu(hidden + model_part)
        # An elementwise product + sum: far cheaper than a bmm of (m, B, h) x (m, h, 1) on CPU.
        return (hidden * params["w2"]).sum(dim=-1) + params["b2"]

    def squared_error(rows: Any, pred: Any = None) -> tuple[Any, Any]:
        """Summed squared error over the observed scores of ``rows``, and their count (``pred``: their
        predictions, when already computed)."""
        mask = observed_t[rows]
        err = ((forward(rows) if pred is None else pred) - scores_t[rows]) * mask
        return (err * err).sum(), mask.sum()

    by_routing = settings.stop_on == "routing"

    def dev_metrics() -> tuple[float | None, float | None]:
        """One pass over the dev rows: their MSE over observed scores and, with ``stop_on="routing"``, the mean
        true score of each dev prompt's top-predicted observed model (None without dev rows to measure)."""
        if dev_idx.size == 0:
            return None, None
        total, count, picked = 0.0, 0.0, []
        with torch.no_grad():
            for start in range(0, dev_idx.size, _DEV_BLOCK_ROWS):
                rows = dev_idx[start : start + _DEV_BLOCK_ROWS]
                rows_t = torch.from_numpy(rows).to(device)
                pred = forward(rows_t)
                sse, n_obs = squared_error(rows_t, pred)
                total += float(sse)
                count += float(n_obs)
                if by_routing:
                    seen = observed[rows]
                    routed = seen.any(axis=1)
                    ranked = np.where(seen, pred.cpu().numpy(), -np.inf)[routed]
                    picked.append(y[rows[routed], np.argmax(ranked, axis=1)])
        routing = np.concatenate(picked) if picked else np.empty(0)
        return total / max(count, 1.0), float(np.mean(routing)) if routing.size else None

    def snapshot() -> dict[str, Any]:
        return {k: v.detach().clone() for k, v in params.items()}

    # Rows with no observed score teach nothing; leave them out of the batches.
    train_rows = train_idx[observed[train_idx].any(axis=1)]
    if by_routing:
        stopper = EarlyStopping(settings.patience, monitor="dev_routing_quality", mode="max")
    else:
        stopper = EarlyStopping(settings.patience, monitor="dev_mse", min_delta=_MIN_DEV_IMPROVEMENT)
    start_mse, start_routing = dev_metrics()
    dev_mse_by_epoch = [start_mse]
    stopper.start(start_routing if by_routing else start_mse, snapshot)
    batch_size = settings.batch_size
    for epoch in range(1, settings.epochs_general + 1):
        perm = rng.permutation(train_rows)
        total, count = 0.0, 0.0
        for start in range(0, perm.size, batch_size):
            rows = torch.from_numpy(perm[start : start + batch_size]).to(device)
            sse, n_obs = squared_error(rows)
            if float(n_obs) == 0:
                continue
            loss = sse / n_obs
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += float(sse.detach())
            count += float(n_obs)
        epoch_dev, epoch_routing = dev_metrics()
        dev_mse_by_epoch.append(epoch_dev)
        train_mse = total / max(count, 1.0)
        record = {"epoch": epoch, "train_mse": train_mse, "dev_mse": float("nan") if epoch_dev is None else epoch_dev}
        value = epoch_dev
        if by_routing:
            value = epoch_routing
            record["dev_routing_quality"] = float("nan") if value is None else value
        result.history.append(record)
        result.n_epochs = epoch
        logger.debug("QualityEstimator general epoch %d train %.5f dev %s", epoch, train_mse, value)
        if stopper.update(epoch, value, snapshot):
            break
    best_mse = dev_mse_by_epoch[int(stopper.best_epoch)]
    result.dev_mse = float(best_mse) if dev_idx.size and best_mse is not None else float("nan")
    result.weights = {k: v.cpu().numpy() for k, v in stopper.best_state.items()}
    logger.info("QualityEstimator phase 1: %d epochs, dev MSE %.5f", result.n_epochs, result.dev_mse)
    return result


def train_task_adapters(
    emb: np.ndarray,
    y: np.ndarray,
    observed: np.ndarray,
    labels: np.ndarray,
    train_idx: np.ndarray,
    dev_idx: np.ndarray,
    general: dict[str, np.ndarray],
    layout: AdapterLayout,
    settings: TrainingSettings,
) -> PhaseResult:
    """Phase 2: the task adapters, each on the rows of its task, the general adapters and embeddings fixed.

    Every task adapter starts as a copy of its model's general adapter with the model half folded into its
    first-layer bias (``W1_m^T v_M + b1`` is a constant per adapter once ``v_M`` is frozen), and learns from
    chunks of ``batch_size // 2`` rows (8 to 128) of its own task, updated by :class:`LazyRowAdam`.

    Args:
        labels: (n,) int64 task of each row, -1 = Others (not used here).
        general: phase 1's weights (see :func:`init_general_weights`).
        layout: the slot of each task adapter.

    Returns:
        the task adapters ``w1`` (A, d, h), ``b1`` (A, h), ``w2`` (A, h), ``b2`` (A,): per task, those of its best
        dev epoch (the last epoch without dev rows), and the per-epoch history.
    """
    torch = import_torch()
    d, h = emb.shape[1], settings.hidden
    slot_model = layout.slot_model
    general_hidden_bias = np.einsum("mq,mqh->mh", general["model_embeddings"], general["w1_model"]) + general["b1"]
    init = {
        "w1": np.ascontiguousarray(general["w1_prompt"][:, slot_model, :].transpose(1, 0, 2), dtype=np.float32),
        "b1": np.ascontiguousarray(general_hidden_bias[slot_model], dtype=np.float32),
        "w2": np.ascontiguousarray(general["w2"][slot_model], dtype=np.float32),
        "b2": np.ascontiguousarray(general["b2"][slot_model], dtype=np.float32),
    }
    result = PhaseResult(weights=init)
    if layout.n_slots == 0 or settings.epochs_task == 0:
        return result
    device = settings.device
    rng = np.random.default_rng([settings.seed, 2])
    # An adapter's mini-batch is one chunk of its task's rows. How many (chunk, adapter) units one step
    # evaluates together is a matter of speed only (each adapter learns from its own units): about one
    # round of distinct adapters, capped at _STEP_WEIGHT_BYTES of gathered first-layer weights.
    chunk = int(np.clip(settings.batch_size // 2, 8, 128))

    train_rows, train_slots = layout.units(train_idx, labels, chunk, rng)
    if train_slots.size == 0:
        logger.info("QualityEstimator phase 2: no training prompt is labelled with a task; skipped")
        return result
    dev_rows, dev_slots = layout.units(dev_idx, labels, chunk, None)
    units_per_step = max(1, min(np.unique(train_slots).size, _STEP_WEIGHT_BYTES // (4 * d * h)))

    # The shared parts (prompt embeddings, model embeddings, general adapters) are constants here:
    # plain tensors with requires_grad=False; only the stacked task adapters are trained.
    embeddings_t = torch.from_numpy(emb).to(device)
    embeddings_t.requires_grad_(False)
    scores_t = torch.from_numpy(np.where(observed, y, 0.0).astype(np.float32)).to(device)
    observed_t = torch.from_numpy(observed.astype(np.float32)).to(device)
    slot_model_t = torch.from_numpy(slot_model).to(device)
    # from_numpy: on CPU the trained tensors share the init arrays' memory (no extra copy of A*d*h floats).
    params = [torch.from_numpy(init[k]).to(device) for k in ("w1", "b1", "w2", "b2")]
    optimizer = LazyRowAdam(params, lr=settings.lr, weight_decay=settings.weight_decay)
    slot_task_t = torch.from_numpy(layout.slot_task).to(device)
    n_tasks = int(layout.task_sizes.size)

    def unit_predictions(
        rows_np: np.ndarray, slots_np: np.ndarray, leaves: list[Any] | None = None, inverse: Any = None
    ) -> tuple[Any, Any, Any, Any]:
        """Each unit's adapter on its rows: predictions (U, c), the rows (padding clamped to 0), the valid mask
        and the model column of each (U, c) entry.

        ``leaves``: the step's gathered adapter weights, one row per distinct slot (``inverse`` maps units to
        them when a slot appears twice); None reads the weights from ``params``.
        """
        rows = torch.from_numpy(rows_np).to(device)
        slots = torch.from_numpy(slots_np).to(device)
        valid = rows >= 0
        safe_rows = rows.clamp(min=0)
        x = embeddings_t[safe_rows]  # (U, c, d)
        if leaves is None:
            w1, b1, w2, b2 = (p.index_select(0, slots) for p in params)
        elif inverse is None:  # one unit per slot: the leaves are the units' weights
            w1, b1, w2, b2 = leaves
        else:
            w1, b1, w2, b2 = (leaf.index_select(0, inverse) for leaf in leaves)
        hidden = torch.relu(torch.bmm(x, w1) + b1[:, None, :])  # (U, c, h)
        pred = torch.bmm(hidden, w2[:, :, None]).squeeze(-1) + b2[:, None]  # (U, c)
        return pred, safe_rows, valid, slot_model_t[slots][:, None].expand_as(safe_rows)

    def unit_squared_error(
        rows_np: np.ndarray, slots_np: np.ndarray, leaves: list[Any] | None = None, inverse: Any = None
    ) -> tuple[Any, Any]:
        """Per-unit summed squared error and observed count: (U,), (U,) (arguments as :func:`unit_predictions`)."""
        pred, safe_rows, valid, cols = unit_predictions(rows_np, slots_np, leaves, inverse)
        mask = observed_t[safe_rows, cols] * valid
        err = (pred - scores_t[safe_rows, cols]) * mask
        return (err * err).sum(dim=1), mask.sum(dim=1)

    def dev_task_mse() -> np.ndarray:
        """(T,) float64 dev MSE of each task's candidate predictions; +inf where a task has no dev observation."""
        sse = torch.zeros(n_tasks, device=device, dtype=torch.float64)
        count = torch.zeros(n_tasks, device=device, dtype=torch.float64)
        if dev_slots.size:
            step = max(1, _DEV_BLOCK_BYTES // (4 * d * h))
            with torch.no_grad():
                for start in range(0, dev_slots.size, step):
                    s, c = unit_squared_error(dev_rows[start : start + step], dev_slots[start : start + step])
                    tasks = slot_task_t[torch.from_numpy(dev_slots[start : start + step]).to(device)]
                    sse.index_add_(0, tasks, s.double())
                    count.index_add_(0, tasks, c.double())
        mse = torch.where(count > 0, sse / count.clamp(min=1), torch.full_like(sse, float("inf")))
        return mse.cpu().numpy()

    by_routing = settings.stop_on == "routing"
    if by_routing and dev_idx.size:
        # The dev rows' predictions outside their task's candidates are the general adapters': fixed in phase 2.
        dev_general = StackedAdapters.general_only(general).predict_general(np.asarray(emb[dev_idx], np.float32))
        dev_position = np.full(emb.shape[0], -1, dtype=np.int64)
        dev_position[dev_idx] = np.arange(dev_idx.size)
        dev_observed = observed[dev_idx]
        dev_task = np.where(dev_observed.any(axis=1), labels[dev_idx], -1)

    def dev_task_routing() -> np.ndarray:
        """(T,) mean true score of the model each task's dev prompts rank first (task adapters for its candidates,
        general adapters for the rest); NaN where a task has no dev prompt with an observed score."""
        pred = dev_general.copy()
        step = max(1, _DEV_BLOCK_BYTES // (4 * d * h))
        with torch.no_grad():
            for start in range(0, dev_slots.size, step):
                p, rows, valid, cols = unit_predictions(dev_rows[start : start + step], dev_slots[start : start + step])
                keep = valid.cpu().numpy()
                pred[dev_position[rows.cpu().numpy()[keep]], cols.cpu().numpy()[keep]] = p.cpu().numpy()[keep]
        picked = y[dev_idx, np.argmax(np.where(dev_observed, pred, -np.inf), axis=1)]
        sel = dev_task >= 0
        total = np.bincount(dev_task[sel], weights=picked[sel], minlength=n_tasks)
        count = np.bincount(dev_task[sel], minlength=n_tasks)
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)

    # Early stopping is per task: a task's adapters are kept from their best dev epoch, and a task with
    # no dev observation keeps the general copy (no evidence that specialising helps it). With stop_on="routing"
    # an epoch improves a task when its dev prompts are routed strictly better than by the task's best epoch so far
    # (the general copy first).
    has_dev = dev_idx.size > 0
    if by_routing:
        stopper = EarlyStopping(settings.patience, monitor="dev routing quality per task", mode="max",
                                restore_best=False)  # fmt: skip
        dev_monitored = dev_task_routing
    else:
        stopper = EarlyStopping(settings.patience, monitor="dev_mse per task", min_delta=_MIN_DEV_IMPROVEMENT,
                                restore_best=False)  # fmt: skip
        dev_monitored = dev_task_mse
    if has_dev:
        stopper.start(dev_monitored())
    best = [p.clone() for p in params] if has_dev else params
    for epoch in range(1, settings.epochs_task + 1):
        if epoch > 1:  # new chunks each epoch: rows meet different batch-mates
            train_rows, train_slots = layout.units(train_idx, labels, chunk, rng)
        order = round_robin_order(train_slots, rng)
        total, count = 0.0, 0.0
        for start in range(0, order.size, units_per_step):
            selected = order[start : start + units_per_step]
            distinct_np, inverse_np = np.unique(train_slots[selected], return_inverse=True)
            inverse = None
            if distinct_np.size == selected.size:  # the usual case: distinct slots, one gather per parameter
                selected = selected[np.argsort(train_slots[selected], kind="stable")]
            else:  # a slot twice in the step: gather it once, use it for each of its units
                inverse = torch.from_numpy(inverse_np).to(device)
            distinct = torch.from_numpy(distinct_np).to(device)
            leaves = [p.index_select(0, distinct).requires_grad_(True) for p in params]
            sse, n_obs = unit_squared_error(train_rows[selected], train_slots[selected], leaves, inverse)
            sse_total, n_obs_total = sse.sum(), n_obs.sum()
            if float(n_obs_total) == 0:
                continue
            # Sum of per-unit mean squared errors: each adapter's gradient is that of its own chunk's MSE,
            # whatever else shares the step (a step-wide mean would shrink it towards Adam's eps).
            (sse / n_obs.clamp(min=1.0)).sum().backward()
            with torch.no_grad():
                optimizer.step(distinct, [leaf.grad for leaf in leaves], [leaf.detach() for leaf in leaves])
            total += float(sse_total.detach())
            count += float(n_obs_total)
        train_mse = total / max(count, 1.0)
        if not has_dev:
            # No dev set at all (dev_fraction=0): train every task for epochs_task epochs, keep the last.
            result.history.append({"epoch": epoch, "train_mse": train_mse})
            result.n_epochs = epoch
            continue
        stop = stopper.update(epoch, dev_monitored())
        improved = stopper.improved
        if improved.any():
            improved_slots = torch.nonzero(torch.from_numpy(improved).to(device)[slot_task_t], as_tuple=True)[0]
            for best_param, param in zip(best, params, strict=True):
                best_param.index_copy_(0, improved_slots, param.index_select(0, improved_slots))
        best_value = np.asarray(stopper.best_value, dtype=np.float64)
        finite = np.isfinite(best_value)
        mean_dev = float(best_value[finite].mean()) if finite.any() else float("nan")
        n_improved = int(improved.sum())
        monitored_key = "dev_routing_quality_mean_over_tasks" if by_routing else "dev_mse_mean_over_tasks"
        result.history.append(
            {"epoch": epoch, "train_mse": train_mse, monitored_key: mean_dev, "tasks_improved": n_improved}
        )
        result.n_epochs = epoch
        logger.debug("QualityEstimator task epoch %d train %.5f, %d tasks improved", epoch, train_mse, n_improved)
        if stop:
            break
    if has_dev:
        specialised = stopper.best_epoch > 0
    else:
        trained_slots = torch.from_numpy(np.unique(train_slots)).to(device)
        specialised = (torch.bincount(slot_task_t[trained_slots], minlength=n_tasks) > 0).cpu().numpy()
    result.tasks_specialised = int(specialised.sum())
    logger.info(
        "QualityEstimator phase 2: %d epochs, %d of %d tasks specialised", result.n_epochs, result.tasks_specialised,
        n_tasks,
    )  # fmt: skip
    result.weights = {k: b.cpu().numpy() for k, b in zip(("w1", "b1", "w2", "b2"), best, strict=True)}
    return result


__all__ = [
    "LazyRowAdam", "PhaseResult", "TrainingSettings", "init_general_weights", "round_robin_order",
    "train_general_adapters", "train_task_adapters",
]  # fmt: skip
