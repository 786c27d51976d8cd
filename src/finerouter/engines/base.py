"""The engine contract: where FineRouter's parallel work runs, and :class:`LocalEngine`, this process.

An engine does three kinds of work, each a small method, so the library's steps stay written once and only
where they run changes:

- :meth:`Engine.map_batches`: apply a function, built once per worker, to batches of items (embedding);
  results are yielded as batches finish, so the caller can stream them to disk (the embedding cache).
- :meth:`Engine.run_tasks`: run independent tasks over one shared read-only input (kNN shards, evaluation
  seeds x routers); results in input order.
- :meth:`Engine.run_calls`: run I/O calls (LLM requests) with at most ``limit`` in flight per key (an
  upstream), yielding results as they complete; ``admit`` is asked before each call is sent (a spend cap).

:meth:`Engine.knn_search` builds on :meth:`Engine.run_tasks`: the kNN search of task discovery, split into
database shards when the engine's ``knn_shard_rows`` asks for it (:mod:`finerouter.engines.knn`).

:class:`LocalEngine` runs everything in this process, in order: it is today's single-process behaviour, and
what a router uses when no engine is given and after :meth:`FineRouter.load`. An engine is never part of a
saved artifact. :class:`finerouter.engines.ray_engine.RayEngine` runs the same work on a Ray cluster.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Hashable,
    Iterator,
    Sequence,
)
from typing import Any, ClassVar

import numpy as np

from finerouter._validation import Constraint, Interval, NoneValue
from finerouter.base import Component

#: ``make_fn()`` builds, once per worker, the function applied to each batch: ``fn(list of items) -> (b, ...)``.
BatchFnFactory = Callable[[], Callable[[list[Any]], Any]]


class Engine(Component):
    """Base class of the execution engines (see the module docstring).

    Subclasses implement :meth:`map_batches`, :meth:`run_tasks` and :meth:`_start_call`; the queueing of
    :meth:`run_calls` and the sharding of :meth:`knn_search` are shared.

    Attributes:
        distributed: whether work leaves this process (then callers ship factories, not live objects).
    """

    distributed: ClassVar[bool] = False
    #: rows per kNN database shard (None: never shard); a constructor parameter of the subclasses.
    knn_shard_rows: int | None = None

    def map_batches(
        self, make_fn: BatchFnFactory, items: Sequence[Any], *, batch_size: int
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Apply ``make_fn()`` to ``items`` in batches of at most ``batch_size``; yield ``(indices, outputs)``
        per finished batch: ``indices (b,)`` positions in ``items``, ``outputs (b, ...)`` row per item. Batches
        may finish in any order; every item is in exactly one batch."""
        raise NotImplementedError

    def run_tasks(self, fn: Callable[[Any, Any], Any], items: Sequence[Any], *, shared: Any = None) -> list[Any]:
        """``[fn(shared, item) for item in items]``, the tasks run independently; ``shared`` is read-only input
        sent once (not once per task)."""
        raise NotImplementedError

    def _start_call(self, fn: Callable[[Any], Awaitable[Any]], item: Any, key: Hashable, limit: int) -> Awaitable[Any]:
        """Start one call ``fn(item)`` (the engine also honours ``limit`` for ``key`` where it is shared)."""
        raise NotImplementedError

    async def run_calls(
        self,
        fn: Callable[[Any], Awaitable[Any]],
        items: Sequence[Any],
        *,
        key: Callable[[Any], Hashable],
        limit: int,
        admit: Callable[[Any], bool] | None = None,
    ) -> AsyncIterator[tuple[int, Any]]:
        """Run ``await fn(item)`` for every item, at most ``limit`` in flight per ``key(item)``; yield
        ``(index, result)`` as calls complete.

        Items of one key are sent in input order. ``admit(item)``, asked right before an item is sent, may
        return False: then nothing more is sent, and the calls in flight complete and are yielded (a spend
        cap). An exception raised by ``fn`` propagates (``fn`` returns failures it wants recorded).
        """
        queues: dict[Hashable, deque[int]] = {}
        for i, item in enumerate(items):
            queues.setdefault(key(item), deque()).append(i)
        in_flight: dict[asyncio.Future[Any], tuple[int, Hashable]] = {}
        busy = {k: 0 for k in queues}
        stopped = False
        while True:
            for k, queue in queues.items():
                while not stopped and queue and busy[k] < limit:
                    i = queue[0]
                    if admit is not None and not admit(items[i]):
                        stopped = True
                        break
                    queue.popleft()
                    in_flight[asyncio.ensure_future(self._start_call(fn, items[i], k, limit))] = (i, k)
                    busy[k] += 1
            if not in_flight:
                return
            done, _ = await asyncio.wait(in_flight, return_when=asyncio.FIRST_COMPLETED)
            for future in done:
                i, k = in_flight.pop(future)
                busy[k] -= 1
                yield i, future.result()

    def knn_search(self, x: np.ndarray, k: int, *, method: str, seed: int) -> tuple[np.ndarray, np.ndarray]:
        """:func:`finerouter.discovery.graph.knn_search` of ``x: (n, d)``, in ``ceil(n / knn_shard_rows)``
        database shards run as :meth:`run_tasks` and merged (exact per-shard search gives the unsharded
        result; :func:`finerouter.engines.knn.sharded_knn_search`); unsharded below two shards."""
        from finerouter.discovery.graph import knn_search
        from finerouter.engines.knn import n_shards, sharded_knn_search

        shards = n_shards(x.shape[0], self.knn_shard_rows)
        if shards <= 1:
            return knn_search(x, k, method=method, seed=seed)
        return sharded_knn_search(x, k, method=method, seed=seed, n_shards=shards, run=self.run_tasks)

    def close(self) -> None:
        """Release what the engine started (nothing for the local engine)."""


