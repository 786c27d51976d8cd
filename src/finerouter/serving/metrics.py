"""Prometheus metrics of one gateway app, in its own registry (two apps in one process never collide)."""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

# Latency buckets from 0.5 ms to 60 s: routing is milliseconds, upstream LLM calls are seconds.
_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class GatewayMetrics:
    """The gateway's counters and histograms.

    Metrics (all prefixed ``finerouter_``):
        requests_total{endpoint,status}: HTTP requests answered.
        request_latency_seconds{endpoint}: time to the response head, as the gateway sees it.
        routing_decisions_total{model,task}: routing decisions (task "others" for the Others group).
        routing_latency_seconds: time to a routing decision (queueing for a routing worker included).
        upstream_latency_seconds{model}: time from sending to an upstream until its response head.
        upstream_errors_total{model,kind}: upstream failures; kind is connect, timeout, http_429, http_5xx,
            auth (a 401 or 403: the upstream refused the gateway's key), invalid_json (a 2xx body that is not a
            JSON object), too_large (an answer over max_upstream_body_bytes), stream (a stream broken off or
            ended without [DONE] or a finish_reason) or stream_timeout (a stream that stalled). Each one also
            cools the upstream down.
        stream_failures_total{model,reason}: streamed answers that reached the client cut short, and so ended
            with an error event: reason broken, timeout, too_large, upstream_error (the upstream's own error
            event) or shutdown (still open when the gateway's shutdown timeout ran out).
        fallbacks_total{from_model,to_model}: requests answered by another model after a failure.
        affinity_total{result}: conversation lookups (hit, miss, reroute).
        upstream_cooldowns_total{model}: times an upstream was put in cooldown.
        estimated_spend_usd_total{key,model}: the estimated USD cost (the router's per-prompt estimate) of
            routed chat completions answered with a 2xx, by client key and answering model.
        estimated_spend_requests_total{key}: the routed chat completions counted in that spend.
        budget_cost_weight{key,budget_per_1k}: per budget stream, the lambda (quality points per USD) its last
            batch was routed with.
        budget_window_spend_per_1k_usd{key,budget_per_1k}: per budget stream, the estimated spend per 1,000
            requests over its sliding window (what the budget is met on).
        budget_window_requests{key,budget_per_1k}: per budget stream, the decisions in its window.
    """

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "finerouter_requests", "HTTP requests answered", ["endpoint", "status"], registry=r
        )
        self.request_latency = Histogram(
            "finerouter_request_latency_seconds",
            "Time to the response head",
            ["endpoint"],
            buckets=_BUCKETS,
            registry=r,
        )
        self.decisions = Counter(
            "finerouter_routing_decisions", "Routing decisions", ["model", "task"], registry=r
        )
        self.routing_latency = Histogram(
            "finerouter_routing_latency_seconds", "Time to a routing decision", buckets=_BUCKETS, registry=r
        )
        self.upstream_latency = Histogram(
            "finerouter_upstream_latency_seconds",
            "Time from request to upstream response head",
            ["model"],
            buckets=_BUCKETS,
            registry=r,
        )
        self.upstream_errors = Counter(
            "finerouter_upstream_errors", "Failed upstream attempts", ["model", "kind"], registry=r
        )
        self.stream_failures = Counter(
            "finerouter_stream_failures",
            "Streamed answers cut short (the client got an error event)",
            ["model", "reason"],
            registry=r,
        )
        self.fallbacks = Counter(
            "finerouter_fallbacks",
            "Requests answered by another model after a failure",
            ["from_model", "to_model"],
            registry=r,
        )
        self.affinity = Counter("finerouter_affinity", "Conversation affinity lookups", ["result"], registry=r)
        self.cooldowns = Counter(
            "finerouter_upstream_cooldowns", "Times an upstream was put in cooldown", ["model"], registry=r
        )
        self.spend = Counter(
            "finerouter_estimated_spend_usd",
            "Estimated USD cost of answered routed requests",
            ["key", "model"],
            registry=r,
        )
        self.spend_requests = Counter(
            "finerouter_estimated_spend_requests", "Answered routed requests counted in the spend", ["key"], registry=r
        )
        budget_labels = ["key", "budget_per_1k"]
        self.budget_cost_weight = Gauge(
            "finerouter_budget_cost_weight", "Lambda of a budget stream's last batch", budget_labels, registry=r
        )
        self.budget_window_spend = Gauge(
            "finerouter_budget_window_spend_per_1k_usd",
            "Estimated spend per 1,000 requests over a budget stream's window",
            budget_labels,
            registry=r,
        )
        self.budget_window_requests = Gauge(
            "finerouter_budget_window_requests", "Decisions in a budget stream's window", budget_labels, registry=r
        )

    def set_budget(self, key: str, budget: str, cost_weight: float, spend_per_1k: float, requests: int) -> None:
        """Update a budget stream's gauges (``budget``: the label value)."""
        self.budget_cost_weight.labels(key, budget).set(cost_weight)
        self.budget_window_spend.labels(key, budget).set(spend_per_1k)
        self.budget_window_requests.labels(key, budget).set(requests)

    def forget_budget(self, key: str, budget: str) -> None:
        """Remove a forgotten budget stream's gauges."""
        for gauge in (self.budget_cost_weight, self.budget_window_spend, self.budget_window_requests):
            try:
                gauge.remove(key, budget)
            except KeyError:
                pass

    def render(self) -> tuple[bytes, str]:
        """The exposition text and its content type."""
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return generate_latest(self.registry), CONTENT_TYPE_LATEST

    def value(self, name: str, labels: dict[str, Any] | None = None) -> float:
        """A sample's current value (0.0 when absent), e.g. ``value("finerouter_fallbacks_total", {...})``."""
        v = self.registry.get_sample_value(name, {k: str(x) for k, x in (labels or {}).items()})
        return 0.0 if v is None else float(v)


class RequestMetricsMiddleware:
    """Counts every HTTP request by endpoint and status, and times it to the response head (pure ASGI).

    Args:
        app: the ASGI app it wraps.
        metrics: where ``requests_total`` and ``request_latency_seconds`` are recorded.
        endpoints: the paths counted by name; any other path is counted as ``"other"``.
    """

    def __init__(self, app: Any, metrics: GatewayMetrics, endpoints: Iterable[str]) -> None:
        self.app = app
        self.metrics = metrics
        self.endpoints = frozenset(endpoints)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        endpoint = scope["path"] if scope["path"] in self.endpoints else "other"
        t0 = time.perf_counter()
        status = 500

        async def send_wrapper(message: Any) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                self.metrics.request_latency.labels(endpoint).observe(time.perf_counter() - t0)
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            self.metrics.requests.labels(endpoint, str(status)).inc()


__all__ = ["GatewayMetrics", "RequestMetricsMiddleware"]
