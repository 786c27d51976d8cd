"""Reading chat-completions requests: the text to route on, and the per-request routing options.

Routing options come from the request's extra body (top-level ``tolerance``, ``allowed_models``,
``max_cost``, ``cost_weight``, ``budget_per_1k``; the ``openai`` client sends them with ``extra_body=``) or
from the model string, e.g. ``finerouter:tolerance=0.2,allowed_models=gpt-4o|llama-3-8b,max_cost=0.001`` or
``finerouter:budget_per_1k=2.5``; the model string wins (and one of ``cost_weight``/``budget_per_1k`` there
replaces either in the body). They are removed before the request goes upstream. Bad values are 400 errors naming
the parameter.

Bodies are read by :func:`parse_json_body`, which refuses (400) anything the gateway could not handle or
forward faithfully: malformed JSON, nesting deeper than :data:`MAX_JSON_DEPTH`, strings holding a lone UTF-16
surrogate (``"\\ud800"`` is valid JSON but no valid text, and cannot be written as UTF-8), and non-finite
numbers (``NaN``, ``Infinity``, ``1e999``: not JSON, and not forwardable as JSON).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

from finerouter.serving.batcher import RouteOptions
from finerouter.serving.errors import GatewayHTTPError

ROUTING_KEYS = ("tolerance", "allowed_models", "max_cost", "cost_weight", "budget_per_1k")
COST_AWARE_KEYS = ("cost_weight", "budget_per_1k")

MAX_JSON_DEPTH = 100
"""The deepest nesting of arrays and objects a request body may have (chat requests, tool schemas included,
need far fewer levels); deeper bodies are 400 errors, so no parser or serialiser down the line can run out of stack."""

_PLAIN_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


def bad_request(message: str, param: str | None = None, code: str | None = None) -> GatewayHTTPError:
    return GatewayHTTPError(400, message, param=param, code=code)


def _path(parent: str, key: str | int) -> str:
    """``parent`` extended by one step, written so it is always plain ASCII (keys may hold anything)."""
    if isinstance(key, int):
        return f"{parent}[{key}]"
    if _PLAIN_KEY.match(key):
        return f"{parent}.{key}" if parent else key
    return f"{parent}[{json.dumps(key, ensure_ascii=True)}]"


def _has_lone_surrogate(text: str) -> bool:
    if text.isascii():
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def check_json_value(value: Any, max_depth: int = MAX_JSON_DEPTH) -> None:
    """Refuse (400, naming the parameter) a parsed JSON value that is nested deeper than ``max_depth``, holds a
    lone surrogate in a string or key, or a non-finite number. Iterative, so it cannot itself run out of stack.
    """
    stack: list[tuple[Any, str, int]] = [(value, "", 0)]
    while stack:
        node, path, depth = stack.pop()
        if isinstance(node, str):
            if _has_lone_surrogate(node):
                raise bad_request(
                    f"{path or 'The request body'} holds a lone UTF-16 surrogate (an unpaired \\ud800-\\udfff "
                    "escape), which is not valid text.",
                    path or None,
                    code="invalid_json",
                )
        elif isinstance(node, float):
            if not math.isfinite(node):
                raise bad_request(
                    f"{path or 'The request body'} is not a finite number (NaN and Infinity are not JSON).",
                    path or None,
                    code="invalid_json",
                )
        elif isinstance(node, (dict, list)):
            if depth >= max_depth:
                raise bad_request(
                    f"The request body is nested more than {max_depth} levels deep.", path or None, code="invalid_json"
                )
            if isinstance(node, dict):
                for k, v in node.items():
                    if _has_lone_surrogate(k):
                        raise bad_request(
                            f"A key in {path or 'the request body'} holds a lone UTF-16 surrogate (an unpaired "
                            "\\ud800-\\udfff escape), which is not valid text.",
                            path or None,
                            code="invalid_json",
                        )
                    stack.append((v, _path(path, k), depth + 1))
            else:
                stack.extend((v, _path(path, i), depth + 1) for i, v in enumerate(node))


def parse_json_body(raw: bytes, max_depth: int = MAX_JSON_DEPTH) -> dict[str, Any]:
    """The JSON object in a request body, checked by :func:`check_json_value` (400 on anything else)."""
    if not raw.strip():
        raise bad_request("The request body is empty; send a JSON object.", code="invalid_json")
    try:
        body = json.loads(raw)
    except RecursionError:
        raise bad_request(
            f"The request body is nested more than {max_depth} levels deep.", code="invalid_json"
        ) from None
    except ValueError as exc:  # includes UnicodeDecodeError: bytes that are not UTF-8
        raise bad_request(f"The request body is not valid JSON ({exc}).", code="invalid_json") from None
    if not isinstance(body, dict):
        raise bad_request(f"The request body must be a JSON object. Got {type(body).__name__}.", code="invalid_json")
    check_json_value(body, max_depth)
    return body


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
                f"'{alias}:tolerance=0.2,allowed_models=a|b,max_cost=0.01' (or cost_weight=, budget_per_1k=).",
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
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return False
    try:
        return math.isfinite(x)
    except OverflowError:  # an int too large for a float
        return False


def route_options(
    body: Mapping[str, Any],
    overrides: Mapping[str, Any],
    *,
    models: Sequence[str],
    default_tolerance: float,
) -> RouteOptions:
    """The request's :class:`RouteOptions` (model-string overrides win over the body).

    ``cost_weight`` (lambda >= 0, quality points per USD) and ``budget_per_1k`` (USD per 1,000 requests, >= 0)
    are exclusive; the caller sets ``budget_key`` on options with a budget.
    """
    merged = {k: body[k] for k in ROUTING_KEYS if k in body and body[k] is not None}
    if any(k in overrides for k in COST_AWARE_KEYS):
        for k in COST_AWARE_KEYS:
            merged.pop(k, None)
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
    if all(k in merged for k in COST_AWARE_KEYS):
        raise bad_request(
            "'cost_weight' and 'budget_per_1k' are mutually exclusive: send one. "
            f"Got cost_weight={merged['cost_weight']!r}, budget_per_1k={merged['budget_per_1k']!r}.",
            "cost_weight",
        )
    cost_weight = merged.get("cost_weight")
    if cost_weight is not None and (not _is_number(cost_weight) or cost_weight < 0):
        raise bad_request(
            f"'cost_weight' must be a number >= 0 (quality points per USD). Got {cost_weight!r}.", "cost_weight"
        )
    budget = merged.get("budget_per_1k")
    if budget is not None and (not _is_number(budget) or budget < 0):
        raise bad_request(
            f"'budget_per_1k' must be a number >= 0 (USD per 1,000 requests). Got {budget!r}.", "budget_per_1k"
        )
    return RouteOptions(
        float(tolerance),
        allowed_t,
        None if max_cost is None else float(max_cost),
        None if cost_weight is None else float(cost_weight),
        None if budget is None else float(budget),
    )


__all__ = [
    "COST_AWARE_KEYS",
    "MAX_JSON_DEPTH",
    "ROUTING_KEYS",
    "check_json_value",
    "content_text",
    "parse_json_body",
    "parse_model_string",
    "route_options",
    "routing_text",
    "validate_messages",
]
