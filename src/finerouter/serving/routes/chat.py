"""``POST /v1/chat/completions``: route the conversation and relay the chosen upstream's answer.

``model: "finerouter"`` (or ``"finerouter:tolerance=0.2"``) routes the conversation and hands it to the
dispatcher (:mod:`finerouter.serving.dispatch`), which tries the decision's ranking with affinity, fallback
and cooldown; naming a router model sends the request straight to it (one attempt). Streaming (SSE) and tool
calls pass through unchanged. Response headers ``x-finerouter-model``, ``x-finerouter-task`` and friends say
what happened; when every attempt fails the client gets a 502 saying which models were tried.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from finerouter.collect.request_log import log_routed_answer
from finerouter.routing.decision import RoutingDecision
from finerouter.serving.dependencies import ClientTag, JSONBody, State
from finerouter.serving.dispatch import AllUpstreamsFailed, Forwarded, RoutedTurn
from finerouter.serving.errors import GatewayHTTPError
from finerouter.serving.protocol import ROUTING_KEYS, bad_request, parse_model_string, routing_text, validate_messages
from finerouter.serving.state import GatewayState, task_label

router = APIRouter()


class RelayResponse(StreamingResponse):
    """A streamed upstream answer; the upstream response is closed however the client's stream ends."""

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            await self.body_iterator.aclose()  # type: ignore[union-attr]


def relay_response(state: GatewayState, forwarded: Forwarded, extra: dict[str, str]) -> Response:
    """The client's response: the upstream's answer with the gateway's ``x-finerouter-*`` headers."""
    answer = forwarded.answer
    headers = {**answer.headers, **extra}
    headers["x-finerouter-model"] = answer.model
    headers["x-finerouter-upstream-model"] = state.config.upstreams[answer.model].model
    headers["x-finerouter-attempts"] = str(len(forwarded.attempts))
    headers["x-finerouter-upstream-ms"] = f"{forwarded.attempts[-1].seconds * 1000:.2f}"
    if forwarded.failed_models:
        headers["x-finerouter-fallback-from"] = ",".join(forwarded.failed_models)
    if answer.stream is not None:
        return RelayResponse(answer.stream, status_code=answer.status_code, headers=headers)
    return Response(content=answer.content, status_code=answer.status_code, headers=headers)


def all_failed(exc: AllUpstreamsFailed) -> GatewayHTTPError:
    """The client's 502 when no upstream answered."""
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


def conversation_key(request: Request, body: dict[str, Any], tag: str) -> str:
    """The affinity key: the ``x-conversation-id`` header, else the ``user`` field, scoped to the client's key
    (``""``: neither, so no affinity)."""
    conversation = request.headers.get("x-conversation-id") or ""
    if conversation:
        return f"{tag}|conv:{conversation}"
    if isinstance(body.get("user"), str) and body["user"]:
        return f"{tag}|user:{body['user']}"
    return ""


@router.post("/v1/chat/completions")
async def chat_completions(request: Request, state: State, tag: ClientTag, body: JSONBody) -> Response:
    """Route (or pass straight through) one chat-completions request and relay the answer."""
    settings = state.settings
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
        if model not in state.config.upstreams:
            raise GatewayHTTPError(
                404,
                f"The model {model!r} does not exist here; use {settings.alias!r} to route, or one of "
                f"{sorted(state.config.upstreams)}.",
                param="model",
                code="model_not_found",
            )
        try:
            forwarded = await state.require_dispatcher().forward([model], forward_body, stream=stream, max_attempts=1)
        except AllUpstreamsFailed as exc:
            raise all_failed(exc) from None
        return relay_response(state, forwarded, {"x-finerouter-task": "none", "x-finerouter-affinity": "none"})

    options = state.route_options(body, overrides, tag)
    routed: list[tuple[RoutingDecision, float]] = []  # the routing decision and its seconds, when routed
    routed_text: list[str] = []  # the text routed on (for the opt-in request log)

    async def route() -> RoutedTurn:
        text = routing_text(messages, settings.route_on)
        if not text.strip():
            raise GatewayHTTPError(
                422,
                "There is no text to route on in 'messages'; name a model instead of "
                f"{settings.alias!r} for requests without text.",
                param="messages",
                code="no_routable_text",
            )
        decision, seconds = await state.decide(text, options)
        routed.append((decision, seconds))
        routed_text.append(text)
        return RoutedTurn(decision.model, decision.ranking, decision.task_id, decision.task_description)

    try:
        dispatched = await state.require_dispatcher().dispatch(
            forward_body,
            stream=stream,
            route=route,
            conversation=conversation_key(request, body, tag),
            allowed_models=options.allowed_models,
        )
    except AllUpstreamsFailed as exc:
        raise all_failed(exc) from None
    forwarded = dispatched.forwarded
    logged: dict[str, str] = {}
    if routed and 200 <= forwarded.answer.status_code < 300:
        state.count_spend(routed[-1][0], forwarded.model, state.key_name(tag))
        request_id = log_routed_answer(state, routed[-1][0], forwarded, routed_text[-1], state.key_name(tag))
        if request_id is not None:
            logged["x-finerouter-request-id"] = request_id
    return relay_response(
        state,
        forwarded,
        {
            **logged,
            "x-finerouter-task": task_label(dispatched.task_id),
            "x-finerouter-task-description": quote(dispatched.task_description[:200], safe=" ,.:;()/-_'"),
            "x-finerouter-routing-ms": f"{(routed[-1][1] if routed else 0.0) * 1000:.2f}",
            "x-finerouter-affinity": dispatched.affinity,
        },
    )


__all__ = ["RelayResponse", "router"]
