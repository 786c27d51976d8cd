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
from finerouter.serving.cooldown import MAX_RETRY_AFTER_S, CooldownTracker
from finerouter.serving.errors import GatewayHTTPError
from finerouter.serving.protocol import content_text, parse_model_string, route_options, routing_text


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

    from finerouter.testing.fake_upstream import read_body

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


@pytest.mark.slow  # the production transport against a loopback server (a 2 s read timeout among them)
def test_aiohttp_transport_speaks_httpx_and_keeps_nothing_between_requests():
    import json
    import socket

    import httpx

    from finerouter.serving.transport import AiohttpTransport
    from finerouter.testing import BackgroundServer

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


# ---- budget windows ---------------------------------------------------------------------------------------------
class PolicyRouter:
    """Routes prompts ``"p<i>"`` by the library's cost-aware rules on row ``i`` of fixed expected scores and costs
    (the encoder and estimators left out, so the window's controller is checked on thousands of prompts)."""

    def __init__(self, expected, costs) -> None:
        self.expected, self.costs = expected, costs
        self.models_ = [f"m{j}" for j in range(expected.shape[1])]
        self.calls: list[dict] = []

    def route(self, prompts, tolerance=0.0, allowed_models=None, max_cost=None, cost_weight=None, budget_per_1k=None):
        import numpy as np

        from finerouter.routing.policy import choose_models_cost_aware, route_to_budget

        self.calls.append({"n": len(prompts), "cost_weight": cost_weight, "budget_per_1k": budget_per_1k})
        rows = [int(p[1:]) for p in prompts]
        e, c = self.expected[rows], self.costs[rows]
        allowed = None if allowed_models is None else np.isin(self.models_, allowed_models)
        if budget_per_1k is not None:
            choice, _, cost_weight = route_to_budget(e, c, budget_per_1k, allowed, max_cost, tolerance)
        else:
            lam = 0.0 if cost_weight is None else cost_weight  # no cost-aware option: the best expected score
            choice, _ = choose_models_cost_aware(e, c, lam, allowed, max_cost, tolerance)
        return [
            RoutingDecision(p, self.models_[k], [self.models_[k]], self.models_, [0.0] * len(self.models_),
                            [0.0] * len(self.models_), [0.0] * len(self.models_), c[i].tolist(), None, "Others", [],
                            1.0, tolerance, 0.5, allowed_models=allowed_models, max_cost=max_cost,
                            expected_scores=e[i].tolist(), cost_weight=cost_weight, budget_per_1k=budget_per_1k)
            for i, (p, k) in enumerate(zip(prompts, choice.tolist()))
        ]


def _costed_table(seed: int, n: int = 1500, m: int = 4):
    """Expected scores rising with price, in steps of 0.05 (as calibrated scores are), per-prompt costs."""
    import numpy as np

    rng = np.random.default_rng(seed)
    price = np.geomspace(1e-4, 1e-2, m)
    costs = price[None, :] * rng.uniform(0.5, 1.5, (n, m))
    level = rng.integers(0, 4, n)[:, None]
    raw = 0.4 + 0.1 * np.log10(price / 1e-4)[None, :] + 0.05 * level * np.arange(m) + 0.1 * rng.normal(size=(n, m))
    return np.round(np.clip(raw, 0, 1) * 20) / 20, costs


def test_budget_window_expires_by_count_and_age_and_corrects_its_target():
    from finerouter.serving.budget import BudgetWindow

    clock = Clock()
    w = BudgetWindow(2.0, max_requests=5, max_age_s=60.0, clock=clock)
    router = PolicyRouter(*_costed_table(0, n=20))
    assert w.plan(0.0) == {"budget_per_1k": 2.0}  # empty: cold start, the budget itself
    w.record(router.route([f"p{i}" for i in range(3)], cost_weight=1e9))  # the cheapest: about 0.1 USD per 1k
    assert len(w) == 3 and w.spend_per_1k() < 0.2
    assert w.target_per_1k() == pytest.approx(2.0 + 0.5 * (2.0 - w.spend_per_1k()))  # under: aim higher
    clock.t += 30
    w.record(router.route([f"p{i}" for i in range(3, 7)], cost_weight=0.0))  # the best: pricier, over budget
    assert len(w) == 5  # the count bound
    assert w.spend_per_1k() > 2.0 and w.target_per_1k() < 2.0
    clock.t += 31  # the first batch (already partly pushed out) is now too old
    assert len(w) == 4
    clock.t += 60
    assert len(w) == 0 and w.spend_per_1k() == 0.0 and w.target_per_1k() == 2.0  # nothing to correct


