"""The mixture-of-experts quality estimator (paper section 3.2).

Architecture. A prompt embedding ``e_p`` (d,) from the frozen encoder and a learned model embedding ``v_M``
(model_dim,) are concatenated and fed to a 2-layer MLP adapter ``Linear(d + model_dim -> hidden), ReLU,
Linear(hidden -> 1)`` that predicts the quality of model ``M`` on prompt ``p``. There is one *general* adapter
per model and one *task* adapter per (task, candidate model) pair. A prompt assigned to task ``t`` is scored
by ``t``'s task adapters for ``t``'s candidates and by the general adapters for every other model; an Others
prompt (-1) uses only general adapters.

Training (two phases, MSE on observed scores only; NaN = unobserved contributes neither loss nor gradient):

1. model embeddings + general adapters, on all training rows;
2. task adapters only, each on the rows labelled with its task; the shared parts are frozen
   (``requires_grad=False``) and every task adapter starts as a copy of its model's general adapter.

Both phases early-stop on a dev split carved from the training rows (stratified by task) and restore the
best weights; phase 2 does so per task (a task whose adapters never beat the general copy on its dev rows
keeps the copy). Every adapter is evaluated with stacked weights: the general first layers as one
``(d, m * hidden)`` matrix, the task adapters as ``(A, ...)`` tensors with a ``(T, m)`` table of slots. There is
no Python loop over tasks, neither in training nor at inference.

Why the model half of a task adapter's first layer is folded. Splitting the first layer as
``W1 = [W1_p; W1_m]`` gives ``W1^T [e_p; v_M] + b1 = W1_p^T e_p + (W1_m^T v_M + b1)``. The model embedding is
frozen in phase 2, so for a task adapter the second term is a constant vector per adapter: we store and train
it as one ``(hidden,)`` bias (the same set of functions as training ``W1_m`` and ``b1``, with
``A * hidden`` instead of ``A * (model_dim + 1) * hidden`` parameters: 1.1 GB less at 300 tasks).
General adapters keep the full ``W1_m`` because ``v_M`` is learned in phase 1.

Inference is plain numpy over the stacked weights; a single prompt costs one ``(d,) x (d, m*hidden)`` product
plus one batched product over the contiguous adapters of its task.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from typing import Any

import numpy as np

from finerouter._training import (
    GetParamsMixin,
    check_device_name,
    check_labels,
    check_matrix,
    check_training_params,
    import_torch,
    json_safe,
    resolve_device,
    single_thread_blas,
    stratified_dev_split,
    torch_threads_for,
)
from finerouter._validation import check_int, check_is_fitted
from finerouter.errors import ArtifactError, DataError

logger = logging.getLogger(__name__)

_OWNER = "QualityEstimator"
_STATE_FORMAT = "finerouter.QualityEstimator/1"
_GENERAL_BLOCK = 2048  # rows per block in numpy inference (bounds memory at block * m * hidden floats)
_UNIT_BLOCK_BYTES = 64 << 20  # gathered task weights per inference block
_FUSED_MIN_ROW = 4096  # rows at least this big are updated by torch's fused Adam kernel
_STEP_WEIGHT_BYTES = 32 << 20  # phase 2: gathered first-layer weights per step
_ONE_ROW = np.zeros(1, dtype=np.int64)
_FEW_CANDIDATES = 2  # a single prompt whose task has at most this many candidates takes the fused path


class _LazyAdam:
    """Adam over the rows (slots) of stacked parameter tensors, touching only the rows in each step.

    Each slot keeps its own step count, so bias correction is exact per slot, and slots that a batch does
    not use do not move (unlike dense Adam, whose momentum would keep moving them). ``weight_decay`` is the
    classic L2 term added to the gradient, as in ``torch.optim.Adam``.
    """

    def __init__(
        self,
        params: list[Any],
        lr: float,
        weight_decay: float,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        fused: bool = True,
    ) -> None:
        torch = import_torch()
        self.params = params
        self.lr, self.wd, self.b1, self.b2, self.eps = lr, weight_decay, betas[0], betas[1], eps
        self.m = [torch.zeros_like(p) for p in params]
        self.v = [torch.zeros_like(p) for p in params]
        self.steps = torch.zeros(params[0].shape[0], dtype=torch.float32, device=params[0].device)
        self._fused = hasattr(torch, "_fused_adam_") and params[0].device.type in ("cpu", "cuda") and fused

    def step(self, rows: Any, grads: list[Any], current: list[Any] | None = None) -> None:
        """Update ``param[rows]`` for each param given the gradients of those rows (same order).

        ``rows`` (a 1-D index tensor) must be unique; ``current`` optionally holds copies of ``param[rows]``
        already gathered (the fallback path updates them in place). With torch's fused Adam kernel the rows are
        updated in place through views (one pass over parameter, gradient and both moments); otherwise
        ``index_select`` / ``index_copy_`` move whole rows.
        """
        torch = import_torch()
        self.steps.index_add_(0, rows, torch.ones(rows.shape[0], device=rows.device))
        t = self.steps.index_select(0, rows)
        c1 = 1.0 - self.b1**t
        c2 = 1.0 - self.b2**t
        if current is None:
            current = [None] * len(self.params)
        for p, m, v, g, pr in zip(self.params, self.m, self.v, grads, current, strict=True):
            if self._fused and p[0].numel() >= _FUSED_MIN_ROW:
                # Big rows (the first layers): the fused kernel, in place through row views. One call per
                # parameter tensor; small rows go the vectorised way (a kernel call per tiny row costs more).
                idx = rows.tolist()
                torch._fused_adam_(
                    [p[r] for r in idx], list(g.unbind(0)), [m[r] for r in idx], [v[r] for r in idx], [],
                    [self.steps[r] for r in idx], lr=self.lr, beta1=self.b1, beta2=self.b2,
                    weight_decay=self.wd, eps=self.eps, amsgrad=False, maximize=False,
                )  # fmt: skip
                continue
            if pr is None:
                pr = p.index_select(0, rows)
            shape = (-1,) + (1,) * (p.dim() - 1)
            if self.wd:
                g = g.add(pr, alpha=self.wd)
            mr = m.index_select(0, rows).mul_(self.b1).add_(g, alpha=1.0 - self.b1)
            vr = v.index_select(0, rows).mul_(self.b2).addcmul_(g, g, value=1.0 - self.b2)
            m.index_copy_(0, rows, mr)
            v.index_copy_(0, rows, vr)
            denom = vr.div_(c2.view(shape)).sqrt_().add_(self.eps)
            pr.addcdiv_(mr.div_(c1.view(shape)), denom, value=-self.lr)
            p.index_copy_(0, rows, pr)


def _round_robin(slots: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """An order of the units ``slots`` (U,) in rounds: every slot's 1st unit, then every slot's 2nd unit...

    Units are shuffled inside each slot and inside each round, so consecutive units rarely share a slot and a
    step's units can be gathered once each. In phase 2 every adapter learns only from its own units, so how
    units of different slots are grouped into steps does not change what an adapter sees: a random sequence of
    its own chunks.
    """
    perm = rng.permutation(slots.size)
    s = slots[perm]
    by_slot = np.argsort(s, kind="stable")
    sorted_s = s[by_slot]
    starts = np.flatnonzero(np.r_[True, sorted_s[1:] != sorted_s[:-1]])
    sizes = np.diff(np.r_[starts, sorted_s.size])
    rank = np.empty(slots.size, dtype=np.int64)
    rank[by_slot] = np.arange(slots.size) - np.repeat(starts, sizes)
    return perm[np.lexsort((rng.random(slots.size), rank))]


class QualityEstimator(GetParamsMixin):
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
        seed: seeds initialisation, the dev split and batch order.
        device: torch device used for training ("cpu", "cuda"...); inference is numpy.

    Attributes (after ``fit``):
        n_models_: m; n_features_in_: d; n_tasks_: T; n_slots_: A (task adapters).
        candidates_: per task, its candidate model indices (the order of its adapters).
        slot_table_: (T, m) int64, the task adapter slot of (task, model), -1 = general adapter.
        n_epochs_general_, n_epochs_task_: epochs run; history_general_, history_task_: per-epoch losses.
        dev_mse_general_: best phase-1 dev MSE over observed scores (NaN without a dev set).
        fit_seconds_: ``{"general": s, "task": s}`` wall time of each training phase.
        tasks_specialised_: how many tasks kept trained task adapters (beat the general copy on dev rows).
    """

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
        seed: int = 0,
        device: str = "cpu",
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

    # ------------------------------------------------------------------ parameters
    def _validate_params(self) -> None:
        check_int(self.model_dim, "model_dim", _OWNER, low=1)
        check_int(self.hidden, "hidden", _OWNER, low=1)
        check_int(self.epochs_general, "epochs_general", _OWNER, low=0)
        check_int(self.epochs_task, "epochs_task", _OWNER, low=0)
        check_training_params(
            _OWNER, lr=self.lr, batch_size=self.batch_size, weight_decay=self.weight_decay, patience=self.patience,
            dev_fraction=self.dev_fraction, dev_closed="left", seed=self.seed,
        )
        check_device_name(self.device, _OWNER)

    @staticmethod
    def _check_candidates(candidates: Any, n_models: int) -> list[list[int]]:
        if candidates is None:
            return []
        if isinstance(candidates, (str, bytes)) or not hasattr(candidates, "__iter__"):
            raise DataError("'candidates' must be a list (one entry per task) of lists of model indices.")
        out: list[list[int]] = []
        for t, cands in enumerate(candidates):
            if isinstance(cands, (str, bytes)) or not hasattr(cands, "__iter__"):
                raise DataError(f"'candidates[{t}]' must be a list of model indices; got {cands!r}.")
            row: list[int] = []
            for c in cands:
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

        self.n_features_in_ = d
        self.n_models_ = m
        self.n_tasks_ = n_tasks
        self.candidates_ = cands
        self._build_slots(cands, m)
        self.history_general_: list[dict[str, float]] = []
        self.history_task_: list[dict[str, float]] = []
        self.n_epochs_general_ = 0
        self.n_epochs_task_ = 0
        self.dev_mse_general_ = float("nan")
        self.tasks_specialised_ = 0

        train_idx, dev_idx = stratified_dev_split(labels, float(self.dev_fraction), int(self.seed))
        step_macs = min(int(self.batch_size), n) * m * d * int(self.hidden)
        with torch_threads_for(step_macs):
            t0 = time.perf_counter()
            general = self._fit_general(emb, y, observed, train_idx, dev_idx)
            t1 = time.perf_counter()
            task = self._fit_tasks(emb, y, observed, labels, train_idx, dev_idx, general)
            t2 = time.perf_counter()
        self.fit_seconds_ = {"general": t1 - t0, "task": t2 - t1}
        self._set_weights(general, task)
        return self

    def _build_slots(self, cands: list[list[int]], m: int) -> None:
        """Lay the task adapters out contiguously per task: task t owns slots [offsets[t], offsets[t+1])."""
        sizes = np.array([len(c) for c in cands], dtype=np.int64)
        self._task_offsets = np.r_[0, np.cumsum(sizes)].astype(np.int64)
        self._task_sizes = sizes
        self._slot_model = np.array([c for cs in cands for c in cs], dtype=np.int64)
        self._slot_task = np.repeat(np.arange(len(cands), dtype=np.int64), sizes)
        table = np.full((len(cands), m), -1, dtype=np.int64)
        if self._slot_model.size:
            table[self._slot_task, self._slot_model] = np.arange(self._slot_model.size)
        self.slot_table_ = table
        self.n_slots_ = int(self._slot_model.size)
        # Per task, the runs [a, b) of consecutive non-candidate models: a single task prompt only needs the
        # general adapters of those (contiguous column blocks of the stacked general first layer).
        self._general_runs: list[list[tuple[int, int]]] = []
        for row in table:
            non = np.flatnonzero(row < 0)
            cuts = np.flatnonzero(np.diff(non) != 1) + 1
            self._general_runs.append([(int(r[0]), int(r[-1]) + 1) for r in np.split(non, cuts) if r.size])

    # .................................................................. phase 1
    def _init_general(self, d: int, m: int, y: np.ndarray, observed: np.ndarray) -> dict[str, np.ndarray]:
        rng = np.random.default_rng(self.seed)
        q, h = int(self.model_dim), int(self.hidden)
        bound1 = 1.0 / math.sqrt(d + q)
        bound2 = 1.0 / math.sqrt(h)
        counts = observed.sum(axis=0)
        global_mean = float(y[observed].mean()) if observed.any() else 0.0
        col_sum = np.where(observed, y, 0.0).sum(axis=0)
        means = np.where(counts > 0, col_sum / np.maximum(counts, 1), global_mean)
        f32 = np.float32
        return {
            "model_embeddings": (rng.standard_normal((m, q)) / math.sqrt(q)).astype(f32),
            "w1_prompt": rng.uniform(-bound1, bound1, (d, m, h)).astype(f32),  # (d, m, h): one matmul for all m
            "w1_model": rng.uniform(-bound1, bound1, (m, q, h)).astype(f32),
            "b1": rng.uniform(-bound1, bound1, (m, h)).astype(f32),
            "w2": rng.uniform(-bound2, bound2, (m, h)).astype(f32),
            # Start from the per-model mean: the estimator begins as the mean predictor and learns residuals.
            "b2": means.astype(f32),
        }

    def _fit_general(
        self, emb: np.ndarray, y: np.ndarray, observed: np.ndarray, train_idx: np.ndarray, dev_idx: np.ndarray
    ) -> dict[str, np.ndarray]:
        torch = import_torch()
        dev = resolve_device(self.device, _OWNER)
        n, d = emb.shape
        m = y.shape[1]
        init = self._init_general(d, m, y[train_idx], observed[train_idx])
        if int(self.epochs_general) == 0:
            return init
        rng = np.random.default_rng([int(self.seed), 1])
        e_all = torch.from_numpy(emb).to(dev)
        y_all = torch.from_numpy(np.where(observed, y, 0.0).astype(np.float32)).to(dev)
        mask_all = torch.from_numpy(observed.astype(np.float32)).to(dev)
        params = {k: torch.tensor(v, device=dev, requires_grad=True) for k, v in init.items()}
        opt = torch.optim.Adam(list(params.values()), lr=float(self.lr), weight_decay=float(self.weight_decay))
        h = int(self.hidden)

        def forward(rows: Any) -> Any:
            x = e_all[rows]
            hid = (x @ params["w1_prompt"].reshape(d, m * h)).reshape(-1, m, h)
            model_part = torch.einsum("mq,mqh->mh", params["model_embeddings"], params["w1_model"]) + params["b1"]
            hid = torch.relu(hid + model_part)
            # An elementwise product + sum: far cheaper than a bmm of (m, B, h) x (m, h, 1) on CPU.
            return (hid * params["w2"]).sum(dim=-1) + params["b2"]

        def sse(rows: Any) -> tuple[Any, Any]:
            mask = mask_all[rows]
            err = (forward(rows) - y_all[rows]) * mask
            return (err * err).sum(), mask.sum()

        def dev_mse() -> float:
            if dev_idx.size == 0:
                return float("nan")
            total, count = 0.0, 0.0
            with torch.no_grad():
                for start in range(0, dev_idx.size, 4096):
                    s, c = sse(torch.from_numpy(dev_idx[start : start + 4096]).to(dev))
                    total += float(s)
                    count += float(c)
            return total / max(count, 1.0)

        # Rows with no observed score teach nothing; leave them out of the batches.
        train_rows = train_idx[observed[train_idx].any(axis=1)]
        best = dev_mse()
        best_state = {k: v.detach().clone() for k, v in params.items()}
        bad = 0
        bs = int(self.batch_size)
        for epoch in range(1, int(self.epochs_general) + 1):
            perm = rng.permutation(train_rows)
            total, count = 0.0, 0.0
            for start in range(0, perm.size, bs):
                rows = torch.from_numpy(perm[start : start + bs]).to(dev)
                s, c = sse(rows)
                if float(c) == 0:
                    continue
                loss = s / c
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                total += float(s.detach())
                count += float(c)
            d_mse = dev_mse()
            self.history_general_.append({"epoch": epoch, "train_mse": total / max(count, 1.0), "dev_mse": d_mse})
            self.n_epochs_general_ = epoch
            logger.debug("QualityEstimator general epoch %d train %.5f dev %.5f", epoch, total / max(count, 1.0), d_mse)
            if dev_idx.size == 0 or d_mse < best - 1e-9:
                best = d_mse
                best_state = {k: v.detach().clone() for k, v in params.items()}
                bad = 0
            else:
                bad += 1
                if bad >= int(self.patience):
                    break
        self.dev_mse_general_ = best
        logger.info("QualityEstimator phase 1: %d epochs, dev MSE %.5f", self.n_epochs_general_, best)
        return {k: v.cpu().numpy() for k, v in best_state.items()}

    # .................................................................. phase 2
    def _units(
        self, rows: np.ndarray, labels: np.ndarray, chunk: int, rng: np.random.Generator | None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Group ``rows`` of task-labelled prompts into (chunk of ``chunk`` rows of one task, one adapter slot) units.

        Returns:
            unit_rows: (U, chunk) int64 row indices, -1 = padding.
            unit_slots: (U,) int64 adapter slot of each unit.
        """
        k = self._task_sizes
        rows = rows[(labels[rows] >= 0)]
        rows = rows[k[labels[rows]] > 0]
        if rows.size == 0:
            return np.zeros((0, chunk), dtype=np.int64), np.zeros(0, dtype=np.int64)
        t = labels[rows]
        key = rng.random(rows.size) if rng is not None else np.arange(rows.size)
        order = np.lexsort((key, t))
        rows, t = rows[order], t[order]
        starts = np.flatnonzero(np.r_[True, t[1:] != t[:-1]])
        sizes = np.diff(np.r_[starts, rows.size])
        rank = np.arange(rows.size) - np.repeat(starts, sizes)
        new_chunk = rank % chunk == 0
        chunk_id = np.cumsum(new_chunk) - 1
        n_chunks = int(chunk_id[-1]) + 1
        chunk_rows = np.full((n_chunks, chunk), -1, dtype=np.int64)
        chunk_rows[chunk_id, rank % chunk] = rows
        chunk_task = t[new_chunk]
        reps = k[chunk_task]
        unit_chunk = np.repeat(np.arange(n_chunks), reps)
        first = np.repeat(np.cumsum(reps) - reps, reps)
        unit_slots = np.repeat(self._task_offsets[chunk_task], reps) + (np.arange(unit_chunk.size) - first)
        return chunk_rows[unit_chunk], unit_slots.astype(np.int64)

    def _fit_tasks(
        self,
        emb: np.ndarray,
        y: np.ndarray,
        observed: np.ndarray,
        labels: np.ndarray,
        train_idx: np.ndarray,
        dev_idx: np.ndarray,
        general: dict[str, np.ndarray],
    ) -> dict[str, np.ndarray]:
        torch = import_torch()
        d, h = emb.shape[1], int(self.hidden)
        sm = self._slot_model
        # Task adapters start as copies of their model's general adapter (model half folded, see module doc).
        g_c1 = np.einsum("mq,mqh->mh", general["model_embeddings"], general["w1_model"]) + general["b1"]
        init = {
            "w1": np.ascontiguousarray(general["w1_prompt"][:, sm, :].transpose(1, 0, 2), dtype=np.float32),
            "b1": np.ascontiguousarray(g_c1[sm], dtype=np.float32),
            "w2": np.ascontiguousarray(general["w2"][sm], dtype=np.float32),
            "b2": np.ascontiguousarray(general["b2"][sm], dtype=np.float32),
        }
        if self.n_slots_ == 0 or int(self.epochs_task) == 0:
            return init
        dev = resolve_device(self.device, _OWNER)
        rng = np.random.default_rng([int(self.seed), 2])
        # An adapter's mini-batch is one chunk of its task's rows. How many (chunk, adapter) units one step
        # evaluates together is a matter of speed only (each adapter learns from its own units): about one
        # round of distinct adapters, capped at ~32 MB of gathered first-layer weights.
        chunk = int(np.clip(int(self.batch_size) // 2, 8, 128))

        train_rows, train_slots = self._units(train_idx, labels, chunk, rng)
        if train_slots.size == 0:
            logger.info("QualityEstimator phase 2: no training prompt is labelled with a task; skipped")
            return init
        dev_rows, dev_slots = self._units(dev_idx, labels, chunk, None)
        units_per_step = max(1, min(np.unique(train_slots).size, _STEP_WEIGHT_BYTES // (4 * d * h)))

        # The shared parts (prompt embeddings, model embeddings, general adapters) are constants here:
        # plain tensors with requires_grad=False; only the stacked task adapters are trained.
        e_all = torch.from_numpy(emb).to(dev)
        e_all.requires_grad_(False)
        y_all = torch.from_numpy(np.where(observed, y, 0.0).astype(np.float32)).to(dev)
        mask_all = torch.from_numpy(observed.astype(np.float32)).to(dev)
        slot_model_t = torch.from_numpy(sm).to(dev)
        # from_numpy: on CPU the trained tensors share the init arrays' memory (no extra copy of A*d*h floats).
        params = [torch.from_numpy(init[k]).to(dev) for k in ("w1", "b1", "w2", "b2")]
        opt = _LazyAdam(params, lr=float(self.lr), weight_decay=float(self.weight_decay))
        slot_task_t = torch.from_numpy(self._slot_task).to(dev)
        n_tasks = self.n_tasks_

        def unit_sse(
            rows_np: np.ndarray, slots_np: np.ndarray, leaves: list[Any] | None = None, inv: Any = None
        ) -> tuple[Any, Any]:
            """Per-unit summed squared error and observed count: (U,), (U,)."""
            rows = torch.from_numpy(rows_np).to(dev)
            slots = torch.from_numpy(slots_np).to(dev)
            valid = rows >= 0
            r = rows.clamp(min=0)
            x = e_all[r]  # (U, c, d)
            if leaves is None:
                w1, b1, w2, b2 = (p.index_select(0, slots) for p in params)
            elif inv is None:  # one unit per slot: the leaves are the units' weights
                w1, b1, w2, b2 = leaves
            else:
                w1, b1, w2, b2 = (leaf.index_select(0, inv) for leaf in leaves)
            hid = torch.relu(torch.bmm(x, w1) + b1[:, None, :])  # (U, c, h)
            pred = torch.bmm(hid, w2[:, :, None]).squeeze(-1) + b2[:, None]  # (U, c)
            col = slot_model_t[slots][:, None].expand_as(r)
            mask = mask_all[r, col] * valid
            err = (pred - y_all[r, col]) * mask
            return (err * err).sum(dim=1), mask.sum(dim=1)

        def dev_task_mse() -> Any:
            """(T,) dev MSE of each task's candidate predictions; +inf where a task has no dev observation."""
            sse = torch.zeros(n_tasks, device=dev, dtype=torch.float64)
            cnt = torch.zeros(n_tasks, device=dev, dtype=torch.float64)
            if dev_slots.size:
                step = max(1, _UNIT_BLOCK_BYTES // (4 * d * h))
                with torch.no_grad():
                    for start in range(0, dev_slots.size, step):
                        s, c = unit_sse(dev_rows[start : start + step], dev_slots[start : start + step])
                        tasks = slot_task_t[torch.from_numpy(dev_slots[start : start + step]).to(dev)]
                        sse.index_add_(0, tasks, s.double())
                        cnt.index_add_(0, tasks, c.double())
            return torch.where(cnt > 0, sse / cnt.clamp(min=1), torch.full_like(sse, float("inf")))

        # Early stopping is per task: a task's adapters are kept from their best dev epoch, and a task with
        # no dev observation keeps the general copy (no evidence that specialising helps it).
        has_dev = dev_idx.size > 0
        best_mse = dev_task_mse()
        best = [p.clone() for p in params] if has_dev else params
        bad = 0
        n_improved_ever = torch.zeros(n_tasks, dtype=torch.bool, device=dev)
        for epoch in range(1, int(self.epochs_task) + 1):
            if epoch > 1:  # new chunks each epoch: rows meet different batch-mates
                train_rows, train_slots = self._units(train_idx, labels, chunk, rng)
            order = _round_robin(train_slots, rng)
            total, count = 0.0, 0.0
            for start in range(0, order.size, units_per_step):
                sel = order[start : start + units_per_step]
                uniq_np, inv_np = np.unique(train_slots[sel], return_inverse=True)
                inv = None
                if uniq_np.size == sel.size:  # the usual case: distinct slots, one gather per parameter
                    sel = sel[np.argsort(train_slots[sel], kind="stable")]
                else:  # a slot twice in the step: gather it once, use it for each of its units
                    inv = torch.from_numpy(inv_np).to(dev)
                uniq = torch.from_numpy(uniq_np).to(dev)
                leaves = [p.index_select(0, uniq).requires_grad_(True) for p in params]
                s, c = unit_sse(train_rows[sel], train_slots[sel], leaves, inv)
                s_tot, c_tot = s.sum(), c.sum()
                if float(c_tot) == 0:
                    continue
                # Sum of per-unit mean squared errors: each adapter's gradient is that of its own chunk's MSE,
                # whatever else shares the step (a step-wide mean would shrink it towards Adam's eps).
                (s / c.clamp(min=1.0)).sum().backward()
                with torch.no_grad():
                    opt.step(uniq, [leaf.grad for leaf in leaves], [leaf.detach() for leaf in leaves])
                total += float(s_tot.detach())
                count += float(c_tot)
            if not has_dev:
                # No dev set at all (dev_fraction=0): train every task for epochs_task epochs, keep the last.
                self.history_task_.append({"epoch": epoch, "train_mse": total / max(count, 1.0)})
                self.n_epochs_task_ = epoch
                continue
            cur = dev_task_mse()
            improved = cur < best_mse - 1e-9
            if bool(improved.any()):
                best_mse = torch.where(improved, cur, best_mse)
                n_improved_ever |= improved
                slots_up = torch.nonzero(improved[slot_task_t], as_tuple=True)[0]
                for b, p in zip(best, params, strict=True):
                    b.index_copy_(0, slots_up, p.index_select(0, slots_up))
                bad = 0
            else:
                bad += 1
            finite = torch.isfinite(best_mse)
            mean_dev = float(best_mse[finite].mean()) if bool(finite.any()) else float("nan")
            self.history_task_.append(
                {
                    "epoch": epoch,
                    "train_mse": total / max(count, 1.0),
                    "dev_mse_mean_over_tasks": mean_dev,
                    "tasks_improved": int(improved.sum()),
                }
            )
            self.n_epochs_task_ = epoch
            logger.debug(
                "QualityEstimator task epoch %d train %.5f, %d tasks improved",
                epoch,
                total / max(count, 1.0),
                int(improved.sum()),
            )
            if bad >= int(self.patience):
                break
        if not has_dev:
            n_improved_ever = (
                torch.bincount(slot_task_t[torch.from_numpy(np.unique(train_slots)).to(dev)], minlength=n_tasks) > 0
            )
        self.tasks_specialised_ = int(n_improved_ever.sum())
        logger.info(
            "QualityEstimator phase 2: %d epochs, %d of %d tasks specialised",
            self.n_epochs_task_,
            self.tasks_specialised_,
            n_tasks,
        )
        return {k: b.cpu().numpy() for k, b in zip(("w1", "b1", "w2", "b2"), best, strict=True)}

    # ------------------------------------------------------------------ inference weights
    def _set_weights(self, general: dict[str, np.ndarray], task: dict[str, np.ndarray]) -> None:
        """Keep the weights and lay them out for numpy inference.

        General first layers become one ``(d, m * h)`` matrix; the task first layers one ``(d, A, h)`` array,
        so a task's contiguous adapters ``[lo, hi)`` are the strided ``(d, k * h)`` matrix
        ``w1[:, lo:hi].reshape(d, -1)`` (no copy) and a prompt needs one product per adapter family.
        """
        f32 = np.float32
        self._general = {k: np.ascontiguousarray(v, dtype=f32) for k, v in general.items()}
        d, m, h = self._general["w1_prompt"].shape
        self._g_w1 = self._general["w1_prompt"].reshape(d, m * h)
        self._g_b1 = np.ascontiguousarray(
            np.einsum("mq,mqh->mh", self._general["model_embeddings"], self._general["w1_model"]) + self._general["b1"],
            dtype=f32,
        )
        self._g_w2 = self._general["w2"]
        self._g_b2 = self._general["b2"]
        self._t_w1 = np.ascontiguousarray(np.asarray(task["w1"], dtype=f32).transpose(1, 0, 2))  # (d, A, h)
        self._t_b1 = np.ascontiguousarray(task["b1"], dtype=f32)  # (A, h)
        self._t_w2 = np.ascontiguousarray(task["w2"], dtype=f32)  # (A, h)
        self._t_b2 = np.ascontiguousarray(task["b2"], dtype=f32)  # (A,)
        self.is_fitted_ = True

    # ------------------------------------------------------------------ predict
    def _check_embeddings(self, embeddings: Any) -> np.ndarray:
        check_is_fitted(self, ["is_fitted_"])
        return check_matrix(embeddings, "embeddings", cols=self.n_features_in_)

    def _general_block(self, x: np.ndarray, a: int, b: int) -> np.ndarray:
        """General adapters of models ``a..b-1``: (r, d) -> (r, b - a), from a column block of the first layer."""
        h = self._g_b1.shape[1]
        hid = (x @ self._g_w1[:, a * h : b * h]).reshape(x.shape[0], b - a, h)
        hid += self._g_b1[a:b]
        np.maximum(hid, 0.0, out=hid)
        return np.einsum("rkh,kh->rk", hid, self._g_w2[a:b]) + self._g_b2[a:b]

    def _general_forward(self, emb: np.ndarray) -> np.ndarray:
        n = emb.shape[0]
        m = self._g_b1.shape[0]
        out = np.empty((n, m), dtype=np.float32)
        for start in range(0, n, _GENERAL_BLOCK):
            x = emb[start : start + _GENERAL_BLOCK]
            out[start : start + x.shape[0]] = self._general_block(x, 0, m)
        return out

    def predict_general(self, embeddings: Any) -> np.ndarray:
        """General adapters only: (n, d) embeddings -> (n, m) float32 predicted quality scores."""
        emb = self._check_embeddings(embeddings)
        with single_thread_blas(emb.shape[0]):
            return self._general_forward(emb)

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

    def _predict_one_fused(self, emb: np.ndarray, t: int) -> np.ndarray:
        """One prompt of task ``t`` with few candidates: every general adapter in one product, then the task's.

        Reads the candidates' general columns too (0.8 MB each at d = 384, hidden 512) but makes two products
        instead of one per run of non-candidates: fewer, larger numpy calls, which is what a cold cache after the
        encoder rewards (0.57 vs 0.70 ms measured for one candidate on dcrouter).
        """
        tw1 = self._t_w1
        d, h = tw1.shape[0], tw1.shape[2]
        m = self._g_b1.shape[0]
        lo, hi = int(self._task_offsets[t]), int(self._task_offsets[t + 1])
        hid = (emb @ self._g_w1).reshape(m, h)
        hid += self._g_b1
        np.maximum(hid, 0.0, out=hid)
        out = np.einsum("kh,kh->k", hid, self._g_w2) + self._g_b2
        hid_t = (emb @ tw1[:, lo:hi, :].reshape(d, (hi - lo) * h)).reshape(hi - lo, h)
        hid_t += self._t_b1[lo:hi]
        np.maximum(hid_t, 0.0, out=hid_t)
        out[self._slot_model[lo:hi]] = np.einsum("kh,kh->k", hid_t, self._t_w2[lo:hi]) + self._t_b2[lo:hi]
        return out[None, :]

    def _predict(self, emb: np.ndarray, labels: np.ndarray | None) -> np.ndarray:
        if labels is None or self.n_slots_ == 0:
            return self._general_forward(emb)
        tw1, tb1, tw2, tb2 = self._t_w1, self._t_b1, self._t_w2, self._t_b2
        d, h = tw1.shape[0], tw1.shape[2]
        if labels.shape[0] == 1:
            # The single-prompt fast path: general adapters for the non-candidate models only (the candidates'
            # columns come from the task adapters), so the weights read stay ~ m adapters, not m + k.
            t = int(labels[0])
            if t < 0 or self._task_sizes[t] == 0:
                return self._general_forward(emb)
            if self._task_sizes[t] <= _FEW_CANDIDATES:
                return self._predict_one_fused(emb, t)
            out = np.empty((1, self._g_b1.shape[0]), dtype=np.float32)
            for a, b in self._general_runs[t]:
                out[:, a:b] = self._general_block(emb, a, b)
            rows, tasks = _ONE_ROW, labels
        else:
            out = self._general_forward(emb)
            rows = np.flatnonzero(labels >= 0)
            rows = rows[self._task_sizes[labels[rows]] > 0]
            tasks = labels[rows]
        if rows.size == 0:
            return out
        if tasks.size == 1 or np.all(tasks == tasks[0]):
            # One task (e.g. a single prompt): its adapters are contiguous, one product over a strided view.
            lo, hi = int(self._task_offsets[tasks[0]]), int(self._task_offsets[tasks[0] + 1])
            hid = (emb[rows] @ tw1[:, lo:hi, :].reshape(d, (hi - lo) * h)).reshape(rows.size, hi - lo, h)
            hid += tb1[lo:hi]
            np.maximum(hid, 0.0, out=hid)
            pred = np.einsum("rkh,kh->rk", hid, tw2[lo:hi]) + tb2[lo:hi]  # (r, k)
            out[rows[:, None], self._slot_model[None, lo:hi]] = pred
            return out
        # Many tasks: group rows into (chunk of one task's rows, adapter) units and use batched products.
        # Chunk length ~ rows per task present (at most 64), so that padding stays small.
        chunk = int(min(64, max(1, math.ceil(rows.size / np.unique(tasks).size))))
        unit_rows, unit_slots = self._units(rows, labels, chunk, None)
        step = max(1, _UNIT_BLOCK_BYTES // (4 * d * h))
        for start in range(0, unit_slots.size, step):
            ur, us = unit_rows[start : start + step], unit_slots[start : start + step]
            valid = ur >= 0
            x = emb[np.maximum(ur, 0)]  # (U, c, d)
            hid = np.matmul(x, tw1[:, us, :].transpose(1, 0, 2))  # (U, c, h)
            hid += tb1[us][:, None, :]
            np.maximum(hid, 0.0, out=hid)
            pred = np.matmul(hid, tw2[us][:, :, None])[..., 0] + tb2[us][:, None]  # (U, c)
            cols = np.broadcast_to(self._slot_model[us][:, None], ur.shape)
            out[ur[valid], cols[valid]] = pred[valid]
        return out

    # ------------------------------------------------------------------ state
    def to_state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """``(config, arrays)``: a JSON-able dict and the weights (numpy), for JSON + safetensors artifacts."""
        check_is_fitted(self, ["is_fitted_"])
        g = self._general
        config = {
            "format": _STATE_FORMAT,
            "params": self.get_params(),
            "n_features_in": int(self.n_features_in_),
            "n_models": int(self.n_models_),
            "candidates": [list(map(int, c)) for c in self.candidates_],
            "n_epochs_general": int(self.n_epochs_general_),
            "n_epochs_task": int(self.n_epochs_task_),
            "dev_mse_general": self.dev_mse_general_,
            "tasks_specialised": int(self.tasks_specialised_),
            "fit_seconds": dict(getattr(self, "fit_seconds_", {})),
            "history_general": copy.deepcopy(self.history_general_),
            "history_task": copy.deepcopy(self.history_task_),
        }
        arrays = {
            "model_embeddings": g["model_embeddings"].copy(),
            "general_w1_prompt": np.ascontiguousarray(g["w1_prompt"].transpose(1, 0, 2)),  # (m, d, h)
            "general_w1_model": g["w1_model"].copy(),  # (m, model_dim, h)
            "general_b1": g["b1"].copy(),
            "general_w2": g["w2"].copy(),
            "general_b2": g["b2"].copy(),
            "task_w1_prompt": np.ascontiguousarray(self._t_w1.transpose(1, 0, 2)),  # (A, d, h)
            "task_b1": self._t_b1.copy(),  # (A, h): v_M W1_m + b1, folded
            "task_w2": self._t_w2.copy(),
            "task_b2": self._t_b2.copy(),
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
        names = [
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
        ]
        missing = [k for k in names if k not in arrays]
        if missing:
            raise ArtifactError(f"QualityEstimator state is missing arrays: {', '.join(missing)}.")
        try:
            obj = cls(**config["params"])
            d, m = int(config["n_features_in"]), int(config["n_models"])
            cands = cls._check_candidates(config["candidates"], m)
            a = {k: np.asarray(arrays[k], dtype=np.float32) for k in names}
        except (KeyError, TypeError, ValueError) as exc:
            raise ArtifactError(f"QualityEstimator state is malformed: {exc}") from exc
        n_slots = sum(len(c) for c in cands)
        h = a["general_w2"].shape[-1] if a["general_w2"].ndim == 2 else -1
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
        bad = [f"{k} {a[k].shape} (expected {v})" for k, v in expect.items() if a[k].shape != v]
        if a["model_embeddings"].ndim != 2 or a["model_embeddings"].shape[0] != m:
            bad.append(f"model_embeddings {a['model_embeddings'].shape}")
        elif a["general_w1_model"].shape != (m, a["model_embeddings"].shape[1], h):
            bad.append(f"general_w1_model {a['general_w1_model'].shape}")
        if bad:
            raise ArtifactError("QualityEstimator state arrays disagree with its config: " + "; ".join(bad) + ".")
        obj.n_features_in_ = d
        obj.n_models_ = m
        obj.n_tasks_ = len(cands)
        obj.candidates_ = cands
        obj._build_slots(cands, m)
        obj.n_epochs_general_ = int(config.get("n_epochs_general", 0))
        obj.n_epochs_task_ = int(config.get("n_epochs_task", 0))
        dm = config.get("dev_mse_general")
        obj.dev_mse_general_ = float("nan") if dm is None else float(dm)
        obj.tasks_specialised_ = int(config.get("tasks_specialised", 0))
        obj.fit_seconds_ = dict(config.get("fit_seconds") or {})
        obj.history_general_ = list(config.get("history_general") or [])
        obj.history_task_ = list(config.get("history_task") or [])
        general = {
            "model_embeddings": a["model_embeddings"],
            "w1_prompt": a["general_w1_prompt"].transpose(1, 0, 2),
            "w1_model": a["general_w1_model"],
            "b1": a["general_b1"],
            "w2": a["general_w2"],
            "b2": a["general_b2"],
        }
        task = {"w1": a["task_w1_prompt"], "b1": a["task_b1"], "w2": a["task_w2"], "b2": a["task_b2"]}
        obj._set_weights(general, task)
        return obj

    def __repr__(self) -> str:
        return (
            f"QualityEstimator(model_dim={self.model_dim!r}, hidden={self.hidden!r}, "
            f"epochs_general={self.epochs_general!r}, epochs_task={self.epochs_task!r})"
        )
