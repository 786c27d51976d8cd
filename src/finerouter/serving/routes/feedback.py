"""``POST /v1/feedback``: a client scores an answer, for training on the gateway's own traffic.

Body: ``{"id": "<response id>", "score": 0..1}``, where the id is the ``x-finerouter-request-id`` header of a
routed answer (or the ``id`` of its non-streamed chat completion). The score is appended to the request log
(:mod:`finerouter.collect.request_log`) and joined with the logged decision by ``finerouter fit --data <log
dir>``. Only available when the gateway logs requests (``gateway: {request_log_dir: ...}``); otherwise 404.
An id this gateway process has not logged recently is still accepted (it may predate a restart) and answered
with ``"known": false``.
"""

from __future__ import annotations

import math

from fastapi import APIRouter
from starlette.responses import JSONResponse, Response

from finerouter.collect.request_log import request_log_of
from finerouter.serving.dependencies import ClientTag, JSONBody, State
from finerouter.serving.errors import GatewayHTTPError
from finerouter.serving.protocol import bad_request

router = APIRouter()

MAX_ID_CHARS = 200


@router.post("/v1/feedback")
async def feedback(state: State, tag: ClientTag, body: JSONBody) -> Response:
    """Record a client's score in [0, 1] for one answered request."""
    log = request_log_of(state)
    if log is None:
        raise GatewayHTTPError(
            404, "Feedback is off: the gateway logs no requests (set gateway.request_log_dir in the upstreams file).",
            code="feedback_disabled",
        )
    request_id = body.get("id")
    if not isinstance(request_id, str) or not request_id.strip() or len(request_id) > MAX_ID_CHARS:
        raise bad_request(f"'id' must be the response id (a non-empty string of at most {MAX_ID_CHARS} characters).", "id")
    score = body.get("score")
    if isinstance(score, bool) or not isinstance(score, (int, float)) or not math.isfinite(score) or not 0 <= score <= 1:
        raise bad_request(f"'score' must be a number in [0, 1]. Got {score!r}.", "score")
    log.log_feedback(request_id, float(score), state.key_name(tag))
    return JSONResponse({"object": "feedback", "id": request_id, "score": float(score), "known": log.knows(request_id)})


__all__ = ["router"]
