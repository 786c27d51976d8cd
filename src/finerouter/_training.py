"""Small helpers shared by the torch-trained components (task classifier, quality estimator, torch baselines):
the parameter constraints they share, seed resolution, :class:`EarlyStopping`, input checks, the dev split and
thread control for training and inference.

torch is imported lazily, inside the functions that need it.
"""

from __future__ import annotations

import contextlib
import math
import os
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, Literal

import numpy as np

from finerouter._validation import Constraint, InstanceOf, Interval, NoneValue, validate_parameter_constraints
from finerouter.errors import DataError, ParameterError


def import_torch() -> Any:
    """Import torch or raise a clear error naming the missing dependency."""
    try:
        import torch
    except ImportError as exc:  # pragma: no cover - torch is a hard dependency
        raise ImportError("FineRouter's trainable components need torch: pip install torch") from exc
    return torch


def resolve_device(device: str, owner: str) -> Any:
    """A ``torch.device`` for ``device`` ("cpu", "cuda", "cuda:1", "mps"...); errors if it is not available."""
    torch = import_torch()
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ParameterError(
            f"The 'device' parameter of {owner} must be a torch device string such as 'cpu' or 'cuda'. Got {device!r}."
        ) from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ParameterError(f"The 'device' parameter of {owner} is {device!r} but CUDA is not available here.")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise ParameterError(f"The 'device' parameter of {owner} is {device!r} but MPS is not available here.")
    return dev


# ---------------------------------------------------------------------------------------------------------------
# Parameters every trained component shares.

#: Constraints of the optimisation parameters of the task classifier and the quality estimator (both can train
#: without a dev set, and take ``seed=None``: see :func:`resolved_seed`). ``device`` is only checked to be a
#: str here; whether torch can use it is checked in ``fit`` (:func:`resolve_device`).
TRAINING_PARAMETER_CONSTRAINTS: dict[str, list[Constraint]] = {
    "lr": [Interval("float", 0.0, None, closed="neither")],
    "batch_size": [Interval("int", 1, None)],
    "weight_decay": [Interval("float", 0.0, None, closed="left")],
    "patience": [Interval("int", 1, None)],
    "dev_fraction": [Interval("float", 0.0, 1.0, closed="left")],
    "seed": [Interval("int", 0, None), NoneValue()],
    "device": [InstanceOf(str, description="a str such as 'cpu'")],
}


def resolved_seed(seed: int | None) -> int:
    """The seed a component trains with: ``seed``, or 0 for ``None`` (inside FineRouter, the router passes its
    own seed). ``seed=None`` and ``seed=0`` therefore give the same fit, bit for bit."""
    return 0 if seed is None else int(seed)


def check_training_params(
    owner: str,
    *,
    lr: Any,
    batch_size: Any,
    weight_decay: Any,
    patience: Any,
    dev_fraction: Any,
    seed: Any,
    dev_closed: Literal["left", "neither"],
) -> None:
    """Check the optimisation hyper-parameters of a trained component that does not declare
    ``_parameter_constraints`` (the torch baselines); ParameterError naming ``owner``.

    Checked in this order (the first bad one is reported): ``lr`` a float in (0, inf), ``batch_size`` an int
    >= 1, ``weight_decay`` a float in [0, inf), ``patience`` an int >= 1, ``dev_fraction`` a float in [0, 1)
    (``dev_closed="left"``: 0 trains without a dev set) or (0, 1) (``"neither"``), ``seed`` an int >= 0.
    """
    constraints = {
        **TRAINING_PARAMETER_CONSTRAINTS,
        "dev_fraction": [Interval("float", 0.0, 1.0, closed=dev_closed)],
        "seed": [Interval("int", 0, None)],
    }
    params = {
        "lr": lr, "batch_size": batch_size, "weight_decay": weight_decay, "patience": patience,
        "dev_fraction": dev_fraction, "seed": seed,
    }  # fmt: skip
    validate_parameter_constraints(constraints, params, owner)


# ---------------------------------------------------------------------------------------------------------------
# Early stopping: the one patience rule of every training loop.


