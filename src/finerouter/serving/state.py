"""The gateway's shared state: one :class:`GatewayState` per app, at ``app.state.gateway`` (no module globals).

:func:`build_gateway_state` checks the router, the upstreams and the client keys and builds the state when the
app is created; :meth:`GatewayState.open_dispatcher` adds the upstream side (proxy and dispatcher) when the
app's lifespan has opened the transports. Handlers reach the state through the FastAPI dependencies of
:mod:`finerouter.serving.dependencies`.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from finerouter import __version__
from finerouter.errors import FineRouterError
from finerouter.routing.decision import RoutingDecision
from finerouter.serving.affinity import AffinityStore
from finerouter.serving.batcher import RouteBatcher, RouteOptions, RouterLike
from finerouter.serving.budget import BudgetWindows
from finerouter.serving.config import (
    ANONYMOUS_KEY,
    GatewayConfig,
    GatewaySettings,
    Upstream,
    load_gateway_config,
    parse_gateway_config,
)
from finerouter.serving.cooldown import CooldownTracker
from finerouter.serving.dispatch import Dispatcher
from finerouter.serving.errors import ConfigError, GatewayHTTPError
from finerouter.serving.metrics import GatewayMetrics
from finerouter.serving.protocol import route_options
from finerouter.serving.proxy import UpstreamProxy

if TYPE_CHECKING:
    import httpx


def task_label(task_id: int | None) -> str:
    """The ``task`` label of a decision: its task id, or ``"others"``."""
    return "others" if task_id is None else str(task_id)


@dataclass
class GatewayState:
    """Everything the handlers share; one per app, at ``app.state.gateway``."""

    router: RouterLike
    config: GatewayConfig
    settings: GatewaySettings
    auth_tokens: tuple[tuple[bytes, str], ...]
    """Every accepted token with its tag: ``key:<name>`` for a named key of the config, ``t<i>`` otherwise."""
    metrics: GatewayMetrics
    affinity: AffinityStore
    cooldown: CooldownTracker
    batcher: RouteBatcher
    router_models: list[str]
    budgets: BudgetWindows
    dispatcher: Dispatcher | None = None
    """Set while the app's lifespan runs (its transports are open), else None."""
    started_at: float = field(default_factory=time.time)

    @property
    def proxy(self) -> UpstreamProxy | None:
        """The upstream proxy while the app's lifespan runs, else None."""
        return None if self.dispatcher is None else self.dispatcher.proxy

    def open_dispatcher(self, transports: Mapping[str, httpx.AsyncBaseTransport]) -> Dispatcher:
        """Build the proxy and dispatcher over ``transports`` (one per upstream name, opened by the caller)."""
        proxy = UpstreamProxy(
            transports,
            self.config.upstreams,
            user_agent=f"finerouter/{__version__}",
            max_body_bytes=self.settings.max_upstream_body_bytes,
            max_error_body_bytes=self.settings.max_error_body_bytes,
        )
        self.dispatcher = Dispatcher(
            proxy,
            cooldown=self.cooldown,
            affinity=self.affinity,
            metrics=self.metrics,
            max_attempts=self.settings.max_attempts,
        )
        return self.dispatcher

    def require_dispatcher(self) -> Dispatcher:
        """The dispatcher; an assertion error when the app's lifespan is not running."""
        assert self.dispatcher is not None, "the app's lifespan is not running"
        return self.dispatcher

    # -- client keys ---------------------------------------------------------------------------------------------
    @staticmethod
    def key_name(tag: str) -> str:
        """The client key a tag belongs to: a named key's name, else ``"anonymous"``."""
        return tag[4:] if tag.startswith("key:") else ANONYMOUS_KEY

    def route_options(self, body: Mapping[str, Any], overrides: Mapping[str, Any], tag: str) -> RouteOptions:
        """The request's routing options; a named key's default budget applies when the request asks for
        neither ``cost_weight`` nor ``budget_per_1k``, and a budget is met over its key's window."""
        options = route_options(
            body, overrides, models=self.router_models, default_tolerance=self.settings.default_tolerance
        )
        key = self.key_name(tag)
        if options.cost_weight is None and options.budget_per_1k is None and key in self.config.keys:
            options = replace(options, budget_per_1k=self.config.keys[key].budget_per_1k)
        if options.budget_per_1k is not None:
            options = replace(options, budget_key=key)
        return options

    # -- routing -------------------------------------------------------------------------------------------------
    async def decide(self, prompt: str, options: RouteOptions) -> tuple[RoutingDecision, float]:
        """Route ``prompt`` (batched with concurrent ones); returns the decision and the seconds it took.

        Raises:
            GatewayHTTPError: 422 when the router refuses the request (e.g. no allowed model within the limits).
        """
        t0 = time.perf_counter()
        try:
            decision = await self.batcher.route(prompt, options)
        except FineRouterError as exc:
            raise GatewayHTTPError(422, f"Cannot route this request: {exc}", code="routing_error") from None
        seconds = time.perf_counter() - t0
        self.metrics.routing_latency.observe(seconds)
        self.metrics.decisions.labels(decision.model, task_label(decision.task_id)).inc()
        return decision, seconds

    async def decide_many(self, prompts: list[str], options: RouteOptions) -> list[RoutingDecision]:
        """Route ``prompts`` together; errors as :meth:`decide`."""
        t0 = time.perf_counter()
        try:
            decisions = await self.batcher.route_many(prompts, options)
        except FineRouterError as exc:
            raise GatewayHTTPError(422, f"Cannot route these prompts: {exc}", code="routing_error") from None
        self.metrics.routing_latency.observe(time.perf_counter() - t0)
        for d in decisions:
            self.metrics.decisions.labels(d.model, task_label(d.task_id)).inc()
        return decisions

    def count_spend(self, decision: RoutingDecision, model: str, key: str) -> None:
        """Add the answering model's estimated cost for this prompt to the spend metrics (when known)."""
        if model not in decision.models:
            return
        cost = decision.costs[decision.models.index(model)]
        if cost is None or not cost == cost:  # unknown or NaN
            return
        self.metrics.spend.labels(key, model).inc(max(0.0, float(cost)))
        self.metrics.spend_requests.labels(key).inc()


