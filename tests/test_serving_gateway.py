"""The gateway end to end: the real app in-process, in front of echoing upstreams.

Routing, pass-through, streaming, tool calls, affinity, fallback, cooldown, auth, malformed requests, /v1/route,
/v1/models, /healthz and /metrics, over HTTP requests to the app (Starlette's ``TestClient``, lifespan running)
whose upstreams are :class:`~finerouter.testing.FakeUpstream` apps reached in-process
(:class:`~finerouter.testing.InProcessUpstreams`). The router is a real FineRouter on the
:class:`~finerouter.testing.FakeEncoder`; expectations come from the router itself (``router.route(text)``), so
the tests hold for whatever model it picks. Time is a :class:`~finerouter.testing.ManualClock`. The tests marked
slow need real sockets: an upstream timeout, a refused connection, and a ``finerouter serve`` process (serving
the MiniLM router, so the real encoder runs behind the gateway once).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
import time
from types import SimpleNamespace

import httpx
import pytest

from finerouter.serving.app import create_app
from finerouter.serving.config import GatewaySettings, parse_gateway_config
from finerouter.testing import BackgroundServer, FakeUpstream, InProcessUpstreams, ManualClock

UPSTREAM_KEY = "sk-upstream-secret-0123456789"
COOLDOWN_S = 1.5
TIMEOUT_S = 1.0
PROMPTS = [
    "Solve for x: 3x + 7 = 22. Show your steps.",
    "Write a Python function that checks whether a string is a palindrome.",
    "Who painted the Mona Lisa, and in which century?",
    "Translate 'good morning, how are you?' into French.",
    "What is the derivative of sin(x) * x^2?",
    "Summarise the causes of the First World War in two sentences.",
]


# ---- the router -------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def router(fake_encoder_router):
    """The session's FakeEncoder router (``conftest.fake_encoder_router``)."""
    return fake_encoder_router


# ---- upstreams and gateways -------------------------------------------------------------------------------------
def _fakes(router) -> dict[str, FakeUpstream]:
    """One echoing upstream per router model (the first one requires a key), plus one not in the router."""
    names = [*router.models_, "direct-only"]
    return {n: FakeUpstream(n, api_key=UPSTREAM_KEY if n == router.models_[0] else None, hang_s=TIMEOUT_S * 3) for n in names}


@pytest.fixture(scope="module")
def upstreams(router):
    """The upstreams, reached in-process (no socket)."""
    hosts = InProcessUpstreams(_fakes(router))
    return SimpleNamespace(fakes=hosts.fakes, base_url=hosts.base_url, transport=hosts.transport)


@pytest.fixture(scope="module")
def socket_upstreams(router):
    """The upstreams, each a real server on its own loopback port (the gateway reaches them with its production
    transport)."""
    fakes = _fakes(router)
    servers = {n: BackgroundServer(f).start() for n, f in fakes.items()}
    yield SimpleNamespace(fakes=fakes, servers=servers, base_url=lambda n: servers[n].url + "/v1", transport=None)
    for s in servers.values():
        s.stop()


def _config(router, upstreams, extra=None, environ=None):
    raw = {
        "upstreams": {
            n: {
                "base_url": upstreams.base_url(n),
                "model": f"upstream/{n}",
                "timeout_s": TIMEOUT_S,
                **({"api_key_env": "FAKE_UPSTREAM_KEY"} if n == router.models_[0] else {}),
            }
            for n in upstreams.fakes
        },
        **(extra or {}),
    }
    return parse_gateway_config(
        raw, source="test-upstreams", environ={"FAKE_UPSTREAM_KEY": UPSTREAM_KEY, **(environ or {})}
    )


@contextlib.contextmanager
def _serve(router, upstreams, *, config=None, **kw):
    """The gateway app with its lifespan running, and a ``TestClient`` for it (``client.portal`` runs coroutines
    in the app's event loop)."""
    from fastapi.testclient import TestClient

    settings = kw.pop("settings", GatewaySettings(max_attempts=3, cooldown_s=COOLDOWN_S, max_body_bytes=64 * 1024))
    if "transport" not in kw and upstreams.transport is not None:
        kw["transport"] = upstreams.transport()
    app = create_app(router, config or _config(router, upstreams), settings=settings, **kw)
    with TestClient(app, base_url="http://gateway") as client:
        yield SimpleNamespace(url="http://gateway", app=app, state=app.state.gateway, client=client)


def _openai(gw, api_key: str = "unused"):
    """An OpenAI client talking to the gateway through its TestClient."""
    openai = pytest.importorskip("openai")
    return openai.OpenAI(base_url=gw.url + "/v1", api_key=api_key, max_retries=0, http_client=gw.client)


def _concurrently(gw, requests, headers=None):
    """POST each ``(path, json)`` of ``requests`` at once from the app's own event loop; the responses in order."""

    async def fire():
        transport = httpx.ASGITransport(app=gw.app)
        async with httpx.AsyncClient(transport=transport, base_url=gw.url, timeout=60, headers=headers) as client:
            return await asyncio.gather(*(client.post(path, json=body) for path, body in requests))

    return gw.client.portal.call(fire)


