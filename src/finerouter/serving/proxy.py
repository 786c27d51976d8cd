"""Forwarding to upstreams: one pooled httpx transport per upstream, fallback along the ranking, cooldowns.

A request is tried on its candidate models in order. An attempt fails on a connection error, a timeout, a
429 or a 5xx; the failing upstream is then cooled down (skipped by later requests for ``cooldown_s``, or as
long as a 429's ``Retry-After`` asks, up to five minutes) and the next candidate is tried, up to
``max_attempts`` in all. Cooling upstreams are skipped while a healthy candidate remains; when only cooling
ones are left they are still tried rather than failing the client outright.

Any other answer (2xx, or a 4xx that is the request's own fault) is passed back unchanged: the body as
bytes, streaming (SSE) bodies chunk by chunk as they arrive. Once a stream has started it cannot move to
another model; a stream broken off by the upstream ends the client's stream and is counted.

Requests go straight to each upstream's transport (its connection pool), not through an ``httpx.AsyncClient``:
a proxy wants none of the client layer, whose cookie jar would carry one caller's upstream cookies into every
other caller's requests, and whose redirect, auth and per-request logging steps cost CPU on every request.
Each upstream's URL, headers and timeouts are built once; the request body is parsed once (to route on it) and
written once (with the upstream's model id).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from finerouter.serving.config import Upstream
from finerouter.serving.metrics import GatewayMetrics

if TYPE_CHECKING:
    import httpx

logger = logging.getLogger(__name__)

MAX_RETRY_AFTER_S = 300.0

# Response headers not passed back: hop-by-hop ones, and those the gateway's server sets itself.
_DROP_RESPONSE_HEADERS = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "trailers",
        "transfer-encoding",
        "upgrade",
        "content-length",
        "content-encoding",
        "date",
        "server",
    }
)


class CooldownTracker:
    """Which upstreams failed recently and are skipped until a deadline.

    Args:
        cooldown_s: how long a failure cools an upstream down (0 disables cooldowns).
        clock: monotonic seconds (injectable for tests).
    """

    def __init__(self, cooldown_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.cooldown_s = float(cooldown_s)
        self._clock = clock
        self._until: dict[str, float] = {}

    def fail(self, model: str, retry_after_s: float | None = None) -> float:
        """Cool ``model`` down; returns the cooldown applied in seconds."""
        span = self.cooldown_s
        if retry_after_s is not None:
            span = max(span, min(retry_after_s, MAX_RETRY_AFTER_S))
        if span > 0:
            self._until[model] = max(self._until.get(model, 0.0), self._clock() + span)
        return span

    def succeed(self, model: str) -> None:
        self._until.pop(model, None)

    def clear(self) -> None:
        self._until.clear()

    def is_cooling(self, model: str) -> bool:
        until = self._until.get(model)
        if until is None:
            return False
        if until <= self._clock():
            del self._until[model]
            return False
        return True

    def cooling(self) -> dict[str, float]:
        """Cooling models -> seconds left."""
        now = self._clock()
        return {m: round(u - now, 3) for m, u in list(self._until.items()) if self.is_cooling(m)}


@dataclass
class Attempt:
    """One try on one upstream: ``error`` is None when it answered (with ``status``)."""

    model: str
    error: str | None = None
    kind: str | None = None
    status: int | None = None
    seconds: float = 0.0


@dataclass
class ProxyResult:
    """The upstream answer to pass back.

    Attributes:
        model: the router model that answered.
        status_code: its HTTP status.
        headers: its response headers, hop-by-hop ones removed.
        content: the whole body (non-streaming), else None.
        stream: the body's chunks as they arrive (streaming), else None; it closes the upstream response.
        attempts: every try, the answering one last.
    """

    model: str
    status_code: int
    headers: dict[str, str]
    content: bytes | None = None
    stream: AsyncIterator[bytes] | None = None
    attempts: list[Attempt] = field(default_factory=list)

    @property
    def failed_models(self) -> list[str]:
        return [a.model for a in self.attempts if a.error is not None]


class AllUpstreamsFailed(Exception):
    """Every attempt failed; ``attempts`` says how."""

    def __init__(self, attempts: list[Attempt]) -> None:
        self.attempts = attempts
        detail = "; ".join(f"{a.model}: {a.error}" for a in attempts)
        super().__init__(f"all {len(attempts)} upstream attempt(s) failed ({detail})")


def _retry_after(headers: Mapping[str, str]) -> float | None:
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None  # an HTTP date: fall back to the configured cooldown


class UpstreamProxy:
    """Sends chat-completions requests to upstreams with fallback and cooldown.

    Args:
        transports: one pooled httpx transport per upstream name (the app gives each upstream its own
            :class:`~finerouter.serving.transport.AiohttpTransport`; tests may give ``httpx.MockTransport``).
            The caller opens and closes them.
        upstreams: router model name -> :class:`Upstream`.
        cooldown: the shared :class:`CooldownTracker`.
        metrics: where attempts, errors and fallbacks are counted.
        user_agent: the ``User-Agent`` sent upstream (unless an upstream's ``headers`` set one).
    """

    def __init__(
        self,
        transports: Mapping[str, httpx.AsyncBaseTransport],
        upstreams: Mapping[str, Upstream],
        cooldown: CooldownTracker,
        metrics: GatewayMetrics,
        *,
        user_agent: str = "finerouter-gateway",
    ) -> None:
        import httpx

        self.transports = transports
        self.upstreams = upstreams
        self.cooldown = cooldown
        self.metrics = metrics
        # Everything about a request that does not depend on its body, built once per upstream.
        self._urls = {name: httpx.URL(u.chat_url) for name, u in upstreams.items()}
        self._extensions = {
            name: {"timeout": httpx.Timeout(u.timeout_s, connect=u.connect_timeout_s).as_dict()}
            for name, u in upstreams.items()
        }
        self._headers = {
            (name, stream): self._static_headers(u, stream, user_agent)
            for name, u in upstreams.items()
            for stream in (False, True)
        }

    @staticmethod
    def _static_headers(upstream: Upstream, stream: bool, user_agent: str) -> list[tuple[str, str]]:
        headers = {
            "user-agent": user_agent,
            "content-type": "application/json",
            "accept": "text/event-stream" if stream else "application/json",
            "accept-encoding": "identity",
        }
        headers.update((k.lower(), v) for k, v in upstream.headers.items())
        if upstream.api_key:
            headers["authorization"] = f"Bearer {upstream.api_key}"
        return list(headers.items())

    def plan(self, candidates: Sequence[str], max_attempts: int) -> list[str]:
        """The models to try, in order: healthy candidates first, cooling ones last, at most ``max_attempts``."""
        seen: set[str] = set()
        ordered = [m for m in candidates if m in self.upstreams and not (m in seen or seen.add(m))]
        healthy = [m for m in ordered if not self.cooldown.is_cooling(m)]
        cooling = [m for m in ordered if m not in healthy]
        return (healthy + cooling)[:max_attempts]

    def _request(self, upstream: Upstream, body: dict[str, Any], stream: bool) -> httpx.Request:
        import httpx

        payload = dict(body)
        payload["model"] = upstream.model
        # Compact UTF-8 JSON, as httpx's own ``json=`` writes it (content-length and host are added by httpx).
        content = json.dumps(payload, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode("utf-8")
        name = upstream.name
        return httpx.Request(
            "POST",
            self._urls[name],
            headers=self._headers[name, stream],
            content=content,
            extensions=self._extensions[name],
        )

    def _failed(self, attempt: Attempt, kind: str, error: str, retry_after: float | None = None) -> None:
        attempt.kind, attempt.error = kind, error
        self.metrics.upstream_errors.labels(attempt.model, kind).inc()
        span = self.cooldown.fail(attempt.model, retry_after)
        if span > 0:
            self.metrics.cooldowns.labels(attempt.model).inc()
        logger.warning("upstream %s failed (%s); cooling down for %.1f s", attempt.model, error, span)

    async def forward(
        self,
        candidates: Sequence[str],
        body: dict[str, Any],
        *,
        stream: bool,
        max_attempts: int,
        prior: Sequence[Attempt] = (),
    ) -> ProxyResult:
        """Try ``candidates`` in order (see :meth:`plan`) until one answers; raise AllUpstreamsFailed if none.

        ``prior``: failed attempts already made for this request (their models are not tried again and
        they count towards ``max_attempts``).
        """
        import httpx

        attempts: list[Attempt] = list(prior)
        tried = {a.model for a in attempts}
        remaining = [m for m in candidates if m not in tried]
        for model in self.plan(remaining, max_attempts - len(attempts)):
            upstream = self.upstreams[model]
            attempt = Attempt(model)
            attempts.append(attempt)
            t0 = time.perf_counter()
            request = self._request(upstream, body, stream)
            try:
                response = await self.transports[model].handle_async_request(request)
            except httpx.TimeoutException as exc:
                attempt.seconds = time.perf_counter() - t0
                self._failed(attempt, "timeout", f"timed out ({type(exc).__name__})")
                continue
            except httpx.TransportError as exc:
                attempt.seconds = time.perf_counter() - t0
                self._failed(attempt, "connect", f"connection error ({type(exc).__name__})")
                continue
            response.request = request
            attempt.status = response.status_code
            if response.status_code == 429 or response.status_code >= 500:
                await response.aclose()
                attempt.seconds = time.perf_counter() - t0
                kind = "http_429" if response.status_code == 429 else "http_5xx"
                self._failed(attempt, kind, f"HTTP {response.status_code}", _retry_after(response.headers))
                continue
            headers = {k: v for k, v in response.headers.items() if k.lower() not in _DROP_RESPONSE_HEADERS}
            content: bytes | None = None
            chunks: AsyncIterator[bytes] | None = None
            if stream and response.status_code < 300:
                chunks = self._relay(response, model)
            else:
                try:
                    content = await response.aread()
                except httpx.TransportError as exc:
                    attempt.seconds = time.perf_counter() - t0
                    kind = "timeout" if isinstance(exc, httpx.TimeoutException) else "connect"
                    self._failed(attempt, kind, f"answer broken off ({type(exc).__name__})")
                    continue
                finally:
                    await response.aclose()
            attempt.seconds = time.perf_counter() - t0
            self.metrics.upstream_latency.labels(model).observe(attempt.seconds)
            self.cooldown.succeed(model)
            if len(attempts) > 1:
                self.metrics.fallbacks.labels(attempts[0].model, model).inc()
            return ProxyResult(
                model=model,
                status_code=response.status_code,
                headers=headers,
                content=content,
                stream=chunks,
                attempts=attempts,
            )
        raise AllUpstreamsFailed(attempts)

    async def _relay(self, response: httpx.Response, model: str) -> AsyncIterator[bytes]:
        import httpx

        try:
            async for chunk in response.aiter_bytes():  # decoded: content-encoding is not passed on
                yield chunk
        except httpx.TransportError as exc:
            self.metrics.upstream_errors.labels(model, "stream").inc()
            logger.warning("upstream %s broke off a streamed answer (%s)", model, type(exc).__name__)
        finally:
            await response.aclose()


__all__ = ["AllUpstreamsFailed", "Attempt", "CooldownTracker", "ProxyResult", "UpstreamProxy"]
