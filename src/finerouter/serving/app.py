"""The gateway app: an OpenAI-compatible chat-completions endpoint that routes each request with FineRouter.

``create_app(router, upstreams)`` builds a FastAPI app; run it with uvicorn (``finerouter serve`` does) or
mount it in another app. All state lives on ``app.state.gateway`` (:class:`~finerouter.serving.state.GatewayState`,
no module globals); the upstream connection pools and the routing workers start and stop with the app's
lifespan.

Endpoints (one ``APIRouter`` module each under :mod:`finerouter.serving.routes`):
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

Importing this module is light; the web stack is imported when :func:`create_app` is called.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from typing import TYPE_CHECKING, Any

from finerouter.serving.batcher import RouterLike
from finerouter.serving.config import GatewayConfig, GatewaySettings
from finerouter.serving.state import GatewayState, build_gateway_state

if TYPE_CHECKING:
    import httpx
    from fastapi import FastAPI

logger = logging.getLogger(__name__)

ENDPOINTS = ("/v1/chat/completions", "/v1/route", "/v1/models", "/healthz", "/metrics")


def create_app(
    router: RouterLike,
    upstreams: GatewayConfig | Mapping[str, Any] | str | os.PathLike[str],
    *,
    auth_tokens: Iterable[str] | None = None,
    settings: GatewaySettings | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> FastAPI:
    """Build the gateway app.

    Args:
        router: a fitted ``FineRouter``, or any object with ``models_`` and
            ``route(prompt | list[str], tolerance=, allowed_models=, max_cost=)``.
        upstreams: a :class:`GatewayConfig`, the path of an upstreams YAML file, or the mapping such a file
            holds (``{"upstreams": {...}, "gateway": {...}}`` or just the upstreams).
        auth_tokens: client bearer tokens; auth is off when these and the config's named ``keys`` are both empty.
        settings: overrides the file's ``gateway:`` section.
        transport: an httpx transport for every upstream call, e.g. ``httpx.MockTransport`` or an
            ``httpx.ASGITransport`` over in-process upstream apps in tests (default: one
            :class:`~finerouter.serving.transport.AiohttpTransport` per upstream, each its own pool). The app's
            lifespan opens and closes it.
        clock: monotonic seconds for upstream cooldowns and conversation affinity expiry (injectable, so tests
            move time forward instead of sleeping).

    Raises:
        ConfigError: a router model has no upstream, or the upstreams are malformed.
    """
    from fastapi import FastAPI

    from finerouter.serving.error_handlers import install_error_handlers
    from finerouter.serving.metrics import RequestMetricsMiddleware
    from finerouter.serving.routes import chat, feedback, models, ops

    state = build_gateway_state(router, upstreams, auth_tokens=auth_tokens, settings=settings, clock=clock)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            await _open_upstream_side(state, transport, stack)
            await state.batcher.start()
            logger.info(
                "FineRouter gateway ready: %d router models, %d upstreams, auth %s",
                len(state.router_models),
                len(state.config.upstreams),
                "on" if state.auth_tokens else "off",
            )
            try:
                yield
            finally:
                await state.batcher.stop()
                state.dispatcher = None

    app = FastAPI(
        title="FineRouter gateway",
        description="OpenAI-compatible prompt routing",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    app.state.gateway = state
    app.add_middleware(RequestMetricsMiddleware, metrics=state.metrics, endpoints=ENDPOINTS)
    install_error_handlers(app)
    for module in (chat, ops, models, feedback):
        app.include_router(module.router)
    return app


async def _open_upstream_side(
    state: GatewayState, transport: httpx.AsyncBaseTransport | None, stack: AsyncExitStack
) -> None:
    """Open one pool per upstream (or the injected transport for all) on ``stack`` and build the dispatcher.

    AiohttpTransport reads no proxy from the environment: upstream URLs are explicit, and an HTTP(S)_PROXY meant
    for other tools must not capture loopback or in-cluster upstreams.
    """
    from finerouter.serving.transport import AiohttpTransport

    names = list(state.config.upstreams)
    if transport is not None:
        shared = await stack.enter_async_context(transport)
        transports = {name: shared for name in names}
    else:
        transports = {
            name: await stack.enter_async_context(AiohttpTransport(max_connections=state.settings.max_connections))
            for name in names
        }
    state.open_dispatcher(transports)


__all__ = ["ENDPOINTS", "GatewayState", "create_app"]
