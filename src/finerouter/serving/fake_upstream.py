"""A small, real chat-completions server that answers by echoing: for tests, load tests and smoke tests.

It speaks enough of the OpenAI API for a gateway to be exercised without spending tokens: plain answers,
streaming (SSE) answers, tool calls (when the request offers ``tools``), bearer-key checks, and failures on
demand (an HTTP status such as 429 or 500, or a hang longer than the caller's timeout). Every answer names
the upstream (``"[model-a] ..."``) so a test can tell who answered.

Run several from the command line, one port each (the JSON line printed maps names to base URLs)::

    python -m finerouter.serving.fake_upstream --names model-a,model-b --delay-ms 100

and change their behaviour while they run: ``POST {base_url}/_control {"fail": 500}`` (or ``429``,
``"timeout"``, ``null`` to heal; ``"times": 3`` to fail only the next three calls; ``"delay_ms": 50``).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections import deque
from typing import Any

Scope = dict[str, Any]


async def read_body(receive: Any) -> bytes:
    """The whole body of an ASGI HTTP request, however many messages it came in."""
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            return body


def _last_text(messages: list[dict[str, Any]], role: str | None = "user") -> str:
    for m in reversed(messages):
        if role is None or m.get("role") == role:
            c = m.get("content")
            if isinstance(c, list):
                c = " ".join(p.get("text", "") for p in c if isinstance(p, dict))
            return c if isinstance(c, str) else ""
    return ""


class FakeUpstream:
    """One echoing upstream (a plain ASGI app).

    Args:
        name: shown in every answer, ``"[name] <last user message>"``.
        api_key: when set, requests must carry ``Authorization: Bearer <api_key>`` (else 401).
        delay_s: wait before answering (simulated model latency).
        hang_s: how long a ``fail="timeout"`` call hangs before it answers anyway.
        record: how many recent requests to keep in :attr:`requests`.

    Attributes:
        fail: None (healthy), an HTTP status to answer with, or ``"timeout"``.
        fail_times: fail only this many more calls (None: until healed).
        retry_after: the ``Retry-After`` seconds sent with a 429 (None: no header).
        calls: chat-completions calls received.
        requests: the most recent calls, each ``{"body": ..., "headers": {...}}``.
    """

    def __init__(
        self,
        name: str,
        *,
        api_key: str | None = None,
        delay_s: float = 0.0,
        hang_s: float = 5.0,
        record: int = 200,
    ) -> None:
        self.name = name
        self.api_key = api_key
        self.delay_s = delay_s
        self.hang_s = hang_s
        self.fail: int | str | None = None
        self.fail_times: int | None = None
        self.retry_after: float | None = None
        self.calls = 0
        self.requests: deque[dict[str, Any]] = deque(maxlen=record)
        self._ids = itertools.count(1)

    # -- control --------------------------------------------------------------------------------------------
    def set_failure(self, fail: int | str | None, times: int | None = None, retry_after: float | None = None) -> None:
        """Fail with ``fail`` (a status or ``"timeout"``; None heals), for ``times`` calls or until healed."""
        if fail is not None and fail != "timeout" and not (isinstance(fail, int) and 400 <= fail <= 599):
            raise ValueError(f"fail must be None, 'timeout' or an HTTP error status. Got {fail!r}.")
        self.fail, self.fail_times, self.retry_after = fail, times, retry_after

    def _take_failure(self) -> int | str | None:
        if self.fail is None:
            return None
        fail = self.fail
        if self.fail_times is not None:
            self.fail_times -= 1
            if self.fail_times <= 0:
                self.fail, self.fail_times = None, None
        return fail

    # -- ASGI -----------------------------------------------------------------------------------------------
    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        body = await read_body(receive)
        path, method = scope["path"], scope["method"]
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        if method == "POST" and path.endswith("/chat/completions"):
            await self._chat(body, headers, send)
        elif method == "POST" and path.endswith("/_control"):
            try:
                spec = json.loads(body or b"{}")
                if "delay_ms" in spec:
                    self.delay_s = float(spec["delay_ms"]) / 1000.0
                if "fail" in spec:
                    self.set_failure(spec["fail"], spec.get("times"), spec.get("retry_after"))
            except (ValueError, TypeError) as exc:
                await self._json(send, 400, {"error": {"message": str(exc), "type": "invalid_request_error"}})
                return
            await self._json(send, 200, self.stats())
        elif method == "GET" and path.endswith("/_stats"):
            await self._json(send, 200, self.stats())
        elif method == "GET" and path.endswith("/models"):
            await self._json(send, 200, {"object": "list", "data": [{"id": self.name, "object": "model"}]})
        else:
            await self._json(send, 404, {"error": {"message": f"no route {method} {path}", "type": "invalid_request_error"}})

    def stats(self) -> dict[str, Any]:
        return {"name": self.name, "calls": self.calls, "fail": self.fail, "delay_ms": self.delay_s * 1000}

    @staticmethod
    async def _json(send: Any, status: int, obj: Any, extra: list[tuple[bytes, bytes]] | None = None) -> None:
        data = json.dumps(obj).encode()
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode()), *(extra or [])],
            }
        )
        await send({"type": "http.response.body", "body": data})

    async def _chat(self, raw: bytes, headers: dict[str, str], send: Any) -> None:
        self.calls += 1
        if self.api_key is not None and headers.get("authorization") != f"Bearer {self.api_key}":
            await self._json(send, 401, {"error": {"message": "bad upstream key", "type": "invalid_request_error", "code": "invalid_api_key"}})
            return
        try:
            body = json.loads(raw)
            messages = body["messages"]
        except (ValueError, KeyError, TypeError):
            await self._json(send, 400, {"error": {"message": "bad request body", "type": "invalid_request_error"}})
            return
        self.requests.append({"body": body, "headers": headers})
        fail = self._take_failure()
        if fail == "timeout":
            await asyncio.sleep(self.hang_s)
        elif fail is not None:
            extra = [(b"retry-after", str(self.retry_after).encode())] if self.retry_after is not None else []
            await self._json(send, int(fail), {"error": {"message": f"{self.name} failing on purpose", "type": "server_error"}}, extra)
            return
        if self.delay_s > 0:
            await asyncio.sleep(self.delay_s)
        n = next(self._ids)
        cid = f"chatcmpl-{self.name}-{n}"
        model = body.get("model", self.name)
        created = int(time.time())
        tools = body.get("tools") or []
        tool_call = None
        if tools and messages[-1].get("role") != "tool":
            fn = tools[0].get("function", {}).get("name", "tool")
            tool_call = {"id": f"call_{n}", "type": "function", "function": {"name": fn, "arguments": json.dumps({"query": _last_text(messages)})}}
            text = None
        elif messages[-1].get("role") == "tool":
            text = f"[{self.name}] tool said: {_last_text(messages, 'tool')}"
        else:
            text = f"[{self.name}] {_last_text(messages) or _last_text(messages, None)}"
        if body.get("stream"):
            await self._stream(send, cid, model, created, text, tool_call)
            return
        message: dict[str, Any] = {"role": "assistant", "content": text}
        if tool_call is not None:
            message["tool_calls"] = [tool_call]
        completion_tokens = 0 if text is None else len(text.split())
        prompt_tokens = sum(len(_last_text([m], None).split()) for m in messages)
        await self._json(
            send,
            200,
            {
                "id": cid,
                "object": "chat.completion",
                "created": created,
                "model": model,
                "choices": [{"index": 0, "message": message, "finish_reason": "tool_calls" if tool_call else "stop"}],
                "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens, "total_tokens": prompt_tokens + completion_tokens},
            },
            [(b"x-upstream-name", self.name.encode())],
        )

    async def _stream(self, send: Any, cid: str, model: str, created: int, text: str | None, tool_call: dict[str, Any] | None) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache"), (b"x-upstream-name", self.name.encode())],
            }
        )

        async def event(delta: dict[str, Any], finish: str | None = None) -> None:
            chunk = {"id": cid, "object": "chat.completion.chunk", "created": created, "model": model,
                     "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
            await send({"type": "http.response.body", "body": b"data: " + json.dumps(chunk).encode() + b"\n\n", "more_body": True})

        await event({"role": "assistant", "content": ""})
        if tool_call is not None:
            fn = tool_call["function"]
            args = fn["arguments"]
            half = len(args) // 2
            await event({"tool_calls": [{"index": 0, "id": tool_call["id"], "type": "function", "function": {"name": fn["name"], "arguments": args[:half]}}]})
            await event({"tool_calls": [{"index": 0, "function": {"arguments": args[half:]}}]})
            await event({}, "tool_calls")
        else:
            for i, word in enumerate((text or "").split(" ")):
                await event({"content": word if i == 0 else " " + word})
            await event({}, "stop")
        await send({"type": "http.response.body", "body": b"data: [DONE]\n\n", "more_body": False})


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


__all__ = ["FakeUpstream", "main"]
