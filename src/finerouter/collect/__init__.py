"""Training data from your own traffic: collect answers, judge them, learn from gateway feedback.

- :mod:`~finerouter.collect.prompts`: the prompts (a table, or the gateway's request log).
- :mod:`~finerouter.collect.client`: one OpenAI-compatible chat call with retries and 429 backoff.
- :mod:`~finerouter.collect.store`: the append-only, fsync'd JSON-lines store both stages write.
- :mod:`~finerouter.collect.collect`: ``finerouter collect`` (prompts x models -> ``answers.jsonl``).
- :mod:`~finerouter.collect.judge`: ``finerouter judge`` (answers -> a wide routing table of scores and costs).
- :mod:`~finerouter.collect.request_log`: the gateway's opt-in request log and feedback records.
- :mod:`~finerouter.collect.fake_judge`: a deterministic OpenAI-compatible judge server, for tests and examples.

Nothing heavy is imported with the package.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "ChatCaller": "finerouter.collect.client",
    "Collector": "finerouter.collect.collect",
    "CollectReport": "finerouter.collect.collect",
    "Endpoint": "finerouter.collect.client",
    "FakeJudge": "finerouter.collect.fake_judge",
    "Judge": "finerouter.collect.judge",
    "JsonlStore": "finerouter.collect.store",
    "Prompt": "finerouter.collect.prompts",
    "RequestLog": "finerouter.collect.request_log",
    "read_prompts": "finerouter.collect.prompts",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'finerouter.collect' has no attribute {name!r}")