def _coerce_config(upstreams: Any) -> GatewayConfig:
    if isinstance(upstreams, GatewayConfig):
        return upstreams
    if isinstance(upstreams, (str, os.PathLike)):
        return load_gateway_config(upstreams)
    if isinstance(upstreams, Mapping):
        if upstreams and all(isinstance(v, Upstream) for v in upstreams.values()):
            return GatewayConfig(upstreams=dict(upstreams), source="<create_app upstreams>")
        raw = upstreams if "upstreams" in upstreams else {"upstreams": upstreams}
        return parse_gateway_config(raw, source="<create_app upstreams>")
    raise ConfigError(
        f"upstreams must be a GatewayConfig, a path to an upstreams YAML file, or a mapping. Got {type(upstreams).__name__}."
    )


def build_gateway_state(
    router: RouterLike,
    upstreams: GatewayConfig | Mapping[str, Any] | str | os.PathLike[str],
    *,
    auth_tokens: Iterable[str] | None = None,
    settings: GatewaySettings | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> GatewayState:
    """Check the router, upstreams and client keys, and build the app's state (arguments as ``create_app``).

    Raises:
        ConfigError: the router is not fitted or lacks ``route``, a router model has no upstream, the upstreams
            are malformed, an upstream is named like the routing alias, or a named key's token is also an
            unnamed one.
    """
    if not callable(getattr(router, "route", None)):
        raise ConfigError(f"router must have a 'route' method. Got {type(router).__name__}.")
    router_models = list(getattr(router, "models_", None) or [])
    if not router_models:
        raise ConfigError(f"router has no 'models_' (is the {type(router).__name__} fitted?).")
    config = _coerce_config(upstreams)
    config.check_covers(router_models)
    settings = settings or config.settings
    if settings.alias in config.upstreams:
        raise ConfigError(f"{config.source}: upstream {settings.alias!r} clashes with the routing alias.")
    unnamed = sorted({t.encode("utf-8") for t in (auth_tokens or ()) if t})
    named = {k.token.encode("utf-8"): name for name, k in config.keys.items()}
    clash = [name for token, name in named.items() if token in set(unnamed)]
    if clash:
        raise ConfigError(f"{config.source}: keys.{clash[0]}: its token is also among the unnamed client tokens.")
    tokens = tuple((t, f"t{i}") for i, t in enumerate(unnamed)) + tuple((t, f"key:{n}") for t, n in named.items())
    metrics = GatewayMetrics()
    budgets = BudgetWindows(
        max_requests=settings.budget_window_requests,
        max_age_s=settings.budget_window_s,
        max_windows=settings.budget_max_windows,
        metrics=metrics,
    )
    batcher = RouteBatcher(
        router,
        max_batch=settings.route_max_batch,
        workers=settings.route_workers,
        thread_nice=settings.route_thread_nice,
        switch_interval_s=(
            None if settings.route_switch_interval_ms is None else settings.route_switch_interval_ms / 1000.0
        ),
        budgets=budgets,
    )
    return GatewayState(
        router=router,
        config=config,
        settings=settings,
        auth_tokens=tokens,
        metrics=metrics,
        affinity=AffinityStore(settings.affinity_max_entries, settings.affinity_ttl_s, clock=clock),
        cooldown=CooldownTracker(settings.cooldown_s, clock=clock),
        batcher=batcher,
        router_models=router_models,
        budgets=budgets,
    )


__all__ = ["GatewayState", "build_gateway_state", "task_label"]
