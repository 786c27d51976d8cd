"""Endpoints besides chat: routing decisions only, liveness and Prometheus metrics.

- ``POST /v1/route``: ``{"prompt": ...}``, ``{"prompts": [...]}`` or ``{"messages": [...]}``; answers the
  routing decision (or a list of them) without calling any upstream.
- ``GET /healthz``: liveness, the upstreams cooling down and routing counters; never needs a token.
- ``GET /metrics``: Prometheus text; never needs a token.
"""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter
from starlette.responses import JSONResponse, Response

from finerouter.serving.dependencies import ClientTag, JSONBody, State
from finerouter.serving.errors import GatewayHTTPError
from finerouter.serving.protocol import bad_request, parse_model_string, routing_text, validate_messages

router = APIRouter()


@router.post("/v1/route")
async def route(state: State, tag: ClientTag, body: JSONBody) -> Response:
    """Routing decisions for one prompt, a batch of prompts, or a conversation."""
    settings = state.settings
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
            raise bad_request(
                f"'prompts' holds {len(prompts)} prompts; the limit is {settings.max_route_prompts}.", "prompts"
            )
        empty = [i for i, p in enumerate(prompts) if not p.strip()]
        if empty:
            raise GatewayHTTPError(422, f"'prompts[{empty[0]}]' is empty.", param="prompts", code="no_routable_text")
        decisions = await state.decide_many(prompts, options)
        return JSONResponse({"object": "list", "data": [d.to_dict() for d in decisions]})
    if "messages" in body:
        text = routing_text(validate_messages(body["messages"]), settings.route_on)
    else:
        text = body["prompt"]
        if not isinstance(text, str):
            raise bad_request("'prompt' must be a string.", "prompt")
    if not text.strip():
        raise GatewayHTTPError(422, "There is no text to route on.", code="no_routable_text")
    decision, _ = await state.decide(text, options)
    return JSONResponse(decision.to_dict())


@router.get("/healthz")
async def healthz(state: State) -> Response:
    """``status`` is ``"ok"`` while the upstream side is open, ``"starting"`` before."""
    return JSONResponse(
        {
            "status": "ok" if state.proxy is not None else "starting",
            "models": state.router_models,
            "cooling_down": state.cooldown.cooling(),
            "routed": state.batcher.routed,
            "routing_batches": state.batcher.batches,
            "uptime_s": round(time.time() - state.started_at, 1),
        }
    )


@router.get("/metrics")
async def metrics(state: State) -> Response:
    """The app's Prometheus metrics in the text exposition format."""
    content, content_type = state.metrics.render()
    return Response(content=content, media_type=content_type)


__all__ = ["router"]