@pytest.fixture(scope="module")
def gateway(router, upstreams):
    clock = ManualClock()
    with _serve(router, upstreams, clock=clock) as gw:
        yield SimpleNamespace(**vars(gw), clock=clock)


@pytest.fixture
def gw(gateway, upstreams):
    """The shared gateway, with upstreams healthy and no cooldowns or pinned conversations."""
    for fake in upstreams.fakes.values():
        fake.set_failure(None)
        fake.requests.clear()
    gateway.state.cooldown.clear()
    gateway.state.affinity.clear()
    return SimpleNamespace(**vars(gateway), fakes=upstreams.fakes)


def _chat(client, text, *, model="finerouter", headers=None, **extra):
    body = {"model": model, "messages": [{"role": "user", "content": text}], **extra}
    return client.post("/v1/chat/completions", json=body, headers=headers or {})


def _answer(response) -> str:
    return response.json()["choices"][0]["message"]["content"]


def _metric(gw, name, **labels) -> float:
    return gw.state.metrics.value(name, labels)


# ---- routing and pass-through -----------------------------------------------------------------------------------
def test_routed_requests_go_to_the_routers_choice(gw, router):
    for text in PROMPTS:
        expected = router.route(text)
        r = _chat(gw.client, text, temperature=0.3)
        assert r.status_code == 200, r.text
        assert r.headers["x-finerouter-model"] == expected.model
        assert r.headers["x-finerouter-upstream-model"] == f"upstream/{expected.model}"
        assert r.headers["x-finerouter-task"] == ("others" if expected.task_id is None else str(expected.task_id))
        assert r.headers["x-finerouter-attempts"] == "1"
        assert float(r.headers["x-finerouter-routing-ms"]) > 0
        assert _answer(r) == f"[{expected.model}] {text}"
        sent = gw.fakes[expected.model].requests[-1]
        assert sent["body"]["model"] == f"upstream/{expected.model}"  # the upstream's own model id
        assert sent["body"]["temperature"] == 0.3 and sent["body"]["messages"][0]["content"] == text
    assert _metric(gw, "finerouter_routing_latency_seconds_count") >= len(PROMPTS)


def test_upstream_key_is_sent_upstream_but_never_shown(gw, router, caplog):
    keyed = router.models_[0]
    caplog.set_level(logging.DEBUG)
    r = _chat(gw.client, "hello keyed upstream", model=keyed)
    assert r.status_code == 200 and r.headers["x-finerouter-model"] == keyed
    assert gw.fakes[keyed].requests[-1]["headers"]["authorization"] == f"Bearer {UPSTREAM_KEY}"
    gw.fakes[keyed].set_failure(500)
    _chat(gw.client, "fail over from the keyed upstream", allowed_models=[keyed, router.models_[1]])
    seen = [r.text, json.dumps(dict(r.headers)), gw.client.get("/healthz").text, gw.client.get("/v1/models").text,
            gw.client.get("/metrics").text, caplog.text]
    assert all(UPSTREAM_KEY not in s for s in seen)


def test_content_as_list_of_parts_is_routed_on_its_text(gw, router):
    text = "Explain what a monad is to a Python programmer."
    parts = [{"type": "text", "text": text}, {"type": "image_url", "image_url": {"url": "http://127.0.0.1/x.png"}}]
    r = gw.client.post("/v1/chat/completions", json={"model": "finerouter", "messages": [
        {"role": "system", "content": "Be brief."}, {"role": "user", "content": parts}]})
    assert r.status_code == 200
    assert r.headers["x-finerouter-model"] == router.route(text).model
    assert gw.fakes[r.headers["x-finerouter-model"]].requests[-1]["body"]["messages"][1]["content"] == parts


def test_a_named_model_is_passed_straight_to_it(gw, router):
    routed_before = gw.state.batcher.routed
    for name in [router.models_[-1], "direct-only"]:
        r = _chat(gw.client, PROMPTS[0], model=name)
        assert r.status_code == 200 and r.headers["x-finerouter-model"] == name
        assert r.headers["x-finerouter-task"] == "none" and _answer(r).startswith(f"[{name}]")
    assert gw.state.batcher.routed == routed_before  # no routing for named models


def test_routing_options_from_extra_body_and_model_string(gw, router):
    text = PROMPTS[1]
    target = next(m for m in router.models_ if m != router.route(text).model)
    r = _chat(gw.client, text, allowed_models=[target], tolerance=0.1)
    assert r.headers["x-finerouter-model"] == target
    sent = gw.fakes[target].requests[-1]["body"]
    assert "allowed_models" not in sent and "tolerance" not in sent  # gateway-only keys stay here
    r = _chat(gw.client, text, model=f"finerouter:allowed_models={target},tolerance=0.2")
    assert r.status_code == 200 and r.headers["x-finerouter-model"] == target


def test_openai_client_plain_and_raw_headers(gw, router):
    client = _openai(gw)
    text = PROMPTS[2]
    raw = client.chat.completions.with_raw_response.create(model="finerouter", messages=[{"role": "user", "content": text}])
    completion = raw.parse()
    assert raw.headers["x-finerouter-model"] == router.route(text).model
    assert completion.choices[0].message.content == f"[{router.route(text).model}] {text}"
    assert completion.usage.total_tokens > 0
    models = {m.id for m in client.models.list()}
    assert models == {"finerouter", *router.models_, "direct-only"}


