"""Routing off the event loop, with concurrent prompts batched into one encoder pass.

Routing is CPU-bound (the encoder's forward pass), so it runs in worker threads and the event loop keeps
answering. Requests that arrive while a batch is being routed wait in a queue; the next free worker takes
everything queued (up to ``max_batch``) and routes it with one ``router.route(list_of_prompts, ...)`` call,
grouped by identical routing options. Under load this amortises the encoder's per-call cost over many
prompts; when idle a prompt is routed at once, alone, with no waiting window.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from finerouter.routing.decision import RoutingDecision

if TYPE_CHECKING:
    from finerouter.serving.budget import BudgetWindows

logger = logging.getLogger(__name__)


@runtime_checkable
class RouterLike(Protocol):
    """What the gateway needs of a router (``FineRouter`` satisfies it).

    ``models_`` names every model the router can choose; ``route`` takes a prompt or a list of prompts and
    returns a :class:`RoutingDecision` or a list of them. Requests with ``cost_weight`` or a budget also pass
    ``cost_weight=`` (or ``budget_per_1k=``), as ``FineRouter.route`` takes them; other requests never do.
    """

    models_: list[str]

    def route(
        self,
        prompt: str | list[str],
        tolerance: float = 0.0,
        allowed_models: Sequence[str] | None = None,
        max_cost: float | None = None,
    ) -> RoutingDecision | list[RoutingDecision]: ...


@dataclass(frozen=True)
class RouteOptions:
    """Per-request routing constraints (hashable, so equal options share a batch).

    ``cost_weight``: lambda for the cost-aware rule. ``budget_per_1k``: USD per 1,000 requests, met over the
    sliding window of the budget stream ``(budget_key, budget_per_1k)`` when the batcher has budget windows
    (:mod:`finerouter.serving.budget`), else over each routed batch. At most one of the two is set.
    """

    tolerance: float = 0.0
    allowed_models: tuple[str, ...] | None = None
    max_cost: float | None = None
    cost_weight: float | None = None
    budget_per_1k: float | None = None
    budget_key: str = "anonymous"

    def kwargs(self) -> dict[str, Any]:
        """The router's keyword arguments (``cost_weight``/``budget_per_1k`` only when set)."""
        kw: dict[str, Any] = {
            "tolerance": self.tolerance,
            "allowed_models": None if self.allowed_models is None else list(self.allowed_models),
            "max_cost": self.max_cost,
        }
        if self.cost_weight is not None:
            kw["cost_weight"] = self.cost_weight
        if self.budget_per_1k is not None:
            kw["budget_per_1k"] = self.budget_per_1k
        return kw


@dataclass
class _Pending:
    prompt: str
    options: RouteOptions
    future: asyncio.Future[RoutingDecision]
    queued_at: float = field(default_factory=time.perf_counter)


