"""A small, real chat-completions server that answers by echoing: for tests, load tests and smoke tests.

It speaks enough of the OpenAI API for a gateway to be exercised without spending tokens: plain answers,
streaming (SSE) answers, tool calls (when the request offers ``tools``), bearer-key checks, and failures on
demand, in each way a real upstream fails: an HTTP status (429, 500, a 401 that echoes the caller's key
with a cookie and internal headers), a hang longer than the caller's timeout, a connection dropped before
the body or half-way through it, a stream ended cleanly but cut short, a stream that stalls or trickles, a
200 whose body is not JSON, and a body of any size (see :meth:`FakeUpstream.set_failure`). Every answer
names the upstream (``"[model-a] ..."``) so a test can tell who answered.

Several can be reached in-process or served on loopback ports, from the command line too, by
:mod:`finerouter.testing.upstreams` (``python -m finerouter.testing.upstreams --names model-a,model-b``); change
their behaviour while they run: ``POST {base_url}/_control {"fail": 500}`` (an error status, a
mode of :data:`FAULTS` such as ``"close_mid_stream"``, or ``null`` to heal; ``"times": 3`` to fail only the
next three calls; ``"rate": 0.5`` to fail half of them; ``"delay_ms"``, ``"hang_ms"``, ``"trickle_ms"``,
``"huge_bytes"``, ``"error_pad_bytes"``); ``GET {base_url}/_stats`` says how many calls failed, by mode.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import random
import time
from collections import deque
from typing import Any

from finerouter.errors import ParameterError

Scope = dict[str, Any]


async def answer_lifespan(receive: Any, send: Any) -> None:
    """Acknowledge an ASGI lifespan's startup and shutdown (a fake server has nothing to set up); returns at
    shutdown."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


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


# Failure modes besides an HTTP status (see FakeUpstream.set_failure).
FAULTS = (
    "timeout",
    "close_before_body",
    "close_mid_stream",
    "truncate",
    "stall",
    "trickle",
    "invalid_json",
    "huge",
)

# What a careless upstream leaks in its error answers: an internal address, and a cookie of its own.
INTERNAL_HEADER = "x-internal-backend"
INTERNAL_VALUE = "10.0.0.7:8000"
COOKIE = "upstream_session=abc123; Path=/; HttpOnly"


