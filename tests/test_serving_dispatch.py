"""The dispatcher without HTTP: fallback order, cooldown on a manual clock, and conversation affinity.

Upstreams are an ``httpx.MockTransport`` whose answer per model a test sets (an answer, an HTTP status, a
refused connection, a timeout, a stream cut short); time is a :class:`~finerouter.testing.ManualClock`; routing
is a callback that counts its calls. No server, no router, no sleep.
"""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from finerouter.serving.affinity import AffinityStore
from finerouter.serving.config import parse_gateway_config
from finerouter.serving.cooldown import CooldownTracker
from finerouter.serving.dispatch import AllUpstreamsFailed, Dispatcher, RoutedTurn, candidate_order
from finerouter.serving.metrics import GatewayMetrics
from finerouter.serving.proxy import UpstreamProxy
from finerouter.testing import ManualClock

MODELS = ["a", "b", "c", "d"]
COOLDOWN_S = 10.0
BODY = {"messages": [{"role": "user", "content": "hi"}]}


class Upstreams:
    """Answers each model's calls as ``behaviour[model]`` says; records which model was called, in order.

    A behaviour is ``"ok"`` (a chat completion naming the model), an HTTP status, ``"connect"`` (refused),
    ``"timeout"``, ``"cut_stream"`` (an SSE answer that ends without ``[DONE]``) or ``(429, retry_after_s)``.
    """

    def __init__(self) -> None:
        self.behaviour: dict[str, object] = {}
        self.calls: list[str] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        model = request.url.host.split(".")[0]
        self.calls.append(model)
        how = self.behaviour.get(model, "ok")
        if how == "connect":
            raise httpx.ConnectError("connection refused", request=request)
        if how == "timeout":
            raise httpx.ReadTimeout("timed out", request=request)
        if how == "cut_stream":
            chunk = {"choices": [{"index": 0, "delta": {"content": f"[{model}]"}, "finish_reason": None}]}
            return httpx.Response(200, headers={"content-type": "text/event-stream"},
                                  content=b"data: " + json.dumps(chunk).encode() + b"\n\n")
        if isinstance(how, tuple):
            status, retry_after = how
            return httpx.Response(status, json={"error": {"message": "slow down"}}, headers={"retry-after": str(retry_after)})
        if isinstance(how, int):
            return httpx.Response(how, json={"error": {"message": f"{model} failing on purpose"}})
        answer = {"object": "chat.completion", "model": model,
                  "choices": [{"index": 0, "message": {"role": "assistant", "content": f"[{model}]"}, "finish_reason": "stop"}]}
        return httpx.Response(200, json=answer)


def _dispatcher(upstreams: Upstreams, clock: ManualClock, *, max_attempts: int = 3, ttl_s: float = 3600.0) -> Dispatcher:
    config = parse_gateway_config({"upstreams": {m: {"base_url": f"http://{m}.test/v1"} for m in MODELS}},
                                  source="dispatch-test", environ={})
    transport = httpx.MockTransport(upstreams)
    proxy = UpstreamProxy({m: transport for m in MODELS}, config.upstreams)
    return Dispatcher(
        proxy,
        cooldown=CooldownTracker(COOLDOWN_S, clock=clock),
        affinity=AffinityStore(ttl_s=ttl_s, clock=clock),
        metrics=GatewayMetrics(),
        max_attempts=max_attempts,
    )


@pytest.fixture
def upstreams() -> Upstreams:
    return Upstreams()


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def dispatcher(upstreams, clock) -> Dispatcher:
    return _dispatcher(upstreams, clock)


def _forward(dispatcher: Dispatcher, candidates, **kw):
    return asyncio.run(dispatcher.forward(candidates, BODY, stream=kw.pop("stream", False), **kw))


def _answered_by(forwarded) -> str:
    return json.loads(forwarded.answer.content)["choices"][0]["message"]["content"]


# ---- fallback order ---------------------------------------------------------------------------------------------
def test_candidates_are_tried_in_order_until_one_answers(dispatcher, upstreams):
    upstreams.behaviour.update(a=500, b="connect", c="ok")
    forwarded = _forward(dispatcher, ["a", "b", "c", "d"])
    assert upstreams.calls == ["a", "b", "c"] and forwarded.model == "c" and _answered_by(forwarded) == "[c]"
    assert [(a.model, a.kind) for a in forwarded.attempts] == [("a", "http_5xx"), ("b", "connect"), ("c", None)]
    assert forwarded.failed_models == ["a", "b"] and forwarded.attempts[-1].status == 200
    m = dispatcher.metrics
    assert m.value("finerouter_fallbacks_total", {"from_model": "a", "to_model": "c"}) == 1
    assert m.value("finerouter_upstream_errors_total", {"model": "b", "kind": "connect"}) == 1


