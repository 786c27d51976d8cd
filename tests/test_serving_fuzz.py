"""The gateway's request parser under hostile input: no JSON body, however odd, may cause a 500.

The real app (``create_app``) runs in-process under Starlette's ``TestClient`` (lifespan included) with a real
FineRouter on the :class:`~finerouter.testing.FakeEncoder`; its upstreams are
:class:`~finerouter.testing.FakeUpstream` apps reached in-process (:class:`~finerouter.testing.InProcessUpstreams`),
so a request that passes validation is routed, forwarded and answered for real. The
fuzzing is bounded (``max_examples``, derandomised, no example database) so it takes seconds in CI; set
``FINEROUTER_FUZZ_EXAMPLES`` for a longer local run.
"""

from __future__ import annotations

import json
import os

import httpx
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from finerouter.serving.app import create_app
from finerouter.serving.config import GatewaySettings, parse_gateway_config
from finerouter.testing import FakeUpstream, InProcessUpstreams

EXAMPLES = int(os.environ.get("FINEROUTER_FUZZ_EXAMPLES", "150"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture],
)
DEEP = 100_000


@pytest.fixture(scope="module")
def router(fake_encoder_router):
    """The session's FakeEncoder router (``conftest.fake_encoder_router``, 4 models)."""
    return fake_encoder_router


@pytest.fixture(scope="module")
def client(router):
    from fastapi.testclient import TestClient

    names = [*router.models_, "direct-only"]
    upstreams = InProcessUpstreams({n: FakeUpstream(n) for n in names})
    raw = {"upstreams": {n: {"base_url": upstreams.base_url(n), "model": f"upstream/{n}"} for n in names}}
    config = parse_gateway_config(raw, source="fuzz-upstreams")
    app = create_app(
        router,
        config,
        settings=GatewaySettings(max_attempts=2, cooldown_s=0.0, max_body_bytes=1024 * 1024),
        # An upstream that crashes on an odd body answers 500, as a real server would (not an exception here).
        transport=upstreams.transport(),
    )
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c


def _post(client, path: str, payload: bytes) -> httpx.Response:
    return client.post(path, content=payload, headers={"content-type": "application/json"})


def _assert_openai_error(r: httpx.Response, status: int, param: str | None = None) -> dict:
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["message"]
    if param is not None:
        assert err["param"] == param, err
    return err


def _chat_bytes(content: str, model: str = "finerouter", **extra) -> bytes:
    body = {"model": model, "messages": [{"role": "user", "content": content}], **extra}
    return json.dumps(body, ensure_ascii=True).encode()  # lone surrogates become "\ud800" escapes: valid JSON


# ---- item 6: lone surrogates, deep nesting, stream: null ---------------------------------------------------------
def test_a_lone_surrogate_is_a_400_on_routed_named_and_route_requests(client, router):
    lone = "before \ud800 after"
    for model in ["finerouter", router.models_[0], "direct-only"]:
        err = _assert_openai_error(_post(client, "/v1/chat/completions", _chat_bytes(lone, model)), 400, "messages[0].content")
        assert "surrogate" in err["message"]
    _assert_openai_error(_post(client, "/v1/route", json.dumps({"prompt": "\udfff"}).encode()), 400, "prompt")
    # in a field the gateway only forwards, and in a key
    _assert_openai_error(_post(client, "/v1/chat/completions", _chat_bytes("hi", router.models_[1], user="\udc80")), 400, "user")
    _assert_openai_error(_post(client, "/v1/chat/completions", _chat_bytes("hi", metadata={"k\ud800": 1})), 400, "metadata")
    # a proper surrogate pair is just an emoji
    r = _post(client, "/v1/chat/completions", _chat_bytes("smile \ud83d\ude00 please"))
    assert r.status_code == 200, r.text
    assert r.json()["choices"][0]["message"]["content"].endswith("smile \U0001f600 please")


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/route"])
def test_deeply_nested_json_is_a_400(client, path):
    for payload in [
        b"[" * DEEP + b"]" * DEEP,
        b'{"model": "finerouter", "messages": [{"role": "user", "content": "hi"}], "x": ' + b"[" * DEEP + b"]" * DEEP + b"}",
        b'{"prompt": "hi", "x": ' + b'{"a":' * DEEP + b"1" + b"}" * DEEP + b"}",
        b'{"model": "finerouter", "messages": [{"role": "user", "content": "hi"}], "x": ' + b"[" * 300 + b"]" * 300 + b"}",
    ]:
        err = _assert_openai_error(_post(client, path, payload), 400)
        assert "nest" in err["message"]


def test_moderate_nesting_is_accepted(client):
    tools = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {}}}}]
    nested: object = "leaf"
    for _ in range(40):
        nested = {"a": [nested]}
    r = _post(client, "/v1/chat/completions", _chat_bytes("hi there", tools=tools, metadata=nested))
    assert r.status_code == 200, r.text


def test_stream_null_is_accepted_as_not_streaming(client, router):
    for model in ["finerouter", router.models_[0]]:
        r = _post(client, "/v1/chat/completions", _chat_bytes("hello", model, stream=None))
        assert r.status_code == 200, r.text
        assert r.headers["content-type"].startswith("application/json")
        assert r.json()["choices"][0]["message"]["content"].endswith("hello")


def test_non_finite_numbers_are_a_400(client):
    for token in [b"NaN", b"Infinity", b"-Infinity", b"1e999"]:
        payload = b'{"model": "finerouter", "messages": [{"role": "user", "content": "hi"}], "temperature": ' + token + b"}"
        _assert_openai_error(_post(client, "/v1/chat/completions", payload), 400, "temperature")


