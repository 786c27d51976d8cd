"""Running the gateway under uvicorn: shutdown in bounded time, and a loopback server in a background thread.

:func:`make_server` builds the uvicorn server ``finerouter serve`` runs: on SIGTERM or Ctrl-C it stops
accepting connections, lets open requests and streams go on for ``shutdown_timeout_s``, then ends the
gateway's streams still open with an error event (so their clients know the answer is cut short), and exits
at most :data:`STREAM_END_GRACE_S` later (uvicorn cancels whatever is still running then).

:class:`BackgroundServer` runs any ASGI app that way on loopback, for tests, notebooks and benchmarks: the
socket is bound before the server starts (port 0 picks a free port with no race), and
:meth:`BackgroundServer.start` returns once the server accepts connections.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import socket
import threading
import time
from typing import Any

logger = logging.getLogger(__name__)

# After the shutdown timeout, the time left for the streams just ended to send their error events.
STREAM_END_GRACE_S = 1.0


@functools.cache
def _graceful_server_class() -> type:
    import uvicorn

    class GracefulServer(uvicorn.Server):
        """uvicorn's server, ending the gateway's open streams when the shutdown timeout is up."""

        def __init__(self, config: uvicorn.Config, shutdown_timeout_s: float | None) -> None:
            super().__init__(config)
            self.shutdown_timeout_s = shutdown_timeout_s

        async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
            handle = None
            if self.shutdown_timeout_s is not None:
                handle = asyncio.get_running_loop().call_later(self.shutdown_timeout_s, self._end_streams)
            try:
                await super().shutdown(sockets)
            finally:
                if handle is not None:
                    handle.cancel()

        def _end_streams(self) -> None:
            state = getattr(getattr(self.config.app, "state", None), "gateway", None)
            proxy = getattr(state, "proxy", None)
            if proxy is None:
                return
            n = proxy.abort_streams(f"the gateway is shutting down (its {self.shutdown_timeout_s:g} s shutdown timeout is up)")
            if n:
                logger.warning("shutdown timeout (%g s) is up: ended %d open stream(s) with an error event", self.shutdown_timeout_s, n)

    return GracefulServer


def make_server(app: Any, *, shutdown_timeout_s: float | None = 10.0, **config: Any) -> Any:
    """A ``uvicorn.Server`` for ``app`` whose shutdown takes at most ``shutdown_timeout_s`` + :data:`STREAM_END_GRACE_S`.

    Args:
        app: an ASGI app; when it is a gateway app (``app.state.gateway``), its streams still open at the
            timeout are ended with an error event.
        shutdown_timeout_s: how long open requests may go on after SIGTERM / Ctrl-C (None: for ever).
        **config: ``uvicorn.Config`` keywords (host, port, log_level, access_log, ...).
    """
    import uvicorn

    graceful = None if shutdown_timeout_s is None else shutdown_timeout_s + STREAM_END_GRACE_S
    return _graceful_server_class()(uvicorn.Config(app, timeout_graceful_shutdown=graceful, **config), shutdown_timeout_s)


class BackgroundServer:
    """uvicorn serving ``app`` from a daemon thread.

    Args:
        app: any ASGI app.
        host: the address to bind (loopback by default).
        port: the port (0: a free one; read it from :attr:`port` after :meth:`start`).
        log_level: uvicorn's log level.
        shutdown_timeout_s: how long :meth:`stop` lets open requests go on (see :func:`make_server`).

    Use as a context manager, or call :meth:`start` / :meth:`stop`.
    """

    def __init__(
        self,
        app: Any,
        host: str = "127.0.0.1",
        port: int = 0,
        log_level: str = "warning",
        shutdown_timeout_s: float = 1.0,
    ) -> None:
        self.app = app
        self.host = host
        self.port = port
        self.log_level = log_level
        self.shutdown_timeout_s = shutdown_timeout_s
        self._server: Any = None
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, timeout_s: float = 20.0) -> BackgroundServer:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self.port))
        self.port = sock.getsockname()[1]
        self._server = make_server(
            self.app,
            shutdown_timeout_s=self.shutdown_timeout_s,
            log_level=self.log_level,
            access_log=False,
            lifespan="on",
        )

        def run() -> None:
            try:
                self._server.run(sockets=[sock])
            except BaseException as exc:  # noqa: BLE001 - reported by start()
                self._error = exc
            finally:
                sock.close()

        self._thread = threading.Thread(target=run, name=f"uvicorn-{self.port}", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout_s
        while not self._server.started:
            if self._error is not None or not self._thread.is_alive():
                raise RuntimeError(f"the server on {self.url} did not start: {self._error!r}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"the server on {self.url} did not start within {timeout_s} s")
            time.sleep(0.01)
        return self

    def stop(self, timeout_s: float = 10.0) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout_s)
            self._thread = None

    def __enter__(self) -> BackgroundServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


__all__ = ["STREAM_END_GRACE_S", "BackgroundServer", "make_server"]