class LocalEngine(Engine):
    """Everything in this process, in order: FineRouter's single-process behaviour (the default).

    Args:
        knn_shard_rows: split discovery's kNN search into database shards of this many rows, searched one
            after the other and merged (bounds the search's working memory; exact search gives the same
            neighbours). None (default): one search, as without an engine.
    """

    _parameter_constraints: ClassVar[dict[str, list[Constraint]]] = {
        "knn_shard_rows": [NoneValue(), Interval("int", 2, None)],
    }

    def __init__(self, knn_shard_rows: int | None = None) -> None:
        self.knn_shard_rows = knn_shard_rows

    def map_batches(
        self, make_fn: BatchFnFactory, items: Sequence[Any], *, batch_size: int
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        fn = make_fn()
        for lo in range(0, len(items), batch_size):
            batch = list(items[lo : lo + batch_size])
            yield np.arange(lo, lo + len(batch)), np.asarray(fn(batch))

    def run_tasks(self, fn: Callable[[Any, Any], Any], items: Sequence[Any], *, shared: Any = None) -> list[Any]:
        return [fn(shared, item) for item in items]

    def _start_call(self, fn: Callable[[Any], Awaitable[Any]], item: Any, key: Hashable, limit: int) -> Awaitable[Any]:
        return fn(item)


def resolve_engine(engine: Any) -> Engine:
    """The engine a parameter stands for: None -> a :class:`LocalEngine`; an :class:`Engine` as given; a string
    -> a :class:`~finerouter.engines.ray_engine.RayEngine` at that address (``"local"``, ``"auto"``,
    ``"HOST:PORT"``, ``"ray://HOST:PORT"``, settings after ``?``: :meth:`RayEngine.from_spec`)."""
    if engine is None:
        return LocalEngine()
    if isinstance(engine, Engine):
        return engine
    if isinstance(engine, str):
        from finerouter.engines.ray_engine import RayEngine

        return RayEngine.from_spec(engine)
    from finerouter.errors import ParameterError

    raise ParameterError(f"An engine must be None, an Engine or a Ray address string. Got {type(engine).__name__}.")


__all__ = ["BatchFnFactory", "Engine", "LocalEngine", "resolve_engine"]