def test_attempts_are_bounded_and_every_failure_is_reported(dispatcher, upstreams):
    upstreams.behaviour.update(a="timeout", b=502, c=(429, 1), d="ok")
    with pytest.raises(AllUpstreamsFailed) as failed:
        _forward(dispatcher, ["a", "b", "c", "d"])
    assert upstreams.calls == ["a", "b", "c"]  # max_attempts = 3: d, which would answer, is never tried
    assert [(a.model, a.kind) for a in failed.value.attempts] == [("a", "timeout"), ("b", "http_5xx"), ("c", "http_429")]
    assert "HTTP 502" in str(failed.value)


def test_a_client_error_is_the_answer_no_fallback_no_cooldown(dispatcher, upstreams):
    upstreams.behaviour["a"] = 400
    forwarded = _forward(dispatcher, ["a", "b"])
    assert upstreams.calls == ["a"] and forwarded.answer.status_code == 400 and forwarded.failed_models == []
    assert not dispatcher.cooldown.is_cooling("a")


def test_models_already_tried_and_unknown_or_repeated_candidates_are_skipped(dispatcher, upstreams):
    upstreams.behaviour["a"] = 500
    with pytest.raises(AllUpstreamsFailed) as failed:
        _forward(dispatcher, ["a"])
    forwarded = _forward(dispatcher, ["a", "nope", "b", "b", "c"], prior=failed.value.attempts)
    assert upstreams.calls == ["a", "b"] and forwarded.model == "b"
    assert [a.model for a in forwarded.attempts] == ["a", "b"]  # the prior attempt counts, and is not repeated


def test_candidate_order_puts_the_choice_first_and_keeps_allowed_models():
    assert candidate_order("c", ["a", "b", "c", "d"]) == ["c", "a", "b", "d"]
    assert candidate_order("c", ["a", "b", "c", "d"], allowed=["d", "c"]) == ["c", "d"]


# ---- cooldown ---------------------------------------------------------------------------------------------------
def test_a_failed_upstream_is_skipped_until_its_cooldown_ends(dispatcher, upstreams, clock):
    upstreams.behaviour["a"] = 500
    assert _forward(dispatcher, ["a", "b"]).model == "b"
    upstreams.behaviour["a"] = "ok"  # healthy again, but cooling: not even tried
    upstreams.calls.clear()
    clock.advance(COOLDOWN_S - 0.5)
    forwarded = _forward(dispatcher, ["a", "b"])
    assert forwarded.model == "b" and upstreams.calls == ["b"] and len(forwarded.attempts) == 1
    assert dispatcher.cooldown.cooling() == {"a": 0.5}
    clock.advance(0.5)
    assert _forward(dispatcher, ["a", "b"]).model == "a" and upstreams.calls == ["b", "a"]
    assert dispatcher.metrics.value("finerouter_upstream_cooldowns_total", {"model": "a"}) == 1


def test_retry_after_lengthens_a_cooldown(dispatcher, upstreams, clock):
    upstreams.behaviour["a"] = (429, 60)
    _forward(dispatcher, ["a", "b"])
    clock.advance(COOLDOWN_S + 1)
    assert dispatcher.cooldown.is_cooling("a")
    clock.advance(60 - COOLDOWN_S)
    assert not dispatcher.cooldown.is_cooling("a")


def test_cooling_candidates_are_tried_last_rather_than_not_at_all(dispatcher, upstreams):
    upstreams.behaviour.update(a=500, b=500)
    with pytest.raises(AllUpstreamsFailed):
        _forward(dispatcher, ["a", "b"])
    assert dispatcher.plan(["a", "b", "c"], 3) == ["c", "a", "b"]
    upstreams.behaviour.update(a="ok", b="ok")
    upstreams.calls.clear()
    assert _forward(dispatcher, ["a", "b"]).model == "a" and upstreams.calls == ["a"]
    assert not dispatcher.cooldown.is_cooling("a") and dispatcher.cooldown.is_cooling("b")  # an answer clears it


def test_a_stream_cut_short_after_its_first_event_cools_its_upstream(dispatcher, upstreams):
    upstreams.behaviour["a"] = "cut_stream"

    async def relay():
        forwarded = await dispatcher.forward(["a", "b"], BODY, stream=True)
        return forwarded, b"".join([chunk async for chunk in forwarded.answer.stream])

    forwarded, relayed = asyncio.run(relay())
    assert forwarded.model == "a" and not dispatcher.cooldown.is_cooling("b")  # the stream had started: no fallback
    assert b"[a]" in relayed and b"upstream_stream_broken" in relayed and b"data: [DONE]" not in relayed
    assert dispatcher.cooldown.is_cooling("a")
    assert dispatcher.metrics.value("finerouter_stream_failures_total", {"model": "a", "reason": "broken"}) == 1
    assert dispatcher.proxy.open_streams == 0


