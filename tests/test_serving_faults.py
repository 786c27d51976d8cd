"""Fault injection: the gateway in front of upstreams that fail in each way a real one does.

The gateway runs in-process (``httpx.ASGITransport``, its lifespan started by the test), each test with the
settings it needs, and the router is a FineRouter on the :class:`~finerouter.testing.FakeEncoder`. Upstreams
are echoing :class:`~finerouter.testing.FakeUpstream` apps: reached in-process
(:class:`~finerouter.testing.InProcessUpstreams`) for faults that are HTTP answers (a status, a body that is
not JSON, a stream cut short cleanly), and as real servers on loopback for faults that live at the socket level
(a connection dropped half-way, a stall, a body that never ends), which the gateway reads with its production
transport; those tests are marked slow, as are the shutdown tests (a server in a thread, and a real
``finerouter serve`` process). For each fault the test checks what the client sees (never a cut answer
presented as whole, never an upstream's credentials or cookies), where the request went (fallback), and what
the gateway counted (metrics, cooldown).
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
from finerouter.serving.server import STREAM_END_GRACE_S
from finerouter.testing import BackgroundServer, FakeUpstream, InProcessUpstreams
from finerouter.testing.fake_upstream import COOKIE, INTERNAL_HEADER, INTERNAL_VALUE

TIMEOUT_S = 1.0  # each upstream's timeout_s: also the longest pause inside a stream, unless told otherwise
HANG_S = 2.5  # how long a stalled upstream pauses
TEXT = "Explain in a few words why the sky is blue on a clear summer afternoon"
LONG_TEXT = " ".join(f"word{i}" for i in range(60))
# Faults an in-process transport cannot reproduce (it buffers answers and ignores timeouts): real sockets only.
SOCKET_FAULTS = frozenset({"timeout", "close_before_body", "close_mid_stream", "stall", "trickle", "huge"})


def _key(model: str) -> str:
    return f"sk-test-{model}-0123456789abcdef"


def _env(model: str) -> str:
    return "FAULT_KEY_" + "".join(c if c.isalnum() else "_" for c in model).upper()


# ---- fixtures ---------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def router(fake_encoder_router):
    """The session's FakeEncoder router (``conftest.fake_encoder_router``)."""
    return fake_encoder_router


@pytest.fixture(scope="module")
def upstream_fakes(router):
    """One keyed echoing upstream per router model."""
    return {m: FakeUpstream(m, api_key=_key(m), hang_s=HANG_S) for m in router.models_}


@pytest.fixture(scope="module")
def in_process(upstream_fakes):
    """The upstreams reached in-process."""
    hosts = InProcessUpstreams(upstream_fakes)
    return SimpleNamespace(fakes=upstream_fakes, base_url=hosts.base_url, transport=hosts.transport)


@pytest.fixture(scope="module")
def servers(upstream_fakes):
    """The same upstreams, each on its own loopback port (reached with the gateway's production transport)."""
    running = {m: BackgroundServer(f).start() for m, f in upstream_fakes.items()}
    yield SimpleNamespace(fakes=upstream_fakes, servers=running, base_url=lambda m: running[m].url + "/v1",
                          transport=None)
    for s in running.values():
        s.stop()


def _reach(request, fault) -> SimpleNamespace:
    """Where the upstreams are for ``fault``: on real sockets for :data:`SOCKET_FAULTS`, else in-process."""
    return request.getfixturevalue("servers" if fault in SOCKET_FAULTS else "in_process")


def _socket(fault, *rest):
    """A parameter set for a test parametrized by fault: slow when the fault needs real sockets."""
    return pytest.param(fault, *rest, marks=[pytest.mark.slow] if fault in SOCKET_FAULTS else [])


@pytest.fixture
def fakes(upstream_fakes):
    """The upstreams, healed and with their default knobs."""
    for fake in upstream_fakes.values():
        fake.set_failure(None)
        fake.hang_s, fake.trickle_s, fake.error_pad_bytes, fake.huge_bytes = HANG_S, 0.2, 0, 64 * 1024 * 1024
    return upstream_fakes


