"""``GET /v1/models``: the routing alias and every model with an upstream (``routable``: the router can pick it)."""

from __future__ import annotations

from fastapi import APIRouter
from starlette.responses import JSONResponse, Response

from finerouter.serving.dependencies import ClientTag, State

router = APIRouter()


@router.get("/v1/models")
async def list_models(state: State, tag: ClientTag) -> Response:
    """The OpenAI model list: the alias first, then each upstream with its upstream model id."""
    created = int(state.started_at)
    data = [{"id": state.settings.alias, "object": "model", "created": created, "owned_by": "finerouter"}]
    data += [
        {
            "id": name,
            "object": "model",
            "created": created,
            "owned_by": "upstream",
            "upstream_model": u.model,
            "routable": name in state.router_models,
        }
        for name, u in state.config.upstreams.items()
    ]
    return JSONResponse({"object": "list", "data": data})


__all__ = ["router"]
