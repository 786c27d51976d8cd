"""`RayEngine`: FineRouter's parallel work on a Ray cluster (``pip install finerouter[ray]``).

- :meth:`RayEngine.map_batches` is a Ray Data pipeline: the items are split into blocks, a pool of
  ``workers`` actors (each with ``num_cpus_per_worker`` CPUs and ``num_gpus_per_worker`` GPUs) builds the batch
  function once and applies it to batches of ``batch_size``; finished batches stream back to the driver as
  they come (the embedding cache writes them to disk at once, so a killed job resumes where it stopped).
- :meth:`RayEngine.run_tasks` runs one Ray task per item; the shared input is put in the object store once.
- :meth:`RayEngine.run_calls` sends each call to one of ``workers`` async call actors (no CPU reserved: they
  wait on I/O). Before a call starts, its actor takes a permit from a named limiter actor of the key
  (``finerouter-limit:<key>:<limit>`` in the ``namespace``, detached), created by the first job that needs it,
  so the limit per upstream holds across every task and every driver of the cluster that uses the namespace.

Ray is imported when the engine first connects, never at import. ``address``: ``"local"`` starts a cluster in
this process (``ray.init()``); ``"auto"`` joins the cluster named by ``RAY_ADDRESS`` (or the one running on this
machine); ``"HOST:PORT"`` or ``"ray://HOST:PORT"`` joins that one. A process already connected to Ray (a
test's cluster, a Ray job) is used as it is. Workers get ``HF_HUB_OFFLINE=1`` and ``TRANSFORMERS_OFFLINE=1``
(the job's runtime environment), so an encoder never reaches for the hub from a worker.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import socket
import threading
import time
from collections.abc import Awaitable, Callable, Hashable, Iterator, Sequence
from typing import Any, ClassVar

import numpy as np

from finerouter._validation import Constraint, Interval, NonEmptyString, NoneValue
from finerouter.engines.base import BatchFnFactory, Engine
from finerouter.errors import EngineError

logger = logging.getLogger(__name__)

INSTALL_HINT = "install finerouter[ray] (pip install 'finerouter[ray]')"
#: Environment every worker of a job started or joined here gets.
WORKER_ENV = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
_ADDRESS = re.compile(r"^(ray://)?(?P<host>[A-Za-z0-9_.\-]+|\[[0-9a-fA-F:]+\]):(?P<port>\d{1,5})$")
_CONNECT_TIMEOUT_S = 3.0
#: Settings a ``--ray`` value may carry after ``?`` (:meth:`RayEngine.from_spec`): name -> (parameter, type).
SPEC_OPTIONS: dict[str, tuple[str, type]] = {
    "workers": ("workers", int), "cpus": ("num_cpus_per_worker", float), "gpus": ("num_gpus_per_worker", float),
    "batch": ("batch_size", int), "shard_rows": ("knn_shard_rows", int),
}
#: a limiter permit not given back within this many seconds is taken back (its holder died).
LEASE_S = 900.0


def import_ray() -> Any:
    """The ``ray`` module; EngineError saying how to install it when it is missing."""
    try:
        import ray
        import ray.data
    except ImportError as exc:
        raise EngineError(f"Running on Ray needs Ray, which is not installed: {INSTALL_HINT}. ({exc})") from exc
    return ray


def runtime_env() -> dict[str, Any]:
    """The runtime environment of jobs started or joined by :class:`RayEngine` (offline Hugging Face)."""
    return {"env_vars": dict(WORKER_ENV)}


def check_address(address: str) -> None:
    """EngineError unless ``address`` is ``local``, ``auto`` or ``[ray://]HOST:PORT`` whose port answers."""
    if address in ("local", "auto"):
        return
    match = _ADDRESS.match(address)
    if match is None:
        raise EngineError(
            f"The Ray address must be 'local', 'auto', HOST:PORT or ray://HOST:PORT. Got {address!r}."
        )
    host, port = match["host"].strip("[]"), int(match["port"])
    try:
        with socket.create_connection((host, port), timeout=_CONNECT_TIMEOUT_S):
            pass
    except OSError as exc:
        raise EngineError(f"No Ray cluster answers at {address!r} ({exc}); start one with 'ray start --head'.") from exc


class RayEngine(Engine):
    """Run embedding, kNN shards, evaluation tasks and LLM calls on a Ray cluster (see the module docstring).

    Args:
        address: ``"local"`` (a cluster in this process), ``"auto"`` (the cluster of ``RAY_ADDRESS``),
            ``"HOST:PORT"`` or ``"ray://HOST:PORT"``.
        workers: embedding actors, and call actors (None: the cluster's CPUs divided by
            ``num_cpus_per_worker``, at least 1).
        num_cpus_per_worker: CPUs each embedding actor and each task reserves.
        num_gpus_per_worker: GPUs each embedding actor reserves (e.g. 1, or 0.5 to pack two per GPU).
        batch_size: texts per embedding batch.
        knn_shard_rows: rows per kNN database shard (None: never shard).
        num_cpus: CPUs of the cluster started with ``address="local"`` (None: all of this machine's).
        namespace: the Ray namespace of the named limiter actors (jobs sharing it share the limits).

    Attributes:
        distributed: True; work runs in other processes, so callers ship factories of their objects.
    """

    distributed: ClassVar[bool] = True

    _parameter_constraints: ClassVar[dict[str, list[Constraint]]] = {
        "address": [NonEmptyString()],
        "workers": [NoneValue(), Interval("int", 1, None)],
        "num_cpus_per_worker": [Interval("float", 0.0, None)],
        "num_gpus_per_worker": [Interval("float", 0.0, None)],
        "batch_size": [Interval("int", 1, None)],
        "knn_shard_rows": [NoneValue(), Interval("int", 2, None)],
        "num_cpus": [NoneValue(), Interval("int", 1, None)],
        "namespace": [NonEmptyString()],
    }

    def __init__(
        self,
        address: str = "local",
        workers: int | None = None,
        num_cpus_per_worker: float = 1.0,
        num_gpus_per_worker: float = 0.0,
        batch_size: int = 256,
        knn_shard_rows: int | None = 250_000,
        num_cpus: int | None = None,
        namespace: str = "finerouter",
    ) -> None:
        self.address = address
        self.workers = workers
        self.num_cpus_per_worker = num_cpus_per_worker
        self.num_gpus_per_worker = num_gpus_per_worker
        self.batch_size = batch_size
        self.knn_shard_rows = knn_shard_rows
        self.num_cpus = num_cpus
        self.namespace = namespace

    @classmethod
    def from_spec(cls, spec: str) -> RayEngine:
        """An engine from the CLI's ``--ray`` value: an address, optionally with settings after ``?``, e.g.
        ``"auto?workers=4&gpus=1&cpus=4&batch=512&shard_rows=500000"`` (:data:`SPEC_OPTIONS`)."""
        address, _, query = spec.partition("?")
        params: dict[str, Any] = {}
        for part in filter(None, query.split("&")):
            key, _, value = part.partition("=")
            if key not in SPEC_OPTIONS:
                raise EngineError(f"--ray {spec!r}: unknown setting {key!r}; the settings are {', '.join(SPEC_OPTIONS)}.")
            name, kind = SPEC_OPTIONS[key]
            try:
                params[name] = kind(value)
            except ValueError:
                raise EngineError(f"--ray {spec!r}: {key} must be a number. Got {value!r}.") from None
        engine = cls(address, **params)
        engine._validate_params()
        return engine

    # ------------------------------------------------------------------ connection
    def connect(self) -> Any:
        """The ``ray`` module, connected to this engine's cluster (connecting on first use)."""
        self._validate_params()
        ray = import_ray()
        if not getattr(self, "_checked", False):  # a bad address fails even when this process is connected
            check_address(self.address)
            self._checked = True
        if ray.is_initialized():
            return ray
        options: dict[str, Any] = {"runtime_env": runtime_env(), "namespace": self.namespace,
                                   "log_to_driver": False, "configure_logging": False}
        if self.address == "local":
            options.update(include_dashboard=False, num_cpus=self.num_cpus)
        elif self.address == "auto" and not os.environ.get("RAY_ADDRESS"):
            raise EngineError("--ray auto joins the cluster named by RAY_ADDRESS, which is not set; "
                              "set it (e.g. RAY_ADDRESS=HEAD_IP:6379) or pass the address itself.")
        try:
            ray.init(address=None if self.address == "local" else self.address, **options)
        except (ConnectionError, RuntimeError, ValueError, TimeoutError) as exc:
            raise EngineError(f"Could not connect to the Ray cluster at {self.address!r}: {exc}") from exc
        self._started = True
        logger.info("connected to Ray at %s: %s", self.address, ray.cluster_resources())
        return ray

    def close(self) -> None:
        """Shut down the Ray connection if this engine opened it."""
        if getattr(self, "_started", False):
            import ray

            ray.shutdown()
            self._started = False
        self._call_actors = None

    def n_workers(self) -> int:
        """``workers``, or the cluster's CPUs divided by ``num_cpus_per_worker`` (at least 1)."""
        if self.workers is not None:
            return int(self.workers)
        cpus = float(self.connect().cluster_resources().get("CPU", 1.0))
        return max(1, int(cpus // max(self.num_cpus_per_worker, 1e-9)))

    # ------------------------------------------------------------------ work
    def map_batches(
        self, make_fn: BatchFnFactory, items: Sequence[Any], *, batch_size: int | None = None
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Ray Data: blocks of items through a pool of actors applying ``make_fn()``; see :meth:`Engine.map_batches`."""
        ray = self.connect()
        import pyarrow as pa

        n = len(items)
        if n == 0:
            return
        size = int(batch_size or self.batch_size)
        workers = self.n_workers()
        block = max(size, min(4 * size, -(-n // workers)))  # a few batches per block, every actor busy
        tables = [pa.table({"i": np.arange(lo, min(n, lo + block)), "item": list(items[lo : lo + block])})
                  for lo in range(0, n, block)]
        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = False
        context.print_on_execution_start = False
        ds = ray.data.from_arrow(tables).map_batches(
            _BatchActor, fn_constructor_args=(make_fn,), batch_size=size, batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=workers), num_cpus=self.num_cpus_per_worker, num_gpus=self.num_gpus_per_worker or None,
        )
        for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
            yield np.asarray(batch["i"], dtype=np.int64), np.asarray(batch["out"])

    def run_tasks(self, fn: Callable[[Any, Any], Any], items: Sequence[Any], *, shared: Any = None) -> list[Any]:
        """One Ray task per item (``num_cpus_per_worker`` CPUs each); ``shared`` put in the object store once."""
        ray = self.connect()
        task = ray.remote(num_cpus=self.num_cpus_per_worker)(_run_task)
        shared_ref, fn_ref = ray.put(shared), ray.put(fn)
        return ray.get([task.remote(fn_ref, shared_ref, item) for item in items])

    def _start_call(self, fn: Callable[[Any], Awaitable[Any]], item: Any, key: Hashable, limit: int) -> Awaitable[Any]:
        actors = self._workers_for_calls()
        self._next_actor = (getattr(self, "_next_actor", -1) + 1) % len(actors)
        ref = actors[self._next_actor].call.remote(fn, item, self.limiter(key, limit))
        return asyncio.wrap_future(ref.future())

    def _workers_for_calls(self) -> list[Any]:
        with self.__dict__.setdefault("_lock", threading.Lock()):  # threads sharing this engine share its actors
            actors = getattr(self, "_call_actors", None)
            if not actors:
                ray = self.connect()
                remote = ray.remote(num_cpus=0, max_concurrency=1000)(_CallActor)
                actors = self._call_actors = [remote.remote() for _ in range(self.n_workers())]
            return actors

    def limiter(self, key: Hashable, limit: int) -> Any:
        """The cluster-wide limiter actor of ``key`` with ``limit`` permits (named ``finerouter-limit:<key>:<limit>``
        in the namespace, detached): every job and driver asking the same limit for the same key shares it."""
        ray = self.connect()
        cache = self.__dict__.setdefault("_limiters", {})
        with self.__dict__.setdefault("_lock", threading.Lock()):
            return cache[key] if key in cache else self._new_limiter(ray, cache, key, limit)

    def _new_limiter(self, ray: Any, cache: dict[Hashable, Any], key: Hashable, limit: int) -> Any:
        # detached: it outlives the job that created it, so jobs that start and end at any time share it
        remote = ray.remote(num_cpus=0, max_concurrency=10_000)(_Limiter)
        actor = remote.options(name=f"finerouter-limit:{key}:{int(limit)}", namespace=self.namespace,
                               get_if_exists=True, lifetime="detached").remote(int(limit))
        cache[key] = actor
        return actor

    def __getstate__(self) -> dict[str, Any]:  # actor handles and connection state stay with the driver
        return {k: v for k, v in self.__dict__.items() if not k.startswith("_")}


class _BatchActor:
    """A Ray Data actor: builds the batch function once, then maps numpy batches ``{"i", "item"}``."""

    def __init__(self, make_fn: BatchFnFactory) -> None:
        self.fn = make_fn()

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        out = np.asarray(self.fn([str(t) if isinstance(t, np.str_) else t for t in batch["item"]]))
        return {"i": batch["i"], "out": out}


def _run_task(fn: Callable[[Any, Any], Any], shared: Any, item: Any) -> Any:
    return fn(shared, item)


class _CallActor:
    """An async actor running calls, each under its key's cluster-wide limiter."""

    async def call(self, fn: Callable[[Any], Awaitable[Any]], item: Any, limiter: Any) -> Any:
        token = await limiter.acquire.remote()
        try:
            return await fn(item)
        finally:
            await limiter.release.remote(token)


class _Limiter:
    """A named async actor lending ``limit`` permits (a semaphore shared by every task and driver of the cluster).

    A permit not given back within ``lease_s`` seconds (its caller died with it) is taken back, so a crashed job
    cannot lower the limit for good.
    """

    def __init__(self, limit: int, lease_s: float = LEASE_S) -> None:
        self.limit = limit
        self.lease_s = lease_s
        self.held: dict[int, float] = {}
        self._next = 0
        self._condition: asyncio.Condition | None = None

    def _cond(self) -> asyncio.Condition:
        if self._condition is None:  # created inside the actor's event loop
            self._condition = asyncio.Condition()
        return self._condition

    async def acquire(self) -> int:
        cond = self._cond()
        async with cond:
            while True:
                now = time.monotonic()
                for token in [t for t, since in self.held.items() if now - since > self.lease_s]:
                    logger.warning("a permit of the limit %d was not given back in %.0f s; taken back", self.limit,
                                   self.lease_s)
                    del self.held[token]
                if len(self.held) < self.limit:
                    break
                oldest = min(self.held.values())
                try:
                    await asyncio.wait_for(cond.wait(), timeout=max(0.01, oldest + self.lease_s - now))
                except TimeoutError:
                    pass
            self._next += 1
            self.held[self._next] = time.monotonic()
            return self._next

    async def release(self, token: int) -> None:
        cond = self._cond()
        async with cond:
            self.held.pop(token, None)
            cond.notify()

    async def get_limit(self) -> int:
        return self.limit


__all__ = ["INSTALL_HINT", "WORKER_ENV", "RayEngine", "check_address", "import_ray", "runtime_env"]