def _config(router, upstreams, keys=None, idle_s=None):
    keys = keys or {m: _key(m) for m in router.models_}
    idle = {} if idle_s is None else {"stream_idle_timeout_s": idle_s}
    raw = {
        "upstreams": {
            m: {"base_url": upstreams.base_url(m), "timeout_s": TIMEOUT_S, "api_key_env": _env(m), **idle}
            for m in router.models_
        }
    }
    return parse_gateway_config(raw, source="faults.yaml", environ={_env(m): k for m, k in keys.items()})


@contextlib.asynccontextmanager
async def _gateway(router, upstreams, keys=None, idle_s=None, **settings):
    """The gateway app with its lifespan running, and a client that calls it in-process."""
    base = {"max_attempts": 3, "cooldown_s": 30.0}
    transport = None if upstreams.transport is None else upstreams.transport()
    app = create_app(router, _config(router, upstreams, keys, idle_s), settings=GatewaySettings(**{**base, **settings}),
                     transport=transport)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway", timeout=30) as client:
            yield SimpleNamespace(client=client, app=app, state=app.state.gateway)


def _run(coro):
    return asyncio.run(coro)


def _body(text: str = TEXT, *, model: str = "finerouter", stream: bool = False) -> dict:
    return {"model": model, "stream": stream, "messages": [{"role": "user", "content": text}]}


def _events(raw: str) -> list[str]:
    """The data fields of a server-sent event stream."""
    return [block[len("data: "):] for block in raw.split("\n\n") if block.startswith("data: ")]


def _streamed_text(events: list[str]) -> str:
    out = ""
    for e in events:
        if e != "[DONE]" and "choices" in (obj := json.loads(e)):
            out += obj["choices"][0]["delta"].get("content") or ""
    return out


def _metric(gw, name: str, **labels) -> float:
    return gw.state.metrics.value(name, labels)


def _secrets_absent(router, text: str) -> None:
    for m in router.models_:
        assert _key(m) not in text
    assert "Bearer sk-" not in text and "upstream_session" not in text and INTERNAL_VALUE not in text


# ---- item 2: streams broken off, cut short or stalled -----------------------------------------------------------
@pytest.mark.parametrize(("fault", "code"), [_socket("close_mid_stream", "upstream_stream_broken"),
                                             _socket("truncate", "upstream_stream_broken"),
                                             _socket("stall", "upstream_stream_timeout")])
def test_a_stream_cut_short_ends_with_an_error_event_and_no_done(router, fakes, fault, code, request):
    upstreams = _reach(request, fault)
    first = router.route(TEXT).model
    fakes[first].set_failure(fault)

    async def go():
        async with _gateway(router, upstreams) as gw:
            t0 = time.perf_counter()
            r = await gw.client.post("/v1/chat/completions", json=_body(stream=True))
            elapsed = time.perf_counter() - t0
            events = _events(r.text)
            assert r.status_code == 200 and r.headers["x-finerouter-model"] == first
            assert "[DONE]" not in events
            error = json.loads(events[-1])["error"]
            assert error["code"] == code and error["type"] == "upstream_error" and first in error["message"]
            # What came before the error is the start of the real answer, relayed as whole events.
            assert f"[{first}] {TEXT}".startswith(_streamed_text(events[:-1])) and len(events) >= 2
            assert not any(json.loads(e)["choices"][0]["finish_reason"] for e in events[:-1])
            reason = "timeout" if fault == "stall" else "broken"
            kind = "stream_timeout" if fault == "stall" else "stream"
            assert _metric(gw, "finerouter_stream_failures_total", model=first, reason=reason) == 1
            assert _metric(gw, "finerouter_upstream_errors_total", model=first, kind=kind) == 1
            assert gw.state.cooldown.is_cooling(first)  # the next request goes elsewhere first
            if fault == "stall":
                assert TIMEOUT_S * 0.9 < elapsed < HANG_S  # the gateway's timeout, not the upstream's pause, ends it

    _run(go())


def test_the_openai_client_sees_a_cut_stream_as_an_error(router, in_process, fakes):
    openai = pytest.importorskip("openai")
    first = router.route(TEXT).model
    fakes[first].set_failure("truncate")

    async def go():
        async with _gateway(router, in_process) as gw:
            client = openai.AsyncOpenAI(base_url="http://gateway/v1", api_key="unused", max_retries=0,
                                        http_client=gw.client)
            stream = await client.chat.completions.create(model="finerouter", messages=_body()["messages"], stream=True)
            with pytest.raises(openai.APIError, match="incomplete"):
                async for _ in stream:
                    pass

    _run(go())


