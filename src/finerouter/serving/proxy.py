"""One attempt on one upstream: send a chat-completions request through its pooled transport and vet the answer.

:meth:`UpstreamProxy.attempt` either returns an :class:`UpstreamAnswer` to pass back to the client or raises
:class:`UpstreamFailure`, saying how the upstream failed. The dispatcher (:mod:`finerouter.serving.dispatch`)
decides which upstreams to try, in which order, and what a failure costs (fallback, cooldown, metrics).

An attempt fails on a connection error, a timeout, a 429 or a 5xx, a 401 or 403 (the upstream refused the
gateway's own credentials: a configuration problem, never the client's), a 2xx body that is not a JSON object,
a body over ``max_body_bytes``, or a stream that breaks, stalls or ends before its first event.

Any other answer is passed back: a 2xx body as bytes; a 4xx that is the request's own fault with its body
capped at ``max_error_body_bytes`` and scrubbed of anything that looks like a key, and only its
``content-type`` and request-id headers; streaming (SSE) bodies event by event as they arrive
(:class:`~finerouter.serving.relay.StreamRelay`). A 2xx answer's headers are passed back except hop-by-hop
ones, ``set-cookie`` and any whose value looks like a key. :meth:`UpstreamProxy.abort_streams` ends every open
stream with an error event (the server calls it when its shutdown timeout is up).

Requests go straight to each upstream's transport (its connection pool), not through an ``httpx.AsyncClient``:
a proxy wants none of the client layer, whose cookie jar would carry one caller's upstream cookies into every
other caller's requests, and whose redirect, auth and per-request logging steps cost CPU on every request.
Each upstream's URL, headers and timeouts are built once; the request body is parsed once (to route on it) and
written once (with the upstream's model id).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from finerouter.serving.config import Upstream
from finerouter.serving.errors import GatewayHTTPError, error_body
from finerouter.serving.relay import StreamFailure, StreamRelay

if TYPE_CHECKING:
    import httpx

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


class _BodyTooLarge(Exception):
    def __init__(self, size: int, declared: bool) -> None:
        super().__init__(f"{'declares' if declared else 'is over'} {size} bytes")
        self.size = size


def _retry_after(headers: Mapping[str, str]) -> float | None:
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None  # an HTTP date: fall back to the configured cooldown


@dataclass
class UpstreamAnswer:
    """An upstream's answer to pass back to the client.

    Attributes:
        model: the router model that answered.
        status_code: its HTTP status.
        headers: its response headers, those not passed back removed.
        content: the whole body (non-streaming), else None.
        stream: the body's events as they arrive (streaming), else None; its ``aclose()`` closes the upstream
            response, whether or not it was iterated.
    """

    model: str
    status_code: int
    headers: dict[str, str]
    content: bytes | None = None
    stream: StreamRelay | None = None


class UpstreamFailure(Exception):
    """An attempt failed; the upstream gave no answer worth passing back.

    Attributes:
        kind: the ``kind`` label of ``finerouter_upstream_errors_total``: ``connect``, ``timeout``,
            ``http_429``, ``http_5xx``, ``auth``, ``invalid_json``, ``too_large``, ``stream`` or ``stream_timeout``.
        status: the HTTP status it answered with, if it answered.
        retry_after: the seconds a 429 or 5xx's ``Retry-After`` asked for, if any.
    """

    def __init__(self, kind: str, message: str, *, status: int | None = None, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.kind = kind
        self.status = status
        self.retry_after = retry_after


class UpstreamProxy:
    """Sends chat-completions requests to upstreams, one attempt at a time.

    Args:
        transports: one pooled httpx transport per upstream name (the app gives each upstream its own
            :class:`~finerouter.serving.transport.AiohttpTransport`; tests may give ``httpx.MockTransport``).
            The caller opens and closes them.
        upstreams: router model name -> :class:`Upstream`.
        user_agent: the ``User-Agent`` sent upstream (unless an upstream's ``headers`` set one).
        max_body_bytes: the largest answer read from an upstream (a whole body, or a stream in all).
        max_error_body_bytes: the largest error body passed back to the client.
    """

    def __init__(
        self,
        transports: Mapping[str, httpx.AsyncBaseTransport],
        upstreams: Mapping[str, Upstream],
        *,
        user_agent: str = "finerouter-gateway",
        max_body_bytes: int = 32 * 1024 * 1024,
        max_error_body_bytes: int = 64 * 1024,
    ) -> None:
        import httpx

        self.transports = transports
        self.upstreams = upstreams
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

    # -- streams -------------------------------------------------------------------------------------------------
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

    # -- one attempt ---------------------------------------------------------------------------------------------
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

    async def attempt(
        self,
        model: str,
        body: dict[str, Any],
        *,
        stream: bool,
        on_stream_failure: Callable[[StreamRelay, StreamFailure | None], None],
    ) -> UpstreamAnswer:
        """Send ``body`` (with the upstream's model id) to ``model``'s upstream and vet its answer.

        ``on_stream_failure``: given to the :class:`StreamRelay` of a streamed answer; called if the client's
        stream is cut short after its first event (or carries the upstream's own error event).

        Raises:
            UpstreamFailure: the upstream failed (see the module docstring); nothing was passed back.
            GatewayHTTPError: 503 when :meth:`abort_streams` ended the stream before its first event.
        """
        import httpx

        upstream = self.upstreams[model]
        request = self._request(upstream, body, stream)
        try:
            response = await self.transports[model].handle_async_request(request)
        except httpx.TimeoutException as exc:
            raise UpstreamFailure("timeout", f"timed out ({type(exc).__name__})") from None
        except httpx.TransportError as exc:
            raise UpstreamFailure("connect", f"connection error ({type(exc).__name__})") from None
        response.request = request
        status = response.status_code
        if status == 429 or status >= 500 or status in (401, 403):
            await response.aclose()  # the body is not read: an auth failure's body is never shown
            if status in (401, 403):
                raise UpstreamFailure(
                    "auth", f"HTTP {status}: the upstream rejected the gateway's credentials", status=status
                )
            kind = "http_429" if status == 429 else "http_5xx"
            raise UpstreamFailure(kind, f"HTTP {status}", status=status, retry_after=_retry_after(response.headers))
        headers = self.client_headers(response.headers)
        ok = 200 <= status < 300
        if stream and ok and response.headers.get("content-type", "text/event-stream").startswith("text/event-stream"):
            relay = StreamRelay(
                response,
                model,
                first_timeout_s=upstream.timeout_s,
                idle_timeout_s=upstream.stream_idle_s,
                max_bytes=self.max_body_bytes,
                scrub=self.scrub,
                on_failure=on_stream_failure,
                on_close=self._streams.discard,
            )
            self._streams.add(relay)
            try:
                await relay.first()
            except StreamFailure as exc:
                await relay.aclose()
                if exc.kind == "shutdown":
                    raise GatewayHTTPError(
                        503, f"Cannot answer: {exc}.", type="server_error", code="gateway_shutting_down"
                    ) from None
                raise UpstreamFailure(exc.kind, str(exc), status=status) from None
            except BaseException:
                await relay.aclose()
                raise
            return UpstreamAnswer(model, status, headers, stream=relay)
        limit = self.max_body_bytes if ok else self.max_error_body_bytes
        content: bytes | None
        try:
            content = await self._read_body(response, limit)
        except _BodyTooLarge as exc:
            if ok:
                raise UpstreamFailure("too_large", f"the answer {exc} (limit {limit})", status=status) from None
            content = None  # an error body too large to pass back: the gateway says so instead
        except httpx.TransportError as exc:
            kind = "timeout" if isinstance(exc, httpx.TimeoutException) else "connect"
            raise UpstreamFailure(kind, f"answer broken off ({type(exc).__name__})", status=status) from None
        finally:
            await response.aclose()
        if not ok:
            headers = {k: v for k, v in headers.items() if k.lower() in _ERROR_RESPONSE_HEADERS}
            return UpstreamAnswer(model, status, headers, content=self._error_answer(status, content, headers))
        try:
            valid = isinstance(json.loads(content), dict)  # type: ignore[arg-type]
        except ValueError:
            valid = False
        if not valid:
            raise UpstreamFailure("invalid_json", f"HTTP {status} with a body that is not a JSON object", status=status)
        return UpstreamAnswer(model, status, headers, content=content)


__all__ = ["UpstreamAnswer", "UpstreamFailure", "UpstreamProxy"]
