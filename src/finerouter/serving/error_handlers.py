"""The gateway's exception handlers: every error a client sees is the OpenAI error envelope.

A :class:`~finerouter.serving.errors.GatewayHTTPError` keeps its status, fields and headers; the framework's
own errors (unknown path, wrong method, failed validation) get the envelope with the status's default type and
code; any other exception is logged with its traceback and answered as a bare 500, never with its text.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from finerouter.serving.errors import STATUS_DEFAULTS, GatewayHTTPError, error_body

logger = logging.getLogger(__name__)


async def gateway_error(request: Request, exc: GatewayHTTPError) -> Response:
    return JSONResponse(exc.to_dict(), status_code=exc.status_code, headers=exc.headers)


async def framework_http_error(request: Request, exc: StarletteHTTPException) -> Response:
    kind, code = STATUS_DEFAULTS.get(exc.status_code, ("invalid_request_error", None))
    messages = {
        404: f"Unknown path {request.url.path!r}.",
        405: f"Method {request.method} not allowed on {request.url.path!r}.",
    }
    message = messages.get(exc.status_code, str(exc.detail))
    return JSONResponse(
        error_body(message, type=kind, code=code), status_code=exc.status_code, headers=getattr(exc, "headers", None)
    )


async def validation_error(request: Request, exc: RequestValidationError) -> Response:
    return JSONResponse(error_body(str(exc)), status_code=422)


async def unexpected_error(request: Request, exc: Exception) -> Response:
    logger.exception("unexpected error on %s %s", request.method, request.url.path)
    return JSONResponse(error_body("Internal gateway error.", type="server_error"), status_code=500)


def install_error_handlers(app: FastAPI) -> None:
    """Register the handlers above on ``app``."""
    handlers: list[tuple[Any, Any]] = [
        (GatewayHTTPError, gateway_error),
        (StarletteHTTPException, framework_http_error),
        (RequestValidationError, validation_error),
        (Exception, unexpected_error),
    ]
    for exc_class, handler in handlers:
        app.add_exception_handler(exc_class, handler)


__all__ = ["install_error_handlers"]