@pytest.mark.parametrize("fault", [_socket("close_before_body"), _socket("invalid_json")])
def test_a_stream_failing_before_its_first_event_falls_back(router, fakes, fault, request):
    upstreams = _reach(request, fault)
    first, second = router.route(TEXT).ranking[:2]
    fakes[first].set_failure(fault)

    async def go():
        async with _gateway(router, upstreams) as gw:
            r = await gw.client.post("/v1/chat/completions", json=_body(stream=True))
            events = _events(r.text)
            assert r.status_code == 200 and r.headers["x-finerouter-model"] == second
            assert r.headers["x-finerouter-fallback-from"] == first and r.headers["x-finerouter-attempts"] == "2"
            assert events[-1] == "[DONE]" and _streamed_text(events) == f"[{second}] {TEXT}"
            kind = "stream" if fault == "close_before_body" else "invalid_json"
            assert _metric(gw, "finerouter_upstream_errors_total", model=first, kind=kind) == 1
            assert _metric(gw, "finerouter_fallbacks_total", from_model=first, to_model=second) == 1
            assert gw.state.cooldown.is_cooling(first)

    _run(go())


@pytest.mark.slow  # a stall and a trickle are pauses on a socket
def test_the_pause_allowed_inside_a_stream_is_configurable(router, servers, fakes):
    """stream_idle_timeout_s: a stall is cut at it; a stream whose chunks come closer together is relayed whole."""
    idle = 0.3
    first = router.route(TEXT).model

    async def go():
        async with _gateway(router, servers, idle_s=idle) as gw:
            fakes[first].set_failure("stall")
            t0 = time.perf_counter()
            r = await gw.client.post("/v1/chat/completions", json=_body(stream=True))
            assert idle * 0.9 < time.perf_counter() - t0 < TIMEOUT_S
            assert json.loads(_events(r.text)[-1])["error"]["code"] == "upstream_stream_timeout"
            gw.state.cooldown.clear()
            fakes[first].set_failure("trickle")
            fakes[first].trickle_s = idle / 4
            r = await gw.client.post("/v1/chat/completions", json=_body(stream=True))
            events = _events(r.text)
            assert events[-1] == "[DONE]" and _streamed_text(events) == f"[{first}] {TEXT}"
            assert _metric(gw, "finerouter_stream_failures_total", model=first, reason="timeout") == 1

    _run(go())


# ---- item 3: the upstream refuses the gateway's key; error bodies are scrubbed and capped ----------------------
@pytest.mark.parametrize("status", [401, 403])
def test_an_upstream_auth_failure_falls_back_and_leaks_nothing(router, in_process, fakes, status, caplog):
    first, second = router.route(TEXT).ranking[:2]
    fakes[first].set_failure(status)
    caplog.set_level(logging.DEBUG)

    async def go():
        async with _gateway(router, in_process) as gw:
            r = await gw.client.post("/v1/chat/completions", json=_body())
            assert r.status_code == 200 and r.headers["x-finerouter-model"] == second
            assert r.json()["choices"][0]["message"]["content"] == f"[{second}] {TEXT}"
            assert "set-cookie" not in r.headers and INTERNAL_HEADER not in r.headers
            assert "www-authenticate" not in r.headers and "x-echo-authorization" not in r.headers
            assert _metric(gw, "finerouter_upstream_errors_total", model=first, kind="auth") == 1
            assert gw.state.cooldown.is_cooling(first)
            _secrets_absent(router, r.text + json.dumps(dict(r.headers)))

    _run(go())
    logged = [rec.getMessage() for rec in caplog.records if "rejected the gateway's credentials" in rec.getMessage()]
    assert logged and _env(first) in logged[0] and f"HTTP {status}" in logged[0]
    _secrets_absent(router, caplog.text)


