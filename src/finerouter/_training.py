"""Small helpers shared by the torch-trained components (task classifier, quality estimator, torch baselines).

torch is imported lazily, inside the functions that need it.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import math
import os
import threading
import time
from collections.abc import Iterator
from typing import Any, Literal

import numpy as np

from finerouter._validation import check_float, check_int
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


class GetParamsMixin:
    """``get_params`` read from the constructor's signature, as scikit-learn's ``BaseEstimator`` does.

    ``__init__`` must store each of its parameters, unchanged, under the parameter's own name. The names come
    from the signature, so a new parameter cannot be left out of ``get_params`` (nor of the saved configs
    built from it).
    """

    def get_params(self) -> dict[str, Any]:
        """The constructor parameters, as a dict (in the constructor's order)."""
        return {name: getattr(self, name) for name in _init_param_names(type(self))}


@functools.cache
def _init_param_names(cls: type) -> tuple[str, ...]:
    params = inspect.signature(cls.__init__).parameters.values()
    return tuple(
        p.name for p in params if p.name != "self" and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
    )


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
    """Check the optimisation hyper-parameters every trained component shares; ParameterError naming ``owner``.

    Checked in this order (the first bad one is reported): ``lr`` a float in (0, inf), ``batch_size`` an int
    >= 1, ``weight_decay`` a float in [0, inf), ``patience`` an int >= 1, ``dev_fraction`` a float in [0, 1)
    (``dev_closed="left"``: 0 trains without a dev set) or (0, 1) (``"neither"``), ``seed`` an int >= 0.
    """
    check_float(lr, "lr", owner, low=0.0, closed="neither")
    check_int(batch_size, "batch_size", owner, low=1)
    check_float(weight_decay, "weight_decay", owner, low=0.0)
    check_int(patience, "patience", owner, low=1)
    check_float(dev_fraction, "dev_fraction", owner, low=0.0, high=1.0, closed=dev_closed)
    check_int(seed, "seed", owner, low=0)


def check_device_name(device: Any, owner: str) -> None:
    """ParameterError unless ``device`` is a str; whether torch can use it is checked in fit (``resolve_device``)."""
    if not isinstance(device, str):
        raise ParameterError(f"The 'device' parameter of {owner} must be a str such as 'cpu'. Got {device!r}.")


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

    For small steps the cost of synchronising intra-op threads dominates, and on a busy machine a second
    thread makes tiny steps 10-30x slower; large steps keep torch's own setting.
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
    """``(get_num_threads, set_num_threads)`` for each BLAS library numpy loaded, found once via threadpoolctl.

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

    OpenBLAS splits even a (1, 384) x (384, 5632) product over its threads. With an idle core that halves
    the time (0.2 ms instead of 0.4 ms here); when every core is busy, waking the second thread costs
    milliseconds (28 ms median measured at load 12 on 2 cores). So the block limits BLAS to one thread only
    when :func:`cpus_busy` says so (limiting and restoring cost ~0.03 ms with a cold cache, calling the
    library's own setter). The setting is process-wide: nested and
    concurrent limiting blocks are reference-counted, the first one in lowers the thread count and the last
    one out restores it.

    ``rows``: the batch size; only batches of at most :data:`SMALL_BATCH` rows are limited.
    ``force=True`` limits regardless of the load: the router does so around routing a few prompts, because
    right after the (torch) encoder ran, its OpenMP workers still spin on the other core and a second BLAS
    thread then costs more than it saves (a (1, 384) x (384, 4608) product measured 2.1 ms on two threads
    vs 0.38 ms on one, right after encoding one prompt).
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
