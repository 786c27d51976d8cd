"""Serving an ASGI app on loopback from a background thread, for tests, notebooks and benchmarks.

:class:`BackgroundServer` runs an app under the same uvicorn server ``finerouter serve`` uses
(:func:`finerouter.serving.server.make_server`, so shutdown takes bounded time): the socket is bound before the
server starts (port 0 picks a free port with no race), and :meth:`BackgroundServer.start` returns once the
server accepts connections.
"""

from __future__ import annotations

import socket
import threading
import time
from typing import Any

from finerouter.serving.server import make_server


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


__all__ = ["BackgroundServer"]
