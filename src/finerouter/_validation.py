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


def _as_index(value: Any) -> Any:
    """``value`` as a Python int when it is an integer (numpy integers included, bools excluded), else unchanged."""
    if isinstance(value, bool) or isinstance(value, int) or not hasattr(value, "__index__"):
        return value
    try:
        return int(value.__index__())
    except TypeError:
        return value


def check_int(
    value: Any, name: str, owner: str, *, low: int | None = None, high: int | None = None
) -> int:
    """Return ``value`` as int if it is an integer within ``[low, high]``; raise ParameterError otherwise."""
    constraint = Interval("int", low, high)
    value = _as_index(value)
    if not constraint.is_satisfied_by(value):
        raise ParameterError(f"The '{name}' parameter of {owner} must be {constraint}. Got {value!r}.")
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
    constraint = Interval("float", low, high, closed)
    if not constraint.is_satisfied_by(value):
        raise ParameterError(f"The '{name}' parameter of {owner} must be {constraint}. Got {value!r}.")
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


# ---------------------------------------------------------------------------------------------------------------
# Declarative parameter constraints (as scikit-learn's ``utils._param_validation``): each component lists, per
# constructor parameter, the constraints a valid value satisfies; one function checks them all and words the error.


class Constraint:
    """One kind of valid value for a parameter: ``is_satisfied_by`` tests it, ``str()`` words it for an error."""

    def is_satisfied_by(self, value: Any) -> bool:  # pragma: no cover - abstract
        raise NotImplementedError

    def invalid_example(self) -> Any:
        """A value that violates this constraint (used by the shared component tests); ``NotImplemented`` if none."""
        return NotImplemented


class Interval(Constraint):
    """An int (``kind="int"``) or a finite real (``kind="float"``) in ``[low, high]`` (ends per ``closed``)."""

    def __init__(self, kind: str, low: float | None, high: float | None, closed: str = "both") -> None:
        if kind not in ("int", "float") or closed not in ("both", "left", "right", "neither"):
            raise ValueError(f"bad Interval({kind!r}, closed={closed!r})")
        self.kind, self.low, self.high, self.closed = kind, low, high, closed

    def is_satisfied_by(self, value: Any) -> bool:
        if isinstance(value, bool):
            return False
        if self.kind == "int":
            value = _as_index(value)
            return isinstance(value, int) and _in_range(value, self.low, self.high, "both")
        if not isinstance(value, (int, float)) or not math.isfinite(float(value)):
            return False
        return _in_range(float(value), self.low, self.high, self.closed)

    def __str__(self) -> str:
        closed = "both" if self.kind == "int" else self.closed
        return f"{'an int' if self.kind == 'int' else 'a float'} in {_interval(self.low, self.high, closed)}"

    def invalid_example(self) -> Any:
        if self.low is not None:
            return int(self.low) - 1 if self.kind == "int" else float(self.low) - 1.0
        if self.high is not None:
            return int(self.high) + 1 if self.kind == "int" else float(self.high) + 1.0
        return "not-a-number"


class Options(Constraint):
    """One of a fixed set of values (compared with ``==``; ``True`` never matches ``1``)."""

    def __init__(self, *options: Any) -> None:
        self.options = tuple(options)

    def is_satisfied_by(self, value: Any) -> bool:
        return any(value == o and type(value) is type(o) or value is o for o in self.options)

    def __str__(self) -> str:
        return "one of {" + ", ".join(repr(o) for o in self.options) + "}"

    def invalid_example(self) -> Any:
        return "__not_an_option__"


class InstanceOf(Constraint):
    """An instance of one of ``types`` (bool is never an int here)."""

    def __init__(self, *types: type, description: str | None = None) -> None:
        self.types = types
        self.description = description

    def is_satisfied_by(self, value: Any) -> bool:
        if isinstance(value, bool) and bool not in self.types:
            return False
        return isinstance(value, self.types)

    def __str__(self) -> str:
        if self.description:
            return self.description
        names = " or ".join(t.__name__ for t in self.types)
        return f"{'an' if names[0] in 'aeiou' else 'a'} {names}"

    def invalid_example(self) -> Any:
        return object()


class HasMethods(Constraint):
    """An object with every one of ``methods`` (attributes or methods), e.g. an encoder."""

    def __init__(self, *methods: str, description: str) -> None:
        self.methods = methods
        self.description = description

    def is_satisfied_by(self, value: Any) -> bool:
        return value is not None and all(hasattr(value, m) for m in self.methods)

    def __str__(self) -> str:
        return self.description

    def invalid_example(self) -> Any:
        return 3


class NoneValue(Constraint):
    """``None``."""

    def is_satisfied_by(self, value: Any) -> bool:
        return value is None

    def __str__(self) -> str:
        return "None"


BOOLEAN = InstanceOf(bool, description="a bool")
"""True or False."""


def describe_constraints(constraints: list[Constraint]) -> str:
    """``"a float in [0, 1]"``, ``"a bool or one of {'auto'}"``: the valid values, in words."""
    words = [str(c) for c in constraints]
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " or " + words[-1]


def validate_parameter_constraints(
    constraints: dict[str, list[Constraint]], params: dict[str, Any], owner: str
) -> None:
    """Raise ParameterError for the first parameter (in ``params`` order) that satisfies none of its constraints.

    ``"The 'k' parameter of TaskDiscovery must be an int in [2, inf). Got 1."``. Parameters without an entry in
    ``constraints`` are not checked (their component checks them where it uses them).
    """
    for name, value in params.items():
        allowed = constraints.get(name)
        if allowed is None or any(c.is_satisfied_by(value) for c in allowed):
            continue
        raise ParameterError(
            f"The '{name}' parameter of {owner} must be {describe_constraints(allowed)}. Got {value!r}."
        )


class NonEmptyString(Constraint):
    """A str with at least one non-space character."""

    def is_satisfied_by(self, value: Any) -> bool:
        return isinstance(value, str) and bool(value.strip())

    def __str__(self) -> str:
        return "a non-empty str"

    def invalid_example(self) -> Any:
        return "  "


class Pattern(Constraint):
    """A str that matches ``regex`` at its start (``description`` words it, e.g. "an http(s) URL")."""

    def __init__(self, regex: str, description: str) -> None:
        import re

        self.regex = re.compile(regex)
        self.description = description

    def is_satisfied_by(self, value: Any) -> bool:
        return isinstance(value, str) and self.regex.match(value) is not None

    def __str__(self) -> str:
        return self.description

    def invalid_example(self) -> Any:
        return "not a match"