def test_a_wrong_upstream_key_everywhere_is_a_502_that_says_so_without_upstream_text(router, in_process, fakes, caplog):
    """The gateway's configured key is wrong: the upstream's 401 (which echoes that key, sets a cookie and
    names its backend) must reach the client only as the gateway's own 502."""
    wrong = {m: f"sk-wrong-{m}-fedcba9876543210" for m in router.models_}
    named = router.models_[1]
    caplog.set_level(logging.DEBUG)

    async def go():
        async with _gateway(router, in_process, keys=wrong) as gw:
            for body in (_body(model=named), _body(), _body(model=named, stream=True)):
                r = await gw.client.post("/v1/chat/completions", json=body)
                assert r.status_code == 502, r.text
                error = r.json()["error"]
                assert error["type"] == "upstream_error" and "rejected the gateway's credentials" in error["message"]
                assert "Incorrect API key" not in r.text and "received_key" not in r.text
                assert "set-cookie" not in r.headers and INTERNAL_HEADER not in r.headers
                text = r.text + json.dumps(dict(r.headers))
                assert not any(k in text for k in wrong.values())
                _secrets_absent(router, text)

    _run(go())
    assert not any(k in caplog.text for k in wrong.values())


def test_a_relayed_client_error_is_scrubbed_of_keys_cookies_and_internal_headers(router, in_process, fakes):
    first = router.route(TEXT).model
    fakes[first].set_failure(400)

    async def go():
        async with _gateway(router, in_process) as gw:
            r = await gw.client.post("/v1/chat/completions", json=_body())
            assert r.status_code == 400 and r.headers["x-finerouter-model"] == first
            error = r.json()["error"]  # still the upstream's own (valid JSON) error, its message intact
            assert error["message"] == f"{first} failing on purpose"
            assert error["debug"]["received_key"] == "[redacted]" and "[redacted]" in error["debug"]["received_authorization"]
            assert "set-cookie" not in r.headers and INTERNAL_HEADER not in r.headers and "x-echo-authorization" not in r.headers
            _secrets_absent(router, r.text.replace(f"http://{INTERNAL_VALUE}/v1", "") + json.dumps(dict(r.headers)))
            assert not gw.state.cooldown.is_cooling(first)  # the request's fault, not the upstream's

    _run(go())


def test_scrub_redacts_configured_keys_and_key_shapes(router, in_process):
    from finerouter.serving.proxy import UpstreamProxy

    cfg = _config(router, in_process)
    proxy = UpstreamProxy({}, cfg.upstreams)  # scrubbing needs no transport
    key = _key(router.models_[0])
    raw = json.dumps({"error": {"message": f"bad key {key[:12]}****{key[-4:]} (token Bearer abc.def-123456)",
                                "plain": key.replace("sk-", "", 1), "api_key": "hunter22-secret", "desk-lamp": "fine",
                                "n": "max_tokens: 100", "hint": "Missing bearer token in the header."}}).encode()
    out = json.loads(proxy.scrub(raw))["error"]  # still valid JSON
    assert key[:12] not in out["message"] and "abc.def" not in out["message"] and "[redacted]" in out["message"]
    assert out["plain"] == key.replace("sk-", "", 1)  # not key-shaped, not a configured key: kept
    assert out["api_key"] == "[redacted]" and out["desk-lamp"] == "fine" and out["n"] == "max_tokens: 100"
    assert out["hint"] == "Missing bearer token in the header."
    assert proxy.scrub(f"the key {key.replace('sk-', 'xx-')} and {key}".encode()).count(b"[redacted]") == 1


def test_an_error_body_over_the_limit_is_replaced_by_the_gateways_own(router, in_process, fakes):
    first = router.route(TEXT).model
    fakes[first].set_failure(400)
    fakes[first].error_pad_bytes = 100_000  # over the default limit, 64 KiB

    async def go():
        async with _gateway(router, in_process) as gw:
            r = await gw.client.post("/v1/chat/completions", json=_body())
            assert r.status_code == 400 and len(r.content) < 1024
            error = r.json()["error"]
            assert error["code"] == "upstream_error_body_withheld" and "65536" in error["message"]
            assert "xxxx" not in r.text and "failing on purpose" not in r.text

    _run(go())


