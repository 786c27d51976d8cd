"""``collect``: send prompts to models through the upstreams config and record every answer, resumably.

:class:`Collector` plans the (prompt, model) pairs (every model, or ``sample_models`` drawn per prompt with a
seed, so a restart draws the same ones), skips the pairs the answers store already holds, estimates what the rest
will cost, and sends them: one queue and ``concurrency`` workers per upstream, each call through
:class:`~finerouter.collect.client.ChatCaller` (retries, 429 backoff honouring ``Retry-After``). Each answer is
appended to ``answers.jsonl`` (:class:`~finerouter.collect.store.JsonlStore`: fsync'd before it counts) with its
latency, token usage and cost.

**Resuming.** A pair is done once its answer record is on disk; a restart skips it, so it is never sent twice
after its answer was recorded. Stopping is graceful: :meth:`Collector.stop`, a ``max_spend`` reached, or the
running task being cancelled (Ctrl-C in the CLI) stops new sends and waits up to ``drain_s`` for the calls
in flight, whose answers are recorded too. Only a hard kill (``SIGKILL``, power loss) can lose the answers in
flight at that moment; those pairs are not done and are sent again on the next run, at most ``concurrency``
per upstream.

**Cost.** Per answer: the upstream's reported ``usage.cost`` when it reports one (``cost_source: "usage"``),
else its ``usage`` tokens times the model's prices (``"prices"``), else the prices applied to the prompt and
answer lengths (``"estimate"``), else unknown. ``max_spend`` (USD) is checked before each send against the
spend recorded so far (earlier runs included) plus the estimated cost of every call in flight and of the call
about to be sent; once it would be exceeded no further call is sent. The estimate assumes an answer of
``prices.output_tokens`` tokens (or ``max_tokens`` when set), so answers longer than that can take the spend
past the cap by the difference.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import math
import random
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from finerouter._validation import check_float, check_int
from finerouter.collect.client import ChatCaller, ChatResult, Endpoint
from finerouter.collect.prompts import Prompt
from finerouter.collect.store import JsonlStore
from finerouter.errors import ParameterError, UpstreamError

if TYPE_CHECKING:
    import httpx

    from finerouter.data.prices import Prices
    from finerouter.serving.config import Upstream

logger = logging.getLogger(__name__)

ANSWERS_FILE = "answers.jsonl"
STOP_REASONS = ("done", "max_spend", "stopped", "cancelled")


@dataclass
class CollectReport:
    """What a run did. ``stopped`` is ``"done"``, ``"max_spend"``, ``"stopped"`` or ``"cancelled"``."""

    planned: int = 0
    already_done: int = 0
    sent: int = 0
    answered: int = 0
    failed: int = 0
    spent_usd: float = 0.0
    spent_before_usd: float = 0.0
    estimated_usd: float = 0.0
    unpriced_models: list[str] = field(default_factory=list)
    stopped: str = "done"
    seconds: float = 0.0

    @property
    def remaining(self) -> int:
        """Pairs still without an answer after this run."""
        return self.planned - self.already_done - self.answered


def answer_cost(
    model: str, prompt: str, result: ChatResult, prices: Prices | None
) -> tuple[float | None, str | None]:
    """The USD cost of one answer and where it came from (see the module docstring); ``(None, None)`` if unknown."""
    usage = result.usage or {}
    reported = usage.get("cost")
    if isinstance(reported, (int, float)) and not isinstance(reported, bool) and math.isfinite(reported) and reported >= 0:
        return float(reported), "usage"
    if prices is None or model not in prices:
        return None, None
    rate_in, rate_out = prices.price(model)
    tokens_in, tokens_out = usage.get("prompt_tokens"), usage.get("completion_tokens")
    if all(isinstance(t, int) and not isinstance(t, bool) and t >= 0 for t in (tokens_in, tokens_out)):
        return (tokens_in * rate_in + tokens_out * rate_out) / 1e6, "prices"
    est_in = max(1, math.ceil(len(prompt) / prices.chars_per_token))
    est_out = math.ceil(len(result.text) / prices.chars_per_token)
    return (est_in * rate_in + est_out * rate_out) / 1e6, "estimate"


def sampled_models(prompt: Prompt, models: Sequence[str], k: int | None, seed: int) -> list[str]:
    """The models ``prompt`` goes to: all of them, or ``k`` drawn by a generator seeded with (seed, prompt)."""
    if k is None or k >= len(models):
        return list(models)
    rng = random.Random(f"{seed}:{prompt.key}")
    chosen = set(rng.sample(list(models), k))
    return [m for m in models if m in chosen]


class Collector:
    """Collects answers of ``upstreams`` to prompts into ``out_dir/answers.jsonl`` (see the module docstring).

    Args:
        upstreams: model name -> :class:`~finerouter.serving.config.Upstream` (``load_gateway_config(path)
            .upstreams``), or -> :class:`~finerouter.collect.client.Endpoint`.
        out_dir: the answers folder (created; an existing one is resumed).
        models: the models to ask (default: every upstream).
        sample_models: ask only this many models per prompt, drawn per prompt with ``seed`` (None: all).
        seed: seeds the per-prompt draws and the retry jitter.
        prices: a :class:`~finerouter.data.prices.Prices` (or CSV path) for costs and the estimate.
        max_spend: stop sending once this much USD would be spent (None: no cap).
        concurrency: calls in flight per upstream.
        max_tokens: sent as ``max_tokens`` when set; also the answer length the spend check assumes.
        temperature: sent as ``temperature`` when set.
        max_retries: retries per call after errors (429 waits are counted apart).
        drain_s: when stopped or cancelled, how long the calls in flight may take to finish and be recorded.
        transport: the httpx transport for every call (tests inject one).
        caller_options: more :class:`ChatCaller` arguments (``backoff_s``, ``sleep``, ``clock``...).
        on_record: called with each record once it is on disk (progress bars, tests).
        engine: None (the calls run here), or a distributed :class:`finerouter.engines.Engine`: the calls run on its
            workers, at most ``concurrency`` in flight per upstream across all of them, through the default transport
            with ``caller_options`` (which must then be picklable); answers are still written here, one writer.
    """

    def __init__(
        self,
        upstreams: Mapping[str, Upstream | Endpoint],
        out_dir: str | Path,
        *,
        models: Sequence[str] | None = None,
        sample_models: int | None = None,
        seed: int = 0,
        prices: Prices | str | Path | None = None,
        max_spend: float | None = None,
        concurrency: int = 8,
        max_tokens: int | None = None,
        temperature: float | None = None,
        max_retries: int = 4,
        drain_s: float = 60.0,
        transport: httpx.AsyncBaseTransport | None = None,
        caller_options: Mapping[str, Any] | None = None,
        on_record: Callable[[dict[str, Any]], None] | None = None,
        engine: Any = None,
    ) -> None:
        owner = "Collector"
        self.endpoints = {
            name: u if isinstance(u, Endpoint) else Endpoint.from_upstream(u) for name, u in upstreams.items()
        }
        self.models = list(models) if models is not None else list(self.endpoints)
        unknown = [m for m in self.models if m not in self.endpoints]
        if unknown or not self.models:
            raise ParameterError(
                f"The 'models' parameter of {owner} must name upstreams of the config {sorted(self.endpoints)}. "
                f"Got {unknown or self.models}."
            )
        if sample_models is not None:
            check_int(sample_models, "sample_models", owner, low=1)
        self.sample_models = sample_models
        self.seed = check_int(seed, "seed", owner)
        if isinstance(prices, (str, Path)):
            from finerouter.data.prices import Prices

            prices = Prices.read(prices)
        self.prices = prices
        self.max_spend = None if max_spend is None else check_float(max_spend, "max_spend", owner, low=0.0)
        self.concurrency = check_int(concurrency, "concurrency", owner, low=1)
        self.max_tokens = None if max_tokens is None else check_int(max_tokens, "max_tokens", owner, low=1)
        self.temperature = temperature
        self.max_retries = check_int(max_retries, "max_retries", owner, low=0)
        self.drain_s = check_float(drain_s, "drain_s", owner, low=0.0)
        self.out_dir = Path(out_dir)
        self.transport = transport
        self.caller_options = dict(caller_options or {})
        self.on_record = on_record
        self.engine = engine
        self._stop = False
        self.store = JsonlStore(self.out_dir / ANSWERS_FILE)

    # -- planning ----------------------------------------------------------------------------------------------
    def done_pairs(self) -> set[tuple[str, str]]:
        """The (prompt key, model) pairs whose answer the store already holds (reads the store)."""
        if not self.store.is_open:
            self.store.open()
        return {(r["prompt_key"], r["model"]) for r in self.store.records if r.get("status") == "ok"}

    def plan(self, prompts: Sequence[Prompt]) -> tuple[list[tuple[Prompt, str]], int]:
        """The pairs still to send, prompt by prompt, and how many planned pairs are already done."""
        done = self.done_pairs()
        pending: list[tuple[Prompt, str]] = []
        already = 0
        for prompt in prompts:
            for model in sampled_models(prompt, self.models, self.sample_models, self.seed):
                if (prompt.key, model) in done:
                    already += 1
                else:
                    pending.append((prompt, model))
        return pending, already

    def estimate(self, prompt: str, model: str) -> float | None:
        """The estimated USD cost of sending ``prompt`` to ``model`` (None: the model has no price)."""
        if self.prices is None or model not in self.prices:
            return None
        rate_in, rate_out = self.prices.price(model)
        tokens_in = max(1, math.ceil(len(prompt) / self.prices.chars_per_token))
        tokens_out = self.max_tokens if self.max_tokens is not None else self.prices.output_tokens
        return (tokens_in * rate_in + tokens_out * rate_out) / 1e6

    def estimate_pairs(self, pairs: Sequence[tuple[Prompt, str]]) -> tuple[float, list[str]]:
        """The estimated USD cost of ``pairs`` and the models without a price (their cost is left out)."""
        total, unpriced = 0.0, set()
        for prompt, model in pairs:
            cost = self.estimate(prompt.text, model)
            if cost is None:
                unpriced.add(model)
            else:
                total += cost
        return total, sorted(unpriced)

    def spent_so_far(self) -> float:
        """USD recorded in the store (every run)."""
        return sum(float(r.get("cost_usd") or 0.0) for r in self.store.records if r.get("status") == "ok")

    # -- running -------------------------------------------------------------------------------------------------
    def stop(self) -> None:
        """Send nothing more; the calls in flight finish and are recorded."""
        self._stop = True

    async def run(self, prompts: Sequence[Prompt], *, pending: list[tuple[Prompt, str]] | None = None) -> CollectReport:
        """Collect every pending pair of ``prompts``; returns what was done (see :class:`CollectReport`).

        Cancelling the task running this is a graceful stop: the calls in flight are awaited (``drain_s``) and
        recorded, then ``CancelledError`` propagates.
        """
        t0 = time.perf_counter()
        report = CollectReport()
        if not self.store.is_open:
            self.store.open()
        if pending is None:
            pending, report.already_done = self.plan(prompts)
        else:
            report.already_done = len(self.done_pairs())
        report.planned = report.already_done + len(pending)
        report.estimated_usd, report.unpriced_models = self.estimate_pairs(pending)
        report.spent_before_usd = self.spent_so_far()
        self._spent = report.spent_before_usd
        self._reserved = 0.0
        self._capped = False
        queues: dict[str, deque[tuple[Prompt, str]]] = {m: deque() for m in self.models}
        for pair in pending:
            queues[pair[1]].append(pair)
        params: dict[str, Any] = {}
        if self.max_tokens is not None:
            params["max_tokens"] = self.max_tokens
        if self.temperature is not None:
            params["temperature"] = self.temperature
        options = {"max_retries": self.max_retries, "max_connections": max(16, self.concurrency * 2),
                   "seed": self.seed, **self.caller_options}
        try:
            if getattr(self.engine, "distributed", False):
                await self._run_on_engine(queues, params, options, report)
            else:
                async with ChatCaller(self.transport, **options) as caller:
                    workers = [
                        asyncio.ensure_future(self._worker(caller, queues[m], params, report))
                        for m in self.models if queues[m]
                        for _ in range(min(self.concurrency, len(queues[m])))
                    ]
                    if workers:
                        try:
                            await asyncio.wait(workers)
                        except asyncio.CancelledError:
                            self._stop = True
                            report.stopped = "cancelled"
                            _, slow = await asyncio.wait(workers, timeout=self.drain_s)
                            for task in slow:
                                task.cancel()
                            await self.store.aclose()
                            raise
                        for task in workers:
                            task.result()  # a bug in a worker surfaces here
        finally:
            await self.store.aclose()
            report.spent_usd = self._spent - report.spent_before_usd
            report.seconds = time.perf_counter() - t0
        if report.stopped == "done" and self._capped:
            report.stopped = "max_spend"
        if report.stopped == "done" and self._stop:
            report.stopped = "stopped"
        return report

    def _over_budget(self, cost: float | None) -> bool:
        if self.max_spend is None:
            return False
        return self._spent + self._reserved + (cost or 0.0) > self.max_spend + 1e-12

    async def _worker(
        self, caller: ChatCaller, queue: deque[tuple[Prompt, str]], params: dict[str, Any], report: CollectReport
    ) -> None:
        while queue and not self._stop:
            if not self._admit(queue[0][0].text, queue[0][1], report):
                return
            prompt, model = queue.popleft()
            estimate = self.estimate(prompt.text, model)
            try:
                outcome: ChatResult | str = await caller.complete(
                    self.endpoints[model], [{"role": "user", "content": prompt.text}], params
                )
            except UpstreamError as exc:
                outcome = str(exc)
            finally:
                self._reserved -= estimate or 0.0
            await self._record(prompt, model, outcome, report)

    def _admit(self, text: str, model: str, report: CollectReport) -> bool:
        """Whether ``text`` may be sent to ``model`` now (not stopped, within ``max_spend``); if so its estimate is
        reserved."""
        if self._stop:
            return False
        estimate = self.estimate(text, model)
        if self._over_budget(estimate):
            self._capped = True
            self._stop = True
            logger.info("stopping: the next call would take the spend past max_spend %.6g USD", self.max_spend)
            return False
        self._reserved += estimate or 0.0
        report.sent += 1
        return True

    async def _record(self, prompt: Prompt, model: str, outcome: ChatResult | str, report: CollectReport) -> None:
        """Write the record of one sent pair: its answer (a ChatResult) or its error (a message)."""
        endpoint = self.endpoints[model]
        record: dict[str, Any] = {
            "prompt_key": prompt.key, "prompt": prompt.text, "model": model, "upstream_model": endpoint.model,
        }
        for name in ("id", "task", "gold"):
            value = getattr(prompt, name)
            if value is not None:
                record[name] = value
        if isinstance(outcome, str):
            record.update(status="error", error=outcome, time=time.time())
            report.failed += 1
        else:
            cost, source = answer_cost(model, prompt.text, outcome, self.prices)
            record.update(
                status="ok", answer=outcome.text, latency_s=round(outcome.seconds, 4), attempts=outcome.attempts,
                usage=dict(outcome.usage) if outcome.usage else None, cost_usd=cost, cost_source=source,
                response_id=outcome.response_id, time=time.time(),
            )
            self._spent += record["cost_usd"] or 0.0
        await self.store.append(record)
        if record["status"] == "ok":
            report.answered += 1
        if self.on_record is not None:
            self.on_record(record)

    async def _run_on_engine(
        self, queues: dict[str, deque[tuple[Prompt, str]]], params: dict[str, Any], options: dict[str, Any],
        report: CollectReport,
    ) -> None:
        """The calls on the engine's workers: at most ``concurrency`` in flight per upstream across the cluster."""
        pairs = [pair for m in self.models for pair in queues[m]]
        fn = functools.partial(_send_on_worker, {m: self.endpoints[m] for m in self.models}, params, options)
        calls = self.engine.run_calls(fn, [(p.text, m) for p, m in pairs], key=lambda item: item[1],
                                      limit=self.concurrency, admit=lambda item: self._admit(item[0], item[1], report))
        async for i, outcome in calls:
            prompt, model = pairs[i]
            self._reserved -= self.estimate(prompt.text, model) or 0.0
            await self._record(prompt, model, outcome, report)



async def _send_on_worker(
    endpoints: Mapping[str, Endpoint], params: dict[str, Any], options: dict[str, Any], item: tuple[str, str]
) -> ChatResult | str:
    """One call where an engine runs it: the answer, or the error's message (a caller of its own, the default
    transport)."""
    text, model = item
    async with ChatCaller(None, **options) as caller:
        try:
            return await caller.complete(endpoints[model], [{"role": "user", "content": text}], params)
        except UpstreamError as exc:
            return str(exc)


def collect_answers(
    prompts: Sequence[Prompt], upstreams: Mapping[str, Upstream | Endpoint], out_dir: str | Path, **options: Any
) -> CollectReport:
    """Run a :class:`Collector` to completion from synchronous code (arguments as :class:`Collector`)."""
    return asyncio.run(Collector(upstreams, out_dir, **options).run(prompts))


__all__ = ["ANSWERS_FILE", "CollectReport", "Collector", "answer_cost", "collect_answers", "sampled_models"]