class FakeUpstream:
    """One echoing upstream (a plain ASGI app), which can fail in each way a real one does.

    Args:
        name: shown in every answer, ``"[name] <last user message>"``.
        api_key: when set, requests must carry ``Authorization: Bearer <api_key>`` (else 401).
        delay_s: wait before answering (simulated model latency).
        hang_s: how long a ``"timeout"`` call hangs before it answers anyway, and how long a ``"stall"``
            stream pauses half-way.
        record: how many recent requests to keep in :attr:`requests`.
        trickle_s: the pause before each event (or body piece) of a ``"trickle"`` answer.
        huge_bytes: the size of a ``"huge"`` answer.
        error_pad_bytes: padding added to every error body (to exceed a gateway's error-body limit).
        seed: seeds the draws of ``rate``.

    Attributes:
        fail: None (healthy), an HTTP status to answer with, or one of :data:`FAULTS` (see :meth:`set_failure`).
        fail_times: fail only this many more calls (None: until healed).
        fail_rate: the probability that a call fails (1.0: every call).
        retry_after: the ``Retry-After`` seconds sent with a 429 (None: no header).
        calls: chat-completions calls received.
        requests: the most recent calls, each ``{"body": ..., "headers": {...}}``.
        faults: the calls that failed on purpose, by mode.
        last_sent_bytes: body bytes of the last ``"huge"`` answer written before it ended or the client left.
        in_flight, max_in_flight: chat calls being answered now, and the most at any one time (a client's
            concurrency limit, seen from the server).
    """

    def __init__(
        self,
        name: str,
        *,
        api_key: str | None = None,
        delay_s: float = 0.0,
        hang_s: float = 5.0,
        record: int = 200,
        trickle_s: float = 0.2,
        huge_bytes: int = 64 * 1024 * 1024,
        error_pad_bytes: int = 0,
        seed: int = 0,
    ) -> None:
        self.name = name
        self.api_key = api_key
        self.delay_s = delay_s
        self.hang_s = hang_s
        self.trickle_s = trickle_s
        self.huge_bytes = huge_bytes
        self.error_pad_bytes = error_pad_bytes
        self.fail: int | str | None = None
        self.fail_times: int | None = None
        self.fail_rate = 1.0
        self.retry_after: float | None = None
        self.calls = 0
        self.requests: deque[dict[str, Any]] = deque(maxlen=record)
        self.faults: dict[str, int] = {}
        self.last_sent_bytes = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self._ids = itertools.count(1)
        self._rng = random.Random(f"{name}:{seed}")

    # -- control --------------------------------------------------------------------------------------------
    def set_failure(
        self,
        fail: int | str | None,
        times: int | None = None,
        retry_after: float | None = None,
        rate: float = 1.0,
    ) -> None:
        """Fail with ``fail`` for ``times`` calls (None: until healed), each call with probability ``rate``.

        ``fail`` is None (heal), an HTTP error status (answered with a body that echoes the caller's key, a
        ``set-cookie`` and an internal header, as careless servers do), or a mode of :data:`FAULTS`:
        ``"timeout"`` hangs ``hang_s`` before answering; ``"close_before_body"`` sends a 200 head and drops the
        connection; ``"close_mid_stream"`` drops it half-way through the answer; ``"truncate"`` ends the answer
        half-way, cleanly (a stream without ``[DONE]`` or ``finish_reason``, a body of half a JSON document);
        ``"stall"`` pauses ``hang_s`` half-way; ``"trickle"`` sends each event (or body piece) ``trickle_s``
        apart; ``"invalid_json"`` answers 200 with an HTML page; ``"huge"`` answers 200 with ``huge_bytes``.
        """
        if fail is not None and fail not in FAULTS and not (
            isinstance(fail, int) and not isinstance(fail, bool) and 400 <= fail <= 599
        ):
            raise ParameterError(f"fail must be None, an HTTP error status or one of {', '.join(FAULTS)}. Got {fail!r}.")
        if not 0.0 <= rate <= 1.0:
            raise ParameterError(f"rate must be a probability in [0, 1]. Got {rate!r}.")
        self.fail, self.fail_times, self.retry_after, self.fail_rate = fail, times, retry_after, float(rate)

    def _take_failure(self) -> int | str | None:
        if self.fail is None:
            return None
        if self.fail_rate < 1.0 and self._rng.random() >= self.fail_rate:
            return None
        fail = self.fail
        if self.fail_times is not None:
            self.fail_times -= 1
            if self.fail_times <= 0:
                self.fail, self.fail_times = None, None
        self.faults[str(fail)] = self.faults.get(str(fail), 0) + 1
        return fail

    # -- ASGI -----------------------------------------------------------------------------------------------
    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await answer_lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        body = await read_body(receive)
        path, method = scope["path"], scope["method"]
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        if method == "POST" and path.endswith("/chat/completions"):
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            try:
                await self._chat(body, headers, receive, send)
            finally:
                self.in_flight -= 1
        elif method == "POST" and path.endswith("/_control"):
            try:
                spec = json.loads(body or b"{}")
                for key, attr, scale in (("delay_ms", "delay_s", 1e-3), ("hang_ms", "hang_s", 1e-3),
                                         ("trickle_ms", "trickle_s", 1e-3)):
                    if key in spec:
                        setattr(self, attr, float(spec[key]) * scale)
                for key in ("huge_bytes", "error_pad_bytes"):
                    if key in spec:
                        setattr(self, key, int(spec[key]))
                if "fail" in spec:
                    self.set_failure(spec["fail"], spec.get("times"), spec.get("retry_after"), spec.get("rate", 1.0))
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
        return {"name": self.name, "calls": self.calls, "fail": self.fail, "rate": self.fail_rate,
                "delay_ms": self.delay_s * 1000, "faults": dict(self.faults)}

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

    async def _leaky_error(self, send: Any, status: int, message: str, headers: dict[str, str]) -> None:
        """An error answer that leaks what a careless server leaks: the caller's key, a cookie, internals."""
        auth = headers.get("authorization", "")
        error = {"message": message, "type": "invalid_request_error" if status < 500 else "server_error",
                 "code": "invalid_api_key" if status in (401, 403) else None,
                 "debug": {"received_authorization": auth, "received_key": auth.removeprefix("Bearer "),
                           "backend": f"http://{INTERNAL_VALUE}/v1"}}
        obj: dict[str, Any] = {"error": error}
        if self.error_pad_bytes:
            obj["padding"] = "x" * self.error_pad_bytes
        extra = [(b"set-cookie", COOKIE.encode()), (INTERNAL_HEADER.encode(), INTERNAL_VALUE.encode()),
                 (b"x-echo-authorization", auth.encode("latin-1", "replace"))]
        if status in (401, 403):
            extra.append((b"www-authenticate", b'Bearer realm="upstream"'))
        if status == 429 and self.retry_after is not None:
            extra.append((b"retry-after", str(self.retry_after).encode()))
        await self._json(send, status, obj, extra)

    async def _chat(self, raw: bytes, headers: dict[str, str], receive: Any, send: Any) -> None:
        self.calls += 1
        if self.api_key is not None and headers.get("authorization") != f"Bearer {self.api_key}":
            await self._leaky_error(send, 401, "Incorrect API key provided.", headers)
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
        elif isinstance(fail, int):
            await self._leaky_error(send, fail, f"{self.name} failing on purpose", headers)
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
        fault = fail if isinstance(fail, str) and fail != "timeout" else None
        if fault == "invalid_json":
            page = b"<html><body><h1>502 Bad Gateway</h1><p>upstream overloaded</p></body></html>"
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(page)).encode())]})
            await send({"type": "http.response.body", "body": page})
            return
        if fault == "close_before_body":
            ctype = b"text/event-stream" if body.get("stream") else b"application/json"
            await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", ctype)]})
            return  # the server drops the connection: the response never completed
        if fault == "huge":
            await self._huge(receive, send, cid, model, created, bool(body.get("stream")))
            return
        if body.get("stream"):
            await self._stream(send, cid, model, created, text, tool_call, fault)
            return
        message: dict[str, Any] = {"role": "assistant", "content": text}
        if tool_call is not None:
            message["tool_calls"] = [tool_call]
        completion_tokens = 0 if text is None else len(text.split())
        prompt_tokens = sum(len(_last_text([m], None).split()) for m in messages)
        answer = {
            "id": cid,
            "object": "chat.completion",
            "created": created,
            "model": model,
            "choices": [{"index": 0, "message": message, "finish_reason": "tool_calls" if tool_call else "stop"}],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens, "total_tokens": prompt_tokens + completion_tokens},
        }
        if fault is None:
            await self._json(send, 200, answer, [(b"x-upstream-name", self.name.encode())])
            return
        data = json.dumps(answer).encode()
        half = len(data) // 2
        length = half if fault == "truncate" else len(data)  # truncate: a clean end after half a document
        await send({"type": "http.response.start", "status": 200, "headers": [
            (b"content-type", b"application/json"), (b"content-length", str(length).encode())]})
        if fault == "trickle":
            step = max(1, len(data) // 16)
            for i in range(0, len(data), step):
                await asyncio.sleep(self.trickle_s)
                await send({"type": "http.response.body", "body": data[i:i + step], "more_body": i + step < len(data)})
            return
        await send({"type": "http.response.body", "body": data[:half], "more_body": fault != "truncate"})
        if fault == "stall":
            await asyncio.sleep(self.hang_s)
            await send({"type": "http.response.body", "body": data[half:]})
        # close_mid_stream: return with the body half sent; the server drops the connection

    async def _huge(self, receive: Any, send: Any, cid: str, model: str, created: int, stream: bool) -> None:
        """An answer of ``huge_bytes``, written in fixed-size chunks until done or the client leaves."""
        left = asyncio.Event()

        async def watch() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass
            left.set()

        watcher = asyncio.ensure_future(watch())
        piece = 1024 * 1024
        self.last_sent_bytes = 0
        try:
            if stream:
                await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/event-stream")]})
                word = "x" * (64 * 1024)
                chunk = {"id": cid, "object": "chat.completion.chunk", "created": created, "model": model,
                         "choices": [{"index": 0, "delta": {"content": word}, "finish_reason": None}]}
                event = b"data: " + json.dumps(chunk).encode() + b"\n\n"
                data_iter = (event * max(1, piece // len(event)) for _ in itertools.count())
                head, tail = b"", b"data: [DONE]\n\n"
            else:
                await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
                head = json.dumps({"id": cid, "object": "chat.completion", "created": created, "model": model,
                                   "choices": [{"index": 0, "message": {"role": "assistant", "content": "big"},
                                                "finish_reason": "stop"}]})[:-1].encode() + b', "padding": "'
                data_iter = (b"x" * piece for _ in itertools.count())
                tail = b'"}'
            await send({"type": "http.response.body", "body": head, "more_body": True})
            self.last_sent_bytes = len(head)
            for data in data_iter:
                if left.is_set() or self.last_sent_bytes + len(data) + len(tail) > self.huge_bytes:
                    break
                await send({"type": "http.response.body", "body": data, "more_body": True})
                self.last_sent_bytes += len(data)
                await asyncio.sleep(0)  # let the disconnect watcher run
            if not left.is_set():
                await send({"type": "http.response.body", "body": tail, "more_body": False})
                self.last_sent_bytes += len(tail)
        finally:
            watcher.cancel()

    async def _stream(
        self,
        send: Any,
        cid: str,
        model: str,
        created: int,
        text: str | None,
        tool_call: dict[str, Any] | None,
        fault: str | None = None,
    ) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache"), (b"x-upstream-name", self.name.encode())],
            }
        )

        def event(delta: dict[str, Any], finish: str | None = None) -> bytes:
            chunk = {"id": cid, "object": "chat.completion.chunk", "created": created, "model": model,
                     "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
            return b"data: " + json.dumps(chunk).encode() + b"\n\n"

        events = [event({"role": "assistant", "content": ""})]
        if tool_call is not None:
            fn = tool_call["function"]
            args = fn["arguments"]
            half = len(args) // 2
            events.append(event({"tool_calls": [{"index": 0, "id": tool_call["id"], "type": "function", "function": {"name": fn["name"], "arguments": args[:half]}}]}))
            events.append(event({"tool_calls": [{"index": 0, "function": {"arguments": args[half:]}}]}))
            events.append(event({}, "tool_calls"))
        else:
            for i, word in enumerate((text or "").split(" ")):
                events.append(event({"content": word if i == 0 else " " + word}))
            events.append(event({}, "stop"))
        events.append(b"data: [DONE]\n\n")
        # The faults cut the answer after its first half of events (at least one: the client has started).
        cut = max(1, (len(events) - 2) // 2)
        for i, data in enumerate(events):
            if fault == "trickle":
                await asyncio.sleep(self.trickle_s)
            if i == cut:
                if fault == "close_mid_stream":
                    return  # the server drops the connection: the chunked body never ends
                if fault == "truncate":
                    await send({"type": "http.response.body", "body": b"", "more_body": False})
                    return
                if fault == "stall":
                    await asyncio.sleep(self.hang_s)
            await send({"type": "http.response.body", "body": data, "more_body": i < len(events) - 1})


__all__ = ["COOKIE", "FAULTS", "INTERNAL_HEADER", "INTERNAL_VALUE", "FakeUpstream", "read_body"]