class EarlyStopping:
    """Stop a training loop once the monitored value stops improving; remember the best epoch and its state.

    One object per training run. The loop calls :meth:`start` with the state before training (epoch 0), then
    :meth:`update` after every epoch, and stops when it returns True; :meth:`restore` hands the best state
    back. An epoch improves when its value beats the best so far by more than ``min_delta`` (``mode="min"``:
    ``value < best - min_delta``; ``"max"``: ``value > best + min_delta``); NaN never improves. After
    ``patience`` epochs in a row without improvement, :meth:`update` returns True.

    ``value=None`` means there is nothing to monitor (no dev set): the epoch counts as the best (its state is
    kept: the last epoch wins) and training never stops early.

    ``value`` may also be an array of per-group values (e.g. one dev loss per task): each group improves on its
    own (:attr:`improved` is then a boolean mask and :attr:`best_epoch` an int array, 0 = never improved), and
    the patience counts epochs in which no group improved. The stopper keeps no state then
    (``restore_best=False``): the caller copies the improved groups' weights, reading :attr:`improved`.

    Args:
        patience: epochs without improvement before stopping (>= 1).
        monitor: the name of the monitored value, for logs.
        mode: ``"min"`` (a loss) or ``"max"`` (a score).
        min_delta: the margin an epoch must beat the best value by to count as an improvement.
        restore_best: keep the best epoch's state (from ``state_getter``) for :meth:`restore`.

    Attributes:
        best_value: the best value so far (``inf`` for ``"min"``, ``-inf`` for ``"max"`` before any).
        best_epoch: the epoch of ``best_value`` (0 = the state passed to :meth:`start`).
        best_state: what ``state_getter`` returned at ``best_epoch`` (None before any, or without
            ``restore_best``).
        improved: whether the last :meth:`update` improved (a mask for array values).
        epochs_without_improvement: the current run of epochs that did not improve.
    """

    def __init__(
        self,
        patience: int,
        *,
        monitor: str = "dev_loss",
        mode: Literal["min", "max"] = "min",
        min_delta: float = 0.0,
        restore_best: bool = True,
    ) -> None:
        if isinstance(patience, bool) or not isinstance(patience, int) or patience < 1:
            raise ParameterError(
                f"The 'patience' parameter of EarlyStopping must be an int in [1, inf). Got {patience!r}."
            )
        if mode not in ("min", "max"):
            raise ParameterError(
                f"The 'mode' parameter of EarlyStopping must be one of {{'min', 'max'}}. Got {mode!r}."
            )
        if not isinstance(min_delta, (int, float)) or isinstance(min_delta, bool) or not min_delta >= 0:
            raise ParameterError(
                f"The 'min_delta' parameter of EarlyStopping must be a float in [0, inf). Got {min_delta!r}."
            )
        self.patience = patience
        self.monitor = monitor
        self.mode = mode
        self.min_delta = float(min_delta)
        self.restore_best = restore_best
        self.best_value: Any = math.inf if mode == "min" else -math.inf
        self.best_epoch: Any = 0
        self.best_state: Any = None
        self.improved: Any = False
        self.epochs_without_improvement = 0

    def __repr__(self) -> str:
        return (
            f"EarlyStopping(monitor={self.monitor!r}, patience={self.patience}, mode={self.mode!r}, "
            f"min_delta={self.min_delta!r}, restore_best={self.restore_best})"
        )

    def start(self, value: Any = None, state_getter: Callable[[], Any] | None = None) -> None:
        """Take the state before training as the best so far (epoch 0), with its monitored ``value``
        (None: not evaluated, every later value that is not NaN improves on it)."""
        if value is not None:
            self.best_value = np.asarray(value, dtype=np.float64).copy() if np.ndim(value) else float(value)
            if np.ndim(value):
                self.best_epoch = np.zeros(np.shape(value), dtype=np.int64)
        self._keep_state(state_getter)
        self.epochs_without_improvement = 0

    def update(self, epoch: int, value: Any, state_getter: Callable[[], Any] | None = None) -> bool:
        """Record ``epoch``'s monitored ``value``; True when training should stop.

        ``state_getter`` is called (only) when the epoch improves and ``restore_best`` is set; it must return a
        copy of the state, not a view the next epoch will change.
        """
        if value is None:  # nothing to monitor: the latest epoch is the best one, never stop early
            self.improved = True
            self.best_epoch = epoch
            self._keep_state(state_getter)
            self.epochs_without_improvement = 0
            return False
        if np.ndim(value):
            current = np.asarray(value, dtype=np.float64)
            if self.mode == "min":
                improved = current < self.best_value - self.min_delta
            else:
                improved = current > self.best_value + self.min_delta
            self.best_value = np.where(improved, current, self.best_value)
            self.best_epoch = np.where(improved, epoch, self.best_epoch).astype(np.int64)
            self.improved = improved
            any_improved = bool(improved.any())
        else:
            current = float(value)
            if self.mode == "min":
                any_improved = current < self.best_value - self.min_delta
            else:
                any_improved = current > self.best_value + self.min_delta
            self.improved = any_improved
            if any_improved:
                self.best_value = current
                self.best_epoch = epoch
                self._keep_state(state_getter)
        if any_improved:
            self.epochs_without_improvement = 0
            return False
        self.epochs_without_improvement += 1
        return self.epochs_without_improvement >= self.patience

    def restore(self, load_state: Callable[[Any], Any]) -> None:
        """Hand the best state to ``load_state`` (e.g. ``module.load_state_dict``); nothing if none was kept."""
        if self.best_state is not None:
            load_state(self.best_state)

    def _keep_state(self, state_getter: Callable[[], Any] | None) -> None:
        if self.restore_best and state_getter is not None:
            self.best_state = state_getter()


