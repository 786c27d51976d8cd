"""The gateway's upstream transport: an ``httpx.AsyncBaseTransport`` that sends through aiohttp.

The gateway builds ``httpx.Request`` objects and reads ``httpx.Response`` objects, so tests can inject any httpx
transport (``httpx.MockTransport``). For real upstreams it uses this one: aiohttp's HTTP/1.1 client parses in C
on the event loop directly, where httpx's default transport (httpcore over anyio, h11 in pure Python) spends
several times more CPU per call; on a gateway whose own work per request is a few milliseconds that is the
largest single item (docs/serving.md has the gateway's measured CPU per request, with its command).

What the transport does not do, on purpose (a proxy wants none of it): keep cookies, follow redirects, decode
bodies (the ``httpx.Response`` decodes ``content-encoding`` itself, as with any httpx transport), or read proxy
settings from the environment. Timeouts come from the request's ``timeout`` extension, as httpx sets it:
``connect`` bounds opening a connection, ``pool`` waiting for one, ``read`` the wait for each next bytes of
the answer. aiohttp's errors are raised as their httpx equivalents (``ConnectError``, ``ConnectTimeout``,
``ReadTimeout``, ``RemoteProtocolError``, ``ReadError``), so callers handle one exception tree.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import httpx

if TYPE_CHECKING:
    import aiohttp

# Set by aiohttp from the request itself; httpx's values for them would be duplicates.
_SKIP_REQUEST_HEADERS = frozenset({b"host", b"content-length", b"transfer-encoding"})


@contextmanager
def _httpx_errors(request: httpx.Request) -> Any:
    """Raise aiohttp's (and asyncio's) errors as the httpx exceptions a caller of any httpx transport expects."""
    import aiohttp

    try:
        yield
    except aiohttp.ConnectionTimeoutError as exc:
        raise httpx.ConnectTimeout(str(exc) or "connect timed out", request=request) from exc
    except (aiohttp.ServerTimeoutError, asyncio.TimeoutError) as exc:
        raise httpx.ReadTimeout(str(exc) or "read timed out", request=request) from exc
    except aiohttp.ClientConnectorError as exc:
        raise httpx.ConnectError(str(exc), request=request) from exc
    except (aiohttp.ServerDisconnectedError, aiohttp.ClientPayloadError, aiohttp.ClientResponseError) as exc:
        raise httpx.RemoteProtocolError(str(exc) or type(exc).__name__, request=request) from exc
    except (aiohttp.ClientError, OSError) as exc:
        raise httpx.ReadError(str(exc) or type(exc).__name__, request=request) from exc


class _ResponseStream(httpx.AsyncByteStream):
    """An aiohttp response body as an httpx stream; closing it returns (or closes) the connection."""

    def __init__(self, response: aiohttp.ClientResponse, request: httpx.Request) -> None:
        self._response = response
        self._request = request

    async def __aiter__(self) -> AsyncIterator[bytes]:
        with _httpx_errors(self._request):
            async for chunk in self._response.content.iter_any():
                yield chunk

    async def aclose(self) -> None:
        self._response.release()


class AiohttpTransport(httpx.AsyncBaseTransport):
    """Sends httpx requests with one pooled ``aiohttp.ClientSession``.

    Args:
        max_connections: the most connections open at once (per transport; the gateway makes one per upstream).
        keepalive_s: how long an idle connection is kept for reuse.

    Use as an async context manager (or call :meth:`aclose`); the session starts on the first request, inside
    the running event loop.
    """

    def __init__(self, max_connections: int = 100, keepalive_s: float = 15.0) -> None:
        self.max_connections = max_connections
        self.keepalive_s = keepalive_s
        self._session: aiohttp.ClientSession | None = None

    def _open(self) -> aiohttp.ClientSession:
        import aiohttp

        connector = aiohttp.TCPConnector(
            limit=self.max_connections, limit_per_host=0, keepalive_timeout=self.keepalive_s
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            cookie_jar=aiohttp.DummyCookieJar(),
            auto_decompress=False,
            trust_env=False,
            timeout=aiohttp.ClientTimeout(total=None),
        )
        return self._session

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        import aiohttp

        session = self._session or self._open()
        t = request.extensions.get("timeout", {})
        connect, pool, read = t.get("connect"), t.get("pool"), t.get("read")
        timeout = aiohttp.ClientTimeout(
            total=None,
            connect=None if connect is None or pool is None else connect + pool,
            sock_connect=connect,
            sock_read=read,
        )
        headers = [
            (k.decode("latin-1"), v.decode("latin-1"))
            for k, v in request.headers.raw
            if k.lower() not in _SKIP_REQUEST_HEADERS
        ]
        try:
            data: Any = request.content
        except httpx.RequestNotRead:
            data = request.stream  # an async iterable of bytes: sent chunked
        with _httpx_errors(request):
            response = await session.request(
                request.method,
                str(request.url),
                headers=headers,
                data=data,
                timeout=timeout,
                allow_redirects=False,
                # aiohttp adds these unless told not to; a request without them must go out without them.
                skip_auto_headers=("Accept", "Accept-Encoding", "User-Agent", "Content-Type"),
            )
        return httpx.Response(
            response.status,
            headers=response.raw_headers,
            stream=_ResponseStream(response, request),
            extensions={
                "http_version": f"HTTP/{response.version.major}.{response.version.minor}".encode()
                if response.version
                else b"HTTP/1.1",
                "reason_phrase": (response.reason or "").encode("latin-1", "replace"),
            },
        )

    async def aclose(self) -> None:
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()


__all__ = ["AiohttpTransport"]
