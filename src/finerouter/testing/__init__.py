"""Helpers for testing code that uses FineRouter (like ``numpy.testing``): not used by the library itself.

- :class:`FakeEncoder`: a deterministic hashed bag-of-words encoder, so a router fits and routes in
  milliseconds without loading a model.
- :data:`FAST_SETTINGS`: ``FineRouter`` keyword arguments that shorten training to a few epochs.
- :class:`FakeUpstream`: an echoing OpenAI-compatible chat-completions ASGI app that fails on demand
  (``python -m finerouter.testing.fake_upstream`` serves several on loopback); :class:`InProcessUpstreams`
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

from typing import Any

from finerouter.testing.clock import ManualClock
from finerouter.testing.encoders import FakeEncoder
from finerouter.testing.fake_upstream import FakeUpstream, InProcessUpstreams
from finerouter.testing.servers import BackgroundServer

#: ``FineRouter(**FAST_SETTINGS)``: a few training epochs for the task classifier and the quality estimator,
#: enough for routing to follow the planted structure of small synthetic data. Shared: do not change it in
#: place (build a new dict, e.g. ``{**FAST_SETTINGS, "quality": {...}}``).
FAST_SETTINGS: dict[str, Any] = {"classifier": {"epochs": 5}, "quality": {"epochs_general": 3, "epochs_task": 2}}

__all__ = ["FAST_SETTINGS", "BackgroundServer", "FakeEncoder", "FakeUpstream", "InProcessUpstreams", "ManualClock"]
