"""One OpenAI-compatible chat call with retries: what ``collect`` and ``judge`` send every request through.

:class:`ChatCaller` posts ``{base_url}/chat/completions`` through one ``httpx.AsyncClient`` whose transport is
injected (default: the gateway's :class:`~finerouter.serving.transport.AiohttpTransport`; tests give
``InProcessUpstreams.transport()`` or let it reach fake servers on loopback). What it retries, and how:

- a **429** waits what its ``Retry-After`` header says (seconds or an HTTP date; ``backoff_s`` when absent),
  and the whole endpoint pauses that long (every concurrent caller of it waits too, so a rate-limited upstream
  is not hammered by the other workers); up to ``max_rate_limited`` such waits per call;
- connection errors, timeouts, 408/409/5xx and a 2xx that is not a chat completion wait
  ``backoff_s * 2**(n-1)`` (with seeded jitter, at most ``max_backoff_s``), up to ``max_retries`` retries;
- any other 4xx (bad request, bad key) is not retried.

A call that still fails raises :class:`~finerouter.errors.UpstreamError` saying why. The sleep and the clock
are injectable, so tests check the waits without waiting.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import logging
import random
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from finerouter.errors import UpstreamError

if TYPE_CHECKING:
    import httpx

    from finerouter.serving.config import Upstream

logger = logging.getLogger(__name__)

RETRY_STATUSES = frozenset({408, 409, 429, 500, 502, 503, 504})
MAX_RETRY_AFTER_S = 600.0


@dataclass(frozen=True)
class Endpoint:
    """Where one model is reached: its chat-completions URL, the model id it expects, headers and timeouts."""

    name: str
    chat_url: str
    model: str
    headers: Mapping[str, str] = field(default_factory=dict, repr=False)
    timeout_s: float = 60.0
    connect_timeout_s: float = 5.0

    @classmethod
    def from_upstream(cls, upstream: Upstream) -> Endpoint:
        """The endpoint of an upstream from an upstreams YAML file (the same config ``serve`` reads)."""
        headers = dict(upstream.headers)
        if upstream.api_key:
            headers["Authorization"] = f"Bearer {upstream.api_key}"
        return cls(upstream.name, upstream.chat_url, upstream.model, headers, upstream.timeout_s,
                   upstream.connect_timeout_s)

    @classmethod
    def from_url(cls, base_url: str, model: str, api_key: str | None = None, timeout_s: float = 120.0) -> Endpoint:
        """An endpoint from a base URL such as ``http://127.0.0.1:9000/v1``."""
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        return cls(model, base_url.rstrip("/") + "/chat/completions", model, headers, timeout_s)


@dataclass(frozen=True)
class ChatResult:
    """A chat completion: its text, the upstream's ``usage`` (None if absent), seconds and attempts it took."""

    text: str
    usage: Mapping[str, Any] | None
    seconds: float
    attempts: int
    response_id: str | None = None


