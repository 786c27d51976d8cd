"""Gateway building blocks: affinity store, cooldowns, request parsing, the routing batcher."""

from __future__ import annotations

import asyncio
import os
import threading

import pytest

from finerouter.errors import ParameterError
from finerouter.routing.decision import RoutingDecision
from finerouter.serving.affinity import AffinityEntry, AffinityStore
from finerouter.serving.batcher import RouteBatcher, RouteOptions
from finerouter.serving.errors import GatewayHTTPError
from finerouter.serving.protocol import content_text, parse_model_string, route_options, routing_text
from finerouter.serving.proxy import MAX_RETRY_AFTER_S, CooldownTracker


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


# ---- affinity ---------------------------------------------------------------------------------------------------
def test_affinity_lru_evicts_least_recently_used():
    store = AffinityStore(max_entries=3, ttl_s=100, clock=Clock())
    for k in "abc":
        store.set(k, AffinityEntry(model=f"m-{k}", ranking=[f"m-{k}"]))
    assert store.get("a").model == "m-a"  # "a" is now the most recent; "b" the least
    store.set("d", AffinityEntry("m-d", ["m-d"]))
    assert store.get("b") is None
    assert {k for k in "acd" if store.get(k) is not None} == set("acd")
    assert len(store) == 3


def test_affinity_ttl_counts_from_last_use():
    clock = Clock()
    store = AffinityStore(max_entries=10, ttl_s=10, clock=clock)
    store.set("conv", AffinityEntry("m", ["m"]))
    clock.t += 8
    assert store.get("conv") is not None  # refreshes the TTL
    clock.t += 8
    assert store.get("conv") is not None
    clock.t += 10.5
    assert store.get("conv") is None
    assert len(store) == 0


def test_affinity_store_stays_bounded_under_many_keys():
    store = AffinityStore(max_entries=50, ttl_s=1e6, clock=Clock())
    for i in range(10_000):
        store.set(f"k{i}", AffinityEntry("m", ["m"]))
    assert len(store) == 50 and store.get("k9999") is not None and store.get("k0") is None


def test_affinity_parameters_are_validated():
    with pytest.raises(ParameterError, match="The 'max_entries' parameter of AffinityStore must be an int"):
        AffinityStore(max_entries=0)


# ---- cooldown ---------------------------------------------------------------------------------------------------
def test_cooldown_expires_and_success_clears():
    clock = Clock()
    cd = CooldownTracker(5.0, clock=clock)
    assert cd.fail("a") == 5.0 and cd.is_cooling("a") and not cd.is_cooling("b")
    clock.t += 4.9
    assert cd.is_cooling("a") and set(cd.cooling()) == {"a"}
    clock.t += 0.2
    assert not cd.is_cooling("a") and cd.cooling() == {}
    cd.fail("a")
    cd.succeed("a")
    assert not cd.is_cooling("a")


def test_cooldown_honours_retry_after_within_bounds():
    clock = Clock()
    cd = CooldownTracker(5.0, clock=clock)
    assert cd.fail("a", retry_after_s=20.0) == 20.0
    assert cd.fail("b", retry_after_s=1.0) == 5.0  # never shorter than the configured cooldown
    assert cd.fail("c", retry_after_s=1e9) == MAX_RETRY_AFTER_S
    clock.t += 10
    assert cd.is_cooling("a") and not cd.is_cooling("b")


def test_zero_cooldown_disables_it():
    cd = CooldownTracker(0.0, clock=Clock())
    cd.fail("a")
    assert not cd.is_cooling("a")


