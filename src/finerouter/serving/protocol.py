"""Reading chat-completions requests: the text to route on, and the per-request routing options.

Routing options come from the request's extra body (top-level ``tolerance``, ``allowed_models``,
``max_cost``; the ``openai`` client sends them with ``extra_body=``) or from the model string, e.g.
``finerouter:tolerance=0.2,allowed_models=gpt-4o|llama-3-8b,max_cost=0.001``; the model string wins.
They are removed before the request goes upstream. Bad values are 400s naming the parameter.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from finerouter.serving.batcher import RouteOptions
from finerouter.serving.errors import GatewayHTTPError

ROUTING_KEYS = ("tolerance", "allowed_models", "max_cost")


def bad_request(message: str, param: str | None = None, code: str | None = None) -> GatewayHTTPError:
    return GatewayHTTPError(400, message, param=param, code=code)


def content_text(content: Any) -> str:
    """The text of a message's ``content``: a string, or the text parts of a list of parts (images skipped)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = []
        for part in content:
            if isinstance(part, str):
                texts.append(part)
            elif isinstance(part, Mapping) and isinstance(part.get("text"), str):
                texts.append(part["text"])  # {"type": "text"|"input_text", "text": ...}
        return "\n".join(t for t in texts if t)
    return ""


def validate_messages(messages: Any) -> list[Mapping[str, Any]]:
    """Check ``messages`` is a non-empty list of ``{"role": str, ...}`` objects (400 otherwise)."""
    if not isinstance(messages, list) or not messages:
        raise bad_request("'messages' must be a non-empty array of message objects.", "messages")
    for i, m in enumerate(messages):
        if not isinstance(m, Mapping) or not isinstance(m.get("role"), str):
            raise bad_request(f"'messages[{i}]' must be an object with a string 'role'.", f"messages[{i}]")
        content = m.get("content")
        if content is not None and not isinstance(content, (str, list)):
            raise bad_request(f"'messages[{i}].content' must be a string or an array of parts.", f"messages[{i}].content")
    return messages


def routing_text(messages: Sequence[Mapping[str, Any]], route_on: str = "last_user") -> str:
    """The text a conversation is routed on.

    ``route_on``: ``"last_user"`` (the last user message: what is being asked now), ``"user"`` (every user
    message, joined) or ``"all"`` (every message's text, joined). Falls back to the last message with text
    when no user message has any.
    """
    if route_on == "all":
        texts = [content_text(m.get("content")) for m in messages]
    else:
        users = [content_text(m.get("content")) for m in messages if m.get("role") == "user"]
        texts = users[-1:] if route_on == "last_user" else users
    text = "\n\n".join(t for t in texts if t.strip())
    if not text.strip():
        for m in reversed(messages):
            t = content_text(m.get("content"))
            if t.strip():
                return t
    return text


def parse_model_string(model: str, alias: str) -> dict[str, Any] | None:
    """Routing overrides in ``model`` if it names the alias (``{}`` for the bare alias), else None."""
    if model == alias:
        return {}
    if not model.startswith(alias + ":"):
        return None
    overrides: dict[str, Any] = {}
    for item in model[len(alias) + 1 :].split(","):
        if not item.strip():
            continue
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or key not in ROUTING_KEYS:
            raise bad_request(
                f"Cannot read routing option {item!r} in model {model!r}: use "
                f"'{alias}:tolerance=0.2,allowed_models=a|b,max_cost=0.01'.",
                "model",
            )
        value = value.strip()
        if key == "allowed_models":
            overrides[key] = [v.strip() for v in value.split("|") if v.strip()]
        else:
            try:
                overrides[key] = float(value)
            except ValueError:
                raise bad_request(f"'{key}' in model {model!r} must be a number. Got {value!r}.", "model") from None
    return overrides


def _is_number(x: Any) -> bool:
    return not isinstance(x, bool) and isinstance(x, (int, float)) and math.isfinite(x)


def route_options(
    body: Mapping[str, Any],
    overrides: Mapping[str, Any],
    *,
    models: Sequence[str],
    default_tolerance: float,
) -> RouteOptions:
    """The request's :class:`RouteOptions` (model-string overrides win over the body)."""
    merged = {k: body[k] for k in ROUTING_KEYS if k in body and body[k] is not None}
    merged.update(overrides)
    tolerance = merged.get("tolerance", default_tolerance)
    if not _is_number(tolerance) or not 0.0 <= tolerance <= 1.0:
        raise bad_request(f"'tolerance' must be a number in [0, 1]. Got {tolerance!r}.", "tolerance")
    max_cost = merged.get("max_cost")
    if max_cost is not None and (not _is_number(max_cost) or max_cost < 0):
        raise bad_request(f"'max_cost' must be a number >= 0 (USD). Got {max_cost!r}.", "max_cost")
    allowed = merged.get("allowed_models")
    allowed_t: tuple[str, ...] | None = None
    if allowed is not None:
        if not isinstance(allowed, list) or not all(isinstance(a, str) for a in allowed):
            raise bad_request("'allowed_models' must be an array of model names.", "allowed_models")
        unknown = [a for a in allowed if a not in models]
        if unknown or not allowed:
            raise GatewayHTTPError(
                422,
                f"'allowed_models' must name models the router knows; unknown: {unknown or 'none given'}. "
                f"Known: {list(models)}.",
                param="allowed_models",
                code="model_not_found",
            )
        allowed_t = tuple(dict.fromkeys(allowed))
    return RouteOptions(float(tolerance), allowed_t, None if max_cost is None else float(max_cost))


__all__ = [
    "ROUTING_KEYS",
    "content_text",
    "parse_model_string",
    "route_options",
    "routing_text",
    "validate_messages",
]
