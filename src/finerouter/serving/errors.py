"""Errors of the gateway: start-up configuration errors, and OpenAI-style HTTP error bodies.

Clients of an OpenAI-compatible service expect failures as::

    {"error": {"message": "...", "type": "invalid_request_error", "param": "model", "code": "model_not_found"}}

with a fitting HTTP status. :class:`GatewayHTTPError` carries those four fields; the app turns it (and any
unknown route, wrong method or unexpected exception) into that JSON.
"""

from __future__ import annotations

from typing import Any

from finerouter.errors import FineRouterError


class ConfigError(FineRouterError, ValueError):
    """The gateway cannot start: the upstreams file, an environment variable or a token file is wrong.

    Messages name the file, the key and the variable, never a secret's value.
    """


class GatewayHTTPError(Exception):
    """A request failed; rendered as OpenAI-style error JSON with ``status_code``."""

    def __init__(
        self,
        status_code: int,
        message: str,
        *,
        type: str = "invalid_request_error",  # noqa: A002 - the OpenAI field name
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.message = message
        self.type = type
        self.param = param
        self.code = code
        self.headers = headers or {}

    def to_dict(self) -> dict[str, Any]:
        return error_body(self.message, type=self.type, param=self.param, code=self.code)


def error_body(
    message: str, *, type: str = "invalid_request_error", param: str | None = None, code: str | None = None  # noqa: A002
) -> dict[str, Any]:
    """The OpenAI error envelope."""
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


# Default type/code for statuses raised by the framework itself (unknown path, wrong method...).
STATUS_DEFAULTS: dict[int, tuple[str, str | None]] = {
    400: ("invalid_request_error", None),
    401: ("invalid_request_error", "invalid_api_key"),
    404: ("invalid_request_error", "not_found"),
    405: ("invalid_request_error", "method_not_allowed"),
    413: ("invalid_request_error", "request_too_large"),
    422: ("invalid_request_error", None),
    500: ("server_error", None),
    502: ("upstream_error", "upstream_unavailable"),
    503: ("server_error", "unavailable"),
}

__all__ = ["STATUS_DEFAULTS", "ConfigError", "GatewayHTTPError", "error_body"]
