"""The gateway app: an OpenAI-compatible chat-completions endpoint that routes each request with FineRouter.

``create_app(router, upstreams)`` builds a FastAPI app; run it with uvicorn (``finerouter serve`` does) or
mount it in another app. All state lives on ``app.state.gateway`` (no module globals); the upstream
connection pool and the routing workers start and stop with the app's lifespan.

Endpoints:
    POST /v1/chat/completions  ``model: "finerouter"`` (or ``"finerouter:tolerance=0.2"``) routes the
        conversation and forwards the request to the chosen model's upstream, falling back along the
        decision's ranking; naming a router model sends the request straight to it. Streaming (SSE) and tool
        calls pass through unchanged. Response headers ``x-finerouter-model``, ``x-finerouter-task`` and
        friends say what happened. ``cost_weight`` (lambda) or ``budget_per_1k`` choose the cost-aware rule; a
        budget (the request's, or its named key's default) is met over a sliding window of the traffic routed
        under it (:mod:`finerouter.serving.budget`), and the estimated spend is in ``/metrics``.
    POST /v1/route             routing decisions only: ``{"prompt": ...}``, ``{"prompts": [...]}`` or
        ``{"messages": [...]}``.
    GET  /v1/models            the alias and every routable model.
    GET  /healthz              liveness, cooling upstreams; never needs a token.
    GET  /metrics              Prometheus text; never needs a token.
"""

from __future__ import annotations

import hmac
import logging
import os
import time
from collections.abc import AsyncIterator, Iterable, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

# Starlette's Request is imported here, not lazily: FastAPI resolves the handlers' (string) annotations in this
# module's globals. Importing this module is the only thing that pulls in the web stack; ``finerouter`` and
# ``finerouter.serving`` stay light.
from starlette.requests import Request

from finerouter import __version__
from finerouter.errors import FineRouterError
from finerouter.routing.decision import RoutingDecision
from finerouter.serving.affinity import AffinityEntry, AffinityStore
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
from finerouter.serving.errors import STATUS_DEFAULTS, ConfigError, GatewayHTTPError, error_body
from finerouter.serving.metrics import GatewayMetrics
from finerouter.serving.protocol import (
    ROUTING_KEYS,
    bad_request,
    parse_json_body,
    parse_model_string,
    route_options,
    routing_text,
    validate_messages,
)
from finerouter.serving.proxy import AllUpstreamsFailed, CooldownTracker, ProxyResult, UpstreamProxy

if TYPE_CHECKING:
    import httpx
    from fastapi import FastAPI
    from starlette.responses import Response

logger = logging.getLogger(__name__)

ENDPOINTS = ("/v1/chat/completions", "/v1/route", "/v1/models", "/healthz", "/metrics")


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
    proxy: UpstreamProxy | None = None
    started_at: float = field(default_factory=time.time)

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

    def authorize(self, request: Request) -> str:
        """Check the bearer token (when auth is on); returns a tag naming which token matched (see
        :attr:`auth_tokens`; ``""`` when auth is off)."""
        if not self.auth_tokens:
            return ""
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise GatewayHTTPError(
                401,
                "Missing bearer token: send 'Authorization: Bearer <token>'.",
                code="invalid_api_key",
                headers={"www-authenticate": "Bearer"},
            )
        given = token.strip().encode("utf-8", "surrogateescape")
        for expected, tag in self.auth_tokens:
            if hmac.compare_digest(given, expected):
                return tag
        raise GatewayHTTPError(
            401, "Invalid bearer token.", code="invalid_api_key", headers={"www-authenticate": "Bearer"}
        )


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


async def _read_json(request: Request, limit: int) -> dict[str, Any]:
    """The request's JSON object, refusing bodies over ``limit`` bytes (413) and malformed JSON (400: see
    :func:`~finerouter.serving.protocol.parse_json_body`)."""
    declared = request.headers.get("content-length")
    too_large = GatewayHTTPError(
        413, f"Request body exceeds the gateway's limit of {limit} bytes.", code="request_too_large"
    )
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise too_large
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large
        chunks.append(chunk)
    return parse_json_body(b"".join(chunks))


