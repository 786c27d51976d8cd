"""Prometheus metrics of one gateway app, in its own registry (two apps in one process never collide)."""

from __future__ import annotations

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
    """

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Histogram

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

    def render(self) -> tuple[bytes, str]:
        """The exposition text and its content type."""
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return generate_latest(self.registry), CONTENT_TYPE_LATEST

    def value(self, name: str, labels: dict[str, Any] | None = None) -> float:
        """A sample's current value (0.0 when absent), e.g. ``value("finerouter_fallbacks_total", {...})``."""
        v = self.registry.get_sample_value(name, {k: str(x) for k, x in (labels or {}).items()})
        return 0.0 if v is None else float(v)


__all__ = ["GatewayMetrics"]
