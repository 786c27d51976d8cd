"""Helpers for testing code that uses FineRouter (like ``numpy.testing``): not used by the library itself.

- :class:`FakeEncoder`: a deterministic hashed bag-of-words encoder, so a router fits and routes in
  milliseconds without loading a model.
- :data:`FAST_SETTINGS`: ``FineRouter`` keyword arguments that shorten training to a few epochs.
- :class:`FakeJudge`: a deterministic OpenAI-compatible judge (answers ``[[N]]``) for ``finerouter judge``.
- :class:`FakeUpstream`: an echoing OpenAI-compatible chat-completions ASGI app that fails on demand
  (``python -m finerouter.testing.upstreams`` serves several on loopback); :class:`InProcessUpstreams`
  reaches several from a gateway in-process, with no socket.
- :class:`BackgroundServer`: uvicorn serving an ASGI app on loopback from a thread.
- :class:`ManualClock`: a clock that moves only when told, for the ``clock`` arguments of cooldowns, conversation
  affinity and ``create_app``.

Example::

    from finerouter import FineRouter
    from finerouter.data.synthetic import make_synthetic_routing_data
    from finerouter.testing import FAST_SETTINGS, FakeEncoder

    router = FineRouter(encoder=FakeEncoder(), seed=0, **FAST_SETTINGS).fit(make_synthetic_routing_data(120, n_models=4))
"""

from __future__ import annotations

import importlib
from typing import Any

#: ``FineRouter(**FAST_SETTINGS)``: a few training epochs for the task classifier and the quality estimator, and
#: one fit where the small-data default would fit three (``ensemble_size=1``; the soft prior stays "auto"),
#: enough for routing to follow the planted structure of small synthetic data. Shared: do not change it in
#: place (build a new dict, e.g. ``{**FAST_SETTINGS, "quality": {...}}``).
FAST_SETTINGS: dict[str, Any] = {"classifier": {"epochs": 5}, "quality": {"epochs_general": 3, "epochs_task": 2},
                                 "ensemble_size": 1}

# Imported on first use, so ``python -m finerouter.testing.upstreams`` and light users load only what they need.
_LAZY = {
    "BackgroundServer": "finerouter.testing.servers",
    "FakeEncoder": "finerouter.testing.encoders",
    "FakeUpstream": "finerouter.testing.fake_upstream",
    "FakeJudge": "finerouter.testing.fake_judge",
    "InProcessUpstreams": "finerouter.testing.upstreams",
    "ManualClock": "finerouter.testing.clock",
}

__all__ = ["FAST_SETTINGS", *sorted(_LAZY)]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'finerouter.testing' has no attribute {name!r}")