def test_streaming_passes_sse_through(gw, router):
    client = _openai(gw)
    text = "Stream me a short answer about the moon"
    expected = router.route(text).model
    chunks = list(client.chat.completions.create(model="finerouter", messages=[{"role": "user", "content": text}], stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == f"[{expected}] {text}"
    assert chunks[-1].choices[0].finish_reason == "stop"
    with gw.client.stream("POST", "/v1/chat/completions", json={"model": "finerouter", "stream": True,
                                                             "messages": [{"role": "user", "content": text}]}) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        assert r.headers["x-finerouter-model"] == expected
        events = [line for line in r.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "data: [DONE]" and len(events) == len(text.split()) + 1 + 3


TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "Weather for a city",
                                           "parameters": {"type": "object", "properties": {"query": {"type": "string"}}}}}]


def test_tool_calls_pass_through_plain_and_streamed(gw, router):
    client = _openai(gw)
    text = "What is the weather in Paris today?"
    messages = [{"role": "user", "content": text}]
    res = client.chat.completions.create(model="finerouter", messages=messages, tools=TOOLS, tool_choice="auto")
    call = res.choices[0].message.tool_calls[0]
    assert res.choices[0].finish_reason == "tool_calls"
    assert call.function.name == "get_weather" and json.loads(call.function.arguments) == {"query": text}
    model = router.route(text).model
    assert gw.fakes[model].requests[-1]["body"]["tools"] == TOOLS and gw.fakes[model].requests[-1]["body"]["tool_choice"] == "auto"
    # Streamed tool call: the argument pieces arrive as sent.
    args, name = "", None
    for chunk in client.chat.completions.create(model="finerouter", messages=messages, tools=TOOLS, stream=True):
        for tc in (chunk.choices[0].delta.tool_calls or []) if chunk.choices else []:
            name = tc.function.name or name
            args += tc.function.arguments or ""
    assert name == "get_weather" and json.loads(args) == {"query": text}
    # The tool's result goes back on the same route (the conversation's last user message is unchanged).
    follow = messages + [res.choices[0].message.model_dump(exclude_none=True),
                         {"role": "tool", "tool_call_id": call.id, "content": "18 C and sunny"}]
    final = client.chat.completions.create(model="finerouter", messages=follow, tools=TOOLS)
    assert final.choices[0].message.content == f"[{model}] tool said: 18 C and sunny"


# ---- affinity ---------------------------------------------------------------------------------------------------
def test_conversation_stays_on_its_first_model(gw, router):
    first, follow = PROMPTS[0], PROMPTS[3]
    pinned = next(m for m in router.models_ if m != router.route(follow).model)
    conv = {"x-conversation-id": "conv-42"}
    r1 = _chat(gw.client, first, headers=conv, allowed_models=[pinned])
    assert r1.headers["x-finerouter-model"] == pinned and r1.headers["x-finerouter-affinity"] == "miss"
    r2 = _chat(gw.client, follow, headers=conv)
    assert r2.headers["x-finerouter-model"] == pinned and r2.headers["x-finerouter-affinity"] == "hit"
    # Without the id the same text is routed afresh; with another id too.
    assert _chat(gw.client, follow).headers["x-finerouter-model"] == router.route(follow).model
    assert _chat(gw.client, follow, headers={"x-conversation-id": "other"}).headers["x-finerouter-model"] != pinned
    # The OpenAI `user` field keys affinity as well.
    _chat(gw.client, first, user="alice", allowed_models=[pinned])
    assert _chat(gw.client, follow, user="alice").headers["x-finerouter-model"] == pinned
    assert _metric(gw, "finerouter_affinity_total", result="hit") >= 2


def test_conversation_moves_when_its_model_fails(gw, router):
    first, follow = PROMPTS[0], PROMPTS[3]
    pinned = next(m for m in router.models_ if m != router.route(follow).model)
    conv = {"x-conversation-id": "conv-fail"}
    _chat(gw.client, first, headers=conv, allowed_models=[pinned])
    gw.fakes[pinned].set_failure(503)
    r = _chat(gw.client, follow, headers=conv)
    assert r.status_code == 200 and r.headers["x-finerouter-model"] != pinned
    moved = r.headers["x-finerouter-model"]
    gw.fakes[pinned].set_failure(None)
    gw.state.cooldown.clear()
    assert _chat(gw.client, "and a third turn", headers=conv).headers["x-finerouter-model"] == moved


# ---- fallback and cooldown --------------------------------------------------------------------------------------
def _check_fallback(gw, router, failure, text=PROMPTS[4]):
    """The first choice fails with ``failure``; the second answers."""
    decision = router.route(text)
    first, second = decision.ranking[0], decision.ranking[1]
    gw.fakes[first].set_failure(failure)
    t0 = time.perf_counter()
    r = _chat(gw.client, text)
    assert r.status_code == 200, r.text
    assert r.headers["x-finerouter-model"] == second and _answer(r) == f"[{second}] {text}"
    assert r.headers["x-finerouter-attempts"] == "2" and r.headers["x-finerouter-fallback-from"] == first
    kind = {500: "http_5xx", 429: "http_429", "timeout": "timeout"}[failure]
    assert _metric(gw, "finerouter_upstream_errors_total", model=first, kind=kind) >= 1
    assert _metric(gw, "finerouter_fallbacks_total", from_model=first, to_model=second) >= 1
    return time.perf_counter() - t0