def retry_after_seconds(value: str | None, now: float | None = None) -> float | None:
    """A ``Retry-After`` header as seconds from now (delta-seconds or an HTTP date); None if absent or bad."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
    if seconds != seconds:  # NaN
        return None
    return min(max(0.0, seconds), MAX_RETRY_AFTER_S)


class _Retryable(Exception):
    def __init__(self, message: str, retry_after: float | None = None, rate_limited: bool = False) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.rate_limited = rate_limited


class ChatCaller:
    """Chat completions with retries and 429 backoff (see the module docstring).

    Args:
        transport: the httpx transport (default: a pooled AiohttpTransport with ``max_connections``).
        max_retries: retries after connection errors, timeouts, 5xx and malformed answers.
        max_rate_limited: waits after 429s per call.
        backoff_s: the first retry's wait (doubling), and a 429's wait without ``Retry-After``.
        max_backoff_s: the longest wait between retries (a 429's ``Retry-After`` is honoured up to 600 s).
        max_connections: the default transport's pool size.
        seed: seeds the jitter.
        sleep: ``await sleep(seconds)`` (injectable for tests).
        clock: monotonic seconds (injectable for tests).
    """

    def __init__(
        self,
        transport: httpx.AsyncBaseTransport | None = None,
        *,
        max_retries: int = 4,
        max_rate_limited: int = 30,
        backoff_s: float = 1.0,
        max_backoff_s: float = 60.0,
        max_connections: int = 256,
        seed: int = 0,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.transport = transport
        self.max_retries = max_retries
        self.max_rate_limited = max_rate_limited
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.max_connections = max_connections
        self.sleep = sleep
        self.clock = clock
        self._rng = random.Random(seed)
        self._paused_until: dict[str, float] = {}
        self._client: httpx.AsyncClient | None = None
        self.waits: list[tuple[str, str, float]] = []
        """Every wait taken: ``(endpoint name, reason, seconds)``; reason ``"429"`` or ``"retry"``."""

    async def __aenter__(self) -> ChatCaller:
        import httpx

        from finerouter.serving.transport import AiohttpTransport

        transport = self.transport or AiohttpTransport(max_connections=self.max_connections)
        self._client = httpx.AsyncClient(transport=transport, trust_env=False, follow_redirects=False)
        await self._client.__aenter__()
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            await client.__aexit__(None, None, None)

    async def complete(
        self, endpoint: Endpoint, messages: Sequence[Mapping[str, Any]], params: Mapping[str, Any] | None = None
    ) -> ChatResult:
        """One chat completion of ``messages`` (plus ``params`` such as ``max_tokens``), retried as documented.

        Raises:
            UpstreamError: the call failed for good (a non-retryable status, or retries exhausted).
        """
        if self._client is None:
            raise RuntimeError("use ChatCaller as 'async with ChatCaller(...) as caller'")
        body = {**(params or {}), "model": endpoint.model, "messages": list(messages)}
        payload = json.dumps(body, ensure_ascii=False, allow_nan=False).encode("utf-8")
        retries = rate_limited = 0
        t0 = self.clock()
        while True:
            await self._wait_for_pause(endpoint.name)
            try:
                result = await self._attempt(endpoint, payload)
                return ChatResult(result[0], result[1], self.clock() - t0, retries + rate_limited + 1, result[2])
            except _Retryable as exc:
                if exc.rate_limited:
                    rate_limited += 1
                    if rate_limited > self.max_rate_limited:
                        raise UpstreamError(f"{endpoint.name}: still rate-limited after {self.max_rate_limited} waits") from None
                    wait = self.backoff_s if exc.retry_after is None else exc.retry_after
                    # Every caller of this endpoint waits, not only this one.
                    self._paused_until[endpoint.name] = max(self._paused_until.get(endpoint.name, 0.0), self.clock() + wait)
                    logger.info("%s: 429, waiting %.3g s (Retry-After %s)", endpoint.name, wait, exc.retry_after)
                    self.waits.append((endpoint.name, "429", wait))
                    continue
                retries += 1
                if retries > self.max_retries:
                    raise UpstreamError(f"{endpoint.name}: {exc} (after {self.max_retries} retries)") from None
                wait = min(self.max_backoff_s, self.backoff_s * 2 ** (retries - 1)) * (0.5 + 0.5 * self._rng.random())
                logger.debug("%s: %s; retry %d in %.3g s", endpoint.name, exc, retries, wait)
                self.waits.append((endpoint.name, "retry", wait))
                await self.sleep(wait)

    async def _wait_for_pause(self, name: str) -> None:
        until = self._paused_until.get(name)
        if until is None:
            return
        left = until - self.clock()
        if left > 0:
            await self.sleep(left)
        if self._paused_until.get(name) == until:
            self._paused_until.pop(name, None)

    async def _attempt(self, endpoint: Endpoint, payload: bytes) -> tuple[str, Mapping[str, Any] | None, str | None]:
        import httpx

        assert self._client is not None
        timeout = httpx.Timeout(endpoint.timeout_s, connect=endpoint.connect_timeout_s, pool=None)
        headers = {"content-type": "application/json", **endpoint.headers}
        try:
            response = await self._client.post(endpoint.chat_url, content=payload, headers=headers, timeout=timeout)
        except httpx.TransportError as exc:
            raise _Retryable(f"{type(exc).__name__}: {exc}") from None
        status = response.status_code
        if status == 429:
            raise _Retryable("429", retry_after_seconds(response.headers.get("retry-after")), rate_limited=True)
        if status in RETRY_STATUSES:
            raise _Retryable(f"HTTP {status}")
        if not 200 <= status < 300:
            raise UpstreamError(f"{endpoint.name}: HTTP {status}: {response.text[:300]}")
        try:
            data = response.json()
            message = data["choices"][0]["message"]
            text = message.get("content")
            if text is None:
                text = ""
            if not isinstance(text, str):
                text = json.dumps(text)
        except (ValueError, KeyError, IndexError, TypeError, AttributeError):
            raise _Retryable(f"HTTP {status} but not a chat completion: {response.text[:120]!r}") from None
        usage = data.get("usage") if isinstance(data.get("usage"), dict) else None
        rid = data.get("id") if isinstance(data.get("id"), str) else None
        return text, usage, rid


__all__ = ["ChatCaller", "ChatResult", "Endpoint", "RETRY_STATUSES", "retry_after_seconds"]