# ---- item 4: a 200 whose body is not JSON -----------------------------------------------------------------------
def test_a_200_that_is_not_json_falls_back(router, in_process, fakes):
    first, second = router.route(TEXT).ranking[:2]
    fakes[first].set_failure("invalid_json")

    async def go():
        async with _gateway(router, in_process) as gw:
            r = await gw.client.post("/v1/chat/completions", json=_body())
            assert r.status_code == 200 and r.headers["x-finerouter-model"] == second
            assert r.json()["choices"][0]["message"]["content"] == f"[{second}] {TEXT}"
            assert _metric(gw, "finerouter_upstream_errors_total", model=first, kind="invalid_json") == 1
            assert gw.state.cooldown.is_cooling(first)
            # A body cut short (a clean end after half a JSON document) is no answer either.
            gw.state.cooldown.clear()
            fakes[first].set_failure("truncate")
            r = await gw.client.post("/v1/chat/completions", json=_body())
            assert r.status_code == 200 and r.headers["x-finerouter-model"] == second
            assert _metric(gw, "finerouter_upstream_errors_total", model=first, kind="invalid_json") == 2

    _run(go())


# ---- item 7: bodies over the limit ------------------------------------------------------------------------------
@pytest.mark.slow  # the gateway hangs up on a body that is still being written: a socket
def test_an_oversized_body_falls_back_without_being_read_whole(router, servers, fakes):
    first, second = router.route(TEXT).ranking[:2]
    fakes[first].set_failure("huge")
    fakes[first].huge_bytes = 64 * 1024 * 1024  # over the default limit, 32 MiB

    async def go():
        async with _gateway(router, servers) as gw:
            r = await gw.client.post("/v1/chat/completions", json=_body())
            assert r.status_code == 200 and r.headers["x-finerouter-model"] == second
            assert r.json()["choices"][0]["message"]["content"] == f"[{second}] {TEXT}"
            assert _metric(gw, "finerouter_upstream_errors_total", model=first, kind="too_large") == 1
            assert gw.state.cooldown.is_cooling(first)

    _run(go())
    # The gateway hung up soon after the limit: the upstream wrote a fraction of its 64 MiB (socket buffers).
    sent, deadline = -1, time.monotonic() + 5
    while sent != fakes[first].last_sent_bytes and time.monotonic() < deadline:  # until the upstream stops writing
        sent = fakes[first].last_sent_bytes
        time.sleep(0.1)
    assert 0 < fakes[first].last_sent_bytes < 48 * 1024 * 1024


@pytest.mark.slow  # a 32 MiB stream on a socket
def test_a_stream_over_the_limit_ends_with_an_error_event(router, servers, fakes):
    first = router.route(TEXT).model
    fakes[first].set_failure("huge")
    fakes[first].huge_bytes = 32 * 1024 * 1024

    async def go():
        async with _gateway(router, servers, max_upstream_body_bytes=1024 * 1024) as gw:
            r = await gw.client.post("/v1/chat/completions", json=_body(stream=True))
            events = _events(r.text)
            assert r.status_code == 200 and "[DONE]" not in events
            assert json.loads(events[-1])["error"]["code"] == "upstream_answer_too_large"
            assert len(r.content) <= 1024 * 1024 + 4096
            assert _metric(gw, "finerouter_stream_failures_total", model=first, reason="too_large") == 1

    _run(go())


def test_a_healthy_stream_is_relayed_unchanged_and_counts_no_failure(router, in_process, fakes):
    first = router.route(LONG_TEXT).model

    async def go():
        async with _gateway(router, in_process) as gw:
            r = await gw.client.post("/v1/chat/completions", json=_body(LONG_TEXT, stream=True))
            events = _events(r.text)
            assert events[-1] == "[DONE]" and _streamed_text(events) == f"[{first}] {LONG_TEXT}"
            assert json.loads(events[-2])["choices"][0]["finish_reason"] == "stop"
            assert len(events) == len(LONG_TEXT.split()) + 1 + 3
            assert _metric(gw, "finerouter_stream_failures_total", model=first, reason="broken") == 0
            assert gw.state.proxy.open_streams == 0

    _run(go())