@pytest.mark.parametrize("failure", [500, 429])
def test_fallback_to_the_next_model_in_the_ranking(gw, router, failure):
    _check_fallback(gw, router, failure)


@pytest.fixture(scope="module")
def socket_gateway(router, socket_upstreams):
    """The gateway in front of the loopback upstream servers."""
    with _serve(router, socket_upstreams) as gw:
        yield SimpleNamespace(**vars(gw), fakes=socket_upstreams.fakes, servers=socket_upstreams.servers)


@pytest.mark.slow  # an upstream timeout is a socket that stays silent: the gateway's transport must give up
def test_fallback_when_the_first_choice_times_out(socket_gateway, router):
    elapsed = _check_fallback(socket_gateway, router, "timeout")
    assert TIMEOUT_S * 0.9 < elapsed < TIMEOUT_S * 3


@pytest.mark.slow  # a refused connection needs a port nobody listens on
def test_fallback_on_connection_refused(socket_gateway, router):
    gw = socket_gateway
    text = PROMPTS[5]
    decision = router.route(text)
    first = decision.ranking[0]
    server = gw.servers[first]
    port = server.port
    server.stop()
    try:
        r = _chat(gw.client, text)
        assert r.status_code == 200 and r.headers["x-finerouter-model"] == decision.ranking[1]
        assert _metric(gw, "finerouter_upstream_errors_total", model=first, kind="connect") >= 1
    finally:
        gw.servers[first] = BackgroundServer(gw.fakes[first], port=port).start()


def test_streaming_request_falls_back_before_the_stream_starts(gw, router):
    text = "Stream despite a broken first choice"
    decision = router.route(text)
    gw.fakes[decision.ranking[0]].set_failure(502)
    with gw.client.stream("POST", "/v1/chat/completions", json={"model": "finerouter", "stream": True,
                                                             "messages": [{"role": "user", "content": text}]}) as r:
        body = r.read().decode()
    assert r.headers["x-finerouter-model"] == decision.ranking[1]
    assert f'"[{decision.ranking[1]}]' in body and body.rstrip().endswith("data: [DONE]")


def test_a_failed_upstream_is_skipped_while_cooling_then_used_again(gw, router):
    text = PROMPTS[4]
    first, second = router.route(text).ranking[:2]
    gw.fakes[first].set_failure(500, times=1)  # fails once, then would be healthy
    assert _chat(gw.client, text).headers["x-finerouter-model"] == second
    calls = gw.fakes[first].calls
    assert first in gw.client.get("/healthz").json()["cooling_down"]
    r = _chat(gw.client, text)
    assert r.headers["x-finerouter-model"] == second and r.headers["x-finerouter-attempts"] == "1"
    assert gw.fakes[first].calls == calls  # not even tried while cooling
    gw.clock.advance(COOLDOWN_S + 0.1)
    r = _chat(gw.client, text)
    assert r.headers["x-finerouter-model"] == first and gw.fakes[first].calls == calls + 1
    assert _metric(gw, "finerouter_upstream_cooldowns_total", model=first) >= 1


def test_all_attempts_failing_is_a_502_with_attempts_bounded(gw, router):
    for fake in gw.fakes.values():
        fake.set_failure(500)
    before = {n: f.calls for n, f in gw.fakes.items()}
    r = _chat(gw.client, PROMPTS[0])
    assert r.status_code == 502
    err = r.json()["error"]
    assert err["type"] == "upstream_error" and err["code"] == "upstream_unavailable" and "HTTP 500" in err["message"]
    tried = [n for n, f in gw.fakes.items() if f.calls > before[n]]
    assert len(tried) == 3 == int(r.headers["x-finerouter-attempts"])  # max_attempts
    ranking = router.route(PROMPTS[0]).ranking
    assert set(tried) == set(ranking[:3]) and r.headers["x-finerouter-fallback-from"] == ",".join(ranking[:3])


def test_upstream_client_errors_are_passed_back_without_fallback(gw, router):
    text = PROMPTS[1]
    first = router.route(text).model
    gw.fakes[first].set_failure(400)
    r = _chat(gw.client, text)
    assert r.status_code == 400 and r.headers["x-finerouter-model"] == first
    assert r.json()["error"]["message"] == f"{first} failing on purpose"
    assert r.headers["x-finerouter-attempts"] == "1" and not gw.state.cooldown.is_cooling(first)