class RouteBatcher:
    """Routes prompts in worker threads, batching those that queue up.

    Args:
        router: any :class:`RouterLike`.
        max_batch: the most prompts per ``route`` call.
        workers: ``route`` calls that may run at once, each in its own dedicated thread (1 is right for a
            torch encoder, which already uses every core for one batch).
        thread_nice: on Linux, added to the routing threads' nice value (0: unchanged; e.g. 10 lets the
            event loop win the CPU when both compete, at some cost in routing throughput on a busy machine).
        switch_interval_s: while started, the interpreter's GIL switch interval (``sys.setswitchinterval``;
            restored by :meth:`stop`). The routing threads run Python between the encoder's native calls; the
            event loop, asking for the GIL meanwhile, waits up to this long (Python's default switch interval) at each
            step of every request it serves. None: leave it as it is.
        budgets: the gateway's budget windows; a batch whose options carry ``budget_per_1k`` is routed with the
            lambda its stream's window gives, and recorded in that window. None: such a batch is routed with
            ``budget_per_1k`` on itself.
    """

    def __init__(
        self,
        router: RouterLike,
        *,
        max_batch: int = 32,
        workers: int = 1,
        thread_nice: int = 0,
        switch_interval_s: float | None = None,
        budgets: BudgetWindows | None = None,
    ) -> None:
        self.router = router
        self.budgets = budgets
        self.max_batch = max_batch
        self.workers = workers
        self.thread_nice = thread_nice
        self.switch_interval_s = switch_interval_s
        self._queue: asyncio.Queue[_Pending] | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._executor: ThreadPoolExecutor | None = None
        self._saved_switch_interval: float | None = None
        self.batches = 0
        self.routed = 0

    def _init_thread(self) -> None:
        if self.thread_nice and hasattr(os, "setpriority"):
            # Linux gives each thread its own nice value: a lower priority for routing lets the event loop
            # (cheap, latency-critical) run first whenever the two compete for a core.
            try:
                tid = threading.get_native_id()
                os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + self.thread_nice))
            except OSError as exc:  # pragma: no cover - platform dependent
                logger.warning("could not lower the routing threads' priority: %s", exc)

    async def start(self) -> None:
        if self.switch_interval_s is not None and self._saved_switch_interval is None:
            self._saved_switch_interval = sys.getswitchinterval()
            sys.setswitchinterval(self.switch_interval_s)
        self._queue = asyncio.Queue()
        # Dedicated threads: routing never waits behind other to_thread work, and one long-lived thread per
        # worker keeps the encoder's memory in one allocator arena.
        self._executor = ThreadPoolExecutor(
            max_workers=self.workers, thread_name_prefix="finerouter-route", initializer=self._init_thread
        )
        self._tasks = [asyncio.create_task(self._worker(), name=f"finerouter-route-{i}") for i in range(self.workers)]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            try:
                await task
            except asyncio.CancelledError:
                pass
        self._tasks = []
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None
        if self._queue is not None:
            while not self._queue.empty():
                pending = self._queue.get_nowait()
                if not pending.future.done():
                    pending.future.set_exception(RuntimeError("the gateway is shutting down"))
        if self._saved_switch_interval is not None:
            sys.setswitchinterval(self._saved_switch_interval)
            self._saved_switch_interval = None

    async def route(self, prompt: str, options: RouteOptions) -> RoutingDecision:
        """The decision for one prompt (raises what the router raised)."""
        if self._queue is None:
            raise RuntimeError("RouteBatcher.start() was not called (is the app's lifespan running?)")
        future: asyncio.Future[RoutingDecision] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(_Pending(prompt, options, future))
        return await future

    async def route_many(self, prompts: Sequence[str], options: RouteOptions) -> list[RoutingDecision]:
        """Decisions for several prompts, in order (the ``/v1/route`` batch form).

        They go through the same queue as single prompts, so the worker bound holds and they are routed in
        batches of at most ``max_batch``.
        """
        return list(await asyncio.gather(*(self.route(p, options) for p in prompts)))

    def _call(self, prompts: list[str], options: RouteOptions) -> list[RoutingDecision]:
        windowed = options.budget_per_1k is not None and self.budgets is not None
        kwargs = self.budgets.plan(options) if windowed else options.kwargs()  # type: ignore[union-attr]
        result = self.router.route(prompts, **kwargs)
        decisions = [result] if isinstance(result, RoutingDecision) else list(result)
        if len(decisions) != len(prompts):
            raise RuntimeError(f"the router returned {len(decisions)} decisions for {len(prompts)} prompts")
        if windowed:
            self.budgets.record(options, decisions)  # type: ignore[union-attr]
        return decisions

    async def _worker(self) -> None:
        assert self._queue is not None
        queue = self._queue
        while True:
            batch = [await queue.get()]
            while len(batch) < self.max_batch and not queue.empty():
                batch.append(queue.get_nowait())
            live = [p for p in batch if not p.future.done()]  # skip callers that went away
            groups: dict[RouteOptions, list[_Pending]] = {}
            for p in live:
                groups.setdefault(p.options, []).append(p)
            for options, group in groups.items():
                await self._run_group(options, group)

    async def _run_group(self, options: RouteOptions, group: list[_Pending]) -> None:
        try:
            loop = asyncio.get_running_loop()
            decisions = await loop.run_in_executor(self._executor, self._call, [p.prompt for p in group], options)
        except Exception as exc:  # noqa: BLE001 - handed to the waiting requests
            if len(group) > 1:
                # One bad prompt must not fail its batch-mates: route each alone.
                for p in group:
                    await self._run_group(options, [p])
                return
            if not group[0].future.done():
                group[0].future.set_exception(exc)
            return
        self.batches += 1
        self.routed += len(group)
        for p, d in zip(group, decisions, strict=True):
            if not p.future.done():
                p.future.set_result(d)


__all__ = ["RouteBatcher", "RouteOptions", "RouterLike"]