# ---- item 8: shutdown with a stream still open ------------------------------------------------------------------
def _open_trickling_stream(url: str, model: str, out: dict, started: threading.Event) -> None:
    """Read a streamed answer into ``out["body"]``; ``started`` is set at its first bytes (or its failure)."""
    chunks: list[str] = []
    try:
        with httpx.stream("POST", url + "/v1/chat/completions", json=_body(LONG_TEXT, model=model, stream=True),
                          timeout=60) as r:
            out["status"] = r.status_code
            for chunk in r.iter_text():
                chunks.append(chunk)
                started.set()
    except httpx.HTTPError as exc:  # e.g. the connection dropped without an error event
        out["error"] = repr(exc)
    finally:
        out["body"] = "".join(chunks)
        started.set()


@pytest.mark.slow  # a real server in a thread, stopped with a trickling stream open
def test_stopping_the_server_ends_an_open_stream_with_an_error_event_in_bounded_time(router, servers, fakes):
    model = router.models_[0]
    fakes[model].set_failure("trickle")  # 60 words, 0.2 s apart: 12 s
    app = create_app(router, _config(router, servers))
    server = BackgroundServer(app, shutdown_timeout_s=0.5).start()
    out: dict = {}
    started = threading.Event()
    client = threading.Thread(target=_open_trickling_stream, args=(server.url, model, out, started))
    client.start()
    assert started.wait(10)
    t0 = time.perf_counter()
    server.stop()
    stopped = time.perf_counter() - t0
    client.join(10)
    assert stopped < 0.5 + STREAM_END_GRACE_S + 1.0
    events = _events(out["body"])
    assert out["status"] == 200 and "[DONE]" not in events and "error" not in out, out
    assert json.loads(events[-1])["error"]["code"] == "gateway_shutting_down"
    assert app.state.gateway.metrics.value("finerouter_stream_failures_total", {"model": model, "reason": "shutdown"}) == 1
    assert not app.state.gateway.cooldown.is_cooling(model)  # not the upstream's fault


@pytest.mark.slow
def test_serve_exits_on_sigterm_within_its_shutdown_timeout(router, servers, fakes, tmp_path, serve_process):
    """A real `finerouter serve` process with a trickling stream open: SIGTERM, then exit within the timeout."""
    import os
    import signal
    import subprocess

    import yaml

    saved = router.save(tmp_path / "router")
    model = router.models_[0]
    fakes[model].set_failure("trickle")
    ups = {m: {"base_url": s.url + "/v1", "api_key_env": _env(m)} for m, s in servers.servers.items()}
    (tmp_path / "ups.yaml").write_text(yaml.safe_dump({"upstreams": ups}))
    env = {**os.environ, **{_env(m): _key(m) for m in router.models_}, "HF_HUB_OFFLINE": "1"}
    timeout = 1.0
    proc, url = serve_process(
        ["--router", str(saved), "--upstreams", str(tmp_path / "ups.yaml"), "--log-level", "warning",
         "--shutdown-timeout", str(timeout)],
        env,
    )
    try:
        out: dict = {}
        started = threading.Event()
        client = threading.Thread(target=_open_trickling_stream, args=(url, model, out, started))
        client.start()
        assert started.wait(10)
        t0 = time.perf_counter()
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout + STREAM_END_GRACE_S + 4.0)
        except subprocess.TimeoutExpired:
            pytest.fail(f"finerouter serve still running {time.perf_counter() - t0:.1f} s after SIGTERM")
        client.join(10)
        events = _events(out["body"])
        assert "[DONE]" not in events and "error" not in out, out
        assert json.loads(events[-1])["error"]["code"] == "gateway_shutting_down"
    finally:
        if proc.poll() is None:
            proc.kill()
        log = proc.communicate(timeout=10)[0]
    assert not any(_key(m) in log for m in router.models_)