@pytest.mark.parametrize("seed", [0, 1])
def test_budget_stream_meets_its_budget_over_the_window(seed):
    """Through the batcher, in bursts of 1-12 prompts: the whole run's spend is within 5% of the budget, the
    100-request windows' within 10% on average, and the last window's within three standard errors of its own
    prompts' spend (per-request costs here span 100x, so one window's spend scatters by ~7% around what the rule
    aims at, whatever lambda is); requests without a budget never get a cost_weight."""
    import numpy as np

    from finerouter.serving.budget import BudgetWindows
    from finerouter.serving.metrics import GatewayMetrics

    expected, costs = _costed_table(seed)
    n = len(costs)
    rows = np.arange(n)
    top = 1000 * costs[rows, expected.argmax(1)].mean()
    floor = 1000 * costs.min(1).mean()
    router = PolicyRouter(expected, costs)
    metrics = GatewayMetrics()
    budgets = BudgetWindows(max_requests=100, metrics=metrics)
    rng = np.random.default_rng(seed)
    sizes = rng.integers(1, 13, n)

    for frac in (0.2, 0.5):
        budget = floor + frac * (top - floor)
        options = RouteOptions(budget_per_1k=budget, budget_key="team")

        async def main():
            batcher = RouteBatcher(router, max_batch=16, budgets=budgets)
            await batcher.start()
            try:
                out, i = [], 0
                for k in sizes:  # a burst of k concurrent requests, then the next
                    out += await batcher.route_many([f"p{j}" for j in range(i, min(n, i + k))], options)
                    i += k
                    if i >= n:
                        break
                plain = await batcher.route("p0", RouteOptions())
                return out, plain
            finally:
                await batcher.stop()

        router.calls.clear()
        decisions, plain = asyncio.run(main())
        spent = np.array([costs[int(d.prompt[1:]), router.models_.index(d.model)] for d in decisions])
        assert len(spent) == n
        window = budgets.window("team", budget)
        assert window.spend_per_1k() == pytest.approx(1000 * spent[-100:].mean())
        last = 1000 * spent[-100:]
        assert abs(last.mean() - budget) <= 3 * last.std() / np.sqrt(100), (last.mean(), budget)
        windows = np.convolve(1000 * spent, np.ones(100) / 100, "valid")[100:]  # after the first window
        assert np.mean(np.abs(windows / budget - 1)) <= 0.10
        assert abs(1000 * spent.mean() - budget) <= 0.05 * budget, (1000 * spent.mean(), budget, floor, top)
        assert {d.budget_per_1k for d in decisions} == {budget}
        # cold start: the first batches were routed to the budget alone; then lambda came from the window
        assert router.calls[0]["budget_per_1k"] is not None and router.calls[-2]["cost_weight"] > 0
        assert router.calls[-1] == {"n": 1, "cost_weight": None, "budget_per_1k": None}  # plain request
        assert plain.cost_weight is None and plain.budget_per_1k is None
        labels = {"key": "team", "budget_per_1k": f"{budget:g}"}
        assert metrics.value("finerouter_budget_window_requests", labels) == 100
        assert metrics.value("finerouter_budget_cost_weight", labels) == window.cost_weight


def test_budget_windows_forget_the_least_recently_used_stream_and_its_gauges():
    from finerouter.serving.budget import BudgetWindows
    from finerouter.serving.metrics import GatewayMetrics

    metrics = GatewayMetrics()
    budgets = BudgetWindows(max_requests=10, max_windows=2, metrics=metrics)
    router = PolicyRouter(*_costed_table(0, n=5))
    for b in (1.0, 2.0, 3.0):
        options = RouteOptions(budget_per_1k=b, budget_key="k")
        budgets.record(options, router.route(["p0"], **{k: v for k, v in budgets.plan(options).items() if k != "tolerance"}
                                             | {"tolerance": 0.0}))
    assert [(s["key"], s["budget_per_1k"]) for s in budgets.snapshot()] == [("k", 2.0), ("k", 3.0)]
    assert metrics.registry.get_sample_value("finerouter_budget_window_requests", {"key": "k", "budget_per_1k": "1"}) is None
    assert metrics.value("finerouter_budget_window_requests", {"key": "k", "budget_per_1k": "3"}) == 1


def test_route_options_cost_weight_and_budget():
    models = ["a", "b"]
    opts = route_options({"cost_weight": 12, "tolerance": 0.1}, {}, models=models, default_tolerance=0.0)
    assert opts == RouteOptions(0.1, None, None, cost_weight=12.0)
    assert opts.kwargs()["cost_weight"] == 12.0 and "budget_per_1k" not in opts.kwargs()
    assert "cost_weight" not in RouteOptions().kwargs()  # routers without cost-aware routing still work
    opts = route_options({"cost_weight": 1.0}, {"budget_per_1k": 2.5}, models=models, default_tolerance=0.0)
    assert (opts.cost_weight, opts.budget_per_1k) == (None, 2.5)  # the model string's choice replaces the body's
    assert parse_model_string("finerouter:budget_per_1k=2.5,cost_weight=1", "finerouter") == {
        "budget_per_1k": 2.5, "cost_weight": 1.0}
    for body, param in [
        ({"cost_weight": -1}, "cost_weight"),
        ({"cost_weight": "1"}, "cost_weight"),
        ({"cost_weight": 1, "budget_per_1k": 1}, "cost_weight"),
        ({"budget_per_1k": -0.01}, "budget_per_1k"),
        ({"budget_per_1k": [1]}, "budget_per_1k"),
    ]:
        with pytest.raises(GatewayHTTPError) as err:
            route_options(body, {}, models=models, default_tolerance=0.0)
        assert (err.value.status_code, err.value.param) == (400, param), body
