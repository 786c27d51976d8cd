"""Conversation affinity: follow-up turns of a conversation stay on the model that answered the first.

Switching models mid-conversation changes tone, formatting and tool-call habits, so once a conversation
(keyed by the ``x-conversation-id`` header or the request's ``user`` field) has been answered by a model,
later turns go to that model without routing again, unless it fails; then the fallback model that answers
takes over. The store is bounded both ways: entries expire ``ttl_s`` after their last use, and beyond
``max_entries`` the least recently used are forgotten. It lives in one event loop, so it needs no lock.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from finerouter._validation import check_float, check_int


@dataclass
class AffinityEntry:
    """What a conversation is pinned to.

    Attributes:
        model: the model that answered last.
        ranking: the fallback order decided on the first turn (``model`` first).
        task_id: the task the first turn was assigned to (None: Others).
        task_description: that task's description.
    """

    model: str
    ranking: list[str]
    task_id: int | None = None
    task_description: str = ""


class AffinityStore:
    """A bounded LRU + TTL map from conversation key to :class:`AffinityEntry`.

    Args:
        max_entries: the most keys kept; inserting beyond evicts the least recently used.
        ttl_s: seconds after its last use at which an entry expires.
        clock: monotonic seconds (injectable for tests).
    """

    def __init__(
        self, max_entries: int = 10_000, ttl_s: float = 3600.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.max_entries = check_int(max_entries, "max_entries", "AffinityStore", low=1)
        self.ttl_s = check_float(ttl_s, "ttl_s", "AffinityStore", low=0.0, closed="neither")
        self._clock = clock
        # key -> (expiry time, entry); order = last use, oldest first (so also expiry order).
        self._items: OrderedDict[str, tuple[float, AffinityEntry]] = OrderedDict()

    def __len__(self) -> int:
        self._expire(self._clock())
        return len(self._items)

    def _expire(self, now: float) -> None:
        items = self._items
        while items:
            key, (expiry, _) = next(iter(items.items()))
            if expiry > now:
                break
            del items[key]

    def get(self, key: str) -> AffinityEntry | None:
        """The entry for ``key`` (refreshing its TTL and recency), or None if unknown or expired."""
        now = self._clock()
        self._expire(now)
        item = self._items.get(key)
        if item is None:
            return None
        self._items[key] = (now + self.ttl_s, item[1])
        self._items.move_to_end(key)
        return item[1]

    def set(self, key: str, entry: AffinityEntry) -> None:
        """Pin ``key`` to ``entry`` (replacing any previous one)."""
        now = self._clock()
        self._expire(now)
        self._items[key] = (now + self.ttl_s, entry)
        self._items.move_to_end(key)
        while len(self._items) > self.max_entries:
            self._items.popitem(last=False)

    def drop(self, key: str) -> None:
        self._items.pop(key, None)

    def clear(self) -> None:
        self._items.clear()


__all__ = ["AffinityEntry", "AffinityStore"]