# ---- settings ---------------------------------------------------------------------------------------------------
def test_the_new_limits_are_validated_and_read_from_the_file():
    from finerouter.errors import ParameterError
    from finerouter.serving.errors import ConfigError

    raw = {"upstreams": {"a": {"base_url": "http://127.0.0.1:1/v1", "timeout_s": 20, "stream_idle_timeout_s": 5}},
           "gateway": {"max_upstream_body_bytes": 1 << 20, "max_error_body_bytes": 4096, "shutdown_timeout_s": 3}}
    cfg = parse_gateway_config(raw, source="ups.yaml", environ={})
    assert cfg.upstreams["a"].stream_idle_s == 5.0 and cfg.settings.max_upstream_body_bytes == 1 << 20
    assert cfg.settings.max_error_body_bytes == 4096 and cfg.settings.shutdown_timeout_s == 3.0
    assert parse_gateway_config({"upstreams": {"a": {"base_url": "http://h/v1", "timeout_s": 7}}}).upstreams["a"].stream_idle_s == 7.0
    raw["upstreams"]["a"]["stream_idle_timeout_s"] = 30
    with pytest.raises(ConfigError, match=r"ups\.yaml: upstreams\.a\.stream_idle_timeout_s: must not exceed timeout_s \(20 s\)"):
        parse_gateway_config(raw, source="ups.yaml", environ={})
    with pytest.raises(ParameterError, match=r"The 'max_upstream_body_bytes' parameter of GatewaySettings must be an int in \[1024, inf\)"):
        GatewaySettings(max_upstream_body_bytes=10)
    with pytest.raises(ParameterError, match=r"'shutdown_timeout_s' parameter of GatewaySettings must be a float in \[0, inf\)"):
        GatewaySettings(shutdown_timeout_s=-1)


# ---- the dispatcher alone (an in-process transport) -------------------------------------------------------------
def _dispatcher(router, upstreams, transport):
    from finerouter.serving.affinity import AffinityStore
    from finerouter.serving.cooldown import CooldownTracker
    from finerouter.serving.dispatch import Dispatcher
    from finerouter.serving.metrics import GatewayMetrics
    from finerouter.serving.proxy import UpstreamProxy

    cfg = _config(router, upstreams)
    proxy = UpstreamProxy({m: transport for m in cfg.upstreams}, cfg.upstreams)
    return Dispatcher(proxy, cooldown=CooldownTracker(30.0), affinity=AffinityStore(), metrics=GatewayMetrics())


def test_a_2xx_answer_keeps_its_headers_but_not_cookies_hop_by_hop_or_key_echoes(router, in_process):
    model = router.models_[0]
    answer = {"id": "c1", "object": "chat.completion", "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}}]}

    def upstream(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json=answer, headers=[
            ("x-request-id", "req-1"), ("openai-processing-ms", "12"), ("set-cookie", COOKIE),
            ("connection", "keep-alive, x-hop"), ("x-hop", "1"), ("www-authenticate", "Bearer"),
            ("x-echo", request.headers["authorization"]), ("x-debug", "api_key=abcdef123")])

    async def go():
        dispatcher = _dispatcher(router, in_process, httpx.MockTransport(upstream))
        result = (await dispatcher.forward([model], _body(), stream=False, max_attempts=1)).answer
        assert json.loads(result.content) == answer
        assert {k: v for k, v in result.headers.items() if k != "content-type"} == {"x-request-id": "req-1", "openai-processing-ms": "12"}

    _run(go())


def test_a_stream_still_waiting_for_its_first_event_at_shutdown_is_a_503(router, in_process):
    from finerouter.serving.errors import GatewayHTTPError

    model = router.models_[0]

    class Silent(httpx.AsyncByteStream):
        async def __aiter__(self):
            await asyncio.sleep(30)  # the head came, the first event never does
            yield b""

    async def go():
        dispatcher = _dispatcher(router, in_process, httpx.MockTransport(
            lambda request: httpx.Response(200, headers={"content-type": "text/event-stream"}, stream=Silent())))
        proxy = dispatcher.proxy
        task = asyncio.ensure_future(dispatcher.forward([model], _body(stream=True), stream=True, max_attempts=1))
        while proxy.open_streams == 0:
            await asyncio.sleep(0.01)
        t0 = time.perf_counter()
        assert proxy.abort_streams("the gateway is shutting down") == 1
        with pytest.raises(GatewayHTTPError) as err:
            await task
        assert err.value.status_code == 503 and err.value.code == "gateway_shutting_down"
        assert time.perf_counter() - t0 < 1.0 and proxy.open_streams == 0
        assert not dispatcher.cooldown.is_cooling(model)

    _run(go())