# ---- malformed requests -----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("payload", "status", "param"),
    [
        (b"{not json", 400, None),
        (b"", 400, None),
        (b"[1, 2]", 400, None),
        (json.dumps({"messages": [{"role": "user", "content": "hi"}]}).encode(), 400, "model"),
        (json.dumps({"model": "finerouter"}).encode(), 400, "messages"),
        (json.dumps({"model": "finerouter", "messages": []}).encode(), 400, "messages"),
        (json.dumps({"model": "finerouter", "messages": ["hi"]}).encode(), 400, "messages[0]"),
        (json.dumps({"model": "finerouter", "messages": [{"role": "user", "content": 5}]}).encode(), 400, "messages[0].content"),
        (json.dumps({"model": "finerouter", "stream": "yes", "messages": [{"role": "user", "content": "hi"}]}).encode(), 400, "stream"),
        (json.dumps({"model": "finerouter:temperature=2", "messages": [{"role": "user", "content": "hi"}]}).encode(), 400, "model"),
        (json.dumps({"model": "finerouter", "tolerance": 3, "messages": [{"role": "user", "content": "hi"}]}).encode(), 400, "tolerance"),
        (json.dumps({"model": "no-such-model", "messages": [{"role": "user", "content": "hi"}]}).encode(), 404, "model"),
        (json.dumps({"model": "finerouter", "allowed_models": ["nope"], "messages": [{"role": "user", "content": "hi"}]}).encode(), 422, "allowed_models"),
        (json.dumps({"model": "finerouter", "messages": [{"role": "user", "content": [{"type": "image_url"}]}]}).encode(), 422, "messages"),
    ],
)
def test_bad_requests_get_openai_style_errors(gw, payload, status, param):
    r = gw.client.post("/v1/chat/completions", content=payload, headers={"content-type": "application/json"})
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["message"] and err["param"] == param


def test_oversized_body_is_refused_with_413(gw):
    big = "x" * (gw.state.settings.max_body_bytes + 10)
    r = _chat(gw.client, big)
    assert r.status_code == 413 and r.json()["error"]["code"] == "request_too_large"

    def chunks():  # no content-length: the limit holds while reading too
        for _ in range(100):
            yield b"x" * 1024

    r = gw.client.post("/v1/chat/completions", content=chunks())
    assert r.status_code == 413


def test_unknown_path_and_wrong_method(gw):
    r = gw.client.get("/v1/nothing-here")
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
    r = gw.client.get("/v1/chat/completions")
    assert r.status_code == 405 and "error" in r.json()


# ---- /v1/route, /v1/models, /healthz, /metrics ------------------------------------------------------------------
def test_route_endpoint_single_batch_and_messages(gw, router):
    r = gw.client.post("/v1/route", json={"prompt": PROMPTS[0], "tolerance": 0.2})
    assert r.status_code == 200
    d = r.json()
    expected = router.route(PROMPTS[0], tolerance=0.2)
    assert d["model"] == expected.model and d["ranking"] == expected.ranking and d["tolerance"] == 0.2
    r = gw.client.post("/v1/route", json={"prompts": PROMPTS})
    assert [x["model"] for x in r.json()["data"]] == [router.route(p).model for p in PROMPTS]
    r = gw.client.post("/v1/route", json={"messages": [{"role": "user", "content": PROMPTS[1]}], "model": "finerouter:allowed_models=" + router.models_[2]})
    assert r.json()["model"] == router.models_[2]
    assert gw.client.post("/v1/route", json={"prompt": PROMPTS[0], "prompts": PROMPTS}).status_code == 400
    assert gw.client.post("/v1/route", json={"prompts": ["ok", "  "]}).status_code == 422
    assert gw.client.post("/v1/route", json={"prompts": ["x"] * (gw.state.settings.max_route_prompts + 1)}).status_code == 400


def test_models_and_health(gw, router):
    data = gw.client.get("/v1/models").json()["data"]
    assert data[0]["id"] == "finerouter"
    assert {d["id"]: d.get("routable") for d in data[1:]} == {**{m: True for m in router.models_}, "direct-only": False}
    health = gw.client.get("/healthz").json()
    assert health["status"] == "ok" and health["models"] == router.models_ and health["cooling_down"] == {}


def test_metrics_exposition(gw, router):
    text = PROMPTS[2]
    d = router.route(text)
    before = _metric(gw, "finerouter_routing_decisions_total", model=d.model, task="others" if d.task_id is None else d.task_id)
    _chat(gw.client, text)
    r = gw.client.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    body = r.text
    for name in ("finerouter_requests_total", "finerouter_routing_latency_seconds_bucket",
                 "finerouter_upstream_latency_seconds_bucket", "finerouter_request_latency_seconds_bucket"):
        assert name in body
    after = _metric(gw, "finerouter_routing_decisions_total", model=d.model, task="others" if d.task_id is None else d.task_id)
    assert after == before + 1
    assert _metric(gw, "finerouter_requests_total", endpoint="/v1/chat/completions", status="200") >= 1
    assert _metric(gw, "finerouter_upstream_latency_seconds_count", model=d.model) >= 1


def test_concurrent_requests_are_batched_and_all_answered(gw, router):
    texts = [f"{PROMPTS[i % len(PROMPTS)]} (variant {i})" for i in range(40)]
    batches_before = gw.state.batcher.batches

    responses = _concurrently(
        gw, [("/v1/chat/completions", {"model": "finerouter", "messages": [{"role": "user", "content": t}]}) for t in texts]
    )
    assert [r.status_code for r in responses] == [200] * len(texts)
    for r, t in zip(responses, texts):  # batched encoding may differ from a lone one by float noise only
        d = router.route(t)
        assert d.final_scores[d.models.index(r.headers["x-finerouter-model"])] >= max(d.final_scores) - 1e-4
    assert [_answer(r) for r in responses] == [f"[{r.headers['x-finerouter-model']}] {t}" for r, t in zip(responses, texts)]
    assert gw.state.batcher.batches - batches_before < len(texts)