def check_matrix(
    x: Any, name: str, *, rows: int | None = None, cols: int | None = None, allow_nan: bool = False
) -> np.ndarray:
    """``x`` as a C-contiguous float32 2-D array; DataError naming ``name`` if its shape or values are wrong."""
    try:
        arr = np.asarray(x, dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise DataError(f"'{name}' must be a numeric 2-D array: {exc}") from exc
    if arr.ndim != 2:
        raise DataError(f"'{name}' must be a 2-D array; got shape {arr.shape}.")
    if rows is not None and arr.shape[0] != rows:
        raise DataError(f"'{name}' must have {rows} rows; got shape {arr.shape}.")
    if cols is not None and arr.shape[1] != cols:
        raise DataError(f"'{name}' must have {cols} columns; got shape {arr.shape}.")
    bad = np.isinf(arr) if allow_nan else ~np.isfinite(arr)
    if bad.any():
        r, c = np.argwhere(bad)[0]
        what = "infinite" if allow_nan else "non-finite"
        raise DataError(f"'{name}' has a {what} value at row {r}, column {c}.")
    return np.ascontiguousarray(arr)


def check_labels(labels: Any, n: int, n_tasks: int, name: str = "labels") -> np.ndarray:
    """``labels`` as int64 ``(n,)`` with values in ``[-1, n_tasks - 1]`` (-1 = Others); DataError otherwise."""
    arr = np.asarray(labels)
    if arr.ndim != 1 or arr.shape[0] != n:
        raise DataError(f"'{name}' must be a 1-D array of {n} task ids; got shape {arr.shape}.")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        if not np.issubdtype(arr.dtype, np.floating) or not np.all(np.isfinite(arr)) or np.any(arr != np.round(arr)):
            raise DataError(f"'{name}' must hold integer task ids (-1 = Others); got dtype {arr.dtype}.")
    arr = arr.astype(np.int64)
    bad = (arr < -1) | (arr >= n_tasks)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise DataError(f"'{name}' must hold task ids in [-1, {n_tasks - 1}] (-1 = Others); row {i} has {int(arr[i])}.")
    return arr


def stratified_dev_split(labels: np.ndarray, dev_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Split row indices into (train, dev), stratified by ``labels`` (n,).

    Every group of at least two rows gives ``max(1, round(dev_fraction * size))`` rows to dev (at most
    ``size - 1``), so each task keeps training rows and, where it can, has dev rows for early stopping.
    ``dev_fraction == 0`` gives an empty dev set. Vectorised: no Python loop over groups.
    """
    n = labels.shape[0]
    idx = np.arange(n)
    if dev_fraction <= 0 or n < 2:
        return idx, idx[:0]
    rng = np.random.default_rng(seed)
    key = rng.random(n)
    order = np.lexsort((key, labels))  # grouped by label, random order inside a group
    sorted_labels = labels[order]
    starts = np.flatnonzero(np.r_[True, sorted_labels[1:] != sorted_labels[:-1]])
    sizes = np.diff(np.r_[starts, n])
    rank = np.arange(n) - np.repeat(starts, sizes)
    n_dev = np.where(sizes >= 2, np.clip(np.round(dev_fraction * sizes), 1, sizes - 1), 0).astype(np.int64)
    is_dev = rank < np.repeat(n_dev, sizes)
    dev = np.sort(order[is_dev])
    train = np.sort(order[~is_dev])
    return train, dev


def json_safe(obj: Any) -> Any:
    """Replace non-finite floats by None so that strict JSON (allow_nan=False) can hold the config."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    return obj


@contextlib.contextmanager
def torch_threads_for(macs_per_step: float) -> Iterator[None]:
    """Run small trainings on one torch thread, restoring the thread count afterwards.

    For small steps (fewer than ``_SMALL_STEP_MACS`` multiply-adds) the cost of synchronising intra-op threads
    dominates, the more so on a busy machine; large steps keep torch's own setting.
    """
    torch = import_torch()
    before = torch.get_num_threads()
    small = macs_per_step < _SMALL_STEP_MACS
    if small and before != 1:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        if small and before != 1:
            torch.set_num_threads(before)


_SMALL_STEP_MACS = 2e7


SMALL_BATCH = 32  # up to this many prompts, inference runs numpy's BLAS on one thread (see single_thread_blas)
_BLAS_LOCK = threading.Lock()
_BLAS_STATE: dict[str, Any] = {"libs": None, "depth": 0, "saved": None}


def _blas_thread_functions() -> list[tuple[Any, Any]]:
    """``(get_num_threads, set_num_threads)`` for each BLAS library loaded at the first call, found once via
    threadpoolctl: numpy's always (inference multiplies with it); one loaded later (scipy's own) is left alone.

    Where threadpoolctl exposes the library's own C functions (OpenBLAS), those are called directly: its public
    setter re-resolves the symbol and checks a controlling thread on every call, which cost more than the
    product being limited (we serialise with our own lock and reference count instead).
    """
    if _BLAS_STATE["libs"] is None:
        libs: list[tuple[Any, Any]] = []
        try:
            from threadpoolctl import ThreadpoolController

            for lib in ThreadpoolController().select(user_api="blas").lib_controllers:
                get, put = lib.get_num_threads, lib.set_num_threads
                symbol = getattr(lib, "_get_symbol", None)
                if lib.internal_api == "openblas" and symbol is not None and lib.threading_layer != "openmp":
                    raw_get, raw_set = symbol("openblas_get_num_threads"), symbol("openblas_set_num_threads")
                    if raw_get is not None and raw_set is not None:
                        get, put = raw_get, raw_set
                libs.append((get, put))
        except Exception:  # pragma: no cover - threadpoolctl missing or an unsupported BLAS
            libs = []
        _BLAS_STATE["libs"] = libs
    return _BLAS_STATE["libs"]


def cpus_busy() -> bool:
    """Whether this process's CPUs have no idle core: 1-minute load average > usable CPUs - 1.

    Read at most every 0.5 s (``os.getloadavg`` costs a few microseconds); ``True`` where it is unavailable.
    """
    now = time.monotonic()
    if now - _LOAD_STATE["checked"] > 0.5:
        try:
            load = os.getloadavg()[0]
        except (AttributeError, OSError):  # pragma: no cover - not on every platform
            load = math.inf
        n_cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        _LOAD_STATE["busy"] = load > n_cpus - 1
        _LOAD_STATE["checked"] = now
    return bool(_LOAD_STATE["busy"])


_LOAD_STATE: dict[str, Any] = {"checked": -math.inf, "busy": True}


class single_thread_blas:  # noqa: N801 - used like a function: ``with single_thread_blas():``
    """Run numpy's BLAS on one thread inside the block when the CPUs are busy (single-prompt inference).

    OpenBLAS splits even a (1, d) x (d, m * hidden) product over its threads. With an idle core that is faster;
    when every core is busy, waking a second thread costs more than the product itself. So the block limits
    BLAS to one thread only when :func:`cpus_busy` says so (limiting and restoring call the library's own
    setter, which is cheap). The setting is process-wide: nested and concurrent limiting blocks are
    reference-counted, the first one in lowers the thread count and the last one out restores it.

    ``rows``: the batch size; only batches of at most :data:`SMALL_BATCH` rows are limited.
    ``force=True`` limits regardless of the load: the router does so around routing a few prompts, because
    right after the (torch) encoder ran, its OpenMP workers still spin on the other cores and a second BLAS
    thread then costs more than it saves.
    """

    __slots__ = ("active",)

    def __init__(self, rows: int = 1, force: bool = False) -> None:
        # Only small batches: a large product keeps every BLAS thread (it splits well over them).
        self.active = rows <= SMALL_BATCH and (force or cpus_busy())

    def __enter__(self) -> None:
        if not self.active:
            return
        with _BLAS_LOCK:
            if _BLAS_STATE["depth"] == 0:
                # Only libraries running more than one thread need (and get) a change.
                saved = [(put, n) for get, put in _blas_thread_functions() if (n := get()) != 1]
                for put, _ in saved:
                    put(1)
                _BLAS_STATE["saved"] = saved
            _BLAS_STATE["depth"] += 1

    def __exit__(self, *exc: object) -> None:
        if not self.active:
            return
        with _BLAS_LOCK:
            _BLAS_STATE["depth"] -= 1
            if _BLAS_STATE["depth"] == 0:
                for put, n in _BLAS_STATE["saved"] or []:
                    put(n)
                _BLAS_STATE["saved"] = None
