"""FastAPI dependencies of the gateway's routes: its state, the client's key, the JSON body.

Declare them as parameters, in the order they must run (FastAPI solves a route's dependencies in the order of
its parameters), e.g. ``tag: ClientTag, body: JSONBody``: the key is checked before the body is read, so a
client without a valid key gets 401 whatever it sent.
"""

from __future__ import annotations

import hmac
from typing import Annotated, Any

from fastapi import Depends
from starlette.requests import Request

from finerouter.serving.errors import GatewayHTTPError
from finerouter.serving.protocol import parse_json_body
from finerouter.serving.state import GatewayState


async def gateway_state(request: Request) -> GatewayState:
    """The app's :class:`GatewayState` (``app.state.gateway``)."""
    return request.app.state.gateway


State = Annotated[GatewayState, Depends(gateway_state)]


async def client_tag(request: Request, state: State) -> str:
    """Check the bearer token (when auth is on); returns the tag naming which token matched (see
    :attr:`GatewayState.auth_tokens`; ``""`` when auth is off).

    Raises:
        GatewayHTTPError: 401 (with ``WWW-Authenticate: Bearer``) when the token is missing or unknown.
    """
    if not state.auth_tokens:
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
    for expected, tag in state.auth_tokens:
        if hmac.compare_digest(given, expected):
            return tag
    raise GatewayHTTPError(
        401, "Invalid bearer token.", code="invalid_api_key", headers={"www-authenticate": "Bearer"}
    )


ClientTag = Annotated[str, Depends(client_tag)]


async def json_body(request: Request, state: State) -> dict[str, Any]:
    """The request's JSON object, refusing bodies over the gateway's ``max_body_bytes`` (413) and malformed
    JSON (400: see :func:`~finerouter.serving.protocol.parse_json_body`)."""
    limit = state.settings.max_body_bytes
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


JSONBody = Annotated[dict[str, Any], Depends(json_body)]

__all__ = ["ClientTag", "JSONBody", "State", "client_tag", "gateway_state", "json_body"]
