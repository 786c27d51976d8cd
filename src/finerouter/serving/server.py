"""Running the gateway under uvicorn with shutdown in bounded time.

:func:`make_server` builds the uvicorn server ``finerouter serve`` runs: on SIGTERM or Ctrl-C it stops
accepting connections, lets open requests and streams go on for ``shutdown_timeout_s``, then ends the
gateway's streams still open with an error event (so their clients know the answer is cut short), and exits
at most :data:`STREAM_END_GRACE_S` later (uvicorn cancels whatever is still running then).
:class:`finerouter.testing.BackgroundServer` runs an app the same way from a thread, for tests and benchmarks.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import socket
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


__all__ = ["STREAM_END_GRACE_S", "make_server"]