# ---- request parsing --------------------------------------------------------------------------------------------
def test_content_as_parts_keeps_text_only():
    parts = [
        {"type": "text", "text": "Describe this"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
        {"type": "input_text", "text": "in one line"},
    ]
    assert content_text(parts) == "Describe this\nin one line"
    assert content_text(None) == "" and content_text("plain") == "plain"


def test_routing_text_modes():
    messages = [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "first question"},
        {"role": "assistant", "content": "an answer"},
        {"role": "user", "content": [{"type": "text", "text": "follow-up about integrals"}]},
        {"role": "tool", "content": "tool output", "tool_call_id": "x"},
    ]
    assert routing_text(messages) == "follow-up about integrals"
    assert routing_text(messages, "user") == "first question\n\nfollow-up about integrals"
    assert "You are terse." in routing_text(messages, "all") and "tool output" in routing_text(messages, "all")
    # No user text at all: the last message with text.
    assert routing_text([{"role": "system", "content": "only system"}]) == "only system"
    assert routing_text([{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]) == ""


def test_model_string_options():
    assert parse_model_string("finerouter", "finerouter") == {}
    assert parse_model_string("gpt-4o", "finerouter") is None
    assert parse_model_string("finerouterx", "finerouter") is None
    assert parse_model_string("finerouter:tolerance=0.2,allowed_models=a|b,max_cost=0.01", "finerouter") == {
        "tolerance": 0.2,
        "allowed_models": ["a", "b"],
        "max_cost": 0.01,
    }
    with pytest.raises(GatewayHTTPError, match="Cannot read routing option 'temperature=1'") as err:
        parse_model_string("finerouter:temperature=1", "finerouter")
    assert err.value.status_code == 400 and err.value.param == "model"
    with pytest.raises(GatewayHTTPError, match="'tolerance' in model .* must be a number"):
        parse_model_string("finerouter:tolerance=high", "finerouter")


def test_route_options_merge_and_validation():
    models = ["a", "b", "c"]
    opts = route_options({"tolerance": 0.1, "allowed_models": ["a", "b"]}, {"tolerance": 0.3}, models=models, default_tolerance=0.0)
    assert opts == RouteOptions(0.3, ("a", "b"), None)  # the model string wins
    assert route_options({}, {}, models=models, default_tolerance=0.05).tolerance == 0.05
    for body, status, param in [
        ({"tolerance": -0.1}, 400, "tolerance"),
        ({"tolerance": 1.5}, 400, "tolerance"),
        ({"tolerance": "0.1"}, 400, "tolerance"),
        ({"max_cost": -1}, 400, "max_cost"),
        ({"allowed_models": "a"}, 400, "allowed_models"),
        ({"allowed_models": ["a", "zzz"]}, 422, "allowed_models"),
        ({"allowed_models": []}, 422, "allowed_models"),
    ]:
        with pytest.raises(GatewayHTTPError) as err:
            route_options(body, {}, models=models, default_tolerance=0.0)
        assert (err.value.status_code, err.value.param) == (status, param), body


# ---- batcher ----------------------------------------------------------------------------------------------------
class CountingRouter:
    """Routes by prompt length; records each call's batch size; fails on prompts containing 'boom'."""

    models_ = ["a", "b"]

    def __init__(self, delay_s: float = 0.0) -> None:
        self.calls: list[int] = []
        self.delay_s = delay_s
        self.threads: set[str] = set()

    def route(self, prompt, tolerance=0.0, allowed_models=None, max_cost=None):
        import time

        self.threads.add(threading.current_thread().name)
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        self.calls.append(len(prompts))
        if any("boom" in p for p in prompts):
            raise ParameterError("boom prompt")
        time.sleep(self.delay_s)
        out = []
        for p in prompts:
            first = self.models_[len(p) % 2]
            ranking = [first] + [m for m in self.models_ if m != first]
            out.append(
                RoutingDecision(p, first, ranking, self.models_, [0, 0], [0, 0], [0, 0], [None, None], None, "Others", [], 1.0, tolerance, 0.5)
            )
        return out[0] if isinstance(prompt, str) else out


def test_batcher_batches_concurrent_prompts_off_the_loop():
    router = CountingRouter(delay_s=0.05)

    async def main():
        batcher = RouteBatcher(router, max_batch=8, workers=1)
        await batcher.start()
        try:
            prompts = [f"prompt {'x' * i}" for i in range(20)]
            decisions = await asyncio.gather(*(batcher.route(p, RouteOptions()) for p in prompts))
        finally:
            await batcher.stop()
        return prompts, decisions

    prompts, decisions = asyncio.run(main())
    assert [d.prompt for d in decisions] == prompts  # each caller gets its own decision
    assert [d.model for d in decisions] == [router.models_[len(p) % 2] for p in prompts]
    assert sum(router.calls) == 20 and max(router.calls) == 8 and len(router.calls) < 20
    assert threading.main_thread().name not in router.threads  # never on the event loop's thread


def test_batcher_isolates_a_failing_prompt_and_groups_by_options():
    router = CountingRouter()

    async def main():
        batcher = RouteBatcher(router, max_batch=16)
        await batcher.start()
        try:
            return await asyncio.gather(
                batcher.route("fine", RouteOptions()),
                batcher.route("boom", RouteOptions()),
                batcher.route("fine too", RouteOptions(tolerance=0.5)),
                return_exceptions=True,
            )
        finally:
            await batcher.stop()

    ok, bad, other = asyncio.run(main())
    assert isinstance(bad, ParameterError)
    assert ok.prompt == "fine" and other.prompt == "fine too" and other.tolerance == 0.5


def test_batcher_requires_start():
    batcher = RouteBatcher(CountingRouter())
    with pytest.raises(RuntimeError, match="start"):
        asyncio.run(batcher.route("x", RouteOptions()))


def test_route_many_keeps_order_and_uses_the_queue():
    router = CountingRouter()

    async def main():
        batcher = RouteBatcher(router, max_batch=4)
        await batcher.start()
        try:
            return await batcher.route_many([f"p{'x' * i}" for i in range(10)], RouteOptions())
        finally:
            await batcher.stop()

    decisions = asyncio.run(main())
    assert [d.prompt for d in decisions] == [f"p{'x' * i}" for i in range(10)]
    assert max(router.calls) <= 4 and sum(router.calls) == 10


def _route_once(router, **batcher_kwargs):
    """Start a RouteBatcher over ``router``, route one prompt through it, stop it."""

    async def main():
        batcher = RouteBatcher(router, **batcher_kwargs)
        await batcher.start()
        try:
            await batcher.route("x", RouteOptions())
        finally:
            await batcher.stop()

    asyncio.run(main())


@pytest.mark.skipif(not hasattr(os, "setpriority"), reason="per-thread nice needs Linux")
def test_routing_threads_can_yield_to_the_event_loop():
    seen = {}

    class NiceProbe(CountingRouter):
        def route(self, prompt, **kw):
            seen["nice"] = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
            seen["thread"] = threading.current_thread().name
            return super().route(prompt, **kw)

    base = os.getpriority(os.PRIO_PROCESS, 0)
    _route_once(NiceProbe(), thread_nice=5)
    assert seen["nice"] == min(base + 5, 19)
    assert seen["thread"].startswith("finerouter-route")
    assert os.getpriority(os.PRIO_PROCESS, 0) == base  # the rest of the process is untouched


def test_batcher_shortens_the_gil_switch_interval_while_running_and_restores_it():
    import sys

    seen = {}

    class Probe(CountingRouter):
        def route(self, prompt, **kw):
            seen["interval"] = sys.getswitchinterval()
            return super().route(prompt, **kw)

    async def default():
        batcher = RouteBatcher(CountingRouter())  # switch_interval_s=None: left alone
        await batcher.start()
        seen["default"] = sys.getswitchinterval()
        await batcher.stop()

    before = sys.getswitchinterval()
    _route_once(Probe(), switch_interval_s=0.0005)
    assert seen["interval"] == pytest.approx(0.0005)
    assert sys.getswitchinterval() == before
    asyncio.run(default())
    assert seen["default"] == before


# ---- the upstream transport -------------------------------------------------------------------------------------
async def _probe_app(scope, receive, send):
    """A tiny upstream: /echo answers the request's headers and body as JSON (and sets a cookie), /gzip answers
    a gzip-encoded body, /slow waits 2 s before answering, /stream sends three chunks 50 ms apart."""
    import gzip
    import json

    from finerouter.serving.fake_upstream import read_body

    if scope["type"] != "http":
        return
    body = await read_body(receive)
    path = scope["path"]
    headers = [(b"content-type", b"application/json")]
    if path == "/echo":
        data = json.dumps({"headers": [[k.decode(), v.decode()] for k, v in scope["headers"]], "body": body.decode()}).encode()
        headers.append((b"set-cookie", b"session=secret; Path=/"))
    elif path == "/gzip":
        data = gzip.compress(b'{"ok": true}')
        headers.append((b"content-encoding", b"gzip"))
    elif path == "/slow":
        await asyncio.sleep(2.0)
        data = b"{}"
    else:  # /stream
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/event-stream")]})
        for i in range(3):
            await send({"type": "http.response.body", "body": f"data: {i}\n\n".encode(), "more_body": True})
            await asyncio.sleep(0.05)
        await send({"type": "http.response.body", "body": b""})
        return
    await send({"type": "http.response.start", "status": 200, "headers": [*headers, (b"content-length", str(len(data)).encode())]})
    await send({"type": "http.response.body", "body": data})


def test_aiohttp_transport_speaks_httpx_and_keeps_nothing_between_requests():
    import json
    import socket

    import httpx

    from finerouter.serving.server import BackgroundServer
    from finerouter.serving.transport import AiohttpTransport

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        closed_port = s.getsockname()[1]

    async def main(base):
        async with AiohttpTransport(max_connections=4) as transport:
            timeout = {"timeout": httpx.Timeout(0.5, connect=0.5).as_dict()}

            async def send(path, body=b"", **headers):
                request = httpx.Request("POST", base + path, content=body, headers=headers, extensions=timeout)
                response = await transport.handle_async_request(request)
                await response.aread()
                return response

            first = await send("/echo", b'{"a": 1}', **{"user-agent": "finerouter/test", "x-extra": "1"})
            second = await send("/echo")
            gz = await send("/gzip")
            request = httpx.Request("GET", base + "/stream", extensions=timeout)
            streamed = await transport.handle_async_request(request)
            chunks = [c async for c in streamed.aiter_bytes()]
            with pytest.raises(httpx.ReadTimeout):
                await send("/slow")
            with pytest.raises(httpx.ConnectError):
                await transport.handle_async_request(httpx.Request("GET", f"http://127.0.0.1:{closed_port}/", extensions=timeout))
            return first, second, gz, chunks

    with BackgroundServer(_probe_app) as server:
        first, second, gz, chunks = asyncio.run(main(server.url))
    sent = dict(json.loads(first.content)["headers"])
    assert json.loads(first.content)["body"] == '{"a": 1}'
    assert sent["user-agent"] == "finerouter/test" and sent["x-extra"] == "1" and sent["content-length"] == "8"
    assert "accept-encoding" not in sent  # nothing added behind the caller's back
    assert first.status_code == 200 and first.headers["set-cookie"] == "session=secret; Path=/"
    assert "cookie" not in dict(json.loads(second.content)["headers"])  # no cookie jar
    assert gz.headers["content-encoding"] == "gzip" and json.loads(gz.content) == {"ok": True}  # decoded once, by httpx
    assert b"".join(chunks) == b"data: 0\n\ndata: 1\n\ndata: 2\n\n" and len(chunks) >= 2
