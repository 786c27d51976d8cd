"""Relaying one upstream's streamed (SSE) answer to the client, and telling a whole answer from a cut one.

A stream can move to another model until its first event has been read (:meth:`StreamRelay.first`; a failure
there is a failed attempt, and the dispatcher tries the next model). After that it belongs to its model, and if
that model's stream breaks off, stalls for ``idle_timeout_s``, grows past ``max_bytes`` or ends without
``[DONE]`` or a ``finish_reason``, the client's stream ends with an OpenAI-style error event
(``data: {"error": {...}}``) and no ``[DONE]``, so no client takes a cut answer for a whole one. Such a stream
is reported to the relay's ``on_failure`` callback (the dispatcher counts it and cools its upstream down).
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING

from finerouter.serving.errors import error_body

if TYPE_CHECKING:
    import httpx

# The largest single server-sent event relayed (a tool call's arguments arrive in many small events).
MAX_SSE_EVENT_BYTES = 1024 * 1024

# Server-sent events: where one ends, and what ends a whole answer.
_EVENT_ENDS = (b"\n\n", b"\r\n\r\n", b"\r\r")
_DONE = re.compile(rb"^data: ?\[DONE\][ \t]*\r?$", re.M)
_FINISHED = re.compile(rb'"finish_reason"\s*:\s*"')
_ERROR_EVENT = re.compile(rb'^data: ?\{\s*"error"\s*:', re.M)


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

    :meth:`first` reads up to the first complete event (a failure there is a failed attempt: the dispatcher
    tries the next model); iterating relays the rest and ends a failed stream with the failure's error event.

    Args:
        response: the upstream's streamed response (its head read, its body not).
        model: the router model whose upstream answers.
        first_timeout_s: the longest wait for the first event.
        idle_timeout_s: the longest pause between later chunks.
        max_bytes: the most bytes relayed in all.
        scrub: applied to an upstream error event before it is relayed (removes keys).
        on_failure: called once when the client received a cut answer (with its :class:`StreamFailure`), or an
            upstream error event (with None); not for failures before the first event, which :meth:`first` raises.
        on_close: called once when the upstream response is released.
    """

    def __init__(
        self,
        response: httpx.Response,
        model: str,
        *,
        first_timeout_s: float,
        idle_timeout_s: float,
        max_bytes: int,
        scrub: Callable[[bytes], bytes],
        on_failure: Callable[[StreamRelay, StreamFailure | None], None],
        on_close: Callable[[StreamRelay], None],
    ) -> None:
        self._scrub = scrub
        self._on_failure = on_failure
        self._on_close = on_close
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
            return self._scrub(events)
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
                        self._on_failure(self, None)
                    return
                out = self._take(chunk)
                if out:
                    yield out
        except StreamFailure as exc:
            if not self.done:  # after [DONE] (or a finish_reason) the answer is whole, whatever follows
                self._on_failure(self, exc)
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
        self._on_close(self)
        await self._response.aclose()

    async def aclose(self) -> None:
        """Close the relay (if it was started) and the upstream response; safe to call more than once."""
        try:
            if self._iterator is not None:
                await self._iterator.aclose()  # type: ignore[attr-defined]
        finally:
            await self._release()


__all__ = ["MAX_SSE_EVENT_BYTES", "StreamFailure", "StreamRelay"]
