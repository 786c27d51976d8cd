"""Dispatch: which upstream answers a chat request, tried in which order, and what a failure costs.

:class:`Dispatcher` takes a request's candidate models (the routing decision's ranking, or a conversation's
pinned model and its saved fallbacks) and tries them one at a time through an
:class:`~finerouter.serving.proxy.UpstreamProxy` until one answers:

- **Order.** Healthy candidates first, in the given order, then those cooling down (still tried rather than
  failing the client outright when nothing else is left), at most ``max_attempts`` in all; a model already
  tried for this request is never tried again.
- **Cooldown.** Every failed attempt, and every stream cut short after its first event, cools its upstream
  down (:class:`~finerouter.serving.cooldown.CooldownTracker`); an answer clears it.
- **Affinity.** A conversation (keyed by the caller) stays on the model that answered its last turn without
  being routed again (:class:`~finerouter.serving.affinity.AffinityStore`), unless that model is cooling, no
  longer allowed, or fails together with its saved fallbacks: then the turn is routed afresh and dispatched
  with the attempts left, and the model that answers takes the conversation over.

Nothing here speaks HTTP to clients or knows the router: routing is a callback, the network is the proxy's
injected transports, and time is the cooldown's and affinity store's injected clocks, so a test drives it with
``httpx.MockTransport`` and a fake clock.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from finerouter.serving.affinity import AffinityEntry, AffinityStore
from finerouter.serving.cooldown import CooldownTracker
from finerouter.serving.metrics import GatewayMetrics
from finerouter.serving.proxy import UpstreamAnswer, UpstreamFailure, UpstreamProxy
from finerouter.serving.relay import StreamFailure, StreamRelay

logger = logging.getLogger(__name__)


@dataclass
class Attempt:
    """One try on one upstream: ``error`` is None when it answered (with ``status``)."""

    model: str
    error: str | None = None
    kind: str | None = None
    status: int | None = None
    seconds: float = 0.0


@dataclass
class Forwarded:
    """The answer a request got, and every try it took (the answering one last)."""

    answer: UpstreamAnswer
    attempts: list[Attempt] = field(default_factory=list)

    @property
    def model(self) -> str:
        """The router model that answered."""
        return self.answer.model

    @property
    def failed_models(self) -> list[str]:
        """The models whose attempt failed before the answer, in order."""
        return [a.model for a in self.attempts if a.error is not None]


class AllUpstreamsFailed(Exception):
    """Every attempt failed; ``attempts`` says how."""

    def __init__(self, attempts: list[Attempt]) -> None:
        self.attempts = attempts
        detail = "; ".join(f"{a.model}: {a.error}" for a in attempts)
        super().__init__(f"all {len(attempts)} upstream attempt(s) failed ({detail})")


@dataclass
class RoutedTurn:
    """What routing a conversation turn decided: the chosen model, the fallback ranking, the task."""

    model: str
    ranking: list[str]
    task_id: int | None = None
    task_description: str = ""


@dataclass
class Dispatched:
    """A dispatched chat request.

    Attributes:
        forwarded: the answer and the attempts.
        affinity: ``"none"`` (no conversation key), ``"hit"`` (the pinned model, or one of its saved
            fallbacks, answered), ``"miss"`` (a new conversation) or ``"reroute"`` (the pinned model could not
            be used or failed, and the turn was routed afresh).
        task_id: the task of the routing decision used (the pinned one on a hit; None: Others).
        task_description: that task's description.
    """

    forwarded: Forwarded
    affinity: str
    task_id: int | None
    task_description: str


def candidate_order(first: str, ranking: Iterable[str], allowed: Iterable[str] | None = None) -> list[str]:
    """``first`` then ``ranking``, without repeats, keeping only ``allowed`` models (when given)."""
    order = list(dict.fromkeys([first, *ranking]))
    if allowed is not None:
        keep = set(allowed)
        order = [m for m in order if m in keep]
    return order


class Dispatcher:
    """Tries a request's candidate upstreams in order, with affinity, fallback and cooldown.

    Args:
        proxy: makes one attempt on one upstream.
        cooldown: which upstreams are cooling down (its clock decides when they are healthy again).
        affinity: conversation key -> pinned model (its clock decides when entries expire).
        metrics: where attempts, errors, fallbacks, cooldowns and affinity lookups are counted.
        max_attempts: the most upstreams tried for one request.
    """

    def __init__(
        self,
        proxy: UpstreamProxy,
        *,
        cooldown: CooldownTracker,
        affinity: AffinityStore,
        metrics: GatewayMetrics,
        max_attempts: int = 3,
    ) -> None:
        self.proxy = proxy
        self.cooldown = cooldown
        self.affinity = affinity
        self.metrics = metrics
        self.max_attempts = max_attempts

    # -- order and failures --------------------------------------------------------------------------------------
    def plan(self, candidates: Sequence[str], max_attempts: int) -> list[str]:
        """The models to try, in order: healthy candidates first, cooling ones last, at most ``max_attempts``
        (models without an upstream and repeats are dropped)."""
        seen: set[str] = set()
        upstreams = self.proxy.upstreams
        ordered = [m for m in candidates if m in upstreams and not (m in seen or seen.add(m))]
        healthy = [m for m in ordered if not self.cooldown.is_cooling(m)]
        cooling = [m for m in ordered if m not in healthy]
        return (healthy + cooling)[:max_attempts]

    def _failed(self, attempt: Attempt, failure: UpstreamFailure) -> None:
        attempt.kind, attempt.error, attempt.status = failure.kind, str(failure), failure.status
        self.metrics.upstream_errors.labels(attempt.model, failure.kind).inc()
        span = self.cooldown.fail(attempt.model, failure.retry_after)
        if span > 0:
            self.metrics.cooldowns.labels(attempt.model).inc()
        if failure.kind == "auth":
            upstream = self.proxy.upstreams[attempt.model]
            logger.error(
                "upstream %s rejected the gateway's credentials (%s): check the key in %s; cooling down for %.1f s",
                attempt.model,
                f"HTTP {attempt.status}",
                upstream.api_key_env or "its api_key_env (none is configured)",
                span,
            )
        else:
            logger.warning("upstream %s failed (%s); cooling down for %.1f s", attempt.model, failure, span)

    def _stream_failed(self, relay: StreamRelay, failure: StreamFailure | None) -> None:
        """Count a streamed answer the client received as failed; cool its upstream down unless the gateway
        ended it (``shutdown``) or the upstream sent its own error event (``failure`` None)."""
        if failure is None:
            self.metrics.stream_failures.labels(relay.model, "upstream_error").inc()
            return
        self.metrics.stream_failures.labels(relay.model, failure.reason).inc()
        if failure.kind == "shutdown":
            logger.info("ended a stream from %s: %s", relay.model, failure)
            return
        self.metrics.upstream_errors.labels(relay.model, failure.kind).inc()
        span = self.cooldown.fail(relay.model)
        if span > 0:
            self.metrics.cooldowns.labels(relay.model).inc()
        logger.warning("upstream %s: %s; the client was told; cooling down for %.1f s", relay.model, failure, span)

    # -- trying candidates ---------------------------------------------------------------------------------------
    async def forward(
        self,
        candidates: Sequence[str],
        body: dict[str, Any],
        *,
        stream: bool,
        max_attempts: int | None = None,
        prior: Sequence[Attempt] = (),
    ) -> Forwarded:
        """Try ``candidates`` in :meth:`plan` order until one answers.

        Args:
            candidates: router model names, best first.
            body: the chat-completions body to send (its ``model`` is replaced by each upstream's).
            stream: whether to ask for a streamed answer.
            max_attempts: the most attempts in all, ``prior`` included (default: the dispatcher's).
            prior: failed attempts already made for this request: their models are not tried again and they
                count towards ``max_attempts``.

        Raises:
            AllUpstreamsFailed: every attempt failed (or none was left to make).
            GatewayHTTPError: 503 when the proxy's streams were aborted before the first event.
        """
        limit = self.max_attempts if max_attempts is None else max_attempts
        attempts: list[Attempt] = list(prior)
        tried = {a.model for a in attempts}
        remaining = [m for m in candidates if m not in tried]
        for model in self.plan(remaining, limit - len(attempts)):
            attempt = Attempt(model)
            attempts.append(attempt)
            t0 = time.perf_counter()
            try:
                answer = await self.proxy.attempt(model, body, stream=stream, on_stream_failure=self._stream_failed)
            except UpstreamFailure as failure:
                attempt.seconds = time.perf_counter() - t0
                self._failed(attempt, failure)
                continue
            attempt.seconds = time.perf_counter() - t0
            attempt.status = answer.status_code
            self.metrics.upstream_latency.labels(model).observe(attempt.seconds)
            self.cooldown.succeed(model)
            if len(attempts) > 1:
                self.metrics.fallbacks.labels(attempts[0].model, model).inc()
            return Forwarded(answer, attempts)
        raise AllUpstreamsFailed(attempts)

    async def dispatch(
        self,
        body: dict[str, Any],
        *,
        stream: bool,
        route: Callable[[], Awaitable[RoutedTurn]],
        conversation: str = "",
        allowed_models: Sequence[str] | None = None,
    ) -> Dispatched:
        """Answer one routed chat request, keeping its conversation on one model.

        Args:
            body: the chat-completions body to send.
            stream: whether to ask for a streamed answer.
            route: routes this turn (called only when the conversation has no usable pinned model).
            conversation: the conversation's key (``""``: none, so no affinity).
            allowed_models: the request's allowed models; a pinned model outside them is not used.

        Returns:
            The answer, with how affinity was used. A 2xx answer pins the conversation to the model that gave
            it, with the candidates after it as its saved fallbacks.

        Raises:
            AllUpstreamsFailed: every attempt failed.
            Whatever ``route`` raises.
        """
        entry = self.affinity.get(conversation) if conversation else None
        if (
            entry is not None
            and (allowed_models is None or entry.model in allowed_models)
            and not self.cooldown.is_cooling(entry.model)
        ):
            affinity = "hit"
            candidates = candidate_order(entry.model, entry.ranking, allowed_models)
            task_id, description = entry.task_id, entry.task_description
            try:
                forwarded = await self.forward(candidates, body, stream=stream)
            except AllUpstreamsFailed as exc:
                # The pinned model (and its saved fallbacks) failed: route this turn afresh and go on with the
                # attempts left, never retrying a model that just failed.
                if len(exc.attempts) >= self.max_attempts:
                    raise
                affinity = "reroute"
                turn = await route()
                candidates = candidate_order(turn.model, turn.ranking)
                task_id, description = turn.task_id, turn.task_description
                forwarded = await self.forward(candidates, body, stream=stream, prior=exc.attempts)
        else:
            affinity = "none" if not conversation else ("reroute" if entry is not None else "miss")
            turn = await route()
            candidates = candidate_order(turn.model, turn.ranking)
            task_id, description = turn.task_id, turn.task_description
            forwarded = await self.forward(candidates, body, stream=stream)
        if conversation:
            self.metrics.affinity.labels(affinity).inc()
            if 200 <= forwarded.answer.status_code < 300:
                pinned = AffinityEntry(
                    forwarded.model, candidate_order(forwarded.model, candidates), task_id, description
                )
                self.affinity.set(conversation, pinned)
        return Dispatched(forwarded, affinity, task_id, description)


__all__ = [
    "AllUpstreamsFailed",
    "Attempt",
    "Dispatched",
    "Dispatcher",
    "Forwarded",
    "RoutedTurn",
    "candidate_order",
]