# ---- apps with other settings -----------------------------------------------------------------------------------
def test_bearer_auth(router, upstreams):
    with _serve(router, upstreams, auth_tokens=["tok-one", "tok-two"]) as gw:
        c = gw.client
        body = {"model": "finerouter", "messages": [{"role": "user", "content": "hi"}]}
        r = c.post("/v1/chat/completions", json=body)
        assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
        assert r.json()["error"]["code"] == "invalid_api_key"
        r = c.post("/v1/chat/completions", json=body, headers={"authorization": "Bearer tok-three"})
        assert r.status_code == 401 and "tok-three" not in r.text
        assert c.post("/v1/chat/completions", json=body, headers={"authorization": "Basic tok-one"}).status_code == 401
        assert c.post("/v1/chat/completions", json=body, headers={"authorization": "Bearer tok-two"}).status_code == 200
        assert c.post("/v1/route", json={"prompt": "hi"}).status_code == 401
        assert c.get("/v1/models").status_code == 401
        assert c.get("/healthz").status_code == 200 and c.get("/metrics").status_code == 200
        openai = pytest.importorskip("openai")
        ok = _openai(gw, api_key="tok-one")
        assert ok.chat.completions.create(model="finerouter", messages=[{"role": "user", "content": "hi"}]).choices
        bad = _openai(gw, api_key="wrong")
        with pytest.raises(openai.AuthenticationError):
            bad.chat.completions.create(model="finerouter", messages=[{"role": "user", "content": "hi"}])


class SlowRouter:
    """Wraps a router; each route call first sleeps (a stand-in for a heavy encoder) in its worker thread."""

    def __init__(self, inner, delay_s: float) -> None:
        self.inner, self.delay_s, self.models_ = inner, delay_s, inner.models_

    def route(self, prompt, **kw):
        time.sleep(self.delay_s)
        return self.inner.route(prompt, **kw)


def test_routing_runs_off_the_event_loop(router, upstreams):
    with _serve(router, upstreams, settings=GatewaySettings(route_workers=1)) as gw:
        gw.state.batcher.router = SlowRouter(router, 1.0)
        results = {}

        def routed():
            results["r"] = gw.client.post("/v1/route", json={"prompt": PROMPTS[0]})

        t = threading.Thread(target=routed)
        t.start()
        time.sleep(0.2)  # the route call is now sleeping in its thread
        t0 = time.perf_counter()
        assert gw.client.get("/healthz").status_code == 200
        assert time.perf_counter() - t0 < 0.5
        t.join()
        assert results["r"].json()["model"] == router.route(PROMPTS[0]).model


