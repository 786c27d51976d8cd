"""A clock that moves only when told, for code that takes a ``clock`` (cooldowns, affinity, budget windows)."""

from __future__ import annotations

from finerouter.errors import ParameterError


class ManualClock:
    """Monotonic seconds that stand still until :meth:`advance`: call it like ``time.monotonic``.

    Args:
        start: the first reading.
    """

    def __init__(self, start: float = 1000.0) -> None:
        self.now = float(start)

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> float:
        """Move the clock forward by ``seconds`` (never back); returns the new reading."""
        if seconds < 0:
            raise ParameterError(f"A clock only moves forward; got {seconds} seconds.")
        self.now += seconds
        return self.now


__all__ = ["ManualClock"]
