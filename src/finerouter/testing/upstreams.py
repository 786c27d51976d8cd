"""Several FakeUpstreams at once: reached in-process (:class:`InProcessUpstreams`), or served on loopback ports.

From the command line, each upstream on its own port (the JSON line printed maps names to base URLs)::

    python -m finerouter.testing.upstreams --names model-a,model-b --delay-ms 100

Their behaviour can be changed while they run (``POST {base_url}/_control``; see
:mod:`finerouter.testing.fake_upstream`).
"""

from __future__ import annotations

import json
from typing import Any

from finerouter.testing.fake_upstream import FakeUpstream, Scope


class InProcessUpstreams:
    """Several FakeUpstreams reached in-process, with no socket: one ASGI app, one host name per upstream.

    Give :meth:`transport` to ``create_app(transport=...)`` and :meth:`base_url` of each upstream to the
    upstreams config; each request then goes to the fake its host names. The transport is
    ``httpx.ASGITransport``, which buffers every answer and ignores timeouts, so faults that live at the socket
    level (``"timeout"``, ``"close_before_body"``, ``"close_mid_stream"``, ``"stall"``, ``"trickle"``,
    ``"huge"``) need real servers (:class:`finerouter.testing.BackgroundServer`); HTTP statuses,
    ``"invalid_json"`` and ``"truncate"`` work here.

    Args:
        fakes: upstream name -> its FakeUpstream.
    """

    def __init__(self, fakes: dict[str, FakeUpstream]) -> None:
        self.fakes = fakes
        self._hosts = {f"u{i}": name for i, name in enumerate(fakes)}
        self._host_of = {name: host for host, name in self._hosts.items()}

    def base_url(self, name: str) -> str:
        """The ``base_url`` for upstream ``name`` (its host is a label, so any name works)."""
        return f"http://{self._host_of[name]}.upstream.test/v1"

    def transport(self) -> Any:
        """A fresh ``httpx.ASGITransport`` over this app; an upstream that crashes answers 500, as a server would."""
        import httpx

        return httpx.ASGITransport(app=self, raise_app_exceptions=False)

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        host = dict(scope["headers"])[b"host"].decode("latin-1").split(".")[0]
        await self.fakes[self._hosts[host]](scope, receive, send)


class _ByPort:
    """Serves several FakeUpstreams from one uvicorn server, one listening port each."""

    def __init__(self, apps: dict[int, FakeUpstream]) -> None:
        self.apps = apps

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await next(iter(self.apps.values()))(scope, receive, send)
            return
        await self.apps[scope["server"][1]](scope, receive, send)


def main(argv: list[str] | None = None) -> None:
    """Serve fake upstreams on loopback; prints ``{"name": "http://127.0.0.1:PORT/v1", ...}`` once ready."""
    import argparse
    import os
    import socket
    import sys

    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--names", required=True, help="comma-separated upstream names")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--delay-ms", type=float, default=0.0, help="simulated model latency")
    parser.add_argument("--api-key-env", default=None, help="require the key held in this variable")
    args = parser.parse_args(argv)
    api_key = os.environ[args.api_key_env] if args.api_key_env else None
    apps: dict[int, FakeUpstream] = {}
    sockets = []
    urls = {}
    for name in [n.strip() for n in args.names.split(",") if n.strip()]:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((args.host, 0))
        port = sock.getsockname()[1]
        apps[port] = FakeUpstream(name, api_key=api_key, delay_s=args.delay_ms / 1000.0)
        sockets.append(sock)
        urls[name] = f"http://{args.host}:{port}/v1"
    for sock in sockets:
        sock.listen(2048)  # connections queue from now on, so the URLs can be announced before serving
    sys.stdout.write(json.dumps(urls) + "\n")
    sys.stdout.flush()
    config = uvicorn.Config(
        _ByPort(apps), log_level="warning", access_log=False, lifespan="on", timeout_graceful_shutdown=2
    )
    server = uvicorn.Server(config)
    try:
        server.run(sockets=sockets)
    except KeyboardInterrupt:  # uvicorn re-raises the signal it stopped on
        pass


if __name__ == "__main__":
    main()


__all__ = ["InProcessUpstreams", "main"]