# ---- fuzzing -----------------------------------------------------------------------------------------------------
SURROGATES = st.sampled_from(["\ud800", "\udbff", "\udc00", "\udfff"])
CHARS = st.one_of(st.characters(), SURROGATES, st.sampled_from(["\x00", "\u202e", "\ufeff", "\uffff", "\U0010ffff"]))
TEXT = st.text(CHARS, max_size=40)
SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(), st.integers(min_value=-(10**40), max_value=10**40), st.floats(), TEXT
)
JSON = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(TEXT, inner, max_size=4), max_leaves=20)


@st.composite
def nested(draw, leaf=JSON) -> str:
    """JSON text nested ``depth`` levels deep (as text: a Python value that deep cannot be serialised)."""
    depth = draw(st.sampled_from([1, 10, 50, 99, 100, 101, 500, 990, 1000, 5000, DEEP]))
    kind = draw(st.sampled_from(["list", "dict"]))
    inner = json.dumps(draw(leaf))
    return ("[" * depth + inner + "]" * depth) if kind == "list" else ('{"k":' * depth + inner + "}" * depth)


MODELS = ["synth-model-00", "synth-model-01", "synth-model-02"]  # three of the router's (make_synthetic_routing_data)
CLEAN_TEXT = st.text(st.characters(), min_size=1, max_size=40)


def _mostly(valid: st.SearchStrategy, odd: st.SearchStrategy) -> st.SearchStrategy:
    """Usually ``valid`` (so inputs get past the first check and reach routing and forwarding), else ``odd``."""
    return st.sampled_from([valid, valid, valid, odd]).flatmap(lambda strategy: strategy)


@st.composite
def chat_bodies(draw) -> bytes:
    """Bodies shaped like chat-completions (or /v1/route) requests, with arbitrary values in any field."""
    role = _mostly(st.sampled_from(["user", "system", "assistant", "tool"]), st.one_of(TEXT, JSON))
    part = _mostly(st.fixed_dictionaries({"type": st.just("text"), "text": CLEAN_TEXT}), st.one_of(TEXT, JSON))
    content = _mostly(st.one_of(CLEAN_TEXT, st.lists(part, max_size=3)), st.one_of(TEXT, JSON))
    message = _mostly(st.fixed_dictionaries({"role": role, "content": content}), JSON)
    model = _mostly(
        st.sampled_from(["finerouter", "finerouter:tolerance=0.2", f"finerouter:allowed_models={MODELS[1]}|{MODELS[2]}", *MODELS, "direct-only"]),
        st.one_of(st.sampled_from(["finerouter:", "finerouter:max_cost=x", "finerouter:tolerance=nan"]),
                  TEXT.map(lambda t: "finerouter:" + t), TEXT, JSON),
    )
    number = st.one_of(st.floats(0, 1), st.floats(), st.integers(), JSON)
    optional = {
        "stream": _mostly(st.one_of(st.none(), st.booleans()), JSON),
        "tolerance": number,
        "max_cost": number,
        "allowed_models": _mostly(st.lists(st.sampled_from([*MODELS, "nope"]), max_size=3), st.one_of(st.lists(TEXT, max_size=2), JSON)),
        "user": _mostly(CLEAN_TEXT, st.one_of(TEXT, JSON)),
        "temperature": number,
        "tools": st.lists(JSON, max_size=2),
        "prompt": _mostly(CLEAN_TEXT, st.one_of(TEXT, JSON)),
        "prompts": _mostly(st.lists(CLEAN_TEXT, max_size=3), JSON),
    }
    body: dict = {"model": draw(model), "messages": draw(_mostly(st.lists(message, min_size=1, max_size=3), JSON))}
    for key, strategy in optional.items():
        if draw(st.integers(0, 3)) == 0:
            body[key] = draw(strategy)
    if draw(st.integers(0, 3)) == 0:
        body[draw(TEXT)] = draw(JSON)
    text = json.dumps(body, ensure_ascii=draw(st.booleans()), allow_nan=True)
    if draw(st.integers(0, 9)) == 0:  # splice a deep value into the body
        text = text[:-1] + ', "deep": ' + draw(nested()) + "}"
    return text.encode("utf-8", "surrogatepass")  # ensure_ascii=False: raw lone surrogates, not UTF-8 at all


@st.composite
def any_json(draw) -> bytes:
    """Any JSON text (and some near-JSON: NaN, raw surrogates, deep nesting)."""
    text = draw(st.one_of(JSON.map(lambda v: json.dumps(v, allow_nan=True)), nested()))
    return text.encode("utf-8", "surrogatepass")


def _no_500(client, path: str, payload: bytes) -> None:
    """The gateway answers ``payload`` without an internal error, and every error is an OpenAI-style body."""
    r = _post(client, path, payload)
    event(f"{path} {r.status_code}")  # pytest --hypothesis-show-statistics shows how far the inputs got
    assert r.status_code != 500, (payload[:300], r.status_code, r.text[:300])
    if r.status_code >= 400:
        err = _assert_openai_error(r, r.status_code)
        if r.status_code >= 500:  # only the upstreams may fail (the echo server trips on some odd bodies)
            assert (r.status_code, err["type"]) == (502, "upstream_error"), r.text


@FUZZ
@given(payload=any_json())
def test_fuzz_any_json_never_500s(client, payload):
    for path in ("/v1/chat/completions", "/v1/route"):
        _no_500(client, path, payload)


@FUZZ
@given(payload=chat_bodies())
def test_fuzz_chat_shaped_bodies_never_500(client, payload):
    for path in ("/v1/chat/completions", "/v1/route"):
        _no_500(client, path, payload)
