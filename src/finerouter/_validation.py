"""Parameter validation with scikit-learn style messages.

``check_int(1, "k", "TaskDiscovery", low=2)`` raises
``ParameterError("The 'k' parameter of TaskDiscovery must be an int in [2, inf). Got 1.")``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

from finerouter.errors import NotFittedError, ParameterError


def _interval(low: float | None, high: float | None, closed: str) -> str:
    left = "[" if closed in ("both", "left") else "("
    right = "]" if closed in ("both", "right") else ")"
    lo = "-inf" if low is None else f"{low:g}"
    hi = "inf" if high is None else f"{high:g}"
    if low is None:
        left = "("
    if high is None:
        right = ")"
    return f"{left}{lo}, {hi}{right}"


def _in_range(value: float, low: float | None, high: float | None, closed: str) -> bool:
    if low is not None:
        if closed in ("both", "left") and value < low:
            return False
        if closed in ("neither", "right") and value <= low:
            return False
    if high is not None:
        if closed in ("both", "right") and value > high:
            return False
        if closed in ("neither", "left") and value >= high:
            return False
    return True


def check_int(
    value: Any, name: str, owner: str, *, low: int | None = None, high: int | None = None
) -> int:
    """Return ``value`` as int if it is an integer within ``[low, high]``; raise ParameterError otherwise."""
    ok = isinstance(value, int) and not isinstance(value, bool)
    if not ok and hasattr(value, "__index__") and not isinstance(value, bool):
        try:
            value = int(value.__index__())
            ok = True
        except TypeError:
            ok = False
    if not ok or not _in_range(value, low, high, "both"):
        raise ParameterError(
            f"The '{name}' parameter of {owner} must be an int in {_interval(low, high, 'both')}. Got {value!r}."
        )
    return int(value)


def check_float(
    value: Any,
    name: str,
    owner: str,
    *,
    low: float | None = None,
    high: float | None = None,
    closed: str = "both",
) -> float:
    """Return ``value`` as float if it is a finite real in the interval; raise ParameterError otherwise."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(float(value)):
        ok = False
    else:
        ok = _in_range(float(value), low, high, closed)
    if not ok:
        raise ParameterError(
            f"The '{name}' parameter of {owner} must be a float in {_interval(low, high, closed)}. Got {value!r}."
        )
    return float(value)


def check_choice(value: Any, name: str, owner: str, choices: Iterable[Any]) -> Any:
    """Return ``value`` if it is one of ``choices``; raise ParameterError otherwise."""
    options = list(choices)
    if value not in options:
        shown = ", ".join(repr(c) for c in options)
        raise ParameterError(f"The '{name}' parameter of {owner} must be one of {{{shown}}}. Got {value!r}.")
    return value


def check_is_fitted(obj: Any, attributes: Iterable[str]) -> None:
    """Raise NotFittedError unless every attribute in ``attributes`` is set on ``obj``."""
    missing = [a for a in attributes if getattr(obj, a, None) is None]
    if missing:
        raise NotFittedError(
            f"This {type(obj).__name__} instance is not fitted yet. Call 'fit' with appropriate "
            "arguments before using it."
        )
