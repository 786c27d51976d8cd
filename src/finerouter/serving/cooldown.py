"""Upstream cooldowns: an upstream that just failed is skipped by later requests until a deadline.

The dispatcher (:mod:`finerouter.serving.dispatch`) cools an upstream down after each failed attempt and each
stream that broke off, for ``cooldown_s`` or as long as a 429's ``Retry-After`` asks (never longer than
:data:`MAX_RETRY_AFTER_S`), and clears it when the upstream answers. It lives in one event loop, so it needs no
lock.
"""

from __future__ import annotations

import time
from collections.abc import Callable

#: The longest cooldown a ``Retry-After`` header can ask for, in seconds.
MAX_RETRY_AFTER_S = 300.0


class CooldownTracker:
    """Which upstreams failed recently and are skipped until a deadline.

    Args:
        cooldown_s: how long a failure cools an upstream down (0 disables cooldowns).
        clock: monotonic seconds (injectable for tests).
    """

    def __init__(self, cooldown_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.cooldown_s = float(cooldown_s)
        self._clock = clock
        self._until: dict[str, float] = {}

    def fail(self, model: str, retry_after_s: float | None = None) -> float:
        """Cool ``model`` down; returns the cooldown applied in seconds."""
        span = self.cooldown_s
        if retry_after_s is not None:
            span = max(span, min(retry_after_s, MAX_RETRY_AFTER_S))
        if span > 0:
            self._until[model] = max(self._until.get(model, 0.0), self._clock() + span)
        return span

    def succeed(self, model: str) -> None:
        """``model`` answered: it is no longer cooling."""
        self._until.pop(model, None)

    def clear(self) -> None:
        """Forget every cooldown."""
        self._until.clear()

    def is_cooling(self, model: str) -> bool:
        """Whether ``model`` is cooling down now."""
        until = self._until.get(model)
        if until is None:
            return False
        if until <= self._clock():
            del self._until[model]
            return False
        return True

    def cooling(self) -> dict[str, float]:
        """Cooling models -> seconds left."""
        now = self._clock()
        return {m: round(u - now, 3) for m, u in list(self._until.items()) if self.is_cooling(m)}


__all__ = ["MAX_RETRY_AFTER_S", "CooldownTracker"]