# ---- affinity ---------------------------------------------------------------------------------------------------
class Router:
    """A routing callback: always decides ``turn``; counts its calls."""

    def __init__(self, model: str, ranking: list[str], task_id: int | None = 7) -> None:
        self.turn = RoutedTurn(model, ranking, task_id, f"task {task_id}")
        self.calls = 0

    async def __call__(self) -> RoutedTurn:
        self.calls += 1
        return self.turn


def _dispatch(dispatcher: Dispatcher, route: Router, conversation: str = "conv", **kw):
    return asyncio.run(dispatcher.dispatch(BODY, stream=False, route=route, conversation=conversation, **kw))


def test_a_conversation_stays_on_the_model_that_answered_it(dispatcher, upstreams):
    route = Router("b", ["b", "c", "a", "d"])
    first = _dispatch(dispatcher, route)
    assert (first.forwarded.model, first.affinity, first.task_id, route.calls) == ("b", "miss", 7, 1)
    route.turn = RoutedTurn("c", ["c", "a", "b", "d"], 3, "task 3")  # routing would now choose otherwise
    again = _dispatch(dispatcher, route)
    assert (again.forwarded.model, again.affinity, again.task_id, route.calls) == ("b", "hit", 7, 1)
    other = _dispatch(dispatcher, route, conversation="other")
    assert (other.forwarded.model, other.affinity, route.calls) == ("c", "miss", 2)
    m = dispatcher.metrics
    assert m.value("finerouter_affinity_total", {"result": "hit"}) == 1
    assert m.value("finerouter_affinity_total", {"result": "miss"}) == 2


def test_without_a_conversation_every_turn_is_routed_and_nothing_is_pinned(dispatcher, upstreams):
    route = Router("b", ["b", "a"])
    for _ in range(2):
        assert _dispatch(dispatcher, route, conversation="").affinity == "none"
    assert route.calls == 2 and len(dispatcher.affinity) == 0
    assert dispatcher.metrics.value("finerouter_affinity_total", {"result": "none"}) == 0


def test_a_pinned_model_that_fails_hands_the_conversation_to_its_fallback(dispatcher, upstreams):
    route = Router("b", ["b", "c", "a", "d"])
    _dispatch(dispatcher, route)
    upstreams.behaviour["b"] = 503
    moved = _dispatch(dispatcher, route)
    assert (moved.forwarded.model, moved.affinity, route.calls) == ("c", "hit", 1)  # its saved fallback, not rerouted
    upstreams.behaviour["b"] = "ok"
    dispatcher.cooldown.clear()
    assert _dispatch(dispatcher, route).forwarded.model == "c"  # the conversation now belongs to c


def test_a_cooling_pinned_model_is_rerouted(dispatcher, upstreams):
    route = Router("b", ["b", "c"])
    _dispatch(dispatcher, route)
    dispatcher.cooldown.fail("b")
    route.turn = RoutedTurn("c", ["c", "b"], 2)
    rerouted = _dispatch(dispatcher, route)
    assert (rerouted.forwarded.model, rerouted.affinity, rerouted.task_id, route.calls) == ("c", "reroute", 2, 2)


def test_a_pinned_model_outside_the_allowed_models_is_rerouted(dispatcher, upstreams):
    route = Router("b", ["b", "c"])
    _dispatch(dispatcher, route)
    route.turn = RoutedTurn("c", ["c"])
    assert _dispatch(dispatcher, route, allowed_models=("c", "d")).affinity == "reroute" and route.calls == 2


def test_when_the_pinned_candidates_all_fail_the_turn_is_rerouted_with_the_attempts_left(dispatcher, upstreams):
    route = Router("a", ["a", "b", "c", "d"])
    _dispatch(dispatcher, route)
    upstreams.behaviour["a"] = 500
    upstreams.calls.clear()
    route.turn = RoutedTurn("a", ["a", "c", "d"])
    result = _dispatch(dispatcher, route, allowed_models=("a",))  # the pinned a is allowed; its fallbacks are not
    assert result.affinity == "reroute" and result.forwarded.model == "c" and route.calls == 2
    assert upstreams.calls == ["a", "c"] and [a.model for a in result.forwarded.attempts] == ["a", "c"]


def test_a_pinned_conversation_expires_after_its_ttl(upstreams, clock):
    dispatcher = _dispatcher(upstreams, clock, ttl_s=60.0)
    route = Router("b", ["b", "a"])
    _dispatch(dispatcher, route)
    clock.advance(59)
    assert _dispatch(dispatcher, route).affinity == "hit"  # a use refreshes the TTL
    clock.advance(61)
    assert _dispatch(dispatcher, route).affinity == "miss" and route.calls == 2


def test_an_error_answer_pins_nothing(dispatcher, upstreams):
    upstreams.behaviour["b"] = 400
    result = _dispatch(dispatcher, Router("b", ["b", "a"]))
    assert result.forwarded.answer.status_code == 400 and len(dispatcher.affinity) == 0