def test_upstream_cookies_are_neither_replayed_nor_passed_back(router, upstreams):
    """The gateway keeps no cookie jar (one caller's upstream Set-Cookie must not ride along with others'
    requests), and an upstream's cookies belong to its session with the gateway: no client sees them."""
    seen: list[httpx.Request] = []

    def upstream(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        answer = {"id": f"c{len(seen)}", "object": "chat.completion", "model": "m",
                  "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}]}
        return httpx.Response(200, json=answer, headers={"set-cookie": f"session=caller-{len(seen)}; Path=/"})

    with _serve(router, upstreams, transport=httpx.MockTransport(upstream)) as gw:
        for i in (1, 2, 3):
            body = {"model": router.models_[1], "messages": [{"role": "user", "content": f"turn {i}"}]}
            r = gw.client.post("/v1/chat/completions", json=body)
            assert r.status_code == 200 and "set-cookie" not in r.headers
        assert not gw.client.cookies  # nothing for the client to send back either
        assert len(seen) == 3 and not [q for q in seen if "cookie" in q.headers]
        assert seen[0].headers["user-agent"].startswith("finerouter/")
        assert json.loads(seen[0].content)["model"] == f"upstream/{router.models_[1]}"


def test_create_app_refuses_a_router_model_without_upstream(router, upstreams):
    from finerouter.serving.errors import ConfigError

    cfg = _config(router, upstreams)
    partial = {n: u for n, u in cfg.upstreams.items() if n != router.models_[1]}
    with pytest.raises(ConfigError, match=f"'{router.models_[1]}' have no upstream"):
        create_app(router, partial)
    with pytest.raises(ConfigError, match="'route' method"):
        create_app(object(), cfg)


# ---- cost-aware routing and budgets ------------------------------------------------------------------------------
def test_cost_weight_and_budget_in_the_extra_body_are_validated(gw, router):
    text = PROMPTS[1]
    for extra, param in [
        ({"cost_weight": -1}, "cost_weight"),
        ({"cost_weight": "cheap"}, "cost_weight"),
        ({"budget_per_1k": -0.5}, "budget_per_1k"),
        ({"budget_per_1k": True}, "budget_per_1k"),
        ({"cost_weight": 1.0, "budget_per_1k": 1.0}, "cost_weight"),
    ]:
        r = _chat(gw.client, text, **extra)
        assert r.status_code == 400, (extra, r.text)
        assert r.json()["error"]["param"] == param and r.json()["error"]["type"] == "invalid_request_error"
    r = _chat(gw.client, text, model="finerouter:cost_weight=x")
    assert r.status_code == 400 and r.json()["error"]["param"] == "model"
    # the model string's choice replaces the body's: no clash
    assert _chat(gw.client, text, model="finerouter:cost_weight=0", budget_per_1k=1.0).status_code == 200


def test_cost_weight_routes_like_the_library_and_is_not_forwarded(gw, router):
    for lam in (0.0, 1e9):
        for text in PROMPTS[:3]:
            want = router.route(text, cost_weight=lam)
            r = _chat(gw.client, text, cost_weight=lam)
            assert r.status_code == 200, r.text
            assert r.headers["x-finerouter-model"] == want.model
            sent = gw.fakes[want.model].requests[-1]["body"]
            assert "cost_weight" not in sent and "budget_per_1k" not in sent
        d = gw.client.post("/v1/route", json={"prompt": PROMPTS[0], "cost_weight": lam}).json()
        assert d["cost_weight"] == lam and d["model"] == router.route(PROMPTS[0], cost_weight=lam).model


@pytest.fixture(scope="module")
def budget_traffic(router):
    """Prompts the router has not seen, with its per-model cost estimates and expected scores."""
    import numpy as np

    from finerouter.data.synthetic import make_synthetic_routing_data

    prompts = make_synthetic_routing_data(n_prompts=300, n_models=4, seed=1).prompts
    ref = router.route(prompts, cost_weight=0.0)
    costs = np.array([d.costs for d in ref], dtype=float)
    expected = np.array([d.expected_scores for d in ref], dtype=float)
    rows = np.arange(len(prompts))
    top = 1000 * costs[rows, expected.argmax(1)].mean()  # lambda = 0: the best expected model
    floor = 1000 * costs.min(1).mean()
    return SimpleNamespace(prompts=prompts, ref=ref, costs=costs, top=top, floor=floor)


def test_key_budget_is_met_over_the_sliding_window(router, upstreams, budget_traffic):
    """A named key's default budget holds over that key's traffic: the spend of all 300 requests (cold start
    included) within 10% of the budget, and the last 100-request window's within three standard errors of its
    own prompts' spend (one window's spend scatters around the budget as much as its prompts' costs do). An
    unnamed token's requests, without a budget, route as before."""
    import numpy as np

    t = budget_traffic
    assert t.floor < 0.7 * t.top, "the router must have cheaper and pricier choices for a budget to matter"
    budget = round(t.floor + 0.4 * (t.top - t.floor), 6)
    window = 100
    cfg = _config(
        router, upstreams, extra={"keys": {"team": {"token_env": "TEAM_TOKEN", "budget_per_1k": budget}}},
        environ={"TEAM_TOKEN": "team-token-1"},
    )
    settings = GatewaySettings(budget_window_requests=window, max_body_bytes=64 * 1024)
    team = {"authorization": "Bearer team-token-1"}
    plain = {"authorization": "Bearer plain-token"}
    index = {p: i for i, p in enumerate(t.prompts)}

    def fire(texts, headers):
        out = []
        for k in range(0, len(texts), 10):  # 10 at a time: batches share lambda
            out += _concurrently(gw, [("/v1/chat/completions", {
                "model": "finerouter", "messages": [{"role": "user", "content": x}]}) for x in texts[k:k + 10]], headers)
        return out

    with _serve(router, upstreams, config=cfg, settings=settings, auth_tokens=["plain-token"]) as gw:
        responses = fire(t.prompts, team)
        assert [r.status_code for r in responses] == [200] * len(t.prompts)
        chosen = [router.models_.index(r.headers["x-finerouter-model"]) for r in responses]
        spent = [t.costs[index[x], j] for x, j in zip(t.prompts, chosen)]
        (stream,) = gw.state.budgets.snapshot()
        assert stream["key"] == "team" and stream["budget_per_1k"] == budget
        assert stream["window_requests"] == window and stream["cost_weight"] > 0
        overall = 1000 * float(np.mean(spent))
        assert abs(overall - budget) <= 0.10 * budget, (overall, budget, t.floor, t.top)
        # the window: the last 100 decisions (a batch is recorded as one, so in the order of these responses'
        # batches; its spend is what the snapshot says, and it is on budget up to its prompts' own scatter)
        sem = 1000 * float(np.std(spent[-window:])) / np.sqrt(window)
        assert abs(stream["window_spend_per_1k"] - budget) <= max(0.10 * budget, 3 * sem), (stream, budget, sem)
        # /metrics: the spend so far per key and model, and the stream's lambda and window spend
        m = gw.state.metrics
        per_model = {name: m.value("finerouter_estimated_spend_usd_total", {"key": "team", "model": name})
                     for name in router.models_}
        assert sum(per_model.values()) == pytest.approx(sum(spent), rel=1e-6)
        for j, name in enumerate(router.models_):
            assert per_model[name] == pytest.approx(sum(s for s, c in zip(spent, chosen) if c == j), rel=1e-6, abs=1e-12)
        assert m.value("finerouter_estimated_spend_requests_total", {"key": "team"}) == len(t.prompts)
        labels = {"key": "team", "budget_per_1k": f"{budget:g}"}
        assert m.value("finerouter_budget_cost_weight", labels) == stream["cost_weight"]
        assert m.value("finerouter_budget_window_spend_per_1k_usd", labels) == pytest.approx(stream["window_spend_per_1k"])
        text = gw.client.get("/metrics").text
        assert 'finerouter_budget_cost_weight{budget_per_1k="%g",key="team"}' % budget in text
        # a request's own choice replaces its key's default budget
        d = gw.client.post("/v1/route", json={"prompt": t.prompts[0], "cost_weight": 0.0}, headers=team).json()
        assert d["cost_weight"] == 0.0 and d["budget_per_1k"] is None
        d = gw.client.post("/v1/route", json={"prompt": t.prompts[0]}, headers=team).json()
        assert d["budget_per_1k"] == budget and any("gateway budget window ('team'" in n for n in d["notes"])
        # requests without a budget are unaffected: the tolerance rule, as the library routes them alone
        plain_texts = t.prompts[:30]
        for r, x in zip(fire(plain_texts, plain), plain_texts):
            d = router.route(x)
            assert d.final_scores[d.models.index(r.headers["x-finerouter-model"])] >= max(d.final_scores) - 1e-4
        assert m.value("finerouter_estimated_spend_requests_total", {"key": "anonymous"}) == len(plain_texts)
        assert len(gw.state.budgets.snapshot()) == 1  # no budget stream for them


# ---- `finerouter serve` -----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def saved_router(router, tmp_path_factory):
    """The FakeEncoder router saved (``finerouter serve`` rebuilds its encoder from the artifact)."""
    return router.save(tmp_path_factory.mktemp("serve") / "router")


@pytest.fixture(scope="module")
def saved_minilm_router(gateway_router, tmp_path_factory):
    """The MiniLM router saved, for the one test that serves real embeddings from a `finerouter serve` process."""
    return gateway_router.save(tmp_path_factory.mktemp("serve-minilm") / "router")


def _yaml(path, upstreams_map, extra=None):
    import yaml

    path.write_text(yaml.safe_dump({"upstreams": upstreams_map, **(extra or {})}))
    return path


def test_serve_cli_refuses_bad_setups_before_serving(saved_router, router, upstreams, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from finerouter.cli.main import app

    runner = CliRunner()
    ups = {m: {"base_url": upstreams.base_url(m)} for m in router.models_}
    missing = dict(ups)
    del missing[router.models_[2]]
    res = runner.invoke(app, ["serve", "--router", str(saved_router), "--upstreams", str(_yaml(tmp_path / "a.yaml", missing))])
    assert res.exit_code == 2 and f"'{router.models_[2]}' have no upstream" in res.output and "a.yaml" in res.output
    keyed = {**ups, router.models_[0]: {**ups[router.models_[0]], "api_key_env": "FINEROUTER_TEST_UNSET_KEY"}}
    monkeypatch.delenv("FINEROUTER_TEST_UNSET_KEY", raising=False)
    res = runner.invoke(app, ["serve", "--router", str(saved_router), "--upstreams", str(_yaml(tmp_path / "b.yaml", keyed))])
    assert res.exit_code == 2 and "FINEROUTER_TEST_UNSET_KEY is not set" in res.output
    res = runner.invoke(app, ["serve", "--router", str(saved_router), "--upstreams", str(_yaml(tmp_path / "c.yaml", ups)),
                              "--auth-tokens-env", "FINEROUTER_TEST_NO_TOKENS"])
    assert res.exit_code == 2 and "FINEROUTER_TEST_NO_TOKENS" in res.output


@pytest.mark.slow  # a `finerouter serve` process with the MiniLM router, in front of loopback upstream servers
def test_serve_cli_serves_routed_requests(saved_minilm_router, gateway_router, socket_upstreams, tmp_path, serve_process):
    import os
    import signal

    router = gateway_router
    ups = {m: {"base_url": socket_upstreams.base_url(m)} for m in router.models_}
    ups[router.models_[0]]["api_key_env"] = "FINEROUTER_TEST_KEY"
    (tmp_path / "tokens.txt").write_text("client-token\n")
    env = {**os.environ, "FINEROUTER_TEST_KEY": UPSTREAM_KEY, "HF_HUB_OFFLINE": "1"}
    proc, url = serve_process(
        ["--router", str(saved_minilm_router), "--upstreams", str(_yaml(tmp_path / "ups.yaml", ups)), "--auth-tokens-file",
         str(tmp_path / "tokens.txt"), "--log-level", "warning"],
        env,
    )
    try:
        text = PROMPTS[0]
        r = httpx.post(url + "/v1/chat/completions", json={"model": "finerouter", "messages": [{"role": "user", "content": text}]},
                       headers={"authorization": "Bearer client-token"}, timeout=30)
        assert r.status_code == 200 and r.headers["x-finerouter-model"] == router.route(text).model
        assert httpx.post(url + "/v1/route", json={"prompt": text}).status_code == 401
    finally:
        proc.send_signal(signal.SIGINT)
        out = proc.communicate(timeout=20)[0]
    assert UPSTREAM_KEY not in out
