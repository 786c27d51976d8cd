"""A deterministic OpenAI-compatible judge server, for tests, examples and benchmarks (spends no tokens).

It answers the prompts of :mod:`finerouter.collect.judge` as an LLM judge would, by a fixed rule:

- absolute prompts (``[The Start of Assistant's Answer]``): ``"... Rating: [[N]]"`` with
  ``N = 1 + len(answer) % 10``;
- pairwise prompts (``[The Start of Assistant A's Answer]`` and B's): ``[[A]]`` or ``[[B]]`` for the longer
  answer, ``[[C]]`` when they are as long.

``garble_when`` makes it answer without any verdict when the judged answer contains that text (an unparseable
reply, every time), and ``garble_first`` makes the first that many calls unparseable (a judge that gets it right
on a retry). :attr:`calls` counts the calls. Serve it in-process (``httpx.ASGITransport(app=FakeJudge())``) or
on loopback (:class:`finerouter.testing.BackgroundServer`, or ``python -m finerouter.testing.fake_judge --port
9100``).
"""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any

from finerouter.testing.fake_upstream import answer_lifespan, read_body

_ABSOLUTE = re.compile(r"\[The Start of Assistant's Answer\]\n(.*?)\n\[The End of Assistant's Answer\]", re.S)
_PAIR = re.compile(r"\[The Start of Assistant ([AB])'s Answer\]\n(.*?)\n\[The End of Assistant \1's Answer\]", re.S)


class FakeJudge:
    """A judge ASGI app answering by the rules of the module docstring.

    Args:
        garble_when: answer without a verdict when the judged answer contains this text.
        garble_first: the first this many calls get an answer without a verdict.
        delay_s: wait before answering (simulated model latency).

    Attributes:
        calls: judge calls received; in_flight, max_in_flight: calls being answered now, and the most at once.
    """

    def __init__(self, garble_when: str | None = None, garble_first: int = 0, delay_s: float = 0.0) -> None:
        self.garble_when = garble_when
        self.garble_first = garble_first
        self.delay_s = delay_s
        self.calls = 0
        self.in_flight = 0
        self.max_in_flight = 0

    def verdict(self, text: str) -> str:
        """The reply to one judge prompt."""
        pair = dict((m.group(1), m.group(2)) for m in _PAIR.finditer(text))
        if {"A", "B"} <= set(pair):
            if self.garble_when and any(self.garble_when in a for a in pair.values()):
                return "Both answers are fine, I cannot decide."
            a, b = len(pair["A"]), len(pair["B"])
            return "Comparing the two. " + ("[[A]]" if a > b else "[[B]]" if b > a else "[[C]]")
        match = _ABSOLUTE.search(text)
        if match is None:
            return "I was not asked to judge anything."
        answer = match.group(1)
        if self.garble_when and self.garble_when in answer:
            return "The answer is reasonable. Rating: good"
        return f"The answer is reasonable. Rating: [[{1 + len(answer) % 10}]]"

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await answer_lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        body = json.loads(await read_body(receive) or b"{}")
        if scope["method"] != "POST" or not scope["path"].endswith("/chat/completions"):
            payload, status = {"error": {"message": "not found"}}, 404
        else:
            self.calls += 1
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            try:
                await asyncio.sleep(self.delay_s)
            finally:
                self.in_flight -= 1
            text = "\n".join(str(m.get("content", "")) for m in body.get("messages", []))
            reply = "Let me think." if self.calls <= self.garble_first else self.verdict(text)
            status = 200
            payload = {
                "id": f"judge-{self.calls}", "object": "chat.completion", "model": body.get("model", "judge"),
                "choices": [{"index": 0, "message": {"role": "assistant", "content": reply}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": len(text.split()), "completion_tokens": len(reply.split()),
                          "total_tokens": len(text.split()) + len(reply.split())},
            }
        data = json.dumps(payload).encode()
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]})
        await send({"type": "http.response.body", "body": data})


def main(argv: list[str] | None = None) -> None:
    """Serve a FakeJudge on loopback: ``python -m finerouter.testing.fake_judge --port 9100``."""
    import argparse

    from finerouter.testing.servers import BackgroundServer

    parser = argparse.ArgumentParser(description="A deterministic OpenAI-compatible judge on loopback.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    server = BackgroundServer(FakeJudge(), host=args.host, port=args.port).start()
    print(json.dumps({"judge": f"{server.url}/v1"}), flush=True)  # noqa: T201 - a command-line tool's output
    try:
        server._thread.join()  # type: ignore[union-attr]
    except KeyboardInterrupt:
        server.stop()


if __name__ == "__main__":
    main()


__all__ = ["FakeJudge", "main"]
