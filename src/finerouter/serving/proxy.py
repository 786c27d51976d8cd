"""Forwarding to upstreams: one pooled httpx transport per upstream, fallback along the ranking, cooldowns.

A request is tried on its candidate models in order. An attempt fails on a connection error, a timeout, a
429 or a 5xx, a 401 or 403 (the upstream refused the gateway's own credentials: a configuration problem, never
the client's), a 2xx body that is not a JSON object, a body over ``max_body_bytes``, or a stream that breaks,
stalls or ends before its first event; the failing upstream is then cooled down (skipped by later requests
for ``cooldown_s``, or as long as a 429's ``Retry-After`` asks, up to five minutes) and the next candidate is
tried, up to ``max_attempts`` in all. Cooling upstreams are skipped while a healthy candidate remains; when
only cooling ones are left they are still tried rather than failing the client outright.

Any other answer is passed back: a 2xx body as bytes; a 4xx that is the request's own fault with its body
capped at ``max_error_body_bytes`` and scrubbed of anything that looks like a key, and only its
``content-type`` and request-id headers; streaming (SSE) bodies event by event as they arrive. A 2xx answer's
headers are passed back except hop-by-hop ones, ``set-cookie`` and any whose value looks like a key. A stream can move to another model until its first event has been read; after that it
belongs to its model, and if that model's stream breaks off, stalls for ``stream_idle_timeout_s``, grows past
``max_body_bytes`` or ends without ``[DONE]`` or a ``finish_reason``, the client's stream ends with an
OpenAI-style error event (``data: {"error": {...}}``) and no ``[DONE]``, so no client takes a cut answer for a
whole one. Such a stream counts as a failure of its upstream (cooldown, metrics). :meth:`UpstreamProxy.abort_streams`
ends every open stream that way (the server calls it when its shutdown timeout is up).

Requests go straight to each upstream's transport (its connection pool), not through an ``httpx.AsyncClient``:
a proxy wants none of the client layer, whose cookie jar would carry one caller's upstream cookies into every
other caller's requests, and whose redirect, auth and per-request logging steps cost CPU on every request.
Each upstream's URL, headers and timeouts are built once; the request body is parsed once (to route on it) and
written once (with the upstream's model id).
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from finerouter.serving.config import Upstream
from finerouter.serving.errors import GatewayHTTPError, error_body
from finerouter.serving.metrics import GatewayMetrics

if TYPE_CHECKING:
    import httpx

logger = logging.getLogger(__name__)

MAX_RETRY_AFTER_S = 300.0
# The largest single server-sent event relayed (a tool call's arguments arrive in many small events).
MAX_SSE_EVENT_BYTES = 1024 * 1024

# Response headers not passed back: hop-by-hop ones, those the gateway's server sets itself, and those that
# belong to the gateway's own session with the upstream (cookies, auth challenges, alternative services).
_DROP_RESPONSE_HEADERS = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "trailers",
        "transfer-encoding",
        "upgrade",
        "content-length",
        "content-encoding",
        "date",
        "server",
        "set-cookie",
        "set-cookie2",
        "www-authenticate",
        "alt-svc",
    }
)

# The only upstream headers passed back with a relayed error answer (whose headers, like its body, are more
# likely to carry debugging details of the upstream's own deployment).
_ERROR_RESPONSE_HEADERS = frozenset({"content-type", "x-request-id", "request-id"})

# What looks like a credential: OpenAI-style keys (masked ones included), bearer tokens, and key=value pairs
# naming a key. Matched text is replaced by "[redacted]" in relayed error bodies; a header whose value matches
# is not passed back.
_KEYISH = (
    r"(?<![A-Za-z0-9])sk-[A-Za-z0-9_\-*.]{4,}"
    r"|(?i:bearer)\s+(?=[A-Za-z._~+/=\-*]*[0-9])[A-Za-z0-9._~+/=\-*]{8,}"  # a token has a digit; prose has none
    r"|(?P<name>(?i:api[_-]?key|access[_-]?token|secret[_-]?key|password)[\"']?\s*[:=]\s*[\"']?)[^\"'\s,;&}]{4,}"
)
_KEYISH_TEXT = re.compile(_KEYISH)
_KEYISH_BYTES = re.compile(_KEYISH.encode())


def _redact(match: re.Match[bytes]) -> bytes:
    return (match.group("name") or b"") + b"[redacted]"


# Server-sent events: where one ends, and what ends a whole answer.
_EVENT_ENDS = (b"\n\n", b"\r\n\r\n", b"\r\r")
_DONE = re.compile(rb"^data: ?\[DONE\][ \t]*\r?$", re.M)
_FINISHED = re.compile(rb'"finish_reason"\s*:\s*"')
_ERROR_EVENT = re.compile(rb'^data: ?\{\s*"error"\s*:', re.M)


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
        headers: its response headers, those not passed back removed.
        content: the whole body (non-streaming), else None.
        stream: the body's events as they arrive (streaming), else None; its ``aclose()`` closes the upstream
            response, whether or not it was iterated.
        attempts: every try, the answering one last.
    """

    model: str
    status_code: int
    headers: dict[str, str]
    content: bytes | None = None
    stream: StreamRelay | None = None
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