def _task_label(task_id: int | None) -> str:
    return "others" if task_id is None else str(task_id)


def _order(first: str, ranking: Iterable[str], allowed: Iterable[str] | None = None) -> list[str]:
    order = list(dict.fromkeys([first, *ranking]))
    if allowed is not None:
        keep = set(allowed)
        order = [m for m in order if m in keep]
    return order


class _MetricsMiddleware:
    """Counts every HTTP request by endpoint and status, and times it to the response head (pure ASGI)."""

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


def create_app(
    router: RouterLike,
    upstreams: GatewayConfig | Mapping[str, Any] | str | os.PathLike[str],
    *,
    auth_tokens: Iterable[str] | None = None,
    settings: GatewaySettings | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
) -> FastAPI:
    """Build the gateway app.

    Args:
        router: a fitted ``FineRouter``, or any object with ``models_`` and
            ``route(prompt | list[str], tolerance=, allowed_models=, max_cost=)``.
        upstreams: a :class:`GatewayConfig`, the path of an upstreams YAML file, or the mapping such a file
            holds (``{"upstreams": {...}, "gateway": {...}}`` or just the upstreams).
        auth_tokens: client bearer tokens; auth is off when these and the config's named ``keys`` are both empty.
        settings: overrides the file's ``gateway:`` section.
        transport: an httpx transport for every upstream call, e.g. ``httpx.MockTransport`` in tests (default:
            one :class:`~finerouter.serving.transport.AiohttpTransport` per upstream, each its own pool).

    Raises:
        ConfigError: a router model has no upstream, or the upstreams are malformed.
    """
    from fastapi import FastAPI
    from fastapi.exceptions import RequestValidationError
    from starlette.exceptions import HTTPException as StarletteHTTPException
    from starlette.responses import JSONResponse, Response, StreamingResponse

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
    state = GatewayState(
        router=router,
        config=config,
        settings=settings,
        auth_tokens=tokens,
        metrics=metrics,
        affinity=AffinityStore(settings.affinity_max_entries, settings.affinity_ttl_s),
        cooldown=CooldownTracker(settings.cooldown_s),
        batcher=RouteBatcher(
            router,
            max_batch=settings.route_max_batch,
            workers=settings.route_workers,
            thread_nice=settings.route_thread_nice,
            switch_interval_s=(
                None if settings.route_switch_interval_ms is None else settings.route_switch_interval_ms / 1000.0
            ),
            budgets=budgets,
        ),
        router_models=router_models,
        budgets=budgets,
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        from finerouter.serving.transport import AiohttpTransport

        async with AsyncExitStack() as stack:
            # One pool per upstream (or the injected transport for all). AiohttpTransport reads no proxy from
            # the environment: upstream URLs are explicit, and an HTTP(S)_PROXY meant for other tools must not
            # capture loopback or in-cluster upstreams.
            if transport is not None:
                shared = await stack.enter_async_context(transport)
                transports = {name: shared for name in config.upstreams}
            else:
                transports = {
                    name: await stack.enter_async_context(AiohttpTransport(max_connections=settings.max_connections))
                    for name in config.upstreams
                }
            state.proxy = UpstreamProxy(
                transports,
                config.upstreams,
                state.cooldown,
                metrics,
                user_agent=f"finerouter/{__version__}",
                max_body_bytes=settings.max_upstream_body_bytes,
                max_error_body_bytes=settings.max_error_body_bytes,
            )
            await state.batcher.start()
            logger.info(
                "FineRouter gateway ready: %d router models, %d upstreams, auth %s",
                len(router_models),
                len(config.upstreams),
                "on" if tokens else "off",
            )
            try:
                yield
            finally:
                await state.batcher.stop()
                state.proxy = None

    app = FastAPI(
        title="FineRouter gateway",
        description="OpenAI-compatible prompt routing",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    app.state.gateway = state
    app.add_middleware(_MetricsMiddleware, metrics=metrics, endpoints=ENDPOINTS)

    # ---- errors: always the OpenAI envelope -------------------------------------------------------------
    @app.exception_handler(GatewayHTTPError)
    async def _gateway_error(request: Request, exc: GatewayHTTPError) -> Response:
        return JSONResponse(exc.to_dict(), status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
        kind, code = STATUS_DEFAULTS.get(exc.status_code, ("invalid_request_error", None))
        message = {404: f"Unknown path {request.url.path!r}.", 405: f"Method {request.method} not allowed on {request.url.path!r}."}.get(
            exc.status_code, str(exc.detail)
        )
        return JSONResponse(
            error_body(message, type=kind, code=code), status_code=exc.status_code, headers=getattr(exc, "headers", None)
        )

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> Response:
        return JSONResponse(error_body(str(exc)), status_code=422)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> Response:
        logger.exception("unexpected error on %s %s", request.method, request.url.path)
        return JSONResponse(error_body("Internal gateway error.", type="server_error"), status_code=500)

    class RelayResponse(StreamingResponse):
        """A streamed upstream answer; the upstream response is closed however the client's stream ends."""

        async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
            try:
                await super().__call__(scope, receive, send)
            finally:
                await self.body_iterator.aclose()  # type: ignore[union-attr]

    # ---- helpers --------------------------------------------------------------------------------------------
    async def decide(prompt: str, options: RouteOptions) -> tuple[RoutingDecision, float]:
        t0 = time.perf_counter()
        try:
            decision = await state.batcher.route(prompt, options)
        except FineRouterError as exc:
            raise GatewayHTTPError(422, f"Cannot route this request: {exc}", code="routing_error") from None
        seconds = time.perf_counter() - t0
        metrics.routing_latency.observe(seconds)
        metrics.decisions.labels(decision.model, _task_label(decision.task_id)).inc()
        return decision, seconds

    def count_spend(decision: RoutingDecision, model: str, key: str) -> None:
        """Add the answering model's estimated cost for this prompt to the spend metrics (when known)."""
        if model not in decision.models:
            return
        cost = decision.costs[decision.models.index(model)]
        if cost is None or not cost == cost:  # unknown or NaN
            return
        metrics.spend.labels(key, model).inc(max(0.0, float(cost)))
        metrics.spend_requests.labels(key).inc()

    def relay_response(result: ProxyResult, extra: dict[str, str]) -> Response:
        headers = {**result.headers, **extra}
        headers["x-finerouter-model"] = result.model
        headers["x-finerouter-upstream-model"] = config.upstreams[result.model].model
        headers["x-finerouter-attempts"] = str(len(result.attempts))
        headers["x-finerouter-upstream-ms"] = f"{result.attempts[-1].seconds * 1000:.2f}"
        if result.failed_models:
            headers["x-finerouter-fallback-from"] = ",".join(result.failed_models)
        if result.stream is not None:
            return RelayResponse(result.stream, status_code=result.status_code, headers=headers)
        return Response(content=result.content, status_code=result.status_code, headers=headers)

    def all_failed(exc: AllUpstreamsFailed) -> GatewayHTTPError:
        return GatewayHTTPError(
            502,
            f"No upstream could answer: {exc}.",
            type="upstream_error",
            code="upstream_unavailable",
            headers={
                "x-finerouter-attempts": str(len(exc.attempts)),
                "x-finerouter-fallback-from": ",".join(a.model for a in exc.attempts),
            },
        )

    async def forward(candidates: list[str], body: dict[str, Any], stream: bool, attempts: int) -> ProxyResult:
        assert state.proxy is not None, "the app's lifespan is not running"
        try:
            return await state.proxy.forward(candidates, body, stream=stream, max_attempts=attempts)
        except AllUpstreamsFailed as exc:
            raise all_failed(exc) from None

    # ---- endpoints --------------------------------------------------------------------------------------------
    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Response:
        tag = state.authorize(request)
        body = await _read_json(request, settings.max_body_bytes)
        model = body.get("model")
        if not isinstance(model, str) or not model:
            raise bad_request(f"'model' is required: use {settings.alias!r} to route, or a model name.", "model")
        messages = validate_messages(body.get("messages"))
        stream = body.get("stream")
        if stream is not None and not isinstance(stream, bool):
            raise bad_request("'stream' must be true, false or null.", "stream")
        stream = bool(stream)  # null means the default, as with the OpenAI API
        forward_body = {k: v for k, v in body.items() if k not in ROUTING_KEYS and not (k == "stream" and v is None)}

        overrides = parse_model_string(model, settings.alias)
        if overrides is None:
            if model not in config.upstreams:
                raise GatewayHTTPError(
                    404,
                    f"The model {model!r} does not exist here; use {settings.alias!r} to route, or one of "
                    f"{sorted(config.upstreams)}.",
                    param="model",
                    code="model_not_found",
                )
            result = await forward([model], forward_body, stream, 1)
            return relay_response(result, {"x-finerouter-task": "none", "x-finerouter-affinity": "none"})

        options = state.route_options(body, overrides, tag)
        key = request.headers.get("x-conversation-id") or ""
        if key:
            key = f"{tag}|conv:{key}"
        elif isinstance(body.get("user"), str) and body["user"]:
            key = f"{tag}|user:{body['user']}"
        entry = state.affinity.get(key) if key else None
        routing_s = 0.0
        decided: list[RoutingDecision] = []  # the routing decision, when this turn was routed

        async def decide_now() -> tuple[list[str], int | None, str, float]:
            text = routing_text(messages, settings.route_on)
            if not text.strip():
                raise GatewayHTTPError(
                    422,
                    "There is no text to route on in 'messages'; name a model instead of "
                    f"{settings.alias!r} for requests without text.",
                    param="messages",
                    code="no_routable_text",
                )
            decision, seconds = await decide(text, options)
            decided.append(decision)
            return _order(decision.model, decision.ranking), decision.task_id, decision.task_description, seconds

        if (
            entry is not None
            and (options.allowed_models is None or entry.model in options.allowed_models)
            and not state.cooldown.is_cooling(entry.model)
        ):
            affinity = "hit"
            candidates = _order(entry.model, entry.ranking, options.allowed_models)
            task_id, description = entry.task_id, entry.task_description
            assert state.proxy is not None, "the app's lifespan is not running"
            try:
                result = await state.proxy.forward(
                    candidates, forward_body, stream=stream, max_attempts=settings.max_attempts
                )
            except AllUpstreamsFailed as exc:
                # The pinned model (and its saved fallbacks) failed: route this turn afresh and go on with
                # the attempts left, never retrying a model that just failed.
                if len(exc.attempts) >= settings.max_attempts:
                    raise all_failed(exc) from None
                affinity = "reroute"
                candidates, task_id, description, routing_s = await decide_now()
                try:
                    result = await state.proxy.forward(
                        candidates,
                        forward_body,
                        stream=stream,
                        max_attempts=settings.max_attempts,
                        prior=exc.attempts,
                    )
                except AllUpstreamsFailed as exc2:
                    raise all_failed(exc2) from None
        else:
            affinity = "none" if not key else ("reroute" if entry is not None else "miss")
            candidates, task_id, description, routing_s = await decide_now()
            result = await forward(candidates, forward_body, stream, settings.max_attempts)
        if key:
            metrics.affinity.labels(affinity).inc()
        if key and 200 <= result.status_code < 300:
            state.affinity.set(key, AffinityEntry(result.model, _order(result.model, candidates), task_id, description))
        if decided and 200 <= result.status_code < 300:
            count_spend(decided[-1], result.model, state.key_name(tag))
        return relay_response(
            result,
            {
                "x-finerouter-task": _task_label(task_id),
                "x-finerouter-task-description": quote(description[:200], safe=" ,.:;()/-_'"),
                "x-finerouter-routing-ms": f"{routing_s * 1000:.2f}",
                "x-finerouter-affinity": affinity,
            },
        )

    @app.post("/v1/route")
    async def route(request: Request) -> Response:
        tag = state.authorize(request)
        body = await _read_json(request, settings.max_body_bytes)
        overrides: dict[str, Any] = {}
        if isinstance(body.get("model"), str):
            parsed = parse_model_string(body["model"], settings.alias)
            if parsed is None:
                raise bad_request(f"'model' must be {settings.alias!r} (optionally with options) here.", "model")
            overrides = parsed
        options = state.route_options(body, overrides, tag)
        given = [k for k in ("prompt", "prompts", "messages") if k in body]
        if len(given) != 1:
            raise bad_request("Send exactly one of 'prompt' (a string), 'prompts' (an array) or 'messages'.")
        if "prompts" in body:
            prompts = body["prompts"]
            if not isinstance(prompts, list) or not prompts or not all(isinstance(p, str) for p in prompts):
                raise bad_request("'prompts' must be a non-empty array of strings.", "prompts")
            if len(prompts) > settings.max_route_prompts:
                raise bad_request(f"'prompts' holds {len(prompts)} prompts; the limit is {settings.max_route_prompts}.", "prompts")
            empty = [i for i, p in enumerate(prompts) if not p.strip()]
            if empty:
                raise GatewayHTTPError(422, f"'prompts[{empty[0]}]' is empty.", param="prompts", code="no_routable_text")
            t0 = time.perf_counter()
            try:
                decisions = await state.batcher.route_many(prompts, options)
            except FineRouterError as exc:
                raise GatewayHTTPError(422, f"Cannot route these prompts: {exc}", code="routing_error") from None
            metrics.routing_latency.observe(time.perf_counter() - t0)
            for d in decisions:
                metrics.decisions.labels(d.model, _task_label(d.task_id)).inc()
            return JSONResponse({"object": "list", "data": [d.to_dict() for d in decisions]})
        if "messages" in body:
            text = routing_text(validate_messages(body["messages"]), settings.route_on)
        else:
            text = body["prompt"]
            if not isinstance(text, str):
                raise bad_request("'prompt' must be a string.", "prompt")
        if not text.strip():
            raise GatewayHTTPError(422, "There is no text to route on.", code="no_routable_text")
        decision, _ = await decide(text, options)
        return JSONResponse(decision.to_dict())

    @app.get("/v1/models")
    async def models(request: Request) -> Response:
        state.authorize(request)
        created = int(state.started_at)
        data = [{"id": settings.alias, "object": "model", "created": created, "owned_by": "finerouter"}]
        data += [
            {"id": name, "object": "model", "created": created, "owned_by": "upstream", "upstream_model": u.model,
             "routable": name in router_models}
            for name, u in config.upstreams.items()
        ]
        return JSONResponse({"object": "list", "data": data})

    @app.get("/healthz")
    async def healthz() -> Response:
        return JSONResponse(
            {
                "status": "ok" if state.proxy is not None else "starting",
                "models": router_models,
                "cooling_down": state.cooldown.cooling(),
                "routed": state.batcher.routed,
                "routing_batches": state.batcher.batches,
                "uptime_s": round(time.time() - state.started_at, 1),
            }
        )

    @app.get("/metrics")
    async def metrics_endpoint() -> Response:
        content, content_type = metrics.render()
        return Response(content=content, media_type=content_type)

    return app


__all__ = ["ENDPOINTS", "GatewayState", "create_app"]