class _BodyTooLarge(Exception):
    def __init__(self, size: int, declared: bool) -> None:
        super().__init__(f"{'declares' if declared else 'is over'} {size} bytes")
        self.size = size


class StreamFailure(Exception):
    """A streamed answer could not be relayed whole.

    Attributes:
        kind: the failed attempt's kind (``stream``, ``stream_timeout``, ``too_large``), or ``shutdown``.
        reason: the ``reason`` label of ``finerouter_stream_failures_total``.
        code: the ``code`` of the error event the client receives.
    """

    _CODES = {
        "stream": ("broken", "upstream_stream_broken"),
        "stream_timeout": ("timeout", "upstream_stream_timeout"),
        "too_large": ("too_large", "upstream_answer_too_large"),
        "shutdown": ("shutdown", "gateway_shutting_down"),
    }

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.reason, self.code = self._CODES[kind]

    def event(self, model: str) -> bytes:
        """The server-sent error event that tells the client its answer is incomplete."""
        kind = "server_error" if self.kind == "shutdown" else "upstream_error"
        message = f"The streamed answer from model {model!r} is incomplete: {self}."
        return b"data: " + json.dumps(error_body(message, type=kind, code=self.code)).encode() + b"\n\n"


def _retry_after(headers: Mapping[str, str]) -> float | None:
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None  # an HTTP date: fall back to the configured cooldown


def _events_end(buf: bytes) -> int:
    """The index just past the last complete server-sent event in ``buf`` (0: none is complete)."""
    end = 0
    for sep in _EVENT_ENDS:
        i = buf.rfind(sep)
        if i >= 0:
            end = max(end, i + len(sep))
    return end


class StreamRelay:
    """Relays one upstream SSE answer to the client, whole events at a time, and knows a whole answer from a cut one.

    Only complete events (ending in a blank line) are passed on, so the client's stream is always well formed
    and an error event can follow at any point. The answer is whole when it carried ``data: [DONE]``, a
    non-null ``finish_reason`` or the upstream's own error event; anything else that ends it (a broken
    connection, a pause longer than ``idle_timeout_s``, more than ``max_bytes`` in all or a single event over
    :data:`MAX_SSE_EVENT_BYTES`, a clean end without either marker, :meth:`abort`) is a :class:`StreamFailure`.

    :meth:`first` reads up to the first complete event (a failure there is a failed attempt: the proxy tries
    the next model); iterating relays the rest and ends a failed stream with the failure's error event.
    """

    def __init__(
        self,
        proxy: UpstreamProxy,
        response: httpx.Response,
        model: str,
        *,
        first_timeout_s: float,
        idle_timeout_s: float,
        max_bytes: int,
    ) -> None:
        self._proxy = proxy
        self._response = response
        self.model = model
        self._raw = response.aiter_bytes()  # decoded: content-encoding is not passed on
        self._first_timeout_s = first_timeout_s
        self._idle_timeout_s = idle_timeout_s
        self._max_bytes = max_bytes
        self._max_event = min(MAX_SSE_EVENT_BYTES, max_bytes)
        self._pending = b""
        self._size = 0
        self.done = False  # [DONE], a finish_reason or the upstream's error event was relayed
        self.upstream_error = False
        self._deadline: asyncio.Timeout | None = None
        self._abort: str | None = None
        self._first: bytes | None = None
        self._iterator: AsyncIterator[bytes] | None = None
        self._closed = False

    # -- reading ----------------------------------------------------------------------------------------------
    async def _read(self, timeout_s: float) -> bytes | None:
        """The next chunk of the body (None at its end) within ``timeout_s``."""
        import httpx

        if self._abort is not None:
            raise StreamFailure("shutdown", self._abort)
        try:
            async with asyncio.timeout(timeout_s) as self._deadline:
                return await anext(self._raw)
        except StopAsyncIteration:
            return None
        except TimeoutError:
            if self._abort is not None:
                raise StreamFailure("shutdown", self._abort) from None
            raise StreamFailure("stream_timeout", f"the upstream sent nothing for {timeout_s:g} s") from None
        except httpx.TimeoutException:
            raise StreamFailure("stream_timeout", f"the upstream sent nothing for {timeout_s:g} s") from None
        except httpx.TransportError as exc:
            raise StreamFailure("stream", f"the upstream broke off the stream ({type(exc).__name__})") from None
        finally:
            self._deadline = None

    def _take(self, chunk: bytes) -> bytes:
        """Add ``chunk``; return the events it completes (possibly none)."""
        self._size += len(chunk)
        if self._size > self._max_bytes:
            raise StreamFailure("too_large", f"the stream went past the gateway's limit of {self._max_bytes} bytes")
        buf = self._pending + chunk if self._pending else chunk
        end = _events_end(buf)
        out, self._pending = buf[:end], buf[end:]
        if len(self._pending) > self._max_event:
            raise StreamFailure("too_large", f"an event went past the gateway's limit of {self._max_event} bytes")
        if out:
            out = self._scan(out)
        return out

    def _scan(self, events: bytes) -> bytes:
        if b'"error"' in events and _ERROR_EVENT.search(events):
            self.upstream_error = self.done = True
            return self._proxy.scrub(events)
        if not self.done and (_FINISHED.search(events) or _DONE.search(events)):
            self.done = True
        return events

    def _tail(self) -> bytes:
        """At the body's end: the last event if it lacks only its closing blank line, else nothing."""
        tail, self._pending = self._pending, b""
        if tail.strip() and (self.done or _DONE.search(tail) or _FINISHED.search(tail)):
            self.done = True
            return tail
        return b""

    async def first(self) -> bytes:
        """Read up to the first complete event and return it (not yet relayed).

        Raises:
            StreamFailure: the stream broke, stalled, ended or grew too large before its first event.
        """
        while True:
            chunk = await self._read(self._first_timeout_s)
            if chunk is None:
                tail = self._tail()
                if tail:
                    self._first = tail
                    return tail
                raise StreamFailure("stream", "the upstream ended the stream before its first event")
            out = self._take(chunk)
            if out:
                self._first = out
                return out

    async def _relay(self) -> AsyncIterator[bytes]:
        try:
            if self._first:
                yield self._first
            while True:
                chunk = await self._read(self._idle_timeout_s)
                if chunk is None:
                    tail = self._tail()
                    if tail:
                        yield tail
                    if not self.done:
                        raise StreamFailure("stream", "the upstream ended the stream without [DONE] or a finish_reason")
                    if self.upstream_error:
                        self._proxy.stream_failed(self, None)
                    return
                out = self._take(chunk)
                if out:
                    yield out
        except StreamFailure as exc:
            if not self.done:  # after [DONE] (or a finish_reason) the answer is whole, whatever follows
                self._proxy.stream_failed(self, exc)
                yield exc.event(self.model)
        finally:
            await self._release()

    def __aiter__(self) -> AsyncIterator[bytes]:
        if self._iterator is None:
            self._iterator = self._relay()
        return self._iterator

    def abort(self, reason: str) -> None:
        """End the stream with an error event saying ``reason``, now if it is waiting for the upstream."""
        self._abort = reason
        if self._deadline is not None:
            try:
                self._deadline.reschedule(asyncio.get_running_loop().time())
            except RuntimeError:  # the wait is already over
                pass

    async def _release(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._proxy._streams.discard(self)
        await self._response.aclose()

    async def aclose(self) -> None:
        """Close the relay (if it was started) and the upstream response; safe to call more than once."""
        try:
            if self._iterator is not None:
                await self._iterator.aclose()  # type: ignore[attr-defined]
        finally:
            await self._release()


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
        max_body_bytes: the largest answer read from an upstream (a whole body, or a stream in all).
        max_error_body_bytes: the largest error body passed back to the client.
    """

    def __init__(
        self,
        transports: Mapping[str, httpx.AsyncBaseTransport],
        upstreams: Mapping[str, Upstream],
        cooldown: CooldownTracker,
        metrics: GatewayMetrics,
        *,
        user_agent: str = "finerouter-gateway",
        max_body_bytes: int = 32 * 1024 * 1024,
        max_error_body_bytes: int = 64 * 1024,
    ) -> None:
        import httpx

        self.transports = transports
        self.upstreams = upstreams
        self.cooldown = cooldown
        self.metrics = metrics
        self.max_body_bytes = max_body_bytes
        self.max_error_body_bytes = max_error_body_bytes
        self._streams: set[StreamRelay] = set()
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
        # The configured keys themselves, as sent and as JSON would escape them, longest first.
        secrets = {s for u in upstreams.values() if u.api_key for s in (u.api_key, json.dumps(u.api_key)[1:-1])}
        alternatives = "|".join(re.escape(s) for s in sorted(secrets, key=len, reverse=True))
        self._secrets_text = re.compile(alternatives) if secrets else None
        self._secrets_bytes = re.compile(alternatives.encode()) if secrets else None

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

    # -- what reaches the client ---------------------------------------------------------------------------------
    def scrub(self, data: bytes) -> bytes:
        """``data`` with the configured upstream keys and anything else that looks like a key replaced."""
        if self._secrets_bytes is not None:
            data = self._secrets_bytes.sub(b"[redacted]", data)
        return _KEYISH_BYTES.sub(_redact, data)

    def _looks_secret(self, value: str) -> bool:
        return bool(_KEYISH_TEXT.search(value) or (self._secrets_text is not None and self._secrets_text.search(value)))

    def client_headers(self, headers: httpx.Headers) -> dict[str, str]:
        """The upstream response headers passed back: no hop-by-hop (also those its ``Connection`` names),
        no cookies or auth challenges, none whose value looks like a key."""
        named = {t.strip().lower() for v in headers.get_list("connection") for t in v.split(",")}
        return {
            k: v
            for k, v in headers.items()
            if (lk := k.lower()) not in _DROP_RESPONSE_HEADERS and lk not in named and not self._looks_secret(v)
        }

    def _error_answer(self, status: int, content: bytes | None, headers: dict[str, str]) -> bytes:
        """An upstream 4xx body as passed back: scrubbed, or replaced by the gateway's own error when it is
        over the limit (``content`` None)."""
        if content is not None:
            return self.scrub(content)
        headers["content-type"] = "application/json"
        message = (
            f"The upstream answered HTTP {status}; its error body is over the gateway's limit of "
            f"{self.max_error_body_bytes} bytes and is not passed on."
        )
        return json.dumps(error_body(message, type="upstream_error", code="upstream_error_body_withheld")).encode()

    # -- attempts ------------------------------------------------------------------------------------------------
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
        if kind == "auth":
            upstream = self.upstreams[attempt.model]
            logger.error(
                "upstream %s rejected the gateway's credentials (%s): check the key in %s; cooling down for %.1f s",
                attempt.model,
                f"HTTP {attempt.status}",
                upstream.api_key_env or "its api_key_env (none is configured)",
                span,
            )
        else:
            logger.warning("upstream %s failed (%s); cooling down for %.1f s", attempt.model, error, span)

    def stream_failed(self, relay: StreamRelay, failure: StreamFailure | None) -> None:
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

    @property
    def open_streams(self) -> int:
        """Streams being relayed now."""
        return len(self._streams)

    def abort_streams(self, reason: str = "the gateway is shutting down") -> int:
        """End every open stream with an error event saying ``reason``; returns how many there were."""
        streams = list(self._streams)
        for relay in streams:
            relay.abort(reason)
        return len(streams)

    async def _read_body(self, response: httpx.Response, limit: int) -> bytes:
        """The whole body, or _BodyTooLarge as soon as it (or its declared length) exceeds ``limit`` bytes."""
        declared = response.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise _BodyTooLarge(int(declared), declared=True)
        parts: list[bytes] = []
        size = 0
        async for chunk in response.aiter_bytes():
            size += len(chunk)
            if size > limit:
                raise _BodyTooLarge(size, declared=False)
            parts.append(chunk)
        return b"".join(parts)

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

        Raises:
            AllUpstreamsFailed: every attempt failed.
            GatewayHTTPError: 503 when :meth:`abort_streams` ended the stream before its first event.
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
            status = attempt.status = response.status_code
            if status == 429 or status >= 500 or status in (401, 403):
                await response.aclose()  # the body is not read: an auth failure's body is never shown
                attempt.seconds = time.perf_counter() - t0
                if status in (401, 403):
                    self._failed(attempt, "auth", f"HTTP {status}: the upstream rejected the gateway's credentials")
                else:
                    kind = "http_429" if status == 429 else "http_5xx"
                    self._failed(attempt, kind, f"HTTP {status}", _retry_after(response.headers))
                continue
            headers = self.client_headers(response.headers)
            content: bytes | None = None
            relay: StreamRelay | None = None
            ok = 200 <= status < 300
            if stream and ok and response.headers.get("content-type", "text/event-stream").startswith("text/event-stream"):
                relay = StreamRelay(
                    self,
                    response,
                    model,
                    first_timeout_s=upstream.timeout_s,
                    idle_timeout_s=upstream.stream_idle_s,
                    max_bytes=self.max_body_bytes,
                )
                self._streams.add(relay)
                try:
                    await relay.first()
                except StreamFailure as exc:
                    await relay.aclose()
                    attempt.seconds = time.perf_counter() - t0
                    if exc.kind == "shutdown":
                        attempt.kind, attempt.error = "shutdown", str(exc)
                        raise GatewayHTTPError(
                            503, f"Cannot answer: {exc}.", type="server_error", code="gateway_shutting_down"
                        ) from None
                    self._failed(attempt, exc.kind, str(exc))
                    continue
                except BaseException:
                    await relay.aclose()
                    raise
            else:
                limit = self.max_body_bytes if ok else self.max_error_body_bytes
                try:
                    content = await self._read_body(response, limit)
                except _BodyTooLarge as exc:
                    if ok:
                        attempt.seconds = time.perf_counter() - t0
                        self._failed(attempt, "too_large", f"the answer {exc} (limit {limit})")
                        continue
                    content = None  # an error body too large to pass back: the gateway says so instead
                except httpx.TransportError as exc:
                    attempt.seconds = time.perf_counter() - t0
                    kind = "timeout" if isinstance(exc, httpx.TimeoutException) else "connect"
                    self._failed(attempt, kind, f"answer broken off ({type(exc).__name__})")
                    continue
                finally:
                    await response.aclose()
                if ok:
                    try:
                        valid = isinstance(json.loads(content), dict)  # type: ignore[arg-type]
                    except ValueError:
                        valid = False
                    if not valid:
                        attempt.seconds = time.perf_counter() - t0
                        self._failed(attempt, "invalid_json", f"HTTP {status} with a body that is not a JSON object")
                        continue
                else:
                    headers = {k: v for k, v in headers.items() if k.lower() in _ERROR_RESPONSE_HEADERS}
                    content = self._error_answer(status, content, headers)
            attempt.seconds = time.perf_counter() - t0
            self.metrics.upstream_latency.labels(model).observe(attempt.seconds)
            self.cooldown.succeed(model)
            if len(attempts) > 1:
                self.metrics.fallbacks.labels(attempts[0].model, model).inc()
            return ProxyResult(
                model=model,
                status_code=status,
                headers=headers,
                content=content,
                stream=relay,
                attempts=attempts,
            )
        raise AllUpstreamsFailed(attempts)


__all__ = [
    "MAX_SSE_EVENT_BYTES",
    "AllUpstreamsFailed",
    "Attempt",
    "CooldownTracker",
    "ProxyResult",
    "StreamFailure",
    "StreamRelay",
    "UpstreamProxy",
]
